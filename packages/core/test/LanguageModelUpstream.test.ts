import { assert, describe, it } from "@effect/vitest"
import { Context, Duration, Effect, Layer, Option, Stream } from "effect"
import { AiError, LanguageModel, Model, type Prompt, type Response } from "effect/ai"
import { TestClock } from "effect/testing"
import * as ChatCompletion from "../src/ChatCompletion.ts"
import * as LanguageModelUpstream from "../src/LanguageModelUpstream.ts"
import type * as UpstreamError from "../src/UpstreamError.ts"

// =============================================================================
// A scripted fake LanguageModel
// =============================================================================

/** Per-request provider configuration, as a real provider would read it. */
class FakeConfig extends Context.Service<FakeConfig, { readonly temperature: number }>()("test/FakeConfig") {}

const usage = (input: number | undefined, output: number | undefined) => ({
  inputTokens: { uncached: undefined, total: input, cacheRead: undefined, cacheWrite: undefined },
  outputTokens: { total: output, text: undefined, reasoning: undefined }
})

interface Script {
  /** Parts `generateText` returns (default: an echo of the prompt). */
  readonly parts?: Array<Response.PartEncoded>
  /** Parts `streamText` emits (default: the echo, word by word). */
  readonly streamParts?: Array<Response.StreamPartEncoded>
  /** Fail every call with this reason (after `streamParts`, for streams). */
  readonly failWith?: AiError.AiErrorReason
}

const lastUserText = (prompt: Prompt.Prompt): string => {
  let text = ""
  for (const message of prompt.content) {
    if (message.role !== "user") continue
    text = message.content.map((part) => (part.type === "text" ? part.text : "")).join("")
  }
  return text
}

const makeFake = (script: Script, prompts: Array<Prompt.Prompt> = []) =>
  LanguageModel.make({
    generateText: (options) =>
      Effect.gen(function* () {
        prompts.push(options.prompt)
        if (script.failWith) {
          return yield* AiError.make({ module: "Fake", method: "generateText", reason: script.failWith })
        }
        if (script.parts) return script.parts
        const config = yield* Effect.serviceOption(FakeConfig)
        const suffix = Option.match(config, { onNone: () => "", onSome: (c) => ` (t=${c.temperature})` })
        const text = `echo: ${lastUserText(options.prompt)}${suffix}`
        return [
          { type: "text", text },
          { type: "finish", reason: "stop", usage: usage(11, 4) }
        ] satisfies Array<Response.PartEncoded>
      }),
    streamText: (options) => {
      prompts.push(options.prompt)
      const words = `echo: ${lastUserText(options.prompt)}`.split(" ")
      const parts: Array<Response.StreamPartEncoded> = script.streamParts ?? [
        { type: "response-metadata", id: "resp-1", modelId: "fake-model-2025" },
        { type: "text-start", id: "t1" },
        ...words.map((word, i) => ({ type: "text-delta" as const, id: "t1", delta: i === 0 ? word : ` ${word}` })),
        { type: "text-end", id: "t1" },
        { type: "finish", reason: "stop", usage: usage(11, words.length) }
      ]
      const failure = script.failWith
      return failure
        ? Stream.concat(
            Stream.fromIterable(parts),
            Stream.fail(AiError.make({ module: "Fake", method: "streamText", reason: failure }))
          )
        : Stream.fromIterable(parts)
    }
  })

const fakeLayer = (script: Script = {}, prompts?: Array<Prompt.Prompt>) =>
  Model.make("fake", "fake-model", Layer.effect(LanguageModel.LanguageModel, makeFake(script, prompts)))

const upstreamWith = (script: Script = {}, options: Partial<LanguageModelUpstream.Options> = {}) =>
  LanguageModelUpstream.fromLanguageModel({ name: "primary", ...options }).pipe(Effect.provide(fakeLayer(script)))

const request = (content: string, extra: Partial<ChatCompletion.ChatRequest> = {}): ChatCompletion.ChatRequest => ({
  model: "public-model",
  messages: [{ role: "user", content }],
  ...extra
})

const collectUntilFailure = (stream: Stream.Stream<ChatCompletion.ChatChunk, UpstreamError.UpstreamError>) =>
  Effect.gen(function* () {
    const chunks: Array<ChatCompletion.ChatChunk> = []
    const error = yield* stream.pipe(
      Stream.runForEach((chunk) => Effect.sync(() => chunks.push(chunk))),
      Effect.flip
    )
    return { chunks, error }
  })

// =============================================================================
// Tests
// =============================================================================

describe("LanguageModelUpstream", () => {
  describe("fromLanguageModel", () => {
    it.effect("takes provider and model from the Model layer, options win", () =>
      Effect.gen(function* () {
        const upstream = yield* upstreamWith()
        assert.strictEqual(upstream.name, "primary")
        assert.strictEqual(upstream.provider, "fake")
        assert.strictEqual(upstream.model, "fake-model")
        const named = yield* upstreamWith({}, { provider: "openai", model: "gpt-x" })
        assert.strictEqual(named.provider, "openai")
        assert.strictEqual(named.model, "gpt-x")
      })
    )

    it.effect("fromService defaults provider and model without a Model layer", () =>
      Effect.gen(function* () {
        const service = yield* makeFake({})
        const upstream = LanguageModelUpstream.fromService(service, { name: "bare" })
        assert.strictEqual(upstream.provider, "effect-ai")
        assert.strictEqual(upstream.model, "bare")
        const response = yield* upstream.complete(request("hi"))
        assert.strictEqual(response.choices[0]?.message.content, "echo: hi")
        assert.strictEqual(response.model, "bare")
      })
    )
  })

  describe("complete", () => {
    it.effect("round-trips text, finish reason and usage", () =>
      Effect.gen(function* () {
        const upstream = yield* upstreamWith()
        yield* TestClock.adjust("42 seconds")
        const response = yield* upstream.complete(request("hello model"))
        assert.strictEqual(response.object, "chat.completion")
        assert.deepStrictEqual(response.choices[0]?.message, { role: "assistant", content: "echo: hello model" })
        assert.strictEqual(response.choices[0]?.finish_reason, "stop")
        assert.deepStrictEqual(response.usage, ChatCompletion.usage(11, 4))
        assert.strictEqual(response.model, "fake-model")
        assert.strictEqual(response.created, 42)
        assert.strictEqual(response.id, "chatcmpl-primary-1")
        assert.strictEqual((yield* upstream.complete(request("again"))).id, "chatcmpl-primary-2")
      })
    )

    it.effect("uses the model's response id and model id when it reports them", () =>
      Effect.gen(function* () {
        const upstream = yield* upstreamWith({
          parts: [
            { type: "response-metadata", id: "resp-9", modelId: "fake-model-2025", timestamp: undefined },
            { type: "text", text: "hi" },
            { type: "finish", reason: "stop", usage: usage(1, 1) }
          ]
        })
        const response = yield* upstream.complete(request("x"))
        assert.strictEqual(response.id, "resp-9")
        assert.strictEqual(response.model, "fake-model-2025")
      })
    )

    it.effect("maps finish reasons", () =>
      Effect.gen(function* () {
        const finishing = (reason: Response.FinishReason) =>
          upstreamWith({
            parts: [
              { type: "text", text: "partial" },
              { type: "finish", reason, usage: usage(1, 1) }
            ]
          }).pipe(Effect.flatMap((upstream) => upstream.complete(request("x"))))
        assert.strictEqual((yield* finishing("length")).choices[0]?.finish_reason, "length")
        assert.strictEqual((yield* finishing("content-filter")).choices[0]?.finish_reason, "content_filter")
        assert.strictEqual((yield* finishing("tool-calls")).choices[0]?.finish_reason, "tool_calls")
        assert.strictEqual((yield* finishing("other")).choices[0]?.finish_reason, "stop")
        const error = yield* Effect.flip(finishing("error"))
        assert.strictEqual(error.reason._tag, "MalformedOutput")
      })
    )

    it.effect("estimates usage the model does not report", () =>
      Effect.gen(function* () {
        const upstream = yield* upstreamWith({
          parts: [
            { type: "text", text: "twelve chars" },
            { type: "finish", reason: "stop", usage: usage(undefined, undefined) }
          ]
        })
        const req = request("a prompt of some length")
        const response = yield* upstream.complete(req)
        assert.deepStrictEqual(response.usage, ChatCompletion.usage(ChatCompletion.estimatePromptTokens(req), 3))
      })
    )

    it.effect("provides the request context to each call", () =>
      Effect.gen(function* () {
        const upstream = yield* upstreamWith(
          {},
          { requestContext: (req) => Context.make(FakeConfig, { temperature: req.temperature ?? 1 }) }
        )
        const response = yield* upstream.complete(request("hi", { temperature: 0.2 }))
        assert.strictEqual(response.choices[0]?.message.content, "echo: hi (t=0.2)")
        const plain = yield* upstreamWith()
        assert.strictEqual(
          (yield* plain.complete(request("hi", { temperature: 0.2 }))).choices[0]?.message.content,
          "echo: hi"
        )
      })
    )
  })

  describe("toPrompt", () => {
    it.effect("converts system, developer, user, assistant (with tool calls) and tool messages", () =>
      Effect.gen(function* () {
        const prompts: Array<Prompt.Prompt> = []
        const upstream = yield* LanguageModelUpstream.fromLanguageModel({ name: "p" }).pipe(
          Effect.provide(fakeLayer({}, prompts))
        )
        yield* upstream.complete({
          model: "m",
          messages: [
            { role: "system", content: "be brief" },
            { role: "developer", content: "no jokes" },
            {
              role: "user",
              content: [
                { type: "text", text: "weather " },
                { type: "image_url", image_url: {} },
                { type: "text", text: "in Oslo?" }
              ]
            },
            {
              role: "assistant",
              content: null,
              tool_calls: [
                { id: "call_1", type: "function", function: { name: "weather", arguments: '{"city":"Oslo"}' } }
              ]
            },
            { role: "tool", tool_call_id: "call_1", content: "rain" },
            { role: "user", content: "thanks" }
          ]
        })
        const prompt = prompts[0]
        assert.isDefined(prompt)
        const summary = (prompt?.content ?? []).map((message) => {
          switch (message.role) {
            case "system":
              return ["system", message.content]
            case "user":
              return ["user", message.content.map((part) => (part.type === "text" ? part.text : part.type)).join("")]
            case "assistant":
              return [
                "assistant",
                message.content.map((part) =>
                  part.type === "tool-call" ? `${part.id}:${part.name}:${JSON.stringify(part.params)}` : part.type
                )
              ]
            default:
              return [
                "tool",
                message.content.map((part) =>
                  part.type === "tool-result" ? `${part.id}:${part.name}:${String(part.result)}` : part.type
                )
              ]
          }
        })
        assert.deepStrictEqual(summary, [
          ["system", "be brief"],
          ["system", "no jokes"],
          ["user", "weather in Oslo?"],
          ["assistant", ['call_1:weather:{"city":"Oslo"}']],
          ["tool", ["call_1:weather:rain"]],
          ["user", "thanks"]
        ])
      })
    )
  })

  describe("stream", () => {
    it.effect("streams a role chunk, text deltas and a final chunk with usage", () =>
      Effect.gen(function* () {
        const upstream = yield* upstreamWith()
        const chunks = yield* Stream.runCollect(upstream.stream(request("hello streaming world")))
        // role + "echo:" " hello" " streaming" " world" + final
        assert.strictEqual(chunks.length, 6)
        assert.deepStrictEqual(chunks[0]?.choices[0]?.delta, { role: "assistant", content: "" })
        assert.deepStrictEqual(
          chunks.slice(1, -1).map((chunk) => chunk.choices[0]?.delta.content),
          ["echo:", " hello", " streaming", " world"]
        )
        const last = chunks[chunks.length - 1]
        assert.strictEqual(last?.choices[0]?.finish_reason, "stop")
        assert.deepStrictEqual(last?.usage, ChatCompletion.usage(11, 4))
        for (const chunk of chunks) {
          assert.strictEqual(chunk.id, "resp-1")
          assert.strictEqual(chunk.model, "fake-model-2025")
          assert.strictEqual(chunk.object, "chat.completion.chunk")
        }
        const assembled = ChatCompletion.assembleChunks(chunks)
        assert.strictEqual(assembled.choices[0]?.message.content, "echo: hello streaming world")
      })
    )

    it.effect("fails with MalformedOutput when the stream ends without a finish part", () =>
      Effect.gen(function* () {
        const upstream = yield* upstreamWith({
          streamParts: [
            { type: "text-start", id: "t" },
            { type: "text-delta", id: "t", delta: "cut" }
          ]
        })
        const { chunks, error } = yield* collectUntilFailure(upstream.stream(request("x")))
        assert.strictEqual(chunks.length, 2)
        assert.strictEqual(error.reason._tag, "MalformedOutput")
        assert.strictEqual(error.upstream, "primary")
      })
    )

    it.effect("maps a failure mid-stream after the chunks already emitted", () =>
      Effect.gen(function* () {
        const upstream = yield* upstreamWith({
          streamParts: [{ type: "text-delta", id: "t", delta: "partial" }],
          failWith: new AiError.NetworkError({ reason: "TransportError", method: "POST", url: "http://127.0.0.1/v1" })
        })
        const { chunks, error } = yield* collectUntilFailure(upstream.stream(request("x")))
        assert.deepStrictEqual(
          chunks.map((chunk) => chunk.choices[0]?.delta.content),
          ["", "partial"]
        )
        assert.strictEqual(error.reason._tag, "ConnectionFailed")
      })
    )

    it.effect("emits nothing before a failure that comes first", () =>
      Effect.gen(function* () {
        const upstream = yield* upstreamWith({ streamParts: [], failWith: new AiError.RateLimitError({}) })
        const { chunks, error } = yield* collectUntilFailure(upstream.stream(request("x")))
        assert.strictEqual(chunks.length, 0)
        assert.strictEqual(error.reason._tag, "RateLimited")
      })
    )

    it.effect("maps an error part and a finish reason of error", () =>
      Effect.gen(function* () {
        const withErrorPart = yield* upstreamWith({
          streamParts: [
            {
              type: "error",
              error: AiError.make({
                module: "Fake",
                method: "streamText",
                reason: new AiError.ContentPolicyError({ description: "nope" })
              })
            }
          ]
        })
        const filtered = yield* collectUntilFailure(withErrorPart.stream(request("x")))
        assert.strictEqual(filtered.error.reason._tag, "ContentFiltered")
        const withErrorFinish = yield* upstreamWith({
          streamParts: [{ type: "finish", reason: "error", usage: usage(1, 1) }]
        })
        const malformed = yield* collectUntilFailure(withErrorFinish.stream(request("x")))
        assert.strictEqual(malformed.error.reason._tag, "MalformedOutput")
      })
    )

    it.effect("estimates stream usage the model does not report, and can run again", () =>
      Effect.gen(function* () {
        const upstream = yield* upstreamWith({
          streamParts: [
            { type: "text-delta", id: "t", delta: "abcdefgh" },
            { type: "finish", reason: "length", usage: usage(5, undefined) }
          ]
        })
        const stream = upstream.stream(request("x"))
        const first = ChatCompletion.assembleChunks(yield* Stream.runCollect(stream))
        const second = ChatCompletion.assembleChunks(yield* Stream.runCollect(stream))
        assert.deepStrictEqual(first.usage, ChatCompletion.usage(5, 2))
        assert.strictEqual(first.choices[0]?.finish_reason, "length")
        assert.strictEqual(second.choices[0]?.message.content, "abcdefgh")
        assert.notStrictEqual(first.id, second.id)
      })
    )
  })

  describe("reasonFromAiError", () => {
    const http = (status: number) => ({ response: { status, headers: {} } })
    const cases: ReadonlyArray<readonly [string, AiError.AiErrorReason, UpstreamError.ReasonTag, number?]> = [
      ["RateLimitError", new AiError.RateLimitError({}), "RateLimited"],
      ["QuotaExhaustedError", new AiError.QuotaExhaustedError({}), "BadRequest", 429],
      [
        "AuthenticationError InvalidKey",
        new AiError.AuthenticationError({ kind: "InvalidKey" }),
        "Authentication",
        401
      ],
      [
        "AuthenticationError InsufficientPermissions",
        new AiError.AuthenticationError({ kind: "InsufficientPermissions" }),
        "Authentication",
        403
      ],
      ["ContentPolicyError", new AiError.ContentPolicyError({ description: "flagged" }), "ContentFiltered"],
      ["InvalidRequestError", new AiError.InvalidRequestError({ parameter: "top_k" }), "BadRequest", 400],
      [
        "InvalidRequestError (422)",
        new AiError.InvalidRequestError({ description: "bad", http: http(422) }),
        "BadRequest",
        422
      ],
      [
        "InvalidRequestError (context length)",
        new AiError.InvalidRequestError({ description: "This model's maximum context length is 8192 tokens" }),
        "ContextLengthExceeded"
      ],
      [
        "InvalidRequestError (context length in body)",
        new AiError.InvalidRequestError({ http: { ...http(400), body: '{"code":"context_length_exceeded"}' } }),
        "ContextLengthExceeded"
      ],
      ["InternalProviderError", new AiError.InternalProviderError({ description: "boom" }), "Unavailable", 500],
      [
        "InternalProviderError (503)",
        new AiError.InternalProviderError({ description: "overloaded", http: http(503) }),
        "Unavailable",
        503
      ],
      [
        "NetworkError TransportError",
        new AiError.NetworkError({
          reason: "TransportError",
          method: "POST",
          url: "http://127.0.0.1",
          description: "ECONNRESET"
        }),
        "ConnectionFailed"
      ],
      [
        "NetworkError TransportError (timeout)",
        new AiError.NetworkError({
          reason: "TransportError",
          method: "POST",
          url: "http://127.0.0.1",
          description: "Request timed out"
        }),
        "TimedOut"
      ],
      [
        "NetworkError InvalidUrlError",
        new AiError.NetworkError({ reason: "InvalidUrlError", method: "POST", url: "nope" }),
        "BadRequest",
        400
      ],
      ["InvalidResponseError", new AiError.InvalidResponseError({ description: "bad json" }), "MalformedOutput"],
      ["InvalidOutputError", new AiError.InvalidOutputError({ description: "bad parts" }), "MalformedOutput"],
      [
        "StructuredOutputError",
        new AiError.StructuredOutputError({ description: "bad object", responseText: "{" }),
        "MalformedOutput"
      ],
      ["UnknownError", new AiError.UnknownError({}), "Unavailable", 500],
      ["UnknownError (408)", new AiError.UnknownError({ http: http(408) }), "TimedOut"],
      ["UnknownError (timeout)", new AiError.UnknownError({ description: "deadline timeout" }), "TimedOut"],
      ["UnknownError (404)", new AiError.UnknownError({ http: http(404) }), "BadRequest", 404],
      ["UnsupportedSchemaError", new AiError.UnsupportedSchemaError({ description: "recursive" }), "BadRequest", 400],
      ["ToolNotFoundError", new AiError.ToolNotFoundError({ toolName: "x", availableTools: [] }), "BadRequest", 400]
    ]

    for (const [label, reason, tag, status] of cases) {
      it.effect(`${label} -> ${tag}${status === undefined ? "" : ` ${status}`} (complete and stream)`, () =>
        Effect.gen(function* () {
          const upstream = yield* upstreamWith({ streamParts: [], failWith: reason })
          const fromComplete = yield* Effect.flip(upstream.complete(request("x")))
          const fromStream = yield* collectUntilFailure(upstream.stream(request("x")))
          for (const error of [fromComplete, fromStream.error]) {
            assert.strictEqual(error._tag, "UpstreamError")
            assert.strictEqual(error.upstream, "primary")
            assert.strictEqual(error.reason._tag, tag)
            if (status !== undefined) assert.strictEqual("status" in error.reason && error.reason.status, status)
          }
        })
      )
    }

    it("keeps the RateLimitError retryAfter and the retryable verdicts", () => {
      const limited = LanguageModelUpstream.reasonFromAiError(
        new AiError.RateLimitError({ retryAfter: Duration.seconds(12) })
      )
      assert.strictEqual(limited._tag, "RateLimited")
      assert.deepStrictEqual(limited._tag === "RateLimited" ? limited.retryAfter : undefined, Duration.seconds(12))
      assert.isTrue(limited.isRetryable)
      assert.isFalse(
        LanguageModelUpstream.reasonFromAiError(new AiError.AuthenticationError({ kind: "ExpiredKey" })).isRetryable
      )
      assert.isTrue(
        LanguageModelUpstream.reasonFromAiError(new AiError.InternalProviderError({ description: "x" })).isRetryable
      )
    })

    it("toUpstreamError names the upstream", () => {
      const error = LanguageModelUpstream.toUpstreamError(
        "backup",
        AiError.make({
          module: "Fake",
          method: "generateText",
          reason: new AiError.ContentPolicyError({ description: "no" })
        })
      )
      assert.strictEqual(error.upstream, "backup")
      assert.strictEqual(error.message, "backup: content filtered")
    })
  })
})
