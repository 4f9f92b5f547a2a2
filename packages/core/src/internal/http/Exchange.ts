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
import * as Stream from "effect/Stream"
import * as ChatCompletion from "../../ChatCompletion.ts"
import * as UpstreamError from "../../UpstreamError.ts"
import { tracing } from "../tracing.ts"
import * as Errors from "./Errors.ts"
import * as EventStream from "./EventStream.ts"
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

/**
 * The `complete` and `stream` calls of an HTTP provider: send, check the status, decode a JSON answer
 * or an SSE stream (or a JSON answer to a streaming request, replayed as chunks), and name every
 * failure with the upstream. Providers differ only in the request they build and how they decode.
 *
 * @category constructors
 * @since 0.1.0
 */
export const makeCalls = (options: {
  /** The span name prefix, e.g. `"Anthropic"` (spans `Anthropic.complete`, `Anthropic.stream`). */
  readonly spanName: string
  readonly attributes: Record<string, unknown>
  readonly upstream: string
  readonly client: HttpClient.HttpClient
  readonly scrub: Errors.Scrub
  readonly httpRequest: (request: ChatCompletion.ChatRequest, stream: boolean) => HttpClientRequest.HttpClientRequest
  readonly decodeResponse: (
    text: string,
    now: number
  ) => Result.Result<ChatCompletion.ChatResponse, UpstreamError.Reason>
  readonly chunkDecoder: (now: number) => EventStream.EventDecoder<ChatCompletion.ChatChunk>
}): {
  readonly complete: (
    request: ChatCompletion.ChatRequest
  ) => Effect.Effect<ChatCompletion.ChatResponse, UpstreamError.UpstreamError>
  readonly stream: (
    request: ChatCompletion.ChatRequest
  ) => Stream.Stream<ChatCompletion.ChatChunk, UpstreamError.UpstreamError>
} => {
  const { attributes, client, scrub } = options
  const fail = (reason: UpstreamError.Reason) => UpstreamError.make(options.upstream, reason)
  const completeBody = function* (request: ChatCompletion.ChatRequest) {
    const response = yield* send(client, options.httpRequest(request, false), scrub)
    const text = yield* readText(response, scrub)
    const now = yield* Clock.currentTimeMillis
    return yield* Effect.fromResult(options.decodeResponse(text, now))
  }
  const completeTraced = Effect.fn(`${options.spanName}.complete`, { attributes })(completeBody, Effect.mapError(fail))
  const completeUntraced = Effect.fnUntraced(completeBody, Effect.mapError(fail))
  // Spans (ours and the HTTP client's, with its `traceparent` header) only when a tracer would export
  // them: without one they cost as much as the rest of the call's bookkeeping.
  const complete = (request: ChatCompletion.ChatRequest) =>
    Effect.withFiber((fiber) =>
      tracing(fiber) ? completeTraced(request) : Effect.withTracerEnabled(completeUntraced(request), false)
    )
  const opened = (request: ChatCompletion.ChatRequest) =>
    Effect.gen(function* () {
      const response = yield* send(client, options.httpRequest(request, true), scrub)
      const now = yield* Clock.currentTimeMillis
      if (!isEventStream(response)) {
        const text = yield* readText(response, scrub)
        const answer = yield* Effect.fromResult(options.decodeResponse(text, now))
        return Stream.fromIterable(ChatCompletion.responseToChunks(answer))
      }
      return EventStream.decode(
        response.stream,
        () => options.chunkDecoder(now),
        (error) => Errors.reasonFromHttpClientError(error, scrub)
      )
    })
  const stream = (request: ChatCompletion.ChatRequest) =>
    Stream.unwrap(
      Effect.withFiber((fiber) =>
        tracing(fiber)
          ? Effect.succeed(
              Stream.unwrap(opened(request)).pipe(
                Stream.mapError(fail),
                Stream.withSpan(`${options.spanName}.stream`, { attributes })
              )
            )
          : Effect.succeed(Stream.unwrap(Effect.withTracerEnabled(opened(request), false)).pipe(Stream.mapError(fail)))
      )
    )
  return { complete, stream }
}
