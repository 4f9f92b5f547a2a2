/**
 * Turns what went wrong on the wire into `UpstreamError` reasons.
 *
 * Reads vendor error bodies (OpenAI `{ error: { message, type, code } }`, Anthropic
 * `{ type: "error", error: { type, message } }`, and the plainer shapes of local servers), recognises
 * vendor codes before falling back to `UpstreamError.fromStatus`, maps `HttpClientError`s (refused,
 * reset, DNS, body read failures) and scrubs secrets out of every detail it builds.
 *
 * @since 0.1.0
 */
import type * as Duration from "effect/Duration"
import type * as HttpClientError from "effect/http/HttpClientError"
import * as Predicate from "effect/Predicate"
import * as Redacted from "effect/Redacted"
import * as UpstreamError from "../../UpstreamError.ts"

// =============================================================================
// Secrets
// =============================================================================

/**
 * Removes every occurrence of the given secrets from a text.
 *
 * @category models
 * @since 0.1.0
 */
export type Scrub = (text: string) => string

/**
 * A scrubber for the given secrets (an API key, ...): each value becomes `<redacted>`.
 *
 * @category constructors
 * @since 0.1.0
 */
export const makeScrub = (secrets: ReadonlyArray<Redacted.Redacted<string> | undefined>): Scrub => {
  const values = secrets.flatMap((secret) => {
    if (secret === undefined) return []
    const value = Redacted.value(secret)
    return value.length > 0 ? [value] : []
  })
  return (text) => values.reduce((acc, value) => acc.split(value).join("<redacted>"), text)
}

const maxDetail = 500

const shorten = (text: string): string => (text.length > maxDetail ? `${text.slice(0, maxDetail)}...` : text)

// =============================================================================
// Error bodies
// =============================================================================

/**
 * What an upstream said about its error, from the body of an error response or an error event.
 *
 * @category models
 * @since 0.1.0
 */
export interface ErrorBody {
  /** The upstream's message, or the raw body when it is not a known shape. */
  readonly message: string
  /** OpenAI `error.code` (as a string), e.g. `"context_length_exceeded"`. */
  readonly code: string | undefined
  /** OpenAI `error.type` or Anthropic `error.type`, e.g. `"overloaded_error"`. */
  readonly type: string | undefined
}

const stringField = (value: unknown, key: string): string | undefined => {
  if (!Predicate.isObject(value) || !Predicate.hasProperty(value, key)) return undefined
  const field = value[key]
  return typeof field === "string" ? field : typeof field === "number" ? String(field) : undefined
}

/**
 * Reads an already parsed error value: `{ error: { message, type, code } }`, `{ error: "text" }`,
 * `{ message }` or `{ detail }`.
 *
 * @category parsing
 * @since 0.1.0
 */
export const errorBodyFromJson = (json: unknown, raw: string): ErrorBody => {
  const error = Predicate.isObject(json) && Predicate.hasProperty(json, "error") ? json.error : undefined
  if (typeof error === "string") return { message: error, code: undefined, type: undefined }
  if (Predicate.isObject(error)) {
    return {
      message: stringField(error, "message") ?? raw,
      code: stringField(error, "code"),
      type: stringField(error, "type")
    }
  }
  return {
    message: stringField(json, "message") ?? stringField(json, "detail") ?? raw,
    code: stringField(json, "code"),
    type: undefined
  }
}

/**
 * Reads the text of an error response body.
 *
 * @category parsing
 * @since 0.1.0
 */
export const parseErrorBody = (text: string): ErrorBody => {
  try {
    return errorBodyFromJson(JSON.parse(text), text)
  } catch {
    return { message: text, code: undefined, type: undefined }
  }
}

const contextLengthCodes = new Set(["context_length_exceeded"])
const contentFilterCodes = new Set(["content_policy_violation", "content_filter", "content_filtered"])
const contextLengthText = /context[ _]length|context window|prompt is too long|maximum context|too many input tokens/i
const contentFilterText = /content[ _](?:policy|filter)|content management policy|safety system/i

/**
 * Maps an error status and body onto a reason.
 *
 * **Details**
 *
 * Vendor codes come first: `context_length_exceeded` or "prompt is too long" become
 * `ContextLengthExceeded`, `content_policy_violation` / `content_filter` become `ContentFiltered`,
 * Anthropic's `overloaded_error` (HTTP 529) becomes `Unavailable`; everything else goes through
 * `UpstreamError.fromStatus` with the upstream's message as detail. `retryAfter` is used for 429s
 * and 5xx only.
 *
 * @category error handling
 * @since 0.1.0
 */
export const reasonFromStatus = (
  status: number,
  body: ErrorBody,
  retryAfter: Duration.Duration | undefined,
  scrub: Scrub
): UpstreamError.Reason => {
  const label = body.code ?? body.type
  const detail = shorten(
    scrub(label !== undefined && !body.message.includes(label) ? `${label}: ${body.message}` : body.message)
  )
  const codes = [body.code, body.type].filter(Predicate.isString)
  const clientError = status >= 400 && status < 500 && status !== 401 && status !== 403 && status !== 429
  if (codes.some((code) => contextLengthCodes.has(code)) || (clientError && contextLengthText.test(body.message))) {
    return new UpstreamError.ContextLengthExceeded({ detail })
  }
  if (codes.some((code) => contentFilterCodes.has(code)) || (clientError && contentFilterText.test(body.message))) {
    return new UpstreamError.ContentFiltered({ detail })
  }
  if (status === 529 || body.type === "overloaded_error") {
    const unavailable = status >= 500 ? status : 529
    return retryAfter
      ? new UpstreamError.Unavailable({ status: unavailable, retryAfter, detail })
      : new UpstreamError.Unavailable({ status: unavailable, detail })
  }
  return UpstreamError.fromStatus(status, detail, status === 429 || status >= 500 ? retryAfter : undefined)
}

// =============================================================================
// Transport
// =============================================================================

const describeCause = (cause: unknown, depth = 0): string => {
  if (depth > 4 || cause === undefined || cause === null) return ""
  if (cause instanceof AggregateError && cause.errors.length > 0) {
    return describeCause(cause.errors[0], depth + 1)
  }
  if (cause instanceof Error) {
    const code = Predicate.hasProperty(cause, "code") && typeof cause.code === "string" ? cause.code : undefined
    const own = code !== undefined && !cause.message.includes(code) ? `${cause.message} (${code})` : cause.message
    const inner = describeCause(cause.cause, depth + 1)
    return inner.length > 0 && inner !== own ? `${own}: ${inner}` : own
  }
  return typeof cause === "string" ? cause : ""
}

/**
 * Maps a failure of the HTTP client onto a reason.
 *
 * **Details**
 *
 * Sending failures (refused, reset, DNS, TLS) and body read failures (a connection reset during the
 * answer) are `ConnectionFailed`; an empty body is `MalformedOutput`; a request that could not be
 * encoded is `BadRequest` with status 0. Details never contain headers, and secrets are scrubbed.
 *
 * @category error handling
 * @since 0.1.0
 */
export const reasonFromHttpClientError = (
  error: HttpClientError.HttpClientError,
  scrub: Scrub
): UpstreamError.Reason => {
  const reason = error.reason
  const cause = "cause" in reason ? describeCause(reason.cause) : ""
  const detail = shorten(scrub([reason.description, cause].filter((part) => part && part.length > 0).join(": ")))
  switch (reason._tag) {
    case "TransportError":
      return new UpstreamError.ConnectionFailed({ detail: detail || "request failed" })
    case "DecodeError":
      return new UpstreamError.ConnectionFailed({ detail: detail || "failed to read the response body" })
    case "EmptyBodyError":
      return new UpstreamError.MalformedOutput({ detail: "empty response body" })
    case "StatusCodeError":
      return UpstreamError.fromStatus(reason.response.status, detail || "unexpected status")
    case "EncodeError":
    case "InvalidUrlError":
      return new UpstreamError.BadRequest({ status: 0, detail: detail || reason._tag })
  }
}
