/**
 * Every failure the gateway answers with, as OpenAI's error JSON and the right HTTP status.
 *
 * `GatewayError` carries the status, the OpenAI error fields (`message`, `type`, `param`, `code`) and
 * extra headers (`Retry-After`). Constructors name each case the gateway meets (bad body, missing key,
 * unknown model, body too large, ...), and `fromUpstream` / `fromRateLimit` map the pipeline's errors
 * in one place: the table `upstreamMapping` is the status mapping the README documents. It does not
 * log: the caller decides what is worth a log line (only unexpected defects are).
 *
 * @since 0.1.0
 */
import {
  type Budget,
  Metrics,
  type Pipeline,
  type RateLimit,
  type StoreUnavailable,
  type UpstreamError
} from "@roadcar/core"
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as HttpServerResponse from "effect/http/HttpServerResponse"

// =============================================================================
// Model
// =============================================================================

/**
 * The `type` field of an OpenAI error object, as the gateway uses it.
 *
 * @category models
 * @since 0.1.0
 */
export type ErrorType =
  | "invalid_request_error"
  | "authentication_error"
  | "permission_error"
  | "not_found_error"
  | "rate_limit_error"
  | "upstream_error"
  | "server_error"

/**
 * An error answer: status, OpenAI error fields and extra headers.
 *
 * @category errors
 * @since 0.1.0
 */
export class GatewayError extends Data.TaggedError("GatewayError")<{
  readonly status: number
  readonly message: string
  readonly type: ErrorType
  readonly code: string | null
  readonly param: string | null
  readonly headers: Readonly<Record<string, string>>
}> {}

/**
 * The body of an error answer: `{ "error": { message, type, param, code } }`.
 *
 * @category models
 * @since 0.1.0
 */
export interface ErrorBody {
  readonly error: {
    readonly message: string
    readonly type: ErrorType
    readonly param: string | null
    readonly code: string | null
  }
}

const make = (
  status: number,
  type: ErrorType,
  message: string,
  fields: {
    readonly code?: string | null
    readonly param?: string | null
    readonly headers?: Record<string, string>
  } = {}
): GatewayError =>
  new GatewayError({
    status,
    type,
    message,
    code: fields.code ?? null,
    param: fields.param ?? null,
    headers: fields.headers ?? {}
  })

// =============================================================================
// Constructors
// =============================================================================

/**
 * 400: the body is not valid JSON.
 *
 * @category constructors
 * @since 0.1.0
 */
export const invalidJson = (detail: string): GatewayError =>
  make(400, "invalid_request_error", `The request body is not valid JSON: ${detail}`, { code: "invalid_json" })

/**
 * 400, 408 or 431: what Node's HTTP parser refused before any route saw the request (not valid HTTP,
 * headers too large, a client too slow to send its request).
 *
 * @category constructors
 * @since 0.1.0
 */
export const invalidHttp = (status: 400 | 408 | 431, message: string): GatewayError =>
  make(status, "invalid_request_error", message, { code: "invalid_http" })

/**
 * 400: the body is JSON but not a valid chat request; `param` names the field path (`messages[0].role`).
 *
 * @category constructors
 * @since 0.1.0
 */
export const invalidRequest = (message: string, param: string | null): GatewayError =>
  make(400, "invalid_request_error", message, { code: "invalid_request", param })

/**
 * 401: no key, or a key that is not configured.
 *
 * @category constructors
 * @since 0.1.0
 */
export const unauthorized = (message: string, code = "invalid_api_key"): GatewayError =>
  make(401, "authentication_error", message, { code, headers: { "www-authenticate": 'Bearer realm="roadcar"' } })

/**
 * 403: the key may not use this model.
 *
 * @category constructors
 * @since 0.1.0
 */
export const forbiddenModel = (keyName: string, model: string): GatewayError =>
  make(403, "permission_error", `The API key "${keyName}" is not allowed to use the model "${model}".`, {
    code: "model_not_allowed",
    param: "model"
  })

/**
 * 404: no public model of that name.
 *
 * @category constructors
 * @since 0.1.0
 */
export const modelNotFound = (model: string, available: ReadonlyArray<string>): GatewayError =>
  make(
    404,
    "invalid_request_error",
    `The model "${truncate(model, 100)}" does not exist. ${available.length === 0 ? "No model is available to this key." : `Available models: ${available.join(", ")}.`}`,
    { code: "model_not_found", param: "model" }
  )

/**
 * 404: no such route.
 *
 * @category constructors
 * @since 0.1.0
 */
export const routeNotFound = (method: string, path: string): GatewayError =>
  make(404, "not_found_error", `No route for ${method} ${truncate(path, 200)}.`, { code: "not_found" })

/**
 * 405: the route exists, but not for this method.
 *
 * @category constructors
 * @since 0.1.0
 */
export const methodNotAllowed = (method: string, path: string, allowed: ReadonlyArray<string>): GatewayError =>
  make(
    405,
    "invalid_request_error",
    `${method} is not allowed on ${truncate(path, 200)}; use ${allowed.join(" or ")}.`,
    { code: "method_not_allowed", headers: { allow: allowed.join(", ") } }
  )

/**
 * 413: the body is larger than `server.bodyLimitBytes`.
 *
 * @category constructors
 * @since 0.1.0
 */
export const payloadTooLarge = (limitBytes: number): GatewayError =>
  make(413, "invalid_request_error", `The request body is larger than the limit of ${limitBytes} bytes.`, {
    code: "payload_too_large"
  })

/**
 * 415: the body is not declared as JSON.
 *
 * @category constructors
 * @since 0.1.0
 */
export const unsupportedMediaType = (contentType: string | undefined): GatewayError =>
  make(
    415,
    "invalid_request_error",
    `Unsupported content type ${contentType === undefined ? "(none)" : `"${truncate(contentType, 100)}"`}; send the body as JSON with "Content-Type: application/json".`,
    { code: "unsupported_media_type" }
  )

/**
 * 500: an unexpected defect in the gateway (it is logged; the body says no more).
 *
 * @category constructors
 * @since 0.1.0
 */
export const internal = (requestId: string): GatewayError =>
  make(500, "server_error", `The gateway failed unexpectedly; quote request id ${requestId} when reporting it.`, {
    code: "internal_error"
  })

/**
 * 503: the gateway is shutting down or otherwise cannot take the request now.
 *
 * @category constructors
 * @since 0.1.0
 */
export const unavailable = (message: string): GatewayError =>
  make(503, "server_error", message, { code: "unavailable" })

// =============================================================================
// Pipeline errors
// =============================================================================

/**
 * How one upstream failure reason is answered when every upstream failed and no static answer is
 * configured.
 *
 * @category models
 * @since 0.1.0
 */
export interface Mapping {
  readonly status: number
  readonly type: ErrorType
  readonly code: string
  /** Whether the answer carries `Retry-After` when the upstream (or the breaker) gave a hint. */
  readonly retryAfter: boolean
}

/**
 * The status mapping of upstream failure reasons (the README's table).
 *
 * - `400` when the request itself cannot be served by any model: context length, content filter.
 * - `502` when the upstream answered wrongly or not at all: 5xx, malformed output, connection failure,
 *   the upstream refused the request (`BadRequest`) or our credentials (`Authentication`).
 * - `503` when the upstream is there but will not take traffic now: its own 429, an open circuit;
 *   with `Retry-After` when known.
 * - `504` when it did not answer in time.
 *
 * @category error handling
 * @since 0.1.0
 */
export const upstreamMapping: Readonly<Record<UpstreamError.ReasonTag, Mapping>> = {
  ContextLengthExceeded: {
    status: 400,
    type: "invalid_request_error",
    code: "context_length_exceeded",
    retryAfter: false
  },
  ContentFiltered: { status: 400, type: "invalid_request_error", code: "content_filter", retryAfter: false },
  Unavailable: { status: 502, type: "upstream_error", code: "upstream_unavailable", retryAfter: false },
  MalformedOutput: { status: 502, type: "upstream_error", code: "upstream_malformed_output", retryAfter: false },
  ConnectionFailed: { status: 502, type: "upstream_error", code: "upstream_connection_failed", retryAfter: false },
  BadRequest: { status: 502, type: "upstream_error", code: "upstream_bad_request", retryAfter: false },
  Authentication: { status: 502, type: "upstream_error", code: "upstream_authentication_failed", retryAfter: false },
  RateLimited: { status: 503, type: "upstream_error", code: "upstream_rate_limited", retryAfter: true },
  CircuitOpen: { status: 503, type: "upstream_error", code: "circuit_open", retryAfter: true },
  TimedOut: { status: 504, type: "upstream_error", code: "upstream_timeout", retryAfter: false }
}

/**
 * `Retry-After` in whole seconds, rounded up (at least 1).
 *
 * @category error handling
 * @since 0.1.0
 */
export const retryAfterSeconds = (duration: Duration.Duration): string =>
  String(Math.max(1, Math.ceil(Duration.toMillis(duration) / 1000)))

/**
 * The answer when every upstream (and fallback) failed for `model`.
 *
 * @category error handling
 * @since 0.1.0
 */
export const fromUpstream = (error: UpstreamError.UpstreamError, model: string): GatewayError => {
  const mapping = upstreamMapping[error.reason._tag]
  const hint = mapping.retryAfter ? error.retryAfter : undefined
  const message =
    mapping.status === 400
      ? `${error.reason._tag === "ContextLengthExceeded" ? "The request does not fit the model's context window" : "The request or its answer was blocked by the upstream's content filter"} (model "${model}", upstream ${error.upstream}: ${truncate(error.reason.description, 300)}).`
      : `Every upstream for the model "${model}" failed; the last was ${truncate(error.message, 400)}.`
  return make(mapping.status, mapping.type, message, {
    code: mapping.code,
    headers: hint === undefined ? {} : { "retry-after": retryAfterSeconds(hint) }
  })
}

/**
 * 429 with `Retry-After` when Roadcar's own rate limit refused the request.
 *
 * @category error handling
 * @since 0.1.0
 */
export const fromRateLimit = (error: RateLimit.RateLimitRejected): GatewayError =>
  make(429, "rate_limit_error", `Rate limit exceeded: ${error.limit} for ${error.subject}.`, {
    code: "rate_limit_exceeded",
    headers: { "retry-after": retryAfterSeconds(error.retryAfter) }
  })

/**
 * 429 with `Retry-After` when a key's budget is spent: the message says which budget and when it resets.
 *
 * @category error handling
 * @since 0.1.0
 */
export const fromBudget = (error: Budget.BudgetExceeded): GatewayError =>
  make(429, "rate_limit_error", `${error.message}.`, {
    code: "budget_exceeded",
    headers: { "retry-after": retryAfterSeconds(error.retryAfter) }
  })

/**
 * 503 when a shared store (Redis) is down and its policy is fail-closed.
 *
 * @category error handling
 * @since 0.1.0
 */
export const fromStoreUnavailable = (error: StoreUnavailable.StoreUnavailable): GatewayError =>
  make(503, "server_error", `The shared ${error.store} store is unavailable; try again shortly.`, {
    code: "store_unavailable",
    headers: { "retry-after": "1" }
  })

/**
 * The answer to any error of the pipeline.
 *
 * @category error handling
 * @since 0.1.0
 */
export const fromPipeline = (error: Pipeline.Refusal | UpstreamError.UpstreamError, model: string): GatewayError => {
  switch (error._tag) {
    case "RateLimitRejected":
      return fromRateLimit(error)
    case "BudgetExceeded":
      return fromBudget(error)
    case "StoreUnavailable":
      return fromStoreUnavailable(error)
    case "UpstreamError":
      return fromUpstream(error, model)
  }
}

// =============================================================================
// Responses
// =============================================================================

/**
 * The error's JSON body.
 *
 * @category converting
 * @since 0.1.0
 */
export const toBody = (error: GatewayError): ErrorBody => ({
  error: { message: error.message, type: error.type, param: error.param, code: error.code }
})

/**
 * The error as an HTTP response (JSON body, status, its headers plus `extraHeaders`).
 *
 * @category converting
 * @since 0.1.0
 */
export const toResponse = (
  error: GatewayError,
  extraHeaders: Readonly<Record<string, string>> = {}
): HttpServerResponse.HttpServerResponse =>
  HttpServerResponse.jsonUnsafe(toBody(error), {
    status: error.status,
    headers: { ...extraHeaders, ...error.headers }
  })

/**
 * The SSE event that reports a failure after the first chunk was sent:
 * `data: {"error":{"message","type":"upstream_error","param":null,"code"}}`.
 *
 * @category converting
 * @since 0.1.0
 */
export const streamErrorBody = (error: UpstreamError.UpstreamError): ErrorBody => ({
  error: {
    message: `The stream failed after it started: ${truncate(error.message, 400)}. The answer is incomplete.`,
    type: "upstream_error",
    param: null,
    code: upstreamMapping[error.reason._tag].code
  }
})

const truncate = (text: string, max: number): string => (text.length > max ? `${text.slice(0, max - 3)}...` : text)

/**
 * Records a request the gateway refused before any pipeline ran (a bad key, body, model or route):
 * counts it in `roadcar_requests_refused_total` by the error's code, and writes its `request` log
 * line at Warning (`"status":"refused"`, the HTTP status, the code, the time since `started`, the
 * message, and the given `fields`: request id, key name, model asked, route). A pipeline writes the
 * request line of the requests it runs; with this, every request writes exactly one.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { GatewayError } from "@roadcar/gateway"
 *
 * Effect.runSync(GatewayError.recordRefusal(GatewayError.invalidJson("Unexpected end"), 0, { request_id: "req_1" }))
 * ```
 *
 * @category logging
 * @since 0.1.0
 */
export const recordRefusal = (
  error: GatewayError,
  started: number,
  fields: Readonly<Record<string, string | null>>
): Effect.Effect<void> =>
  Effect.gen(function* () {
    const code = error.code ?? error.type
    yield* Metrics.record(Metrics.refused, { code }, 1)
    const latencyMs = (yield* Clock.currentTimeMillis) - started
    yield* Effect.logWarning("request").pipe(
      Effect.annotateLogs({
        ...fields,
        status: "refused",
        http_status: error.status,
        code,
        latency_ms: latencyMs,
        error: error.message
      })
    )
  })
