import { assert, describe, it } from "@effect/vitest"
import { Behaviour, FakeUpstream } from "@roadcar/testing"
import { Cause, Duration, Effect, Redacted, Stream } from "effect"
import { FetchHttpClient, HttpClient } from "effect/http"
import * as Anthropic from "../../src/providers/Anthropic.ts"
import * as AnthropicMessages from "../../src/providers/AnthropicMessages.ts"
import type * as UpstreamError from "../../src/UpstreamError.ts"
import {
  assertNoSecret,
  chatRequest,
  event,
  failure,
  json,
  rawServer,
  recordingTracer,
  spanTexts,
  sse,
  streamedText,
  streamFailure
} from "./utils.ts"

const secret = "sk-ant-SECRET-77c1d2e3f4"

const upstream = (url: string, options: Partial<Anthropic.Options> = {}) =>
  Anthropic.make({
    name: "claude",
    baseUrl: `${url}/v1`,
    model: "claude-upstream",
    apiKey: Redacted.make(secret),
    ...options
  })

const withHttp = <A, E, R>(effect: Effect.Effect<A, E, R>) => effect.pipe(Effect.provide(FetchHttpClient.layer))

const bothFailures = (behaviour: Behaviour.Behaviour) =>
  Effect.gen(function* () {
    const server = yield* FakeUpstream.make({ behaviour })
    const provider = yield* upstream(server.url)
    const json = yield* failure(provider.complete(chatRequest()))
    const streamed = yield* streamFailure(provider.stream(chatRequest()))
    return [json, streamed.error] as const
  })

const messageStart = event("message_start", {
  type: "message_start",
  message: {
    id: "msg_raw",
    type: "message",
    role: "assistant",
    model: "claude-upstream-2025",
    content: [],
    stop_reason: null,
    usage: { input_tokens: 12, output_tokens: 1, cache_read_input_tokens: 3 }
  }
})
const textDelta = (text: string) =>
  event("content_block_delta", { type: "content_block_delta", index: 0, delta: { type: "text_delta", text } })
const messageDelta = (stopReason: string) =>
  event("message_delta", { type: "message_delta", delta: { stop_reason: stopReason }, usage: { output_tokens: 9 } })

describe("Anthropic", () => {
  describe("toMessagesRequest", () => {
    it.live("moves system messages, merges turns, maps sampling fields and requires max_tokens", () =>
      Effect.sync(() => {
        const body = AnthropicMessages.toMessagesRequest(
          {
            model: "public",
            messages: [
              { role: "system", content: "Be brief." },
              { role: "developer", content: [{ type: "text", text: "Use English." }] },
              { role: "user", content: "Hi" },
              { role: "user", content: [{ type: "image_url", image_url: { url: "data:image/png;base64,AAAA" } }] },
              { role: "assistant", content: "Hello" }
            ],
            temperature: 1.4,
            top_p: 0.9,
            stop: "END",
            user: "u-1",
            seed: 3
          },
          { model: "claude-up", maxTokensDefault: 1024, stream: false }
        )
        assert.deepStrictEqual(body, {
          model: "claude-up",
          max_tokens: 1024,
          system: "Be brief.\n\nUse English.",
          messages: [
            {
              role: "user",
              content: [
                { type: "text", text: "Hi" },
                { type: "image", source: { type: "base64", media_type: "image/png", data: "AAAA" } }
              ]
            },
            { role: "assistant", content: [{ type: "text", text: "Hello" }] }
          ],
          temperature: 1,
          top_p: 0.9,
          stop_sequences: ["END"],
          metadata: { user_id: "u-1" }
        })
        const streamed = AnthropicMessages.toMessagesRequest(chatRequest("x", { max_tokens: 50, stop: ["a", "b"] }), {
          model: "m",
          maxTokensDefault: 4096,
          stream: true
        })
        assert.strictEqual(streamed["max_tokens"], 50)
        assert.deepStrictEqual(streamed["stop_sequences"], ["a", "b"])
        assert.strictEqual(streamed["stream"], true)
      })
    )

    it.live("translates tools, tool calls and tool results", () =>
      Effect.sync(() => {
        const body = AnthropicMessages.toMessagesRequest(
          {
            model: "public",
            messages: [
              { role: "user", content: "Weather in Paris?" },
              {
                role: "assistant",
                content: null,
                tool_calls: [
                  { id: "call_1", type: "function", function: { name: "weather", arguments: '{"city":"Paris"}' } }
                ]
              },
              { role: "tool", tool_call_id: "call_1", content: "18C" }
            ],
            tools: [
              {
                type: "function",
                function: { name: "weather", description: "Weather", parameters: { type: "object" } }
              }
            ],
            tool_choice: "required",
            parallel_tool_calls: false
          },
          { model: "m", maxTokensDefault: 10, stream: false }
        )
        assert.deepStrictEqual(body["messages"], [
          { role: "user", content: [{ type: "text", text: "Weather in Paris?" }] },
          {
            role: "assistant",
            content: [{ type: "tool_use", id: "call_1", name: "weather", input: { city: "Paris" } }]
          },
          { role: "user", content: [{ type: "tool_result", tool_use_id: "call_1", content: "18C" }] }
        ])
        assert.deepStrictEqual(body["tools"], [
          { name: "weather", description: "Weather", input_schema: { type: "object" } }
        ])
        assert.deepStrictEqual(body["tool_choice"], { type: "any", disable_parallel_tool_use: true })
      })
    )

    it.live("maps stop reasons", () =>
      Effect.sync(() => {
        assert.strictEqual(AnthropicMessages.finishReason("end_turn"), "stop")
        assert.strictEqual(AnthropicMessages.finishReason("stop_sequence"), "stop")
        assert.strictEqual(AnthropicMessages.finishReason("max_tokens"), "length")
        assert.strictEqual(AnthropicMessages.finishReason("tool_use"), "tool_calls")
        assert.strictEqual(AnthropicMessages.finishReason("refusal"), "content_filter")
        assert.strictEqual(AnthropicMessages.finishReason(null), null)
      })
    )
  })

  describe("complete", () => {
    it.live("answers with text, usage and model, sending a Messages body with x-api-key", () =>
      withHttp(
        Effect.gen(function* () {
          const server = yield* FakeUpstream.make({ behaviour: Behaviour.ok() })
          const provider = yield* upstream(server.url)
          assert.strictEqual(provider.provider, "anthropic")
          const request = chatRequest("hello there", {
            messages: [
              { role: "system", content: "You are terse." },
              { role: "user", content: "hello there" }
            ]
          })
          const response = yield* provider.complete(request)
          assert.strictEqual(response.choices[0]?.message.content, "echo: hello there")
          assert.strictEqual(response.choices[0]?.finish_reason, "stop")
          assert.strictEqual(response.model, "claude-upstream")
          assert.isAbove(response.usage.prompt_tokens, 0)
          assert.isAbove(response.usage.completion_tokens, 0)
          const [attempt] = yield* server.attempts
          assert.strictEqual(attempt?.path, "/v1/messages")
          assert.strictEqual(attempt?.wire, "anthropic")
          assert.strictEqual(attempt?.headers["x-api-key"], "[redacted]")
          assert.strictEqual(attempt?.headers["anthropic-version"], "2023-06-01")
          assert.isUndefined(attempt?.headers["authorization"])
          assert.deepStrictEqual(attempt?.body, {
            model: "claude-upstream",
            max_tokens: 4096,
            system: "You are terse.",
            messages: [{ role: "user", content: [{ type: "text", text: "hello there" }] }]
          })
        })
      )
    )

    it.live("sends the configured key, version and max_tokens; converts thinking, text and tool_use blocks", () =>
      withHttp(
        Effect.gen(function* () {
          const server = yield* rawServer(
            json(200, {
              id: "msg_1",
              type: "message",
              role: "assistant",
              model: "claude-upstream-2025",
              content: [
                { type: "thinking", thinking: "hmm" },
                { type: "text", text: "Let me check." },
                { type: "tool_use", id: "toolu_1", name: "weather", input: { city: "Paris" } }
              ],
              stop_reason: "tool_use",
              usage: { input_tokens: 10, output_tokens: 5, cache_creation_input_tokens: 2, cache_read_input_tokens: 3 }
            })
          )
          const provider = yield* upstream(server.url, { version: "2024-01-01", maxTokensDefault: 256 })
          const response = yield* provider.complete(chatRequest())
          const [request] = server.requests
          assert.strictEqual(request?.headers["x-api-key"], secret)
          assert.strictEqual(request?.headers["anthropic-version"], "2024-01-01")
          assert.strictEqual(JSON.parse(request?.body ?? "{}").max_tokens, 256)
          const choice = response.choices[0]
          assert.strictEqual(choice?.finish_reason, "tool_calls")
          assert.strictEqual(choice?.message.content, "Let me check.")
          assert.deepStrictEqual(choice?.message.tool_calls, [
            { id: "toolu_1", type: "function", function: { name: "weather", arguments: '{"city":"Paris"}' } }
          ])
          assert.deepStrictEqual(response.usage, { prompt_tokens: 15, completion_tokens: 5, total_tokens: 20 })
          assert.strictEqual(response.model, "claude-upstream-2025")
        })
      )
    )

    it.live("fails with MalformedOutput on invalid JSON and on a body that is not a message", () =>
      withHttp(
        Effect.gen(function* () {
          const [invalid] = yield* bothFailures(Behaviour.malformedJson())
          assert.strictEqual(invalid.reason._tag, "MalformedOutput")
          const server = yield* rawServer(json(200, { type: "message", content: "not blocks" }))
          const provider = yield* upstream(server.url)
          const shapeless = yield* failure(provider.complete(chatRequest()))
          assert.strictEqual(shapeless.reason._tag, "MalformedOutput")
        })
      )
    )
  })

  describe("stream", () => {
    it.live("streams a role chunk, text in order, then the finish chunk with usage", () =>
      withHttp(
        Effect.gen(function* () {
          const server = yield* FakeUpstream.make({ behaviour: Behaviour.ok({ text: "one two three four five" }) })
          const provider = yield* upstream(server.url)
          const chunks = yield* Stream.runCollect(provider.stream(chatRequest("hi")))
          assert.strictEqual(chunks[0]?.choices[0]?.delta.role, "assistant")
          assert.strictEqual(streamedText(chunks), "one two three four five")
          const last = chunks[chunks.length - 1]
          assert.strictEqual(last?.choices[0]?.finish_reason, "stop")
          assert.isAbove(last?.usage?.prompt_tokens ?? 0, 0)
          assert.isAbove(last?.usage?.completion_tokens ?? 0, 0)
          assert.isTrue(chunks.slice(0, -1).every((c) => c.usage === undefined && c.choices[0]?.finish_reason === null))
          assert.isTrue(chunks.every((c) => c.id === chunks[0]?.id && c.object === "chat.completion.chunk"))
          const [attempt] = yield* server.attempts
          const body = attempt?.body as Record<string, unknown>
          assert.strictEqual(body["stream"], true)
          assert.strictEqual(body["model"], "claude-upstream")
        })
      )
    )

    it.live("reads ping, tool use, unknown events and usage from message_start and message_delta", () =>
      withHttp(
        Effect.gen(function* () {
          const server = yield* rawServer(
            sse([
              messageStart,
              event("ping", { type: "ping" }),
              event("content_block_start", {
                type: "content_block_start",
                index: 0,
                content_block: { type: "text", text: "" }
              }),
              textDelta("Checking"),
              event("content_block_stop", { type: "content_block_stop", index: 0 }),
              event("content_block_start", {
                type: "content_block_start",
                index: 1,
                content_block: { type: "tool_use", id: "toolu_9", name: "weather", input: {} }
              }),
              event("content_block_delta", {
                type: "content_block_delta",
                index: 1,
                delta: { type: "input_json_delta", partial_json: '{"city":' }
              }),
              event("content_block_delta", {
                type: "content_block_delta",
                index: 1,
                delta: { type: "input_json_delta", partial_json: '"Paris"}' }
              }),
              event("future_event", { type: "future_event" }),
              messageDelta("tool_use"),
              event("message_stop", { type: "message_stop" })
            ])
          )
          const provider = yield* upstream(server.url)
          const chunks = yield* Stream.runCollect(provider.stream(chatRequest()))
          assert.strictEqual(streamedText(chunks), "Checking")
          const calls = chunks.flatMap((c) => c.choices[0]?.delta.tool_calls ?? [])
          assert.deepStrictEqual(calls, [
            { index: 0, id: "toolu_9", type: "function", function: { name: "weather", arguments: "" } },
            { index: 0, function: { arguments: '{"city":' } },
            { index: 0, function: { arguments: '"Paris"}' } }
          ])
          const last = chunks[chunks.length - 1]
          assert.strictEqual(last?.choices[0]?.finish_reason, "tool_calls")
          assert.deepStrictEqual(last?.usage, { prompt_tokens: 15, completion_tokens: 9, total_tokens: 24 })
          assert.isTrue(chunks.every((c) => c.id === "msg_raw" && c.model === "claude-upstream-2025"))
        })
      )
    )

    it.live("maps refusal and max_tokens stop reasons in a stream", () =>
      withHttp(
        Effect.gen(function* () {
          for (const [stopReason, finish] of [
            ["refusal", "content_filter"],
            ["max_tokens", "length"]
          ] as const) {
            const server = yield* rawServer(sse([messageStart, textDelta("x"), messageDelta(stopReason)]))
            const provider = yield* upstream(server.url)
            const chunks = yield* Stream.runCollect(provider.stream(chatRequest()))
            assert.strictEqual(chunks[chunks.length - 1]?.choices[0]?.finish_reason, finish)
          }
        })
      )
    )

    it.live("completes a stream with message_delta but no message_stop", () =>
      withHttp(
        Effect.gen(function* () {
          const server = yield* FakeUpstream.make({ behaviour: Behaviour.noDone() })
          const provider = yield* upstream(server.url)
          const chunks = yield* Stream.runCollect(provider.stream(chatRequest("hello there")))
          assert.strictEqual(streamedText(chunks), "echo: hello there")
          assert.strictEqual(chunks[chunks.length - 1]?.choices[0]?.finish_reason, "stop")
        })
      )
    )

    it.live("fails a cut stream, never succeeding", () =>
      withHttp(
        Effect.gen(function* () {
          const server = yield* FakeUpstream.make({ behaviour: Behaviour.cutAfter(1) })
          const provider = yield* upstream(server.url)
          const { chunks, error } = yield* streamFailure(provider.stream(chatRequest("a b c d e f g h")))
          assert.include(["MalformedOutput", "ConnectionFailed"], error.reason._tag)
          assert.isFalse(chunks.some((c) => c.choices[0]?.finish_reason !== null))
          const clean = yield* rawServer(sse([messageStart, textDelta("Hel")]))
          const cleanProvider = yield* upstream(clean.url)
          const cut = yield* streamFailure(cleanProvider.stream(chatRequest()))
          assert.strictEqual(streamedText(cut.chunks), "Hel")
          assert.strictEqual(cut.error.reason._tag, "MalformedOutput")
          assert.strictEqual(
            (cut.error.reason as UpstreamError.MalformedOutput).detail,
            "stream ended before the answer finished"
          )
        })
      )
    )

    it.live("fails with MalformedOutput on a malformed event", () =>
      withHttp(
        Effect.gen(function* () {
          const server = yield* FakeUpstream.make({ behaviour: Behaviour.malformedChunk(1) })
          const provider = yield* upstream(server.url)
          const { error } = yield* streamFailure(provider.stream(chatRequest("a b c d e f")))
          assert.strictEqual(error.reason._tag, "MalformedOutput")
          const shapeless = yield* rawServer(
            sse([
              messageStart,
              event("content_block_delta", { type: "content_block_delta", delta: { type: "text_delta" } })
            ])
          )
          const shapelessProvider = yield* upstream(shapeless.url)
          const missingText = yield* streamFailure(shapelessProvider.stream(chatRequest()))
          assert.strictEqual(missingText.error.reason._tag, "MalformedOutput")
        })
      )
    )

    it.live("maps an error event: overloaded is Unavailable(529)", () =>
      withHttp(
        Effect.gen(function* () {
          const server = yield* rawServer(
            sse([
              messageStart,
              textDelta("par"),
              event("error", { type: "error", error: { type: "overloaded_error", message: "Overloaded" } })
            ])
          )
          const provider = yield* upstream(server.url)
          const { chunks, error } = yield* streamFailure(provider.stream(chatRequest()))
          assert.strictEqual(streamedText(chunks), "par")
          assert.strictEqual(error.reason._tag, "Unavailable")
          assert.strictEqual((error.reason as UpstreamError.Unavailable).status, 529)
          assert.isTrue(error.isRetryable)
        })
      )
    )

    it.live("maps an error event that ends the body without its closing blank line", () =>
      withHttp(
        Effect.gen(function* () {
          const overloaded = event("error", {
            type: "error",
            error: { type: "overloaded_error", message: "Overloaded" }
          })
          const server = yield* rawServer(sse([messageStart, textDelta("par"), overloaded.slice(0, -2)]))
          const provider = yield* upstream(server.url)
          const { chunks, error } = yield* streamFailure(provider.stream(chatRequest()))
          assert.strictEqual(streamedText(chunks), "par")
          assert.strictEqual(error.reason._tag, "Unavailable")
        })
      )
    )
  })

  describe("errors", () => {
    it.live("has no timeout of its own: an outer timeout interrupts a hanging call and a stalled stream", () =>
      withHttp(
        Effect.gen(function* () {
          const server = yield* FakeUpstream.make({ behaviour: Behaviour.hang() })
          const provider = yield* upstream(server.url)
          const hung = yield* provider.complete(chatRequest()).pipe(Effect.timeout("60 millis"), Effect.flip)
          assert.isTrue(Cause.isTimeoutError(hung))
          yield* server.setBehaviour(Behaviour.stallAfter(1))
          const received: Array<unknown> = []
          const stalled = yield* provider.stream(chatRequest("a b c d e f")).pipe(
            Stream.runForEach((chunk) => Effect.sync(() => received.push(chunk))),
            Effect.timeout("150 millis"),
            Effect.flip
          )
          assert.isTrue(Cause.isTimeoutError(stalled))
          assert.isAbove(received.length, 0)
        })
      )
    )

    it.live("429 is RateLimited with Retry-After", () =>
      withHttp(
        Effect.gen(function* () {
          const [json, streamed] = yield* bothFailures(Behaviour.rateLimited({ retryAfterSeconds: 3 }))
          for (const error of [json, streamed]) {
            assert.strictEqual(error.reason._tag, "RateLimited")
            assert.strictEqual(Duration.toMillis(error.retryAfter ?? Duration.zero), 3000)
          }
        })
      )
    )

    it.live("429 without Retry-After reads anthropic-ratelimit-*-reset (RFC 3339)", () =>
      withHttp(
        Effect.gen(function* () {
          const reset = new Date(Date.now() + 20_000).toISOString()
          const later = new Date(Date.now() + 50_000).toISOString()
          const server = yield* rawServer(
            json(
              429,
              { type: "error", error: { type: "rate_limit_error", message: "Too many requests" } },
              {
                "anthropic-ratelimit-requests-remaining": "0",
                "anthropic-ratelimit-requests-reset": reset,
                "anthropic-ratelimit-tokens-remaining": "5000",
                "anthropic-ratelimit-tokens-reset": later
              }
            )
          )
          const provider = yield* upstream(server.url)
          const error = yield* failure(provider.complete(chatRequest()))
          assert.strictEqual(error.reason._tag, "RateLimited")
          const wait = Duration.toMillis(error.retryAfter ?? Duration.zero)
          assert.isAbove(wait, 15_000)
          assert.isAtMost(wait, 20_000)
        })
      )
    )

    it.live("529 overloaded and 5xx are Unavailable, with Retry-After when given", () =>
      withHttp(
        Effect.gen(function* () {
          const [overloaded, overloadedStream] = yield* bothFailures(Behaviour.status(529, { retryAfterSeconds: 4 }))
          for (const error of [overloaded, overloadedStream]) {
            assert.strictEqual(error.reason._tag, "Unavailable")
            assert.strictEqual((error.reason as UpstreamError.Unavailable).status, 529)
            assert.strictEqual(Duration.toMillis(error.retryAfter ?? Duration.zero), 4000)
          }
          const [server] = yield* bothFailures(Behaviour.status(500))
          assert.strictEqual(server.reason._tag, "Unavailable")
        })
      )
    )

    it.live("401/403 are Authentication, prompt too long is ContextLengthExceeded, filtering is ContentFiltered", () =>
      withHttp(
        Effect.gen(function* () {
          for (const status of [401, 403]) {
            const [json, streamed] = yield* bothFailures(Behaviour.status(status))
            assert.strictEqual(json.reason._tag, "Authentication")
            assert.strictEqual(streamed.reason._tag, "Authentication")
          }
          const [context, contextStream] = yield* bothFailures(Behaviour.contextLengthExceeded())
          assert.strictEqual(context.reason._tag, "ContextLengthExceeded")
          assert.strictEqual(contextStream.reason._tag, "ContextLengthExceeded")
          const [filtered, filteredStream] = yield* bothFailures(Behaviour.contentFiltered())
          assert.strictEqual(filtered.reason._tag, "ContentFiltered")
          assert.strictEqual(filteredStream.reason._tag, "ContentFiltered")
        })
      )
    )

    it.live("other 4xx are BadRequest with the upstream's message; a reset is ConnectionFailed", () =>
      withHttp(
        Effect.gen(function* () {
          const [bad] = yield* bothFailures(Behaviour.status(400, { message: "messages: roles must alternate" }))
          assert.strictEqual(bad.reason._tag, "BadRequest")
          assert.include((bad.reason as UpstreamError.BadRequest).detail, "roles must alternate")
          const [reset, resetStream] = yield* bothFailures(Behaviour.reset())
          assert.strictEqual(reset.reason._tag, "ConnectionFailed")
          assert.strictEqual(resetStream.reason._tag, "ConnectionFailed")
        })
      )
    )

    it.live("names its spans and keeps the key out of every span, headers captured or not", () =>
      withHttp(
        Effect.gen(function* () {
          const server = yield* FakeUpstream.make({ behaviour: Behaviour.ok() })
          const provider = yield* upstream(server.url)
          const { tracer, spans } = recordingTracer()
          yield* Effect.gen(function* () {
            yield* provider.complete(chatRequest())
            yield* Stream.runDrain(provider.stream(chatRequest()))
            yield* server.setBehaviour(Behaviour.status(401))
            yield* Effect.exit(provider.complete(chatRequest()))
          }).pipe(
            Effect.withTracer(tracer),
            Effect.provideService(HttpClient.TracerHeaderFilter, () => true)
          )
          const names = spans.map((span) => span.name)
          assert.include(names, "Anthropic.complete")
          assert.include(names, "Anthropic.stream")
          const complete = spans.find((span) => span.name === "Anthropic.complete")
          assert.strictEqual(complete?.attributes.get("roadcar.upstream"), "claude")
          assert.isTrue(
            spans.some((span) => [...span.attributes.keys()].some((key) => key.startsWith("http.request.header")))
          )
          for (const text of spanTexts(spans)) assert.notInclude(text, secret)
        })
      )
    )

    it.live("never shows the API key, even when the upstream echoes it", () =>
      withHttp(
        Effect.gen(function* () {
          const errors: Array<UpstreamError.UpstreamError> = []
          for (const behaviour of [
            Behaviour.status(401),
            Behaviour.status(529),
            Behaviour.rateLimited(),
            Behaviour.reset(),
            Behaviour.cutAfter(1),
            Behaviour.malformedChunk(0),
            Behaviour.contentFiltered()
          ]) {
            errors.push(...(yield* bothFailures(behaviour)))
          }
          const echo = yield* rawServer(
            json(401, {
              type: "error",
              error: { type: "authentication_error", message: `invalid x-api-key ${secret}` }
            })
          )
          const provider = yield* upstream(echo.url)
          errors.push(yield* failure(provider.complete(chatRequest())))
          const echoStream = yield* rawServer(
            sse([
              messageStart,
              event("error", { type: "error", error: { type: "api_error", message: `key ${secret}` } })
            ])
          )
          const streamProvider = yield* upstream(echoStream.url)
          const streamed = yield* streamFailure(streamProvider.stream(chatRequest()))
          assert.include((streamed.error.reason as UpstreamError.Unavailable).detail ?? "", "<redacted>")
          errors.push(streamed.error)
          for (const error of errors) assertNoSecret(error, secret)
        })
      )
    )
  })
})
