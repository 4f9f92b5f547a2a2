import * as Effect from "effect/Effect"
import type * as Sse from "effect/encoding/Sse"
import * as HttpClient from "effect/http/HttpClient"
import * as HttpClientRequest from "effect/http/HttpClientRequest"
import * as Predicate from "effect/Predicate"
import type * as Redacted from "effect/Redacted"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import * as ChatCompletion from "../ChatCompletion.ts"
import * as Endpoint from "../internal/http/Endpoint.ts"
import * as Errors from "../internal/http/Errors.ts"
import * as EventStream from "../internal/http/EventStream.ts"
import * as Exchange from "../internal/http/Exchange.ts"
import type { Upstream } from "../Upstream.ts"
import type * as UpstreamError from "../UpstreamError.ts"

// =============================================================================
// Options
// =============================================================================

/**
 * How to reach an OpenAI-compatible server.
 *
 * @category options
 * @since 0.1.0
 */
export interface Options {
  /** The upstream's unique name (breakers, logs and metrics use it). */
  readonly name: string
  /** The API root, e.g. `"https://api.openai.com/v1"` or `"http://127.0.0.1:11434/v1"` (Ollama). */
  readonly baseUrl: string
  /** The model the upstream is asked for, in place of the request's public model name. */
  readonly model: string
  /** Sent as `Authorization: Bearer <key>`; omit for local servers without auth. */
  readonly apiKey?: Redacted.Redacted<string> | undefined
  /** Extra headers on every request (e.g. `OpenAI-Organization`, `HTTP-Referer` for OpenRouter). */
  readonly headers?: Readonly<Record<string, string>> | undefined
  /** The `gen_ai.provider.name`; defaults to `"openai"`. */
  readonly provider?: string | undefined
}

// =============================================================================
// Wire format
// =============================================================================

const OptionalNumber = Schema.optionalKey(Schema.NullOr(Schema.Number))

const WireUsage = Schema.Struct({
  prompt_tokens: OptionalNumber,
  completion_tokens: OptionalNumber,
  total_tokens: OptionalNumber
})

const WireContent = Schema.optionalKey(
  Schema.NullOr(Schema.Union([Schema.String, Schema.Array(ChatCompletion.ContentPart)]))
)

const WireResponse = Schema.Struct({
  id: Schema.optionalKey(Schema.String),
  created: OptionalNumber,
  model: Schema.optionalKey(Schema.String),
  choices: Schema.Array(
    Schema.Struct({
      index: OptionalNumber,
      message: Schema.Struct({
        content: WireContent,
        tool_calls: Schema.optionalKey(Schema.NullOr(Schema.Array(ChatCompletion.ToolCall))),
        refusal: Schema.optionalKey(Schema.NullOr(Schema.String))
      }),
      finish_reason: Schema.optionalKey(Schema.NullOr(Schema.String)),
      logprobs: Schema.optionalKey(Schema.Unknown)
    })
  ).check(Schema.isMinLength(1)),
  usage: Schema.optionalKey(Schema.NullOr(WireUsage)),
  system_fingerprint: Schema.optionalKey(Schema.NullOr(Schema.String))
})

type WireResponse = typeof WireResponse.Type

const WireChunk = Schema.Struct({
  id: Schema.optionalKey(Schema.String),
  created: OptionalNumber,
  model: Schema.optionalKey(Schema.String),
  choices: Schema.optionalKey(
    Schema.NullOr(
      Schema.Array(
        Schema.Struct({
          index: OptionalNumber,
          delta: Schema.optionalKey(
            Schema.NullOr(
              Schema.Struct({
                role: Schema.optionalKey(Schema.NullOr(Schema.String)),
                content: Schema.optionalKey(Schema.NullOr(Schema.String)),
                tool_calls: Schema.optionalKey(Schema.NullOr(Schema.Array(ChatCompletion.ToolCall))),
                refusal: Schema.optionalKey(Schema.NullOr(Schema.String))
              })
            )
          ),
          finish_reason: Schema.optionalKey(Schema.NullOr(Schema.String)),
          logprobs: Schema.optionalKey(Schema.Unknown)
        })
      )
    )
  ),
  usage: Schema.optionalKey(Schema.NullOr(WireUsage))
})

type WireChunk = typeof WireChunk.Type

const int = (value: number | null | undefined, fallback: number): number =>
  value === null || value === undefined || !Number.isFinite(value) ? fallback : Math.trunc(value)

const toUsage = (wire: typeof WireUsage.Type | null | undefined): ChatCompletion.Usage | undefined => {
  if (wire === null || wire === undefined) return undefined
  const input = int(wire.prompt_tokens, 0)
  const output = int(wire.completion_tokens, 0)
  return { prompt_tokens: input, completion_tokens: output, total_tokens: int(wire.total_tokens, input + output) }
}

/**
 * Maps a wire finish reason onto the contract's: OpenAI's five pass through, `""` means none yet,
 * other servers' names are translated (`max_tokens` → `length`, `tool_use` → `tool_calls`), and any
 * other value (`eos`, `end_turn`, ...) means the model stopped: `stop`.
 *
 * @category mapping
 * @since 0.1.0
 */
export const finishReason = (reason: string | null | undefined): ChatCompletion.FinishReason | null => {
  switch (reason) {
    case null:
    case undefined:
    case "":
      return null
    case "stop":
    case "length":
    case "tool_calls":
    case "content_filter":
    case "function_call":
      return reason
    case "max_tokens":
    case "model_length":
      return "length"
    case "tool_use":
      return "tool_calls"
    default:
      return "stop"
  }
}

const toResponse = (wire: WireResponse, model: string, now: number): ChatCompletion.ChatResponse => ({
  id: wire.id ?? `chatcmpl-${now}`,
  object: "chat.completion",
  created: int(wire.created, Math.floor(now / 1000)),
  model: wire.model ?? model,
  choices: wire.choices.map((choice, index) => {
    const content = choice.message.content
    return {
      index: int(choice.index, index),
      message: {
        role: "assistant",
        content: content === undefined || content === null ? null : ChatCompletion.contentText(content),
        ...(choice.message.tool_calls ? { tool_calls: choice.message.tool_calls } : {}),
        ...(choice.message.refusal !== undefined ? { refusal: choice.message.refusal } : {})
      },
      finish_reason: finishReason(choice.finish_reason),
      ...(choice.logprobs !== undefined && choice.logprobs !== null ? { logprobs: choice.logprobs } : {})
    }
  }),
  // Servers that omit usage in a JSON answer get zeros: the contract requires the field.
  usage: toUsage(wire.usage) ?? ChatCompletion.usage(0, 0),
  ...(wire.system_fingerprint !== undefined ? { system_fingerprint: wire.system_fingerprint } : {})
})

const toChunk = (
  wire: WireChunk,
  defaults: { readonly id: string; readonly model: string; readonly created: number }
): ChatCompletion.ChatChunk | undefined => {
  const choices = (wire.choices ?? []).map((choice, index) => {
    const delta = choice.delta ?? {}
    return {
      index: int(choice.index, index),
      delta: {
        ...(delta.role === "assistant" ? { role: "assistant" as const } : {}),
        ...(delta.content !== undefined ? { content: delta.content } : {}),
        ...(delta.tool_calls ? { tool_calls: delta.tool_calls } : {}),
        ...(delta.refusal !== undefined ? { refusal: delta.refusal } : {})
      },
      finish_reason: finishReason(choice.finish_reason),
      ...(choice.logprobs !== undefined && choice.logprobs !== null ? { logprobs: choice.logprobs } : {})
    }
  })
  const usage = toUsage(wire.usage)
  // Nothing to pass on (e.g. Azure's leading prompt_filter_results chunk).
  if (choices.length === 0 && usage === undefined) return undefined
  return {
    id: wire.id ?? defaults.id,
    object: "chat.completion.chunk",
    created: int(wire.created, defaults.created),
    model: wire.model ?? defaults.model,
    choices,
    ...(usage !== undefined ? { usage } : {})
  }
}

/**
 * An error the upstream reported inside a 200 body or an SSE event (`{ error: { ... } }`, as
 * OpenRouter and vLLM do mid-stream): its numeric `code` is used as the status when it is one.
 */
const inBandError = (json: unknown, scrub: Errors.Scrub): UpstreamError.Reason | undefined => {
  if (!Predicate.isObject(json) || !Predicate.hasProperty(json, "error") || Predicate.hasProperty(json, "choices")) {
    return undefined
  }
  const body = Errors.errorBodyFromJson(json, "upstream reported an error")
  const code = Number(body.code)
  const status = Number.isInteger(code) && code >= 400 && code < 600 ? code : 500
  return Errors.reasonFromStatus(status, body, undefined, scrub)
}

const chunkDecoder =
  (defaults: { readonly id: string; readonly model: string; readonly created: number }, scrub: Errors.Scrub) =>
  (): EventStream.EventDecoder<ChatCompletion.ChatChunk> => {
    let finished = false
    return {
      event: (event: Sse.Event) => {
        const data = event.data.trim()
        if (data === "[DONE]") return EventStream.done()
        const json = Exchange.parseJson(data, "a stream chunk")
        if (Result.isFailure(json)) return Result.fail(json.failure)
        const error = inBandError(json.success, scrub)
        if (error !== undefined) return Result.fail(error)
        const wire = Exchange.decodeJson(WireChunk, json.success, "a stream chunk")
        if (Result.isFailure(wire)) return Result.fail(wire.failure)
        const chunk = toChunk(wire.success, defaults)
        if (chunk === undefined) return EventStream.emit()
        if (chunk.choices.some((choice) => choice.finish_reason !== null)) finished = true
        return EventStream.emit(chunk)
      },
      end: () => (finished ? Result.succeed([]) : Result.fail(EventStream.cut()))
    }
  }

// =============================================================================
// Constructor
// =============================================================================

/**
 * The body sent upstream: the request with `model` replaced; for a stream, `stream: true` and
 * `stream_options.include_usage` (other `stream_options` kept); for JSON, no stream fields.
 *
 * @category mapping
 * @since 0.1.0
 */
export const requestBody = (
  request: ChatCompletion.ChatRequest,
  model: string,
  stream: boolean
): Record<string, unknown> => {
  const { stream: _stream, stream_options: streamOptions, ...rest } = request
  if (!stream) return { ...rest, model }
  const extra = Predicate.isObject(streamOptions) ? streamOptions : {}
  return { ...rest, model, stream: true, stream_options: { ...extra, include_usage: true } }
}

/**
 * Builds an upstream for an OpenAI-compatible `/chat/completions` endpoint.
 *
 * **Details**
 *
 * - JSON: `complete` posts the request (no `stream` fields) and decodes the answer leniently
 *   (missing `id`/`created`/`model` are filled in, unknown finish reasons read as `stop`, missing
 *   usage as zeros); a body that is not JSON or has no `choices` fails with `MalformedOutput`.
 * - Streaming: chunks are emitted as their SSE events arrive; `[DONE]` ends the stream; a body that
 *   ends after a finish reason but without `[DONE]` is complete; one that ends before is cut
 *   (`MalformedOutput`, or `ConnectionFailed` when the socket was reset); an unreadable event is
 *   `MalformedOutput`; an `{ error }` event is mapped like an error response. A server that answers a
 *   streaming request with plain JSON is replayed as chunks.
 * - Errors: 429 → `RateLimited` (hint from `retry-after-ms`, `Retry-After`, then
 *   `x-ratelimit-reset-*`), 5xx → `Unavailable`, 401/403 → `Authentication`,
 *   `context_length_exceeded` → `ContextLengthExceeded`, `content_policy_violation` /
 *   `content_filter` → `ContentFiltered`, other 4xx → `BadRequest`, transport → `ConnectionFailed`.
 *
 * **Gotchas**
 *
 * The API key is only ever a header value: it never appears in an error detail (details are
 * scrubbed), and `HttpClient` spans redact `authorization`.
 *
 * **Example** (Ollama on loopback)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { FetchHttpClient } from "effect/http"
 * import { OpenAiCompatible } from "@roadcar/core"
 *
 * const program = Effect.gen(function*() {
 *   const upstream = yield* OpenAiCompatible.make({
 *     name: "local-llama",
 *     baseUrl: "http://127.0.0.1:11434/v1",
 *     model: "llama3.2"
 *   })
 *   const answer = yield* upstream.complete({ model: "chat", messages: [{ role: "user", content: "Hi" }] })
 *   return answer.choices[0]?.message.content
 * })
 * await Effect.runPromise(program.pipe(Effect.provide(FetchHttpClient.layer))) // => "Hello! ..."
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = Effect.fnUntraced(function* (options: Options) {
  const client = yield* HttpClient.HttpClient
  const endpoint = Endpoint.resolve(options.baseUrl, "/chat/completions")
  if (endpoint === undefined) {
    return yield* Effect.die(new Error(`OpenAiCompatible.make(${options.name}): baseUrl is not an http(s) URL`))
  }
  const provider = options.provider ?? "openai"
  const scrub = Errors.makeScrub([options.apiKey])
  const attributes = {
    "gen_ai.provider.name": provider,
    "gen_ai.request.model": options.model,
    "server.address": endpoint.server.address,
    "server.port": endpoint.server.port,
    "roadcar.upstream": options.name
  }

  const base = HttpClientRequest.post(endpoint.url).pipe(
    HttpClientRequest.setHeaders(options.headers ?? {}),
    (request) => (options.apiKey ? HttpClientRequest.bearerToken(request, options.apiKey) : request)
  )
  const httpRequest = (request: ChatCompletion.ChatRequest, stream: boolean) =>
    base.pipe(
      HttpClientRequest.accept(stream ? "text/event-stream" : "application/json"),
      HttpClientRequest.bodyJsonUnsafe(requestBody(request, options.model, stream))
    )

  const decodeResponse = (
    text: string,
    now: number
  ): Result.Result<ChatCompletion.ChatResponse, UpstreamError.Reason> =>
    Result.flatMap(Exchange.parseJson(text, "the response body"), (json) => {
      const error = inBandError(json, scrub)
      if (error !== undefined) return Result.fail(error)
      return Result.map(Exchange.decodeJson(WireResponse, json, "the response body"), (wire) =>
        toResponse(wire, options.model, now)
      )
    })

  const { complete, stream } = Exchange.makeCalls({
    spanName: "OpenAiCompatible",
    attributes,
    upstream: options.name,
    client,
    scrub,
    httpRequest,
    decodeResponse,
    chunkDecoder: (now) =>
      chunkDecoder({ id: `chatcmpl-${now}`, model: options.model, created: Math.floor(now / 1000) }, scrub)()
  })

  const upstream: Upstream = {
    name: options.name,
    provider,
    model: options.model,
    server: endpoint.server,
    complete,
    stream
  }
  return upstream
})
