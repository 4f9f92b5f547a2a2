import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Fiber, Stream } from "effect"
import { TestClock } from "effect/testing"
import * as ChatCompletion from "../src/ChatCompletion.ts"
import * as Simulated from "../src/Simulated.ts"
import type * as UpstreamError from "../src/UpstreamError.ts"

const request = (content: string, extra: Partial<ChatCompletion.ChatRequest> = {}): ChatCompletion.ChatRequest => ({
  model: "public-model",
  messages: [
    { role: "system", content: "be brief" },
    { role: "user", content }
  ],
  ...extra
})

const { SimulatedFault } = Simulated

/** Runs a stream, keeping the chunks it emitted before it failed or ended. */
const collectUntilFailure = (stream: Stream.Stream<ChatCompletion.ChatChunk, UpstreamError.UpstreamError>) =>
  Effect.gen(function* () {
    const chunks: Array<ChatCompletion.ChatChunk> = []
    const error = yield* stream.pipe(
      Stream.runForEach((chunk) => Effect.sync(() => chunks.push(chunk))),
      Effect.flip
    )
    return { chunks, error }
  })

describe("Simulated", () => {
  describe("complete", () => {
    it.effect("answers deterministically, marked as simulated, with an echo of the last user message", () =>
      Effect.gen(function* () {
        const model = yield* Simulated.make()
        const first = yield* model.complete(request("What is the capital of France?"))
        const again = yield* model.complete(request("What is the capital of France?"))
        const other = yield* model.complete(request("Tell me about rivers"))
        const text = first.choices[0]?.message.content ?? ""
        assert.strictEqual(again.choices[0]?.message.content, text)
        assert.notStrictEqual(other.choices[0]?.message.content, text)
        assert.isTrue(text.startsWith('[simulated] echo: "What is the capital of France?" reply: '))
        assert.strictEqual(first.choices[0]?.finish_reason, "stop")
        assert.strictEqual(text, Simulated.answer(request("What is the capital of France?")).text)
      })
    )

    it.effect("truncates long echoes to eight words", () =>
      Effect.gen(function* () {
        const model = yield* Simulated.make({ words: 0 })
        const response = yield* model.complete(request("one two three four five six seven eight nine ten"))
        assert.strictEqual(
          response.choices[0]?.message.content,
          '[simulated] echo: "one two three four five six seven eight..." reply:'
        )
      })
    )

    it.effect("reports usage: estimated prompt tokens and one completion token per word", () =>
      Effect.gen(function* () {
        const model = yield* Simulated.make({ words: 5 })
        const req = request("hello there")
        const response = yield* model.complete(req)
        const words = (response.choices[0]?.message.content ?? "").split(" ")
        // [simulated] echo: "hello there" reply: + 5 words
        assert.strictEqual(words.length, 10)
        assert.deepStrictEqual(response.usage, ChatCompletion.usage(ChatCompletion.estimatePromptTokens(req), 10))
      })
    )

    it.effect("honours max_tokens and max_completion_tokens with finish reason length", () =>
      Effect.gen(function* () {
        const model = yield* Simulated.make({ words: 10 })
        const cut = yield* model.complete(request("hello", { max_tokens: 4 }))
        assert.strictEqual(cut.choices[0]?.message.content, '[simulated] echo: "hello" reply:')
        assert.strictEqual(cut.choices[0]?.finish_reason, "length")
        assert.strictEqual(cut.usage.completion_tokens, 4)
        const cut2 = yield* model.complete(request("hello", { max_tokens: 50, max_completion_tokens: 2 }))
        assert.strictEqual(cut2.choices[0]?.message.content, "[simulated] echo:")
        const roomy = yield* model.complete(request("hello", { max_tokens: 14 }))
        assert.strictEqual(roomy.choices[0]?.finish_reason, "stop")
        assert.strictEqual(roomy.usage.completion_tokens, 14)
      })
    )

    it.effect("names itself a simulation and stamps responses from the clock", () =>
      Effect.gen(function* () {
        const model = yield* Simulated.make()
        assert.strictEqual(model.name, "simulated")
        assert.strictEqual(model.provider, "roadcar.simulated")
        assert.strictEqual(model.model, "roadcar-sim-1")
        yield* TestClock.adjust("90 seconds")
        const response = yield* model.complete(request("hi"))
        assert.strictEqual(response.model, "roadcar-sim-1")
        assert.strictEqual(response.object, "chat.completion")
        assert.strictEqual(response.created, 90)
        assert.strictEqual(response.id, "chatcmpl-simulated-1")
        assert.strictEqual((yield* model.complete(request("hi"))).id, "chatcmpl-simulated-2")
        const named = yield* Simulated.make({ name: "sim-b", model: "sim-large" })
        const other = yield* named.complete(request("hi"))
        assert.strictEqual(other.model, "sim-large")
        assert.strictEqual(other.id, "chatcmpl-sim-b-1")
      })
    )

    it.effect("waits its latency on the Clock", () =>
      Effect.gen(function* () {
        const model = yield* Simulated.make({ latency: "2 seconds" })
        const fiber = yield* model.complete(request("hi")).pipe(Effect.forkChild)
        yield* TestClock.adjust("1999 millis")
        assert.isUndefined(fiber.pollUnsafe())
        yield* TestClock.adjust("1 millis")
        const response = yield* Fiber.join(fiber)
        assert.strictEqual(response.created, 2)
      })
    )
  })

  describe("stream", () => {
    it.effect("streams a role chunk, content chunks and a final chunk with usage", () =>
      Effect.gen(function* () {
        const model = yield* Simulated.make({ words: 6, wordsPerChunk: 3 })
        const req = request("hi")
        const chunks = yield* Stream.runCollect(model.stream(req))
        // 10 words: role + 4 content chunks (3, 3, 3, 1 words) + final
        assert.strictEqual(chunks.length, 6)
        assert.deepStrictEqual(chunks[0]?.choices[0]?.delta, { role: "assistant", content: "" })
        assert.strictEqual(chunks[1]?.choices[0]?.delta.content, '[simulated] echo: "hi"')
        assert.isTrue(chunks[2]?.choices[0]?.delta.content?.startsWith(" reply: "))
        for (const chunk of chunks.slice(0, -1)) {
          assert.strictEqual(chunk.choices[0]?.finish_reason, null)
          assert.isUndefined(chunk.usage)
        }
        const last = chunks[chunks.length - 1]
        assert.strictEqual(last?.choices[0]?.finish_reason, "stop")
        assert.deepStrictEqual(last?.usage, ChatCompletion.usage(ChatCompletion.estimatePromptTokens(req), 10))
        for (const chunk of chunks) {
          assert.strictEqual(chunk.object, "chat.completion.chunk")
          assert.strictEqual(chunk.model, "roadcar-sim-1")
          assert.strictEqual(chunk.id, "chatcmpl-simulated-1")
        }
        const assembled = ChatCompletion.assembleChunks(chunks)
        const complete = yield* model.complete(req)
        assert.strictEqual(assembled.choices[0]?.message.content, complete.choices[0]?.message.content)
        assert.deepStrictEqual(assembled.usage, complete.usage)
      })
    )

    it.effect("honours max_tokens in streams", () =>
      Effect.gen(function* () {
        const model = yield* Simulated.make()
        const chunks = yield* Stream.runCollect(model.stream(request("hello", { max_tokens: 4 })))
        const assembled = ChatCompletion.assembleChunks(chunks)
        assert.strictEqual(assembled.choices[0]?.message.content, '[simulated] echo: "hello" reply:')
        assert.strictEqual(assembled.choices[0]?.finish_reason, "length")
        assert.strictEqual(assembled.usage.completion_tokens, 4)
      })
    )

    it.effect("waits the call latency before the first chunk and the chunk latency before each later one", () =>
      Effect.gen(function* () {
        const model = yield* Simulated.make({ words: 6, latency: "1 second", chunkLatency: "100 millis" })
        const chunks: Array<number> = []
        const fiber = yield* model.stream(request("hi")).pipe(
          Stream.runForEach(() => Effect.sync(() => chunks.push(1))),
          Effect.forkChild
        )
        yield* TestClock.adjust("999 millis")
        assert.strictEqual(chunks.length, 0)
        yield* TestClock.adjust("1 millis")
        assert.strictEqual(chunks.length, 1)
        yield* TestClock.adjust("100 millis")
        assert.strictEqual(chunks.length, 2)
        // 6 chunks in all: 4 more gaps of 100ms
        yield* TestClock.adjust("399 millis")
        assert.strictEqual(chunks.length, 5)
        assert.isUndefined(fiber.pollUnsafe())
        yield* TestClock.adjust("1 millis")
        yield* Fiber.join(fiber)
        assert.strictEqual(chunks.length, 6)
      })
    )

    it.effect("counts a call each time the same stream value runs", () =>
      Effect.gen(function* () {
        const model = yield* Simulated.make()
        const stream = model.stream(request("hi"))
        assert.strictEqual(yield* model.calls, 0)
        yield* Stream.runDrain(stream)
        yield* Stream.runDrain(stream)
        assert.strictEqual(yield* model.calls, 2)
      })
    )
  })

  describe("faults", () => {
    const failing: ReadonlyArray<readonly [string, Simulated.SimulatedFault, UpstreamError.ReasonTag]> = [
      ["RateLimited", SimulatedFault.RateLimited({}), "RateLimited"],
      ["Unavailable", SimulatedFault.Unavailable({ status: 502 }), "Unavailable"],
      ["ConnectionReset", SimulatedFault.ConnectionReset(), "ConnectionFailed"],
      ["MalformedOutput", SimulatedFault.MalformedOutput(), "MalformedOutput"],
      ["ContextLengthExceeded", SimulatedFault.ContextLengthExceeded(), "ContextLengthExceeded"],
      ["ContentFiltered", SimulatedFault.ContentFiltered(), "ContentFiltered"],
      ["CutMidStream", SimulatedFault.CutMidStream({ afterChunks: 2 }), "ConnectionFailed"]
    ]

    for (const [label, fault, tag] of failing) {
      it.effect(`${label}: complete fails with ${tag}`, () =>
        Effect.gen(function* () {
          const model = yield* Simulated.make({ faults: Simulated.always(fault), name: "sim" })
          const error = yield* Effect.flip(model.complete(request("hi")))
          assert.strictEqual(error._tag, "UpstreamError")
          assert.strictEqual(error.upstream, "sim")
          assert.strictEqual(error.reason._tag, tag)
        })
      )
    }

    for (const [label, fault, tag] of failing.filter(([label]) => label !== "CutMidStream")) {
      it.effect(`${label}: stream fails with ${tag} before any chunk`, () =>
        Effect.gen(function* () {
          const model = yield* Simulated.make({ faults: Simulated.always(fault) })
          const { chunks, error } = yield* collectUntilFailure(model.stream(request("hi")))
          assert.strictEqual(chunks.length, 0)
          assert.strictEqual(error.reason._tag, tag)
        })
      )
    }

    it.effect("RateLimited carries retryAfter; Unavailable carries its status", () =>
      Effect.gen(function* () {
        const model = yield* Simulated.make({
          faults: Simulated.sequence([
            SimulatedFault.RateLimited({ retryAfter: "3 seconds" }),
            SimulatedFault.Unavailable({ status: 503 })
          ])
        })
        const limited = yield* Effect.flip(model.complete(request("hi")))
        assert.isTrue(limited.isRetryable)
        assert.deepStrictEqual(limited.retryAfter, Duration.seconds(3))
        const unavailable = yield* Effect.flip(model.complete(request("hi")))
        assert.strictEqual(unavailable.reason._tag === "Unavailable" && unavailable.reason.status, 503)
      })
    )

    it.effect("a fault waits the call latency too", () =>
      Effect.gen(function* () {
        const model = yield* Simulated.make({
          latency: "1 second",
          faults: Simulated.always(SimulatedFault.ConnectionReset())
        })
        const fiber = yield* model.complete(request("hi")).pipe(Effect.flip, Effect.forkChild)
        yield* TestClock.adjust("999 millis")
        assert.isUndefined(fiber.pollUnsafe())
        yield* TestClock.adjust("1 millis")
        assert.strictEqual((yield* Fiber.join(fiber)).reason._tag, "ConnectionFailed")
      })
    )

    it.effect("Hang never answers, neither complete nor stream", () =>
      Effect.gen(function* () {
        const model = yield* Simulated.make({ faults: Simulated.always(SimulatedFault.Hang()) })
        const completing = yield* model.complete(request("hi")).pipe(Effect.forkChild)
        const chunks: Array<ChatCompletion.ChatChunk> = []
        const streaming = yield* model.stream(request("hi")).pipe(
          Stream.runForEach((chunk) => Effect.sync(() => chunks.push(chunk))),
          Effect.forkChild
        )
        yield* TestClock.adjust("1 hour")
        assert.isUndefined(completing.pollUnsafe())
        assert.isUndefined(streaming.pollUnsafe())
        assert.strictEqual(chunks.length, 0)
        assert.strictEqual(yield* model.calls, 2)
        yield* Fiber.interrupt(completing)
        yield* Fiber.interrupt(streaming)
      })
    )

    it.effect("SlowFirstChunk delays the answer and the first chunk, then streams normally", () =>
      Effect.gen(function* () {
        const model = yield* Simulated.make({
          latency: "1 second",
          faults: Simulated.always(SimulatedFault.SlowFirstChunk({ delay: "5 seconds" }))
        })
        const completing = yield* model.complete(request("hi")).pipe(Effect.forkChild)
        const chunks: Array<ChatCompletion.ChatChunk> = []
        const streaming = yield* model.stream(request("hi")).pipe(
          Stream.runForEach((chunk) => Effect.sync(() => chunks.push(chunk))),
          Effect.forkChild
        )
        yield* TestClock.adjust("5999 millis")
        assert.isUndefined(completing.pollUnsafe())
        assert.strictEqual(chunks.length, 0)
        yield* TestClock.adjust("1 millis")
        const response = yield* Fiber.join(completing)
        yield* Fiber.join(streaming)
        assert.strictEqual(response.choices[0]?.finish_reason, "stop")
        assert.strictEqual(
          ChatCompletion.assembleChunks(chunks).choices[0]?.message.content,
          response.choices[0]?.message.content
        )
      })
    )

    it.effect("CutMidStream emits afterChunks chunks, then fails with the chosen error", () =>
      Effect.gen(function* () {
        const model = yield* Simulated.make({
          faults: Simulated.sequence([
            SimulatedFault.CutMidStream({ afterChunks: 2 }),
            SimulatedFault.CutMidStream({ afterChunks: 3, error: "MalformedOutput" }),
            SimulatedFault.CutMidStream({ afterChunks: 1000 })
          ])
        })
        const reset = yield* collectUntilFailure(model.stream(request("hi")))
        assert.strictEqual(reset.chunks.length, 2)
        assert.strictEqual(reset.error.reason._tag, "ConnectionFailed")
        const malformed = yield* collectUntilFailure(model.stream(request("hi")))
        assert.strictEqual(malformed.chunks.length, 3)
        assert.strictEqual(malformed.error.reason._tag, "MalformedOutput")
        const late = yield* collectUntilFailure(model.stream(request("hi")))
        const full = yield* Stream.runCollect(model.stream(request("hi")))
        assert.strictEqual(late.chunks.length, full.length - 1)
        assert.isTrue(late.chunks.every((chunk) => chunk.choices[0]?.finish_reason === null))
      })
    )

    it.effect("StallStream emits afterChunks chunks, then neither emits nor ends; complete hangs", () =>
      Effect.gen(function* () {
        const model = yield* Simulated.make({
          chunkLatency: "10 millis",
          faults: Simulated.always(SimulatedFault.StallStream({ afterChunks: 2 }))
        })
        const chunks: Array<ChatCompletion.ChatChunk> = []
        const streaming = yield* model.stream(request("hi")).pipe(
          Stream.runForEach((chunk) => Effect.sync(() => chunks.push(chunk))),
          Effect.forkChild
        )
        const completing = yield* model.complete(request("hi")).pipe(Effect.forkChild)
        yield* TestClock.adjust("1 hour")
        assert.strictEqual(chunks.length, 2)
        assert.isUndefined(streaming.pollUnsafe())
        assert.isUndefined(completing.pollUnsafe())
        yield* Fiber.interrupt(streaming)
        yield* Fiber.interrupt(completing)
      })
    )
  })

  describe("fault scripts", () => {
    const outcome = (model: Simulated.Simulated) =>
      model.complete(request("hi")).pipe(
        Effect.map(() => "ok"),
        Effect.catch((error) => Effect.succeed(error.reason._tag))
      )

    it.effect("failFirst fails the first n calls, counted across complete and stream", () =>
      Effect.gen(function* () {
        const model = yield* Simulated.make({
          faults: Simulated.failFirst(2, SimulatedFault.Unavailable({ status: 503 }))
        })
        assert.strictEqual(yield* outcome(model), "Unavailable")
        const streamed = yield* collectUntilFailure(model.stream(request("hi")))
        assert.strictEqual(streamed.error.reason._tag, "Unavailable")
        assert.strictEqual(yield* outcome(model), "ok")
        assert.strictEqual((yield* Stream.runCollect(model.stream(request("hi")))).length > 2, true)
        assert.strictEqual(yield* model.calls, 4)
      })
    )

    it.effect("sequence gives call k entry k, then healthy", () =>
      Effect.gen(function* () {
        const model = yield* Simulated.make({
          faults: Simulated.sequence([SimulatedFault.ConnectionReset(), null, SimulatedFault.ContentFiltered()])
        })
        const outcomes = yield* Effect.forEach([1, 2, 3, 4, 5], () => outcome(model))
        assert.deepStrictEqual(outcomes, ["ConnectionFailed", "ok", "ContentFiltered", "ok", "ok"])
      })
    )

    it.effect("always fails every call", () =>
      Effect.gen(function* () {
        const model = yield* Simulated.make({ faults: Simulated.always(SimulatedFault.MalformedOutput()) })
        const outcomes = yield* Effect.forEach([1, 2, 3], () => outcome(model))
        assert.deepStrictEqual(outcomes, ["MalformedOutput", "MalformedOutput", "MalformedOutput"])
      })
    )

    it.effect("random is deterministic by seed and fails about rate of the calls", () =>
      Effect.gen(function* () {
        const faults = [SimulatedFault.ConnectionReset(), SimulatedFault.Unavailable({ status: 503 })]
        const run = (seed: number, rate: number) =>
          Effect.gen(function* () {
            const model = yield* Simulated.make({ faults: Simulated.random({ seed, rate, faults }) })
            return yield* Effect.forEach(
              Array.from({ length: 200 }, (_, i) => i),
              () => outcome(model)
            )
          })
        const a = yield* run(7, 0.3)
        const b = yield* run(7, 0.3)
        const c = yield* run(8, 0.3)
        assert.deepStrictEqual(a, b)
        assert.notDeepEqual(a, c)
        const failed = a.filter((result) => result !== "ok").length
        assert.isAbove(failed, 30)
        assert.isBelow(failed, 90)
        assert.isTrue(a.includes("ConnectionFailed"))
        assert.isTrue(a.includes("Unavailable"))
        assert.isTrue((yield* run(7, 0)).every((result) => result === "ok"))
        assert.isTrue((yield* run(7, 1)).every((result) => result !== "ok"))
      })
    )

    it("faultFor agrees with the scripts", () => {
      const reset = SimulatedFault.ConnectionReset()
      assert.isUndefined(Simulated.faultFor(Simulated.healthy, 1))
      assert.strictEqual(Simulated.faultFor(Simulated.failFirst(1, reset), 1), reset)
      assert.isUndefined(Simulated.faultFor(Simulated.failFirst(1, reset), 2))
      assert.isUndefined(Simulated.faultFor(Simulated.failFirst(0, reset), 1))
      assert.isUndefined(Simulated.faultFor(Simulated.sequence([null, reset]), 1))
      assert.strictEqual(Simulated.faultFor(Simulated.sequence([null, reset]), 2), reset)
      assert.isUndefined(Simulated.faultFor(Simulated.sequence([null, reset]), 3))
    })

    it("rejects bad scripts and options with a RangeError", () => {
      const reset = SimulatedFault.ConnectionReset()
      assert.throws(() => Simulated.failFirst(-1, reset), RangeError)
      assert.throws(() => Simulated.random({ seed: 1, rate: 1.5, faults: [reset] }), RangeError)
      assert.throws(() => Simulated.random({ seed: 1, rate: 0.5, faults: [] }), RangeError)
      assert.throws(() => Simulated.makeUnsafe({ wordsPerChunk: 0 }), RangeError)
    })
  })

  describe("calls and callLog", () => {
    it.effect("records each call with its method, number and fault", () =>
      Effect.gen(function* () {
        const model = Simulated.makeUnsafe({
          faults: Simulated.sequence([null, SimulatedFault.ContentFiltered()]),
          callLogLimit: 2
        })
        yield* model.complete(request("first"))
        yield* collectUntilFailure(model.stream(request("second")))
        yield* Stream.runDrain(model.stream(request("third")))
        assert.strictEqual(yield* model.calls, 3)
        const log = yield* model.callLog
        assert.deepStrictEqual(
          log.map((record) => [record.call, record.method, record.fault?._tag]),
          [
            [2, "stream", "ContentFiltered"],
            [3, "stream", undefined]
          ]
        )
        assert.strictEqual(ChatCompletion.contentText(log[1]?.request.messages[1]?.content), "third")
      })
    )
  })
})
