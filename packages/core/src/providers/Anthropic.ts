import * as Effect from "effect/Effect"
import * as HttpClient from "effect/http/HttpClient"
import * as HttpClientRequest from "effect/http/HttpClientRequest"
import * as Redacted from "effect/Redacted"
import * as Result from "effect/Result"
import type * as ChatCompletion from "../ChatCompletion.ts"
import * as Endpoint from "../internal/http/Endpoint.ts"
import * as Errors from "../internal/http/Errors.ts"
import * as Exchange from "../internal/http/Exchange.ts"
import type { Upstream } from "../Upstream.ts"
import type * as UpstreamError from "../UpstreamError.ts"
import * as AnthropicMessages from "./AnthropicMessages.ts"

/**
 * How to reach Anthropic (or a server speaking its Messages API).
 *
 * @category options
 * @since 0.1.0
 */
export interface Options {
  /** The upstream's unique name (breakers, logs and metrics use it). */
  readonly name: string
  /** The API root; defaults to `"https://api.anthropic.com/v1"`. */
  readonly baseUrl?: string | undefined
  /** The model the upstream is asked for, e.g. `"claude-sonnet-4-5"`. */
  readonly model: string
  /** Sent as `x-api-key`. */
  readonly apiKey: Redacted.Redacted<string>
  /** The `anthropic-version` header; defaults to `"2023-06-01"`. */
  readonly version?: string | undefined
  /** `max_tokens` when the request sets neither `max_completion_tokens` nor `max_tokens`; defaults to 4096. */
  readonly maxTokensDefault?: number | undefined
  /** Extra headers on every request (e.g. `anthropic-beta`). */
  readonly headers?: Readonly<Record<string, string>> | undefined
  /** `gen_ai.provider.name` in traces and metrics; defaults to `"anthropic"`. */
  readonly provider?: string | undefined
}

/**
 * Builds an upstream for Anthropic's Messages API.
 *
 * **Details**
 *
 * - JSON: text blocks are joined into `content`, `tool_use` blocks become `tool_calls`; `stop_reason`
 *   maps `end_turn`/`stop_sequence` → `stop`, `max_tokens` → `length`, `tool_use` → `tool_calls`,
 *   `refusal` → `content_filter`; usage counts cache reads and writes as prompt tokens.
 * - Streaming: chunks flow as events arrive (`message_start` → role chunk, `text_delta` → content,
 *   `message_delta` → finish chunk with usage, `message_stop` → end; `ping` skipped; an `error`
 *   event fails with its mapped reason). A body that ends after `message_delta` but without
 *   `message_stop` is complete; one that ends before is cut (`MalformedOutput` or `ConnectionFailed`).
 * - Errors: 429 → `RateLimited` (hint from `Retry-After`, then `anthropic-ratelimit-*-reset`), 5xx
 *   and 529 → `Unavailable`, 401/403 → `Authentication`, "prompt is too long" →
 *   `ContextLengthExceeded`, content filtering → `ContentFiltered`, other 4xx → `BadRequest`.
 * - Tools are passed through best-effort (see `AnthropicMessages.toMessagesRequest`).
 *
 * **Example** (Claude)
 *
 * ```ts
 * import { Effect, Redacted } from "effect"
 * import { FetchHttpClient } from "effect/http"
 * import { Anthropic } from "@roadcar/core"
 *
 * const program = Effect.gen(function*() {
 *   const upstream = yield* Anthropic.make({
 *     name: "claude",
 *     model: "claude-sonnet-4-5",
 *     apiKey: Redacted.make(process.env.ANTHROPIC_API_KEY ?? "")
 *   })
 *   const answer = yield* upstream.complete({ model: "chat", messages: [{ role: "user", content: "Hi" }] })
 *   return answer.choices[0]?.finish_reason
 * })
 * await Effect.runPromise(program.pipe(Effect.provide(FetchHttpClient.layer))) // => "stop"
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = Effect.fnUntraced(function* (options: Options) {
  const client = yield* HttpClient.HttpClient
  const endpoint = Endpoint.resolve(options.baseUrl ?? "https://api.anthropic.com/v1", "/messages")
  if (endpoint === undefined) {
    return yield* Effect.die(new Error(`Anthropic.make(${options.name}): baseUrl is not an http(s) URL`))
  }
  const maxTokensDefault = options.maxTokensDefault ?? 4096
  const scrub = Errors.makeScrub([options.apiKey])
  const attributes = {
    "gen_ai.provider.name": options.provider ?? "anthropic",
    "gen_ai.request.model": options.model,
    "server.address": endpoint.server.address,
    "server.port": endpoint.server.port,
    "roadcar.upstream": options.name
  }

  const base = HttpClientRequest.post(endpoint.url).pipe(
    HttpClientRequest.setHeaders(options.headers ?? {}),
    HttpClientRequest.setHeaders({
      "x-api-key": Redacted.value(options.apiKey),
      "anthropic-version": options.version ?? "2023-06-01"
    })
  )
  const httpRequest = (request: ChatCompletion.ChatRequest, stream: boolean) =>
    base.pipe(
      HttpClientRequest.accept(stream ? "text/event-stream" : "application/json"),
      HttpClientRequest.bodyJsonUnsafe(
        AnthropicMessages.toMessagesRequest(request, { model: options.model, maxTokensDefault, stream })
      )
    )

  const decodeMessage = (text: string, now: number): Result.Result<ChatCompletion.ChatResponse, UpstreamError.Reason> =>
    Result.flatMap(Exchange.parseJson(text, "the response body"), (json) =>
      Result.map(Exchange.decodeJson(AnthropicMessages.MessageResponse, json, "the response body"), (message) =>
        AnthropicMessages.toChatResponse(message, { model: options.model, now })
      )
    )

  const { complete, stream } = Exchange.makeCalls({
    spanName: "Anthropic",
    attributes,
    upstream: options.name,
    client,
    scrub,
    httpRequest,
    decodeResponse: decodeMessage,
    chunkDecoder: (now) => AnthropicMessages.makeEventDecoder({ model: options.model, now }, scrub)()
  })

  const upstream: Upstream = {
    name: options.name,
    provider: options.provider ?? "anthropic",
    model: options.model,
    server: endpoint.server,
    complete,
    stream
  }
  return upstream
})
