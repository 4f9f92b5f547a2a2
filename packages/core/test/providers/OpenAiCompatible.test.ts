import { assert, describe, it } from "@effect/vitest"
import { Behaviour, FakeUpstream } from "@roadcar/testing"
import { Cause, Duration, Effect, Exit, Fiber, Redacted, Stream } from "effect"
import { FetchHttpClient, HttpClient } from "effect/http"
import type * as ChatCompletion from "../../src/ChatCompletion.ts"
import * as OpenAiCompatible from "../../src/providers/OpenAiCompatible.ts"
import type * as UpstreamError from "../../src/UpstreamError.ts"
import {
  assertNoSecret,
  chatRequest,
  data,
  failure,
  json,
  rawServer,
  recordingTracer,
  spanTexts,
  sse,
  streamedText,
  streamFailure
} from "./utils.ts"

const secret = "sk-test-SECRET-4f9a2c71e0"

const upstream = (url: string, options: Partial<OpenAiCompatible.Options> = {}) =>
  OpenAiCompatible.make({
    name: "primary",
    baseUrl: `${url}/v1`,
    model: "gpt-upstream",
    apiKey: Redacted.make(secret),
    ...options
  })

const withHttp = <A, E, R>(effect: Effect.Effect<A, E, R>) => effect.pipe(Effect.provide(FetchHttpClient.layer))

const fake = (behaviour: Behaviour.Behaviour) => FakeUpstream.make({ behaviour })

/** Both calls of the upstream against one behaviour: the JSON call's and the stream's failures. */
const bothFailures = (behaviour: Behaviour.Behaviour) =>
  Effect.gen(function* () {
    const server = yield* fake(behaviour)
    const provider = yield* upstream(server.url)
    const json = yield* failure(provider.complete(chatRequest()))
    const streamed = yield* streamFailure(provider.stream(chatRequest()))
    return [json, streamed.error] as const
  })

const chunk = (
  delta: Record<string, unknown>,
  finish: string | null = null,
  extra: Record<string, unknown> = {}
): Record<string, unknown> => ({
  id: "chatcmpl-raw",
  object: "chat.completion.chunk",
  created: 1700000000,
  model: "gpt-upstream-2024",
  choices: [{ index: 0, delta, finish_reason: finish }],
  ...extra
})

const usageChunk = {
  id: "chatcmpl-raw",
  object: "chat.completion.chunk",
  created: 1700000000,
  model: "gpt-upstream-2024",
  choices: [],
  usage: { prompt_tokens: 7, completion_tokens: 3, total_tokens: 10 }
}

describe("OpenAiCompatible", () => {
  describe("make", () => {
    it.live("describes the upstream", () =>
      withHttp(
        Effect.gen(function* () {
          const provider = yield* upstream("http://127.0.0.1:8123", { provider: "ollama" })
          assert.strictEqual(provider.name, "primary")
          assert.strictEqual(provider.provider, "ollama")
          assert.strictEqual(provider.model, "gpt-upstream")
          assert.deepStrictEqual(provider.server, { address: "127.0.0.1", port: 8123 })
          const openai = yield* upstream("http://127.0.0.1:8123")
          assert.strictEqual(openai.provider, "openai")
        })
      )
    )

    it.live("dies on a baseUrl that is not an http(s) URL (a configuration bug)", () =>
      withHttp(
        Effect.gen(function* () {
          const exit = yield* Effect.exit(upstream("").pipe(Effect.asVoid))
          assert.isTrue(Exit.isFailure(exit) && Cause.hasDies(exit.cause))
          const ftp = yield* Effect.exit(OpenAiCompatible.make({ name: "x", baseUrl: "ftp://host/v1", model: "m" }))
          assert.isTrue(Exit.isFailure(ftp) && Cause.hasDies(ftp.cause))
        })
      )
    )

    it.live("builds the body sent upstream", () =>
      Effect.sync(() => {
        const request = chatRequest("hi", { stream: true, stream_options: { foo: 1 }, temperature: 0.3 })
        assert.deepStrictEqual(OpenAiCompatible.requestBody(request, "m-up", false), {
          model: "m-up",
          messages: request.messages,
          temperature: 0.3
        })
        assert.deepStrictEqual(OpenAiCompatible.requestBody(request, "m-up", true), {
          model: "m-up",
          messages: request.messages,
          temperature: 0.3,
          stream: true,
          stream_options: { foo: 1, include_usage: true }
        })
      })
    )

    it.live("maps finish reasons from other servers", () =>
      Effect.sync(() => {
        assert.strictEqual(OpenAiCompatible.finishReason("stop"), "stop")
        assert.strictEqual(OpenAiCompatible.finishReason("tool_calls"), "tool_calls")
        assert.strictEqual(OpenAiCompatible.finishReason("max_tokens"), "length")
        assert.strictEqual(OpenAiCompatible.finishReason("eos"), "stop")
        assert.strictEqual(OpenAiCompatible.finishReason(""), null)
        assert.strictEqual(OpenAiCompatible.finishReason(null), null)
      })
    )
  })

  describe("complete", () => {
    it.live("answers with text, usage and the upstream model, sending the upstream model", () =>
      withHttp(
        Effect.gen(function* () {
          const server = yield* fake(Behaviour.ok())
          const provider = yield* upstream(server.url)
          const response = yield* provider.complete(chatRequest("hello there", { stream: true }))
          assert.strictEqual(response.object, "chat.completion")
          assert.strictEqual(response.model, "gpt-upstream")
          assert.strictEqual(response.choices[0]?.message.content, "echo: hello there")
          assert.strictEqual(response.choices[0]?.finish_reason, "stop")
          assert.isAbove(response.usage.prompt_tokens, 0)
          assert.isAbove(response.usage.completion_tokens, 0)
          assert.strictEqual(
            response.usage.total_tokens,
            response.usage.prompt_tokens + response.usage.completion_tokens
          )
          const [attempt] = yield* server.attempts
          assert.strictEqual(attempt?.path, "/v1/chat/completions")
          assert.strictEqual(attempt?.model, "gpt-upstream")
          assert.strictEqual(attempt?.stream, false)
          assert.strictEqual(attempt?.headers["authorization"], "[redacted]")
          const body = attempt?.body as Record<string, unknown>
          assert.isFalse("stream" in body)
          assert.isFalse("stream_options" in body)
        })
      )
    )

    it.live("sends the bearer token and custom headers, and no authorization without a key", () =>
      withHttp(
        Effect.gen(function* () {
          const answer = {
            id: "x",
            object: "chat.completion",
            created: 1,
            model: "m",
            choices: [{ index: 0, message: { role: "assistant", content: "hi" }, finish_reason: "stop" }],
            usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 }
          }
          const server = yield* rawServer(json(200, answer))
          const keyed = yield* upstream(server.url, { headers: { "x-title": "roadcar" } })
          yield* keyed.complete(chatRequest())
          const anonymous = yield* upstream(server.url, { apiKey: undefined })
          yield* anonymous.complete(chatRequest())
          const [first, second] = server.requests
          assert.strictEqual(first?.headers["authorization"], `Bearer ${secret}`)
          assert.strictEqual(first?.headers["x-title"], "roadcar")
          assert.strictEqual(first?.headers["content-type"], "application/json")
          assert.strictEqual(second?.headers["authorization"], undefined)
          assert.strictEqual(JSON.parse(second?.body ?? "{}").model, "gpt-upstream")
        })
      )
    )

    it.live("reads lenient answers from local servers (no id, no usage, odd finish reason)", () =>
      withHttp(
        Effect.gen(function* () {
          const server = yield* rawServer(
            json(200, { choices: [{ message: { content: [{ type: "text", text: "local" }] }, finish_reason: "eos" }] })
          )
          const provider = yield* upstream(server.url)
          const response = yield* provider.complete(chatRequest())
          assert.strictEqual(response.model, "gpt-upstream")
          assert.strictEqual(response.choices[0]?.message.content, "local")
          assert.strictEqual(response.choices[0]?.finish_reason, "stop")
          assert.deepStrictEqual(response.usage, { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 })
          assert.isTrue(response.id.length > 0)
        })
      )
    )

    it.live("fails with MalformedOutput on invalid JSON and on a body without choices", () =>
      withHttp(
        Effect.gen(function* () {
          const [invalid] = yield* bothFailures(Behaviour.malformedJson())
          assert.strictEqual(invalid.reason._tag, "MalformedOutput")
          assert.isTrue(invalid.isRetryable)
          const server = yield* rawServer(json(200, { object: "chat.completion", choices: [] }))
          const provider = yield* upstream(server.url)
          const shapeless = yield* failure(provider.complete(chatRequest()))
          assert.strictEqual(shapeless.reason._tag, "MalformedOutput")
          assert.strictEqual(shapeless.upstream, "primary")
        })
      )
    )

    it.live("maps an error reported in a 200 body", () =>
      withHttp(
        Effect.gen(function* () {
          const server = yield* rawServer(json(200, { error: { message: "Provider returned error", code: 502 } }))
          const provider = yield* upstream(server.url)
          const error = yield* failure(provider.complete(chatRequest()))
          assert.strictEqual(error.reason._tag, "Unavailable")
          assert.strictEqual((error.reason as UpstreamError.Unavailable).status, 502)
        })
      )
    )
  })

  describe("stream", () => {
    it.live("streams chunks in order, usage on the last, sending stream and include_usage", () =>
      withHttp(
        Effect.gen(function* () {
          const server = yield* fake(Behaviour.ok({ text: "one two three four five" }))
          const provider = yield* upstream(server.url)
          const chunks = yield* Stream.runCollect(provider.stream(chatRequest("hi")))
          assert.isAbove(chunks.length, 3)
          assert.strictEqual(chunks[0]?.choices[0]?.delta.role, "assistant")
          assert.strictEqual(streamedText(chunks), "one two three four five")
          assert.strictEqual(chunks.filter((c) => c.choices[0]?.finish_reason === "stop").length, 1)
          const last = chunks[chunks.length - 1]
          assert.isDefined(last?.usage)
          assert.isAbove(last?.usage?.completion_tokens ?? 0, 0)
          for (const c of chunks.slice(0, -1)) assert.isTrue(c.usage === undefined || c.usage === null)
          assert.isTrue(chunks.every((c) => c.model === "gpt-upstream" && c.object === "chat.completion.chunk"))
          const [attempt] = yield* server.attempts
          const body = attempt?.body as Record<string, unknown>
          assert.strictEqual(body["model"], "gpt-upstream")
          assert.strictEqual(body["stream"], true)
          assert.deepStrictEqual(body["stream_options"], { include_usage: true })
          assert.strictEqual(attempt?.headers["authorization"], "[redacted]")
        })
      )
    )

    it.live("completes a stream that has its finish reason but no [DONE]", () =>
      withHttp(
        Effect.gen(function* () {
          const server = yield* fake(Behaviour.noDone())
          const provider = yield* upstream(server.url)
          const chunks = yield* Stream.runCollect(provider.stream(chatRequest("hello there")))
          assert.strictEqual(streamedText(chunks), "echo: hello there")
          assert.isDefined(chunks[chunks.length - 1]?.usage)
        })
      )
    )

    it.live("fails a cut stream after emitting what arrived, never succeeding", () =>
      withHttp(
        Effect.gen(function* () {
          const server = yield* fake(Behaviour.cutAfter(1))
          const provider = yield* upstream(server.url)
          const { chunks, error } = yield* streamFailure(provider.stream(chatRequest("a b c d e f g h")))
          assert.include(["MalformedOutput", "ConnectionFailed"], error.reason._tag)
          assert.isTrue(error.isRetryable)
          assert.isFalse(chunks.some((c) => c.choices[0]?.finish_reason !== null && c.choices.length > 0))
        })
      )
    )

    it.live("fails as cut when the body ends cleanly before the finish reason", () =>
      withHttp(
        Effect.gen(function* () {
          const server = yield* rawServer(
            sse([data(chunk({ role: "assistant", content: "" })), data(chunk({ content: "Hel" }))])
          )
          const provider = yield* upstream(server.url)
          const { chunks, error } = yield* streamFailure(provider.stream(chatRequest()))
          assert.strictEqual(streamedText(chunks), "Hel")
          assert.strictEqual(error.reason._tag, "MalformedOutput")
          assert.strictEqual(
            (error.reason as UpstreamError.MalformedOutput).detail,
            "stream ended before the answer finished"
          )
        })
      )
    )

    it.live("fails with MalformedOutput on a malformed chunk", () =>
      withHttp(
        Effect.gen(function* () {
          const server = yield* fake(Behaviour.malformedChunk(1))
          const provider = yield* upstream(server.url)
          const { error } = yield* streamFailure(provider.stream(chatRequest("a b c d e f")))
          assert.strictEqual(error.reason._tag, "MalformedOutput")
          assert.include((error.reason as UpstreamError.MalformedOutput).detail, "not valid JSON")
        })
      )
    )

    it.live("reads SSE robustly: comments, CRLF, multi-line data, split writes, a trailing event", () =>
      withHttp(
        Effect.gen(function* () {
          const role = JSON.stringify(chunk({ role: "assistant", content: "" }))
          const hello = JSON.stringify(chunk({ content: "Hello" }), null, 2).split("\n")
          const finish = JSON.stringify(chunk({ content: " world" }, "stop"))
          const server = yield* rawServer(
            sse([
              ": keep-alive comment\r\n\r\n",
              `data: ${role}\r\n\r\n`,
              `${hello.map((line) => `data: ${line}`).join("\n")}\n\n`,
              "retry: 1000\n\n",
              `data: ${finish.slice(0, 20)}`,
              `${finish.slice(20)}\n\n`,
              `data: ${JSON.stringify(usageChunk)}`
            ])
          )
          const provider = yield* upstream(server.url)
          const chunks = yield* Stream.runCollect(provider.stream(chatRequest()))
          assert.strictEqual(streamedText(chunks), "Hello world")
          assert.strictEqual(chunks[chunks.length - 2]?.choices[0]?.finish_reason, "stop")
          assert.deepStrictEqual(chunks[chunks.length - 1]?.usage, usageChunk.usage)
          assert.strictEqual(chunks[0]?.model, "gpt-upstream-2024")
        })
      )
    )

    it.live("ends at [DONE] even when the upstream keeps the connection open", () =>
      withHttp(
        Effect.gen(function* () {
          const server = yield* rawServer(
            sse([data(chunk({ content: "done" }, "stop")), data(usageChunk), "data: [DONE]\n\n"], { end: false })
          )
          const provider = yield* upstream(server.url)
          const chunks = yield* Stream.runCollect(provider.stream(chatRequest())).pipe(Effect.timeout("2 seconds"))
          assert.strictEqual(streamedText(chunks), "done")
          assert.strictEqual(chunks.length, 2)
        })
      )
    )

    it.live("emits each chunk as it arrives (no buffering)", () =>
      withHttp(
        Effect.gen(function* () {
          let release: () => void = () => undefined
          const released = new Promise<void>((resolve) => {
            release = resolve
          })
          const server = yield* rawServer(async (_request, response) => {
            response.writeHead(200, { "content-type": "text/event-stream" })
            response.write(data(chunk({ content: "first" })))
            await released
            response.end(`${data(chunk({ content: " second" }, "stop"))}data: [DONE]\n\n`)
          })
          const provider = yield* upstream(server.url)
          const received: Array<ChatCompletion.ChatChunk> = []
          const fiber = yield* provider.stream(chatRequest()).pipe(
            Stream.runForEach((c) => Effect.sync(() => received.push(c))),
            Effect.forkChild
          )
          // The first chunk must reach us while the upstream still holds the rest back.
          yield* Effect.sleep("10 millis").pipe(
            Effect.repeat({ until: () => received.length > 0 }),
            Effect.timeout("2 seconds")
          )
          assert.strictEqual(streamedText(received), "first")
          release()
          yield* Fiber.join(fiber)
          assert.strictEqual(streamedText(received), "first second")
        })
      )
    )

    it.live("maps an error event in the stream, after the chunks that came with it", () =>
      withHttp(
        Effect.gen(function* () {
          const error = { message: "This model's maximum context length is 10 tokens", code: "context_length_exceeded" }
          // One write: the content chunk and the error arrive in the same TCP packet.
          const server = yield* rawServer(sse([data(chunk({ content: "par" })) + data({ error })]))
          const provider = yield* upstream(server.url)
          const { chunks, error: failed } = yield* streamFailure(provider.stream(chatRequest()))
          assert.strictEqual(streamedText(chunks), "par")
          assert.strictEqual(failed.reason._tag, "ContextLengthExceeded")
        })
      )
    )

    it.live("maps an error event that ends the body without its closing blank line", () =>
      withHttp(
        Effect.gen(function* () {
          const error = { message: "This model's maximum context length is 10 tokens", code: "context_length_exceeded" }
          for (const ending of ["\n", ""]) {
            const server = yield* rawServer(
              sse([data(chunk({ content: "par" })), `data: ${JSON.stringify({ error })}${ending}`])
            )
            const provider = yield* upstream(server.url)
            const { chunks, error: failed } = yield* streamFailure(provider.stream(chatRequest()))
            assert.strictEqual(streamedText(chunks), "par")
            assert.strictEqual(failed.reason._tag, "ContextLengthExceeded", JSON.stringify(ending))
          }
        })
      )
    )

    it.live("replays a JSON answer to a streaming request as chunks", () =>
      withHttp(
        Effect.gen(function* () {
          const server = yield* rawServer(
            json(200, {
              id: "j",
              created: 5,
              model: "m",
              choices: [{ index: 0, message: { role: "assistant", content: "as json" }, finish_reason: "length" }],
              usage: { prompt_tokens: 2, completion_tokens: 2, total_tokens: 4 }
            })
          )
          const provider = yield* upstream(server.url)
          const chunks = yield* Stream.runCollect(provider.stream(chatRequest()))
          assert.strictEqual(streamedText(chunks), "as json")
          assert.strictEqual(chunks[chunks.length - 1]?.choices[0]?.finish_reason, "length")
          assert.strictEqual(chunks[chunks.length - 1]?.usage?.total_tokens, 4)
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

    it.live("429 is RateLimited with Retry-After seconds or retry-after-ms", () =>
      withHttp(
        Effect.gen(function* () {
          const [json, streamed] = yield* bothFailures(Behaviour.rateLimited({ retryAfterSeconds: 2 }))
          for (const error of [json, streamed]) {
            assert.strictEqual(error.reason._tag, "RateLimited")
            assert.strictEqual(Duration.toMillis(error.retryAfter ?? Duration.zero), 2000)
          }
          const [ms] = yield* bothFailures(Behaviour.rateLimited({ retryAfterMs: 1500 }))
          assert.strictEqual(Duration.toMillis(ms.retryAfter ?? Duration.zero), 1500)
          const [none] = yield* bothFailures(Behaviour.rateLimited())
          assert.strictEqual(none.reason._tag, "RateLimited")
          assert.isUndefined(none.retryAfter)
        })
      )
    )

    it.live("429 reads Retry-After as an HTTP date", () =>
      withHttp(
        Effect.gen(function* () {
          const at = new Date(Math.ceil(Date.now() / 1000) * 1000 + 30_000)
          const server = yield* rawServer(
            json(
              429,
              { error: { message: "slow down", code: "rate_limit_exceeded" } },
              { "retry-after": at.toUTCString() }
            )
          )
          const provider = yield* upstream(server.url)
          const error = yield* failure(provider.complete(chatRequest()))
          assert.strictEqual(error.reason._tag, "RateLimited")
          const wait = Duration.toMillis(error.retryAfter ?? Duration.zero)
          assert.isAbove(wait, 25_000)
          assert.isAtMost(wait, 31_000)
        })
      )
    )

    it.live("429 without Retry-After reads x-ratelimit-reset-* (the exhausted limit first)", () =>
      withHttp(
        Effect.gen(function* () {
          const server = yield* rawServer(
            json(
              429,
              { error: { message: "Rate limit reached for tokens", code: "rate_limit_exceeded" } },
              {
                "x-ratelimit-remaining-requests": "12",
                "x-ratelimit-reset-requests": "6m0s",
                "x-ratelimit-remaining-tokens": "0",
                "x-ratelimit-reset-tokens": "1.5s"
              }
            )
          )
          const provider = yield* upstream(server.url)
          const error = yield* failure(provider.complete(chatRequest()))
          assert.strictEqual(Duration.toMillis(error.retryAfter ?? Duration.zero), 1500)
        })
      )
    )

    it.live("5xx is Unavailable, with Retry-After when given", () =>
      withHttp(
        Effect.gen(function* () {
          const [json, streamed] = yield* bothFailures(Behaviour.status(503, { retryAfterSeconds: 1 }))
          for (const error of [json, streamed]) {
            assert.strictEqual(error.reason._tag, "Unavailable")
            assert.strictEqual((error.reason as UpstreamError.Unavailable).status, 503)
            assert.strictEqual(Duration.toMillis(error.retryAfter ?? Duration.zero), 1000)
          }
          const [plain] = yield* bothFailures(Behaviour.status(500))
          assert.strictEqual(plain.reason._tag, "Unavailable")
          assert.isUndefined(plain.retryAfter)
        })
      )
    )

    it.live("401 and 403 are Authentication", () =>
      withHttp(
        Effect.gen(function* () {
          for (const status of [401, 403]) {
            const [json, streamed] = yield* bothFailures(Behaviour.status(status))
            assert.strictEqual(json.reason._tag, "Authentication")
            assert.strictEqual(streamed.reason._tag, "Authentication")
            assert.isFalse(json.isRetryable)
          }
        })
      )
    )

    it.live("context_length_exceeded is ContextLengthExceeded, content_policy_violation is ContentFiltered", () =>
      withHttp(
        Effect.gen(function* () {
          const [context, contextStream] = yield* bothFailures(Behaviour.contextLengthExceeded())
          assert.strictEqual(context.reason._tag, "ContextLengthExceeded")
          assert.strictEqual(contextStream.reason._tag, "ContextLengthExceeded")
          const [filtered, filteredStream] = yield* bothFailures(Behaviour.contentFiltered())
          assert.strictEqual(filtered.reason._tag, "ContentFiltered")
          assert.strictEqual(filteredStream.reason._tag, "ContentFiltered")
        })
      )
    )

    it.live("other 4xx are BadRequest with the upstream's message", () =>
      withHttp(
        Effect.gen(function* () {
          const [error] = yield* bothFailures(Behaviour.status(422, { message: "temperature is out of range" }))
          assert.strictEqual(error.reason._tag, "BadRequest")
          assert.strictEqual((error.reason as UpstreamError.BadRequest).status, 422)
          assert.include((error.reason as UpstreamError.BadRequest).detail, "temperature is out of range")
          assert.isFalse(error.isRetryable)
        })
      )
    )

    it.live("a reset or refused connection is ConnectionFailed", () =>
      withHttp(
        Effect.gen(function* () {
          const [reset, resetStream] = yield* bothFailures(Behaviour.reset())
          assert.strictEqual(reset.reason._tag, "ConnectionFailed")
          assert.strictEqual(resetStream.reason._tag, "ConnectionFailed")
          // A port nothing listens on: bind one, then close it.
          const closed = yield* Effect.scoped(
            Effect.gen(function* () {
              const server = yield* fake(Behaviour.ok())
              return server.url
            })
          )
          const provider = yield* upstream(closed)
          const refused = yield* failure(provider.complete(chatRequest()))
          assert.strictEqual(refused.reason._tag, "ConnectionFailed")
          const refusedStream = yield* streamFailure(provider.stream(chatRequest()))
          assert.strictEqual(refusedStream.error.reason._tag, "ConnectionFailed")
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
          assert.include(names, "OpenAiCompatible.complete")
          assert.include(names, "OpenAiCompatible.stream")
          const complete = spans.find((span) => span.name === "OpenAiCompatible.complete")
          assert.strictEqual(complete?.attributes.get("roadcar.upstream"), "primary")
          assert.isTrue(
            spans.some((span) => [...span.attributes.keys()].some((key) => key.startsWith("http.request.header")))
          )
          for (const text of spanTexts(spans)) assert.notInclude(text, secret)
        })
      )
    )

    it.live("opens no spans and sends no traceparent upstream unless a tracer would export them", () =>
      withHttp(
        Effect.gen(function* () {
          const server = yield* FakeUpstream.make({ behaviour: Behaviour.ok() })
          const provider = yield* upstream(server.url)
          // Effect's default in-memory tracer: nothing to propagate.
          yield* provider.complete(chatRequest()).pipe(Effect.withSpan("caller"))
          yield* Stream.runDrain(provider.stream(chatRequest())).pipe(Effect.withSpan("caller"))
          const { tracer, spans } = recordingTracer()
          yield* provider.complete(chatRequest()).pipe(Effect.withSpan("caller"), Effect.withTracer(tracer))
          yield* Stream.runDrain(provider.stream(chatRequest())).pipe(
            Effect.withSpan("caller"),
            Effect.withTracer(tracer)
          )
          const sent = (yield* server.attempts).map((attempt) => attempt.headers["traceparent"] !== undefined)
          assert.deepStrictEqual(sent, [false, false, true, true])
          assert.includeMembers(
            spans.map((span) => span.name),
            ["OpenAiCompatible.complete", "OpenAiCompatible.stream"]
          )
        })
      )
    )

    it.live("never shows the API key, even when the upstream echoes it", () =>
      withHttp(
        Effect.gen(function* () {
          const errors: Array<UpstreamError.UpstreamError> = []
          for (const behaviour of [
            Behaviour.status(401),
            Behaviour.status(500),
            Behaviour.rateLimited({ retryAfterSeconds: 1 }),
            Behaviour.reset(),
            Behaviour.cutAfter(1),
            Behaviour.malformedChunk(0),
            Behaviour.malformedJson(),
            Behaviour.contextLengthExceeded()
          ]) {
            errors.push(...(yield* bothFailures(behaviour)))
          }
          const echo = yield* rawServer(
            json(400, { error: { message: `Incorrect API key provided: ${secret}.`, code: "invalid_api_key" } })
          )
          const provider = yield* upstream(echo.url)
          const echoed = yield* failure(provider.complete(chatRequest()))
          assert.include((echoed.reason as UpstreamError.BadRequest).detail, "<redacted>")
          errors.push(echoed)
          for (const error of errors) assertNoSecret(error, secret)
        })
      )
    )
  })
})
