/**
 * One request/response exchange with an upstream, with failures already mapped to reasons.
 *
 * `send` executes a request and turns transport failures and non-2xx answers (status, error body,
 * retry hints) into `UpstreamError` reasons; `readJson` reads and decodes a successful JSON body,
 * failing with `MalformedOutput` when it is not JSON or not the expected shape. Providers build on
 * these and keep only their wire formats.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import type * as HttpClient from "effect/http/HttpClient"
import type * as HttpClientRequest from "effect/http/HttpClientRequest"
import type * as HttpClientResponse from "effect/http/HttpClientResponse"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import * as UpstreamError from "../../UpstreamError.ts"
import * as Errors from "./Errors.ts"
import * as RetryAfter from "./RetryAfter.ts"

/**
 * Sends a request; succeeds with a 2xx response only.
 *
 * @category constructors
 * @since 0.1.0
 */
export const send = (
  client: HttpClient.HttpClient,
  request: HttpClientRequest.HttpClientRequest,
  scrub: Errors.Scrub
): Effect.Effect<HttpClientResponse.HttpClientResponse, UpstreamError.Reason> =>
  client.execute(request).pipe(
    Effect.mapError((error) => Errors.reasonFromHttpClientError(error, scrub)),
    Effect.flatMap((response) =>
      response.status >= 200 && response.status < 300 ? Effect.succeed(response) : failWithStatus(response, scrub)
    )
  )

const failWithStatus = (
  response: HttpClientResponse.HttpClientResponse,
  scrub: Errors.Scrub
): Effect.Effect<never, UpstreamError.Reason> =>
  Effect.gen(function* () {
    const now = yield* Clock.currentTimeMillis
    // An unreadable error body still leaves the status to classify by.
    const text = yield* response.text.pipe(Effect.orElseSucceed(() => ""))
    const retryAfter = RetryAfter.retryHint(response.status, response.headers, now)
    return yield* Effect.fail(Errors.reasonFromStatus(response.status, Errors.parseErrorBody(text), retryAfter, scrub))
  })

/**
 * The reason for output that cannot be read.
 *
 * @category constructors
 * @since 0.1.0
 */
export const malformed = (detail: string): UpstreamError.Reason => new UpstreamError.MalformedOutput({ detail })

/**
 * Parses a JSON text, or explains why it is not JSON (without quoting it).
 *
 * @category parsing
 * @since 0.1.0
 */
export const parseJson = (text: string, what: string): Result.Result<unknown, UpstreamError.Reason> => {
  try {
    return Result.succeed(JSON.parse(text))
  } catch {
    return Result.fail(malformed(`${what} is not valid JSON`))
  }
}

/**
 * Decodes a parsed JSON value with a wire schema, or explains where it does not match.
 *
 * @category parsing
 * @since 0.1.0
 */
export const decodeJson = <A>(
  schema: Schema.Decoder<A>,
  json: unknown,
  what: string
): Result.Result<A, UpstreamError.Reason> => {
  const decoded = Schema.decodeUnknownResult(schema)(json)
  return Result.isSuccess(decoded)
    ? Result.succeed(decoded.success)
    : Result.fail(malformed(`${what} does not match the expected shape: ${shortIssue(decoded.failure)}`))
}

const shortIssue = (error: Schema.SchemaError): string => {
  const text = error.message.replace(/\s+/g, " ")
  return text.length > 200 ? `${text.slice(0, 200)}...` : text
}

/**
 * Reads a successful response body as text.
 *
 * @category constructors
 * @since 0.1.0
 */
export const readText = (
  response: HttpClientResponse.HttpClientResponse,
  scrub: Errors.Scrub
): Effect.Effect<string, UpstreamError.Reason> =>
  response.text.pipe(Effect.mapError((error) => Errors.reasonFromHttpClientError(error, scrub)))

/**
 * Whether a response is an SSE stream (as opposed to a JSON answer to a streaming request, which
 * some servers send when they ignore `stream: true`).
 *
 * @category predicates
 * @since 0.1.0
 */
export const isEventStream = (response: HttpClientResponse.HttpClientResponse): boolean => {
  const contentType = response.headers["content-type"]
  return contentType === undefined || !contentType.toLowerCase().includes("application/json")
}
