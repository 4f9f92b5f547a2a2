// The streamed answer's one stage: what it reports when the chunks end (usage, model), when it
// releases the upstream, and what an interruption leaves behind, with and without the response cache.

import { assert, describe, it } from "@effect/vitest"
import {
  Breaker,
  Budget,
  ChatCompletion,
  Monitor,
  Pipeline,
  RequestLog,
  ResponseCache,
  type Upstream
} from "@roadcar/core"
import { Clock, Deferred, Duration, Effect, Exit, Fiber, Layer, Schedule, Stream } from "effect"
import { TestClock, TestConsole } from "effect/testing"
import { request, response } from "./utils/Scripted.ts"

const Stages = Layer.mergeAll(Breaker.layerMemory(), Monitor.layerNoop)

// An upstream whose stream is its answer's chunks, then (when `stall`) nothing more; `events` records
// when the stream's own finalizer ran.
const chunked = (name: string, events: Array<string>, stall = false): Upstream.Upstream => ({
  name,
  provider: "test",
  model: name,
  complete: () => Effect.succeed(response(name, `answer from ${name}`)),
  stream: () =>
    Stream.fromIterable(ChatCompletion.responseToChunks(response(name, `answer from ${name}`))).pipe(
      (chunks) => (stall ? Stream.concat(chunks, Stream.never) : chunks),
      Stream.ensuring(Effect.sync(() => events.push("released")))
    )
})

// A monitor that records every finished request in `events`.
const recording = (events: Array<string>, outcomes: Array<Monitor.RequestOutcome>) =>
  Monitor.Monitor.of({
    ...Monitor.noop,
    requestFinished: (outcome) =>
      Effect.sync(() => {
        events.push("finished")
        outcomes.push(outcome)
      })
  })

const requestLines = Effect.map(TestConsole.logLines, (lines) =>
  lines
    .map((line) => JSON.parse(String(line)) as { message: unknown; annotations: Record<string, unknown> })
    .filter((line) => line.message === "request")
)

describe("Pipeline.stream", () => {
  for (const [label, cache] of [
    ["without", Layer.empty],
    ["with", ResponseCache.layer()]
  ] as const) {
    it.effect(`a streamed answer logs its usage and answering model, ${label} the response cache`, () =>
      Effect.gen(function* () {
        const pipeline = yield* Pipeline.make({ steps: [{ upstream: chunked("primary", []) }] })
        const answer = yield* pipeline.stream(request("usage"), { requestId: "req-usage" })
        const chunks = yield* Stream.runCollect(answer.chunks)
        assert.strictEqual(chunks.map((chunk) => chunk.choices[0]?.delta.content ?? "").join(""), "answer from primary")
        const lines = yield* requestLines
        assert.strictEqual(lines.length, 1)
        const line = lines[0]!.annotations
        assert.strictEqual(line["status"], "success")
        assert.strictEqual(line["answered_model"], "primary")
        assert.strictEqual(line["input_tokens"], 5)
        assert.strictEqual(line["output_tokens"], 3)
        // With the cache, the complete answer was stored: the same request is now a hit.
        const again = yield* pipeline.stream(request("usage"))
        assert.strictEqual(again.meta.cacheHit, label === "with")
      }).pipe(Effect.scoped, Effect.provide(Layer.mergeAll(Stages, cache, RequestLog.layerJson("Info"))))
    )
  }

  it.effect("a reader that stops before the end: the answer is not cached, and the request is an error", () =>
    Effect.gen(function* () {
      const pipeline = yield* Pipeline.make({ steps: [{ upstream: chunked("primary", []) }] })
      const answer = yield* pipeline.stream(request("early"))
      const taken = yield* Stream.runCollect(Stream.take(answer.chunks, 2))
      assert.strictEqual(taken.length, 2)
      const [line] = yield* requestLines
      assert.strictEqual(line?.annotations["status"], "error")
      assert.strictEqual(line?.annotations["error"], "the stream was closed before it was read to the end")
      assert.strictEqual(line?.annotations["upstream"], "primary", "the upstream whose stream had begun")
      // Read to the end, the same request is answered again by the upstream, whole, and only then cached.
      const whole = yield* pipeline.stream(request("early"))
      assert.isFalse(whole.meta.cacheHit)
      yield* Stream.runDrain(whole.chunks)
      assert.isTrue((yield* pipeline.stream(request("early"))).meta.cacheHit)
    }).pipe(Effect.scoped, Effect.provide(Layer.mergeAll(Stages, ResponseCache.layer(), RequestLog.layerJson("Info"))))
  )

  it.effect("the total deadline bounds the stream after its first chunk too", () =>
    Effect.gen(function* () {
      // A chunk every 5 s, never finishing: within the 10 s chunk gap each time.
      const chunk = ChatCompletion.responseToChunks(response("primary", "x"))[1]!
      const trickle: Upstream.Upstream = {
        name: "primary",
        provider: "test",
        model: "primary",
        complete: () => Effect.never,
        stream: () => Stream.fromSchedule(Schedule.spaced("5 seconds")).pipe(Stream.map(() => chunk))
      }
      const pipeline = yield* Pipeline.make({
        steps: [{ upstream: trickle }],
        timeouts: { attempt: "30 seconds", firstChunk: "30 seconds", chunkGap: "10 seconds", total: "60 seconds" }
      })
      const reader = yield* Effect.forkChild(
        Effect.scoped(Effect.flatMap(pipeline.stream(request("slow")), (answer) => Stream.runCount(answer.chunks)))
      )
      for (let second = 0; second < 120 && reader.pollUnsafe() === undefined; second++) {
        yield* TestClock.adjust("1 second")
      }
      assert.isDefined(reader.pollUnsafe(), "the stream outlived its 60 s deadline")
      const exit = yield* Fiber.await(reader)
      assert.isTrue(Exit.isFailure(exit))
      const error = Exit.isFailure(exit)
        ? exit.cause.reasons.find((reason) => reason._tag === "Fail")?.error
        : undefined
      assert.strictEqual((error as { reason?: { _tag: string; phase?: string } })?.reason?._tag, "TimedOut")
      assert.strictEqual((error as { reason?: { phase?: string } })?.reason?.phase, "deadline")
      assert.isAtMost(yield* Clock.currentTimeMillis, Duration.toMillis(Duration.seconds(61)))
    }).pipe(Effect.scoped, Effect.provide(Stages))
  )

  it.effect("a stream read only in part is charged what it used: its usage if seen, else its estimate", () =>
    Effect.gen(function* () {
      // One chunk per pull, as a network stream delivers them (not the whole answer in one batch).
      const upstream = chunked("primary", [])
      const oneByOne = {
        ...upstream,
        stream: (chat: ChatCompletion.ChatRequest) => Stream.rechunk(upstream.stream(chat), 1)
      }
      const pipeline = yield* Pipeline.make({ steps: [{ upstream: oneByOne }] })
      const budget = yield* Budget.Budget
      const used = Effect.map(budget.status("k"), (statuses) => statuses[0]?.used)
      const chunks = ChatCompletion.responseToChunks(response("primary", "answer from primary")).length
      // Every chunk read, the usage chunk included, but not the end: the usage (5 + 3) is charged.
      const all = yield* pipeline.stream(request("part", { max_tokens: 50 }), { key: "k" })
      yield* Stream.runDrain(Stream.take(all.chunks, chunks))
      assert.strictEqual(yield* used, 8)
      // One chunk read: no usage seen, so the estimate (prompt + max_tokens) stays charged, not given back.
      const headRequest = request("head", { max_tokens: 50 })
      const head = yield* pipeline.stream(headRequest, { key: "k" })
      yield* Stream.runDrain(Stream.take(head.chunks, 1))
      assert.strictEqual(yield* used, 8 + ChatCompletion.estimatePromptTokens(headRequest) + 50)
    }).pipe(
      Effect.scoped,
      Effect.provide(Layer.mergeAll(Stages, Budget.layerMemory({ budgets: [{ per: "day", tokens: 10_000 }] })))
    )
  )

  it.effect("the upstream is released as soon as the chunks end, before the request finishes", () =>
    Effect.gen(function* () {
      const events: Array<string> = []
      const outcomes: Array<Monitor.RequestOutcome> = []
      const pipeline = yield* Pipeline.make({ steps: [{ upstream: chunked("primary", events) }] }).pipe(
        Effect.provideService(Monitor.Monitor, recording(events, outcomes))
      )
      // The caller's scope stays open: the release is the stream's, not the scope's.
      const answer = yield* pipeline.stream(request())
      yield* Stream.runDrain(answer.chunks)
      assert.deepStrictEqual(events, ["released", "finished"])
      assert.strictEqual(outcomes[0]?.outcome, "success")
    }).pipe(Effect.scoped, Effect.provide(Stages))
  )

  it.effect("a stream interrupted while it waits for a chunk releases the upstream and finishes as an error", () =>
    Effect.gen(function* () {
      const events: Array<string> = []
      const outcomes: Array<Monitor.RequestOutcome> = []
      const pipeline = yield* Pipeline.make({ steps: [{ upstream: chunked("primary", events, true) }] }).pipe(
        Effect.provideService(Monitor.Monitor, recording(events, outcomes))
      )
      const answer = yield* pipeline.stream(request())
      const first = yield* Deferred.make<void>()
      const reader = yield* Stream.runForEach(answer.chunks, () => Deferred.succeed(first, undefined)).pipe(
        Effect.forkChild
      )
      yield* Deferred.await(first)
      assert.deepStrictEqual(events, [])
      yield* Fiber.interrupt(reader)
      assert.deepStrictEqual(events, ["released", "finished"])
      assert.strictEqual(outcomes[0]?.outcome, "error")
    }).pipe(Effect.scoped, Effect.provide(Stages))
  )
})
