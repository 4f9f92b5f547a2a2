import { assert, describe, it } from "@effect/vitest"
import {
  Breaker,
  ChatCompletion,
  Monitor,
  Pipeline,
  RateLimit,
  Simulated,
  type Upstream,
  UpstreamError
} from "@roadcar/core"
import * as PipelineLanguageModel from "@roadcar/core/PipelineLanguageModel"
import { Duration, Effect, Exit, Fiber, Layer, Schema, Stream } from "effect"
import { type AiError, LanguageModel, Prompt, type Response, Tool, Toolkit } from "effect/ai"
import { TestClock } from "effect/testing"
import { badRequest, scripted } from "./utils/Scripted.ts"

const Stages = Layer.mergeAll(Breaker.layerMemory(), Monitor.layerNoop)
const fastRetry = { jitter: false, baseDelay: "10 millis" } as const
const { ContentFiltered, CutMidStream, RateLimited, Unavailable } = Simulated.SimulatedFault

// The request a one-message prompt becomes (model "chat"), to compute the simulated answer.
const chatRequest = (content: string): ChatCompletion.ChatRequest => ({
  model: "chat",
  messages: [{ role: "user", content }]
})

// Runs an effect in a fiber and lets virtual time pass until it is done (retries sleep).
const settle = <A, E>(effect: Effect.Effect<A, E>) =>
  Effect.gen(function* () {
    const fiber = yield* Effect.forkChild(effect)
    for (let i = 0; i < 100 && fiber.pollUnsafe() === undefined; i++) yield* TestClock.adjust("10 millis")
    return yield* Fiber.await(fiber)
  })

// Programs written against effect/ai only.
const ask = (prompt: string) => LanguageModel.generateText({ prompt })
const streamParts = (prompt: string) => LanguageModel.streamText({ prompt }).pipe(Stream.runCollect)

const roadcarOf = (parts: ReadonlyArray<{ readonly type: string }>) => {
  const metadata = parts.find((part): part is Response.ResponseMetadataPart => part.type === "response-metadata")
  return metadata?.metadata[PipelineLanguageModel.metadataKey] as PipelineLanguageModel.Metadata | undefined
}

const failureOf = <A>(exit: Exit.Exit<A, AiError.AiError>): AiError.AiError => {
  assert.isTrue(Exit.isFailure(exit), "expected a failure")
  if (Exit.isSuccess(exit)) throw new Error("unreachable")
  const error = exit.cause.reasons.find((reason) => reason._tag === "Fail")
  if (error?._tag !== "Fail") throw new Error("expected a typed failure")
  return error.error
}

// An upstream that records its requests and answers with one fixed response (streamed as given).
const recording = (
  response: ChatCompletion.ChatResponse,
  chunks: ReadonlyArray<ChatCompletion.ChatChunk> = ChatCompletion.responseToChunks(response)
) => {
  const requests: Array<ChatCompletion.ChatRequest> = []
  const upstream: Upstream.Upstream = {
    name: "recording",
    provider: "test",
    model: response.model,
    complete: (request) =>
      Effect.sync(() => {
        requests.push(request)
        return response
      }),
    stream: (request) =>
      Stream.suspend(() => {
        requests.push(request)
        return Stream.fromIterable(chunks)
      })
  }
  return { upstream, requests }
}

const respond = (
  message: ChatCompletion.ChatResponse["choices"][number]["message"],
  finishReason: ChatCompletion.FinishReason
): ChatCompletion.ChatResponse => ({
  id: "chatcmpl-rec",
  object: "chat.completion",
  created: 0,
  model: "rec-1",
  choices: [{ index: 0, message, finish_reason: finishReason }],
  usage: ChatCompletion.usage(7, 2)
})

const GetWeather = Tool.make("get_weather", {
  description: "The weather in a city",
  parameters: Schema.Struct({ city: Schema.String }),
  success: Schema.Struct({ temp: Schema.Number })
})
const Weather = Toolkit.make(GetWeather)
const WeatherHandlers = Weather.toLayer({ get_weather: ({ city }) => Effect.succeed({ temp: city.length }) })

describe("PipelineLanguageModel", () => {
  describe("generateText", () => {
    it.effect("round-trips the text, usage and response metadata", () =>
      Effect.gen(function* () {
        const primary = yield* Simulated.make({ name: "primary" })
        const pipeline = yield* Pipeline.make({ steps: [{ upstream: primary }] })
        const response = yield* ask("hello there").pipe(
          Effect.provide(PipelineLanguageModel.layer(pipeline, { model: "chat" }))
        )
        const expected = Simulated.answer(chatRequest("hello there"))
        assert.strictEqual(response.text, expected.text)
        assert.strictEqual(response.finishReason, "stop")
        assert.strictEqual(response.usage.inputTokens.total, expected.usage.prompt_tokens)
        assert.strictEqual(response.usage.outputTokens.total, expected.usage.completion_tokens)
        const metadata = response.content.find((part) => part.type === "response-metadata")
        assert.strictEqual(metadata?.id, "chatcmpl-primary-1")
        assert.strictEqual(metadata?.modelId, Simulated.defaultModel)
        const roadcar = roadcarOf(response.content)
        assert.strictEqual(roadcar?.upstream, "primary")
        assert.strictEqual(roadcar?.attempts, 1)
        assert.isNull(roadcar?.fallback)
        const [call] = yield* primary.callLog
        assert.deepStrictEqual(call?.request, chatRequest("hello there"))
      }).pipe(Effect.scoped, Effect.provide(Stages))
    )

    it.effect("sends the model 'default' when the options name none", () =>
      Effect.gen(function* () {
        const primary = yield* Simulated.make({ name: "primary" })
        const pipeline = yield* Pipeline.make({ steps: [{ upstream: primary }] })
        yield* ask("hi").pipe(Effect.provide(PipelineLanguageModel.layer(pipeline)))
        const [call] = yield* primary.callLog
        assert.strictEqual(call?.request.model, "default")
      }).pipe(Effect.scoped, Effect.provide(Stages))
    )

    it.effect("converts system, assistant text, tool calls and tool results into chat messages", () =>
      Effect.gen(function* () {
        const primary = yield* Simulated.make({ name: "primary" })
        const pipeline = yield* Pipeline.make({ steps: [{ upstream: primary }] })
        yield* LanguageModel.generateText({
          prompt: [
            { role: "system", content: "be brief" },
            { role: "user", content: "weather in Oslo?" },
            {
              role: "assistant",
              content: [
                { type: "text", text: "checking" },
                { type: "tool-call", id: "call_1", name: "get_weather", params: { city: "Oslo" } }
              ]
            },
            {
              role: "tool",
              content: [
                { type: "tool-result", id: "call_1", name: "get_weather", isFailure: false, result: { temp: 3 } }
              ]
            },
            { role: "user", content: "thanks" }
          ]
        }).pipe(Effect.provide(PipelineLanguageModel.layer(pipeline, { model: "chat" })))
        const [call] = yield* primary.callLog
        assert.deepStrictEqual(call?.request.messages, [
          { role: "system", content: "be brief" },
          { role: "user", content: "weather in Oslo?" },
          {
            role: "assistant",
            content: "checking",
            tool_calls: [
              { id: "call_1", type: "function", function: { name: "get_weather", arguments: '{"city":"Oslo"}' } }
            ]
          },
          { role: "tool", tool_call_id: "call_1", content: '{"temp":3}' },
          { role: "user", content: "thanks" }
        ])
        assert.isUndefined(call?.request.tools)
      }).pipe(Effect.scoped, Effect.provide(Stages))
    )

    it.effect("passes the toolkit as OpenAI functions and returns the model's tool calls, resolved", () =>
      Effect.gen(function* () {
        const { upstream, requests } = recording(
          respond(
            {
              role: "assistant",
              content: null,
              tool_calls: [
                { id: "call_9", type: "function", function: { name: "get_weather", arguments: '{"city":"Oslo"}' } }
              ]
            },
            "tool_calls"
          )
        )
        const pipeline = yield* Pipeline.make({ steps: [{ upstream }] })
        const toolkit = yield* Weather
        const response = yield* LanguageModel.generateText({ prompt: "weather in Oslo?", toolkit }).pipe(
          Effect.provide(PipelineLanguageModel.layer(pipeline, { model: "chat" }))
        )
        assert.strictEqual(response.finishReason, "tool-calls")
        assert.deepStrictEqual(
          response.toolCalls.map((call) => [call.id, call.name, call.params]),
          [["call_9", "get_weather", { city: "Oslo" }]]
        )
        assert.deepStrictEqual(
          response.toolResults.map((result) => [result.id, result.result]),
          [["call_9", { temp: 4 }]]
        )
        assert.strictEqual(requests.length, 1)
        const sent = requests[0]
        assert.strictEqual(sent?.tool_choice, "auto")
        const [tool] = (sent?.tools ?? []) as ReadonlyArray<{
          readonly type: string
          readonly function: { readonly name: string; readonly description: string; readonly parameters: unknown }
        }>
        assert.strictEqual(tool?.type, "function")
        assert.strictEqual(tool?.function.name, "get_weather")
        assert.strictEqual(tool?.function.description, "The weather in a city")
        assert.deepInclude(tool?.function.parameters as object, { type: "object", required: ["city"] })
      }).pipe(Effect.scoped, Effect.provide(Layer.merge(Stages, WeatherHandlers)))
    )

    it.effect("sends tool_choice for a named tool as an OpenAI function choice", () =>
      Effect.gen(function* () {
        const { upstream, requests } = recording(respond({ role: "assistant", content: "sunny" }, "stop"))
        const pipeline = yield* Pipeline.make({ steps: [{ upstream }] })
        const toolkit = yield* Weather
        yield* LanguageModel.generateText({ prompt: "weather?", toolkit, toolChoice: { tool: "get_weather" } }).pipe(
          Effect.provide(PipelineLanguageModel.layer(pipeline))
        )
        assert.deepStrictEqual(requests[0]?.tool_choice, { type: "function", function: { name: "get_weather" } })
      }).pipe(Effect.scoped, Effect.provide(Layer.merge(Stages, WeatherHandlers)))
    )

    it.effect("asks for a JSON schema answer in generateObject and decodes it", () =>
      Effect.gen(function* () {
        const { upstream, requests } = recording(respond({ role: "assistant", content: '{"answer":42}' }, "stop"))
        const pipeline = yield* Pipeline.make({ steps: [{ upstream }] })
        const response = yield* LanguageModel.generateObject({
          prompt: "the answer?",
          objectName: "Answer",
          schema: Schema.Struct({ answer: Schema.Number })
        }).pipe(Effect.provide(PipelineLanguageModel.layer(pipeline)))
        assert.deepStrictEqual(response.value, { answer: 42 })
        const format = requests[0]?.response_format as {
          readonly type: string
          readonly json_schema: { readonly name: string; readonly schema: object }
        }
        assert.strictEqual(format.type, "json_schema")
        assert.strictEqual(format.json_schema.name, "Answer")
        assert.deepInclude(format.json_schema.schema, { type: "object", required: ["answer"] })
      }).pipe(Effect.scoped, Effect.provide(Stages))
    )

    it.effect("answers although the upstream fails twice with 503: the pipeline retried", () =>
      Effect.gen(function* () {
        const primary = yield* Simulated.make({
          name: "primary",
          faults: Simulated.failFirst(2, Unavailable({ status: 503 }))
        })
        const pipeline = yield* Pipeline.make({ steps: [{ upstream: primary }], retry: fastRetry })
        const exit = yield* settle(ask("hello").pipe(Effect.provide(PipelineLanguageModel.layer(pipeline))))
        assert.isTrue(Exit.isSuccess(exit))
        if (Exit.isSuccess(exit)) {
          assert.include(exit.value.text, "[simulated]")
          assert.strictEqual(roadcarOf(exit.value.content)?.attempts, 3)
        }
        assert.strictEqual(yield* primary.calls, 3)
      }).pipe(Effect.scoped, Effect.provide(Stages))
    )

    it.effect("answers from the fallback when the primary always fails", () =>
      Effect.gen(function* () {
        const primary = yield* Simulated.make({
          name: "primary",
          faults: Simulated.always(Unavailable({ status: 503 }))
        })
        const secondary = yield* Simulated.make({ name: "secondary", model: "backup-1" })
        const pipeline = yield* Pipeline.make({
          steps: [{ upstream: primary }, { upstream: secondary }],
          retry: fastRetry
        })
        const exit = yield* settle(ask("hello").pipe(Effect.provide(PipelineLanguageModel.layer(pipeline))))
        assert.isTrue(Exit.isSuccess(exit))
        if (Exit.isSuccess(exit)) {
          const metadata = exit.value.content.find((part) => part.type === "response-metadata")
          assert.strictEqual(metadata?.modelId, "backup-1")
          const roadcar = roadcarOf(exit.value.content)
          assert.strictEqual(roadcar?.upstream, "secondary")
          assert.strictEqual(roadcar?.fallback?.reasonTag, "Unavailable")
        }
        assert.strictEqual(yield* primary.calls, 3)
        assert.strictEqual(yield* secondary.calls, 1)
      }).pipe(Effect.scoped, Effect.provide(Stages))
    )

    it.effect("answers with the static answer when every step failed", () =>
      Effect.gen(function* () {
        const primary = yield* Simulated.make({ name: "primary", faults: Simulated.always(ContentFiltered()) })
        // Pipeline<RateLimitRejected>: no upstream failure can reach the program
        const pipeline = yield* Pipeline.make({
          steps: [{ upstream: primary }],
          staticAnswer: "Please try again later."
        })
        const response = yield* ask("hello").pipe(Effect.provide(PipelineLanguageModel.layer(pipeline)))
        assert.strictEqual(response.text, "Please try again later.")
        assert.strictEqual(response.finishReason, "stop")
        assert.strictEqual(roadcarOf(response.content)?.static, true)
      }).pipe(Effect.scoped, Effect.provide(Stages))
    )

    it.effect("takes the pipeline from PipelineService with layerFromService", () =>
      Effect.gen(function* () {
        const primary = yield* Simulated.make({ name: "primary" })
        const Model = PipelineLanguageModel.layerFromService({ model: "chat" }).pipe(
          Layer.provide(Pipeline.layer({ steps: [{ upstream: primary }] })),
          Layer.provide(Stages)
        )
        const response = yield* ask("hi").pipe(Effect.provide(Model))
        assert.strictEqual(response.text, Simulated.answer(chatRequest("hi")).text)
        assert.strictEqual(yield* primary.calls, 1)
      })
    )

    it.effect("passes the call options built from the provider options to the pipeline", () =>
      Effect.gen(function* () {
        const primary = yield* Simulated.make({ name: "primary" })
        const pipeline = yield* Pipeline.make({ steps: [{ upstream: primary }] })
        const response = yield* ask("hi").pipe(
          Effect.provide(
            PipelineLanguageModel.layer(pipeline, {
              callOptions: (options) => ({ requestId: `req-${options.prompt.content.length}`, key: "team-a" })
            })
          )
        )
        assert.strictEqual(roadcarOf(response.content)?.requestId, "req-1")
      }).pipe(Effect.scoped, Effect.provide(Stages))
    )
  })

  describe("toMessages", () => {
    it("sends images as image_url parts and other files as data URLs", () => {
      const prompt = Prompt.make([
        {
          role: "user",
          content: [
            { type: "text", text: "what is this?" },
            { type: "file", mediaType: "image/png", data: new Uint8Array([1, 2, 3]) },
            { type: "file", mediaType: "image/jpeg", data: new URL("https://example.com/cat.jpg") },
            { type: "file", mediaType: "application/pdf", fileName: "a.pdf", data: "JVBERi0=" }
          ]
        }
      ])
      assert.deepStrictEqual(PipelineLanguageModel.toMessages(prompt), [
        {
          role: "user",
          content: [
            { type: "text", text: "what is this?" },
            { type: "image_url", image_url: { url: "data:image/png;base64,AQID" } },
            { type: "image_url", image_url: { url: "https://example.com/cat.jpg" } },
            { type: "file", file: { file_data: "data:application/pdf;base64,JVBERi0=", filename: "a.pdf" } }
          ]
        }
      ])
    })
  })

  describe("errors", () => {
    it.effect("a request the upstream rejects (400) fails with InvalidRequestError", () =>
      Effect.gen(function* () {
        const primary = scripted("primary", [], badRequest)
        const pipeline = yield* Pipeline.make({ steps: [{ upstream: primary }], retry: fastRetry })
        const exit = yield* settle(ask("hello").pipe(Effect.provide(PipelineLanguageModel.layer(pipeline))))
        const error = failureOf(exit)
        assert.strictEqual(error.module, PipelineLanguageModel.moduleName)
        assert.strictEqual(error.method, "generateText")
        assert.strictEqual(error.reason._tag, "InvalidRequestError")
        assert.isFalse(error.isRetryable)
        assert.strictEqual(primary.calls.length, 1)
      }).pipe(Effect.scoped, Effect.provide(Stages))
    )

    it.effect("an upstream that keeps saying 503 fails with a retryable InternalProviderError", () =>
      Effect.gen(function* () {
        const primary = yield* Simulated.make({
          name: "primary",
          faults: Simulated.always(Unavailable({ status: 503 }))
        })
        const pipeline = yield* Pipeline.make({ steps: [{ upstream: primary }], retry: fastRetry })
        const error = failureOf(yield* settle(ask("hello").pipe(Effect.provide(PipelineLanguageModel.layer(pipeline)))))
        assert.strictEqual(error.reason._tag, "InternalProviderError")
        assert.isTrue(error.isRetryable)
        assert.strictEqual(yield* primary.calls, 3)
      }).pipe(Effect.scoped, Effect.provide(Stages))
    )

    it.effect("an upstream rate limit fails with RateLimitError carrying its retryAfter", () =>
      Effect.gen(function* () {
        const primary = yield* Simulated.make({
          name: "primary",
          faults: Simulated.always(RateLimited({ retryAfter: "2 seconds" }))
        })
        const pipeline = yield* Pipeline.make({ steps: [{ upstream: primary }], retry: { attempts: 1 } })
        const error = failureOf(yield* settle(ask("hello").pipe(Effect.provide(PipelineLanguageModel.layer(pipeline)))))
        assert.strictEqual(error.reason._tag, "RateLimitError")
        assert.strictEqual(Duration.toMillis(error.retryAfter ?? Duration.zero), 2000)
      }).pipe(Effect.scoped, Effect.provide(Stages))
    )

    it.effect("Roadcar's own rate limit fails with RateLimitError, even with a static answer", () =>
      Effect.gen(function* () {
        const primary = yield* Simulated.make({ name: "primary" })
        const pipeline = yield* Pipeline.make({ steps: [{ upstream: primary }], staticAnswer: "later" })
        const program = Effect.gen(function* () {
          yield* ask("first")
          return yield* ask("second")
        })
        const error = yield* program.pipe(Effect.provide(PipelineLanguageModel.layer(pipeline)), Effect.flip)
        assert.strictEqual(error.reason._tag, "RateLimitError")
        assert.isTrue(Duration.toMillis(error.retryAfter ?? Duration.zero) > 0)
        assert.strictEqual(yield* primary.calls, 1)
      }).pipe(
        Effect.scoped,
        Effect.provide(
          Layer.mergeAll(
            Stages,
            RateLimit.layerMemory({
              rules: [{ by: "global", requests: { limit: 1, window: "1 minute" } }],
              onExceeded: "reject"
            })
          )
        )
      )
    )

    it("maps every upstream reason onto the AiError reason that keeps its meaning", () => {
      const cases: ReadonlyArray<readonly [UpstreamError.Reason, string, boolean]> = [
        [new UpstreamError.RateLimited({}), "RateLimitError", true],
        [new UpstreamError.Unavailable({ status: 502 }), "InternalProviderError", true],
        [new UpstreamError.CircuitOpen({}), "InternalProviderError", true],
        [new UpstreamError.ConnectionFailed({ detail: "reset" }), "NetworkError", true],
        [new UpstreamError.TimedOut({ phase: "attempt", after: Duration.seconds(30) }), "NetworkError", true],
        [new UpstreamError.TimedOut({ phase: "deadline", after: Duration.seconds(60) }), "UnknownError", false],
        [new UpstreamError.Authentication({ status: 401 }), "AuthenticationError", false],
        [new UpstreamError.ContentFiltered({ detail: "policy" }), "ContentPolicyError", false],
        [new UpstreamError.BadRequest({ status: 422, detail: "bad" }), "InvalidRequestError", false],
        [new UpstreamError.ContextLengthExceeded({ detail: "too long" }), "InvalidRequestError", false],
        [new UpstreamError.MalformedOutput({ detail: "bad json" }), "InvalidResponseError", false]
      ]
      for (const [reason, tag, retryable] of cases) {
        const error = PipelineLanguageModel.toAiError(UpstreamError.make("primary", reason), "generateText")
        assert.strictEqual(error.reason._tag, tag, reason._tag)
        assert.strictEqual(error.isRetryable, retryable, reason._tag)
      }
      const forbidden = PipelineLanguageModel.toAiErrorReason(
        UpstreamError.make("primary", new UpstreamError.Authentication({ status: 403 }))
      )
      assert.strictEqual(forbidden._tag === "AuthenticationError" && forbidden.kind, "InsufficientPermissions")
    })

    it("maps RateLimitRejected onto RateLimitError with its retryAfter", () => {
      const rejected = new RateLimit.RateLimitRejected({
        limit: "requests per key",
        subject: "key team-a",
        retryAfter: Duration.seconds(7)
      })
      const error = PipelineLanguageModel.toAiError(rejected, "streamText")
      assert.strictEqual(error.reason._tag, "RateLimitError")
      assert.strictEqual(error.method, "streamText")
      assert.strictEqual(Duration.toMillis(error.retryAfter ?? Duration.zero), 7000)
    })
  })

  describe("streamText", () => {
    it.effect("emits metadata, text-start, text-deltas, text-end and finish in order", () =>
      Effect.gen(function* () {
        const primary = yield* Simulated.make({ name: "primary", wordsPerChunk: 2 })
        const pipeline = yield* Pipeline.make({ steps: [{ upstream: primary }] })
        const parts = yield* streamParts("hello there").pipe(
          Effect.provide(PipelineLanguageModel.layer(pipeline, { model: "chat" }))
        )
        const types = parts.map((part) => part.type)
        const deltas = parts.filter((part): part is Response.TextDeltaPart => part.type === "text-delta")
        assert.isAbove(deltas.length, 1)
        assert.deepStrictEqual(types, [
          "response-metadata",
          "text-start",
          ...deltas.map(() => "text-delta"),
          "text-end",
          "finish"
        ])
        const expected = Simulated.answer(chatRequest("hello there"))
        assert.strictEqual(deltas.map((part) => part.delta).join(""), expected.text)
        const finish = parts.at(-1)
        assert.strictEqual(finish?.type, "finish")
        if (finish?.type === "finish") {
          assert.strictEqual(finish.reason, "stop")
          assert.strictEqual(finish.usage.inputTokens.total, expected.usage.prompt_tokens)
          assert.strictEqual(finish.usage.outputTokens.total, expected.usage.completion_tokens)
        }
        assert.strictEqual(roadcarOf(parts)?.upstream, "primary")
      }).pipe(Effect.scoped, Effect.provide(Stages))
    )

    it.effect("streams after the pipeline retried a flaky upstream", () =>
      Effect.gen(function* () {
        const primary = yield* Simulated.make({
          name: "primary",
          faults: Simulated.failFirst(2, Unavailable({ status: 503 }))
        })
        const pipeline = yield* Pipeline.make({ steps: [{ upstream: primary }], retry: fastRetry })
        const exit = yield* settle(streamParts("hello").pipe(Effect.provide(PipelineLanguageModel.layer(pipeline))))
        assert.isTrue(Exit.isSuccess(exit))
        if (Exit.isSuccess(exit)) {
          assert.strictEqual(exit.value.at(-1)?.type, "finish")
          assert.strictEqual(roadcarOf(exit.value)?.attempts, 3)
        }
        assert.strictEqual(yield* primary.calls, 3)
      }).pipe(Effect.scoped, Effect.provide(Stages))
    )

    it.effect("a stream cut after its first chunks fails with a NetworkError after the parts it got", () =>
      Effect.gen(function* () {
        const primary = yield* Simulated.make({
          name: "primary",
          faults: Simulated.always(CutMidStream({ afterChunks: 2 }))
        })
        const pipeline = yield* Pipeline.make({ steps: [{ upstream: primary }] })
        const seen: Array<string> = []
        const error = yield* LanguageModel.streamText({ prompt: "hello" }).pipe(
          Stream.runForEach((part) => Effect.sync(() => seen.push(part.type))),
          Effect.provide(PipelineLanguageModel.layer(pipeline)),
          Effect.flip
        )
        assert.strictEqual(error.reason._tag, "NetworkError")
        assert.strictEqual(error.method, "streamText")
        assert.deepStrictEqual(seen, ["response-metadata", "text-start", "text-delta"])
      }).pipe(Effect.scoped, Effect.provide(Stages))
    )

    it.effect("fails before any part when the pipeline cannot open a stream", () =>
      Effect.gen(function* () {
        const primary = scripted("primary", [], badRequest)
        const pipeline = yield* Pipeline.make({ steps: [{ upstream: primary }] })
        const error = yield* streamParts("hello").pipe(
          Effect.provide(PipelineLanguageModel.layer(pipeline)),
          Effect.flip
        )
        assert.strictEqual(error.reason._tag, "InvalidRequestError")
        assert.strictEqual(error.method, "streamText")
      }).pipe(Effect.scoped, Effect.provide(Stages))
    )

    it.effect("assembles streamed tool-call deltas into tool calls before finish", () =>
      Effect.gen(function* () {
        const chunk = (
          delta: ChatCompletion.ChatChunk["choices"][number]["delta"],
          finishReason: ChatCompletion.FinishReason | null = null
        ): ChatCompletion.ChatChunk => ({
          id: "chatcmpl-rec",
          object: "chat.completion.chunk",
          created: 0,
          model: "rec-1",
          choices: [{ index: 0, delta, finish_reason: finishReason }]
        })
        const { upstream } = recording(respond({ role: "assistant", content: "" }, "stop"), [
          chunk({ role: "assistant", content: "" }),
          chunk({
            tool_calls: [{ index: 0, id: "call_9", type: "function", function: { name: "get_weather", arguments: "" } }]
          }),
          chunk({ tool_calls: [{ index: 0, function: { arguments: '{"city":' } }] }),
          chunk({ tool_calls: [{ index: 0, function: { arguments: '"Oslo"}' } }] }),
          { ...chunk({}, "tool_calls"), usage: ChatCompletion.usage(7, 2) }
        ])
        const pipeline = yield* Pipeline.make({ steps: [{ upstream }] })
        const toolkit = yield* Weather
        const parts = yield* LanguageModel.streamText({ prompt: "weather in Oslo?", toolkit }).pipe(
          Stream.runCollect,
          Effect.provide(PipelineLanguageModel.layer(pipeline))
        )
        const call = parts.find((part) => part.type === "tool-call")
        assert.deepStrictEqual(call && [call.id, call.name, call.params], ["call_9", "get_weather", { city: "Oslo" }])
        const result = parts.find((part) => part.type === "tool-result")
        assert.deepStrictEqual(result?.result, { temp: 4 })
        const finish = parts.find((part) => part.type === "finish")
        assert.strictEqual(finish?.reason, "tool-calls")
        assert.notInclude(
          parts.map((part) => part.type),
          "text-start"
        )
      }).pipe(Effect.scoped, Effect.provide(Layer.merge(Stages, WeatherHandlers)))
    )

    it.effect("closes the upstream stream when the caller stops consuming", () =>
      Effect.gen(function* () {
        let open = 0
        let closed = 0
        const chunks = ChatCompletion.responseToChunks({
          id: "chatcmpl-x",
          object: "chat.completion",
          created: 0,
          model: "x",
          choices: [{ index: 0, message: { role: "assistant", content: "one two" }, finish_reason: "stop" }],
          usage: ChatCompletion.usage(1, 2)
        })
        const tracked: Upstream.Upstream = {
          name: "tracked",
          provider: "test",
          model: "x",
          complete: () => Effect.die("not used"),
          stream: () =>
            Stream.fromIterable(chunks).pipe(
              Stream.onStart(Effect.sync(() => open++)),
              Stream.ensuring(Effect.sync(() => closed++))
            )
        }
        const pipeline = yield* Pipeline.make({ steps: [{ upstream: tracked }] })
        const firstTwo = yield* LanguageModel.streamText({ prompt: "hi" }).pipe(
          Stream.tap(() => Effect.sync(() => assert.strictEqual(closed, 0))),
          Stream.take(2),
          Stream.runCollect,
          Effect.provide(PipelineLanguageModel.layer(pipeline))
        )
        assert.deepStrictEqual(
          firstTwo.map((part) => part.type),
          ["response-metadata", "text-start"]
        )
        assert.strictEqual(open, 1)
        assert.strictEqual(closed, 1)
      }).pipe(Effect.scoped, Effect.provide(Stages))
    )
  })
})
