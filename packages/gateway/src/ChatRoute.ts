/**
 * `POST /v1/chat/completions`: the OpenAI-compatible chat endpoint, JSON and streaming, through the
 * model's pipeline.
 *
 * In order: request id, caller (`Gateway.authorize`: 401), body (`RequestBody`: 415, 413, 400), model
 * (404 unknown, 403 not allowed for the key), then the pipeline: `complete` for JSON, `stream` for
 * `stream: true`. Failures before an answer are OpenAI error JSON with the status of
 * `GatewayError` (429 for Roadcar's own rate limit, 400/502/503/504 for upstream failures, never a bare
 * 500). A stream is answered once its first chunk is in (retries and fallback happen before); a
 * failure after that ends the SSE stream with an error event and no `[DONE]`. Every answer carries
 * headers saying what happened (`x-request-id`, `x-roadcar-*`). The pipeline counts requests and
 * latency (`roadcar_requests_total`, `roadcar_request_duration_seconds`); the gateway adds its own
 * overhead (`roadcar_gateway_overhead_seconds`). A request refused before it reaches a pipeline
 * (401, 403, 404, 413, 415, 400) gets its own request log line and count
 * (`GatewayError.recordRefusal`), so every request writes exactly one request line.
 *
 * @since 0.1.0
 */

import { randomBytes } from "node:crypto"
import { type ChatCompletion, Metrics, type Pipeline } from "@roadcar/core"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as HttpServerRequest from "effect/http/HttpServerRequest"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import type * as Scope from "effect/Scope"
import * as ApiKeys from "./ApiKeys.ts"
import { authorize, Gateway, usableModels } from "./Gateway.ts"
import * as GatewayError from "./GatewayError.ts"
import * as RequestBody from "./RequestBody.ts"
import * as Sse from "./Sse.ts"

// =============================================================================
// Request id and headers
// =============================================================================

const saneRequestId = /^[A-Za-z0-9._:-]{1,128}$/

// Generated request ids: a random per-process prefix (unique across replicas and restarts) and a
// counter, instead of random bytes per request.
const requestIdPrefix = randomBytes(6).toString("hex")
let requestCount = 0

/**
 * The request id: the caller's `x-request-id` when it is a sane token (1 to 128 letters, digits,
 * `.`, `_`, `:`, `-`), else a fresh `req_<24 hex>`.
 *
 * @category constructors
 * @since 0.1.0
 */
export const requestIdOf = (header: string | undefined): string =>
  header !== undefined && saneRequestId.test(header) ? header : `req_${requestIdPrefix}${(++requestCount).toString(36)}`

// Header values must be printable ASCII (Node refuses control characters and anything past Latin-1,
// and clients read Latin-1 differently): a name that is not (`聊天`, configured model and upstream names
// are free text) is sent percent-encoded, as `decodeURIComponent` reads it back.
const printableAscii = /^[\x20-\x7e]*$/
const headerValue = (name: string): string => (printableAscii.test(name) ? name : encodeURIComponent(name))

/**
 * The `x-roadcar-*` headers of an answer.
 *
 * @category constructors
 * @since 0.1.0
 */
export const answerHeaders = (meta: Pipeline.AnswerMeta, overheadMs: number): Record<string, string> => {
  const headers: Record<string, string> = {
    "x-request-id": meta.requestId,
    "x-roadcar-attempts": String(meta.attempts),
    "x-roadcar-cache": meta.cacheHit ? "hit" : "miss",
    "x-roadcar-model": headerValue(meta.model),
    "x-roadcar-upstream": headerValue(meta.upstream),
    "x-roadcar-overhead-ms": String(Math.max(0, Math.round(overheadMs)))
  }
  if (meta.fallback !== undefined) {
    headers["x-roadcar-fallback"] = meta.fallback.reasonTag
    // Header values must be Latin-1 without control characters.
    headers["x-roadcar-fallback-reason"] = meta.fallback.reason.replace(/[^\x20-\x7e]/g, "?").slice(0, 300)
  }
  return headers
}

// =============================================================================
// Errors
// =============================================================================

const errorOf = GatewayError.fromPipeline

// A failure that is not a `GatewayError` (a defect): logged with the request id, answered with a 500.
const unexpected = (cause: Cause.Cause<unknown>, requestId: string): Effect.Effect<GatewayError.GatewayError> =>
  Effect.as(
    Effect.logError("unexpected failure in the gateway", cause).pipe(Effect.annotateLogs({ request_id: requestId })),
    GatewayError.internal(requestId)
  )

// =============================================================================
// Handler
// =============================================================================

interface Context {
  readonly requestId: string
  readonly started: number
  readonly key: ApiKeys.Key | undefined
}

// The gateway's own time: elapsed minus the time spent on upstream calls.
const recordOverhead = (model: string, overheadMs: number) =>
  Metrics.record(Metrics.overhead, { model }, Math.max(0, overheadMs) / 1000)

const respondJson = (
  context: Context,
  pipeline: Pipeline.Pipeline,
  chat: ChatCompletion.ChatRequest
): Effect.Effect<HttpServerResponse.HttpServerResponse, GatewayError.GatewayError> =>
  Effect.gen(function* () {
    const answer = yield* pipeline
      .complete(chat, { requestId: context.requestId, key: context.key?.name })
      .pipe(Effect.mapError((error) => errorOf(error, chat.model)))
    const overheadMs = (yield* Clock.currentTimeMillis) - context.started - answer.meta.upstreamMs
    yield* recordOverhead(chat.model, overheadMs)
    return HttpServerResponse.jsonUnsafe(answer.response, { headers: answerHeaders(answer.meta, overheadMs) })
  })

const respondStream = (
  context: Context,
  pipeline: Pipeline.Pipeline,
  chat: ChatCompletion.ChatRequest
): Effect.Effect<HttpServerResponse.HttpServerResponse, GatewayError.GatewayError, Scope.Scope> =>
  Effect.gen(function* () {
    const answer = yield* pipeline
      .stream(chat, { requestId: context.requestId, key: context.key?.name })
      .pipe(Effect.mapError((error) => errorOf(error, chat.model)))
    const overheadMs = (yield* Clock.currentTimeMillis) - context.started - answer.meta.upstreamMs
    yield* recordOverhead(chat.model, overheadMs)
    const body = Sse.encodeBytes(answer.chunks, {
      includeUsage: Sse.wantsUsage(chat),
      onFailure: (cause) => {
        const failure = cause.reasons.find((reason) => reason._tag === "Fail")
        return failure === undefined
          ? Effect.map(unexpected(cause, context.requestId), (error) => GatewayError.toBody(error))
          : Effect.succeed(GatewayError.streamErrorBody(failure.error))
      }
    })
    return HttpServerResponse.stream(body, {
      contentType: "text/event-stream",
      headers: {
        ...answerHeaders(answer.meta, overheadMs),
        "cache-control": "no-cache",
        "x-accel-buffering": "no"
      }
    })
  })

/**
 * The handler of `POST /v1/chat/completions`.
 *
 * @category handlers
 * @since 0.1.0
 */
export const handler: Effect.Effect<
  HttpServerResponse.HttpServerResponse,
  never,
  Gateway | HttpServerRequest.HttpServerRequest | Scope.Scope
> = Effect.gen(function* () {
  const gateway = yield* Gateway
  const request = yield* HttpServerRequest.HttpServerRequest
  const started = yield* Clock.currentTimeMillis
  const requestId = requestIdOf(request.headers["x-request-id"])
  let model: string | undefined
  let keyName: string | null = null
  let asked: string | undefined
  return yield* Effect.gen(function* () {
    const key = yield* authorize(gateway.keys, request)
    keyName = key?.name ?? null
    const body = yield* RequestBody.read(request, gateway.settings.bodyLimitBytes)
    const chat = yield* RequestBody.decodeChatRequest(body)
    asked = chat.model
    const pipeline = gateway.models.get(chat.model)
    if (pipeline === undefined) {
      // Named: the models this key may use, never the others.
      return yield* GatewayError.modelNotFound(chat.model, usableModels(gateway, key))
    }
    if (!ApiKeys.allows(key, chat.model)) return yield* GatewayError.forbiddenModel(key?.name ?? "", chat.model)
    model = chat.model
    const context: Context = { requestId, started, key }
    return yield* chat.stream === true ? respondStream(context, pipeline, chat) : respondJson(context, pipeline, chat)
  }).pipe(
    Effect.catchCause((cause) =>
      Effect.gen(function* () {
        if (Cause.hasInterruptsOnly(cause)) return yield* Effect.failCause(cause as Cause.Cause<never>)
        const failure = cause.reasons.find((reason) => reason._tag === "Fail")
        const error = failure === undefined ? yield* unexpected(cause, requestId) : failure.error
        // `model` is set just before the pipeline runs; a pipeline writes its own request line.
        if (model === undefined && failure !== undefined) {
          yield* GatewayError.recordRefusal(error, started, {
            request_id: requestId,
            key: keyName,
            model: asked === undefined ? null : asked.slice(0, 200)
          })
        }
        return GatewayError.toResponse(
          error,
          model === undefined
            ? { "x-request-id": requestId }
            : { "x-request-id": requestId, "x-roadcar-model": headerValue(model) }
        )
      })
    )
  )
})
