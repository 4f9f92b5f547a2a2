import { assert, describe, it } from "@effect/vitest"
import {
  AlertSink,
  Breaker,
  type ChatCompletion,
  Monitor,
  Pipeline,
  ResponseCache,
  Simulated,
  type UpstreamError
} from "@roadcar/core"
import { Duration, Effect, Exit, Fiber, Layer, Stream } from "effect"
import { TestClock } from "effect/testing"
import { badRequest, rateLimited, request, scripted, unavailable } from "./utils/Scripted.ts"

const Stages = Layer.mergeAll(
  Breaker.layerMemory({ ...Breaker.defaults, consecutiveFailures: 1000 }),
  Monitor.layerNoop
)
const noJitter = { jitter: false, baseDelay: "100 millis", maxDelay: "1 second" } as const

// Runs a pipeline call in a fiber and lets virtual time run until it is done.
const settle = <A, E>(effect: Effect.Effect<A, E>) =>
  Effect.gen(function* () {
    const fiber = yield* Effect.forkChild(effect)
    for (let i = 0; i < 200 && fiber.pollUnsafe() === undefined; i++) yield* TestClock.adjust("100 millis")
    return yield* Fiber.await(fiber)
  })

describe("Pipeline", () => {
  describe("retry", () => {
    it.effect("k failures then success make exactly k+1 calls for k < 3", () =>
      Effect.gen(function* () {
        for (const k of [0, 1, 2]) {
          const primary = scripted(
            "primary",
            Array.from({ length: k }, () => unavailable)
          )
          const fallback = scripted("fallback", [])
          const pipeline = yield* Pipeline.make({
            steps: [{ upstream: primary }, { upstream: fallback }],
            retry: noJitter
          })
          const exit = yield* settle(pipeline.complete(request()))
          assert.isTrue(Exit.isSuccess(exit))
          if (Exit.isSuccess(exit)) {
            assert.strictEqual(exit.value.meta.upstream, "primary")
            assert.strictEqual(exit.value.meta.attempts, k + 1)
            assert.isUndefined(exit.value.meta.fallback)
          }
          assert.strictEqual(primary.calls.length, k + 1)
          assert.strictEqual(fallback.calls.length, 0)
        }
      }).pipe(Effect.scoped, Effect.provide(Stages))
    )

    it.effect("three failures hand the request to the fallback, which says why", () =>
      Effect.gen(function* () {
        const primary = scripted("primary", [unavailable, unavailable, unavailable])
        const fallback = scripted("fallback", [])
        const pipeline = yield* Pipeline.make({
          steps: [{ upstream: primary }, { upstream: fallback }],
          retry: noJitter
        })
        const exit = yield* settle(pipeline.complete(request()))
        assert.isTrue(Exit.isSuccess(exit))
        if (Exit.isSuccess(exit)) {
          assert.strictEqual(exit.value.meta.upstream, "fallback")
          assert.strictEqual(exit.value.meta.attempts, 4)
          assert.deepStrictEqual(exit.value.meta.fallback, {
            step: 1,
            reason: "upstream unavailable (503)",
            reasonTag: "Unavailable"
          })
        }
        assert.strictEqual(primary.calls.length, 3)
        assert.strictEqual(fallback.calls.length, 1)
      }).pipe(Effect.scoped, Effect.provide(Stages))
    )

    it.effect("delays grow exponentially and respect the cap", () =>
      Effect.gen(function* () {
        const primary = scripted("primary", [], unavailable)
        const pipeline = yield* Pipeline.make({
          steps: [{ upstream: primary }],
          retry: { jitter: false, attempts: 6, baseDelay: "100 millis", maxDelay: "500 millis" }
        })
        const exit = yield* settle(pipeline.complete(request()))
        assert.isTrue(Exit.isFailure(exit))
        const gaps = primary.calls.slice(1).map((t, i) => t - primary.calls[i]!)
        assert.deepStrictEqual(gaps, [100, 200, 400, 500, 500])
      }).pipe(Effect.scoped, Effect.provide(Stages))
    )

    it.effect("jittered delays stay within ±20% of the backoff", () =>
      Effect.gen(function* () {
        const primary = scripted("primary", [], unavailable)
        const pipeline = yield* Pipeline.make({
          steps: [{ upstream: primary }],
          retry: { jitter: true, attempts: 3, baseDelay: "1 second", maxDelay: "10 seconds" }
        })
        yield* settle(pipeline.complete(request()))
        const gaps = primary.calls.slice(1).map((t, i) => t - primary.calls[i]!)
        assert.strictEqual(gaps.length, 2)
        // settle() advances time in 100ms steps, so a wake-up is seen up to 100ms late.
        assert.isTrue(gaps[0]! >= 800 && gaps[0]! <= 1300, `first gap ${gaps[0]}`)
        assert.isTrue(gaps[1]! >= 1600 && gaps[1]! <= 2500, `second gap ${gaps[1]}`)
      }).pipe(Effect.scoped, Effect.provide(Stages))
    )

    it.effect("never retries sooner than the upstream's Retry-After", () =>
      Effect.gen(function* () {
        const primary = scripted("primary", [rateLimited("2 seconds")])
        const pipeline = yield* Pipeline.make({ steps: [{ upstream: primary }], retry: noJitter })
        const exit = yield* settle(pipeline.complete(request()))
        assert.isTrue(Exit.isSuccess(exit))
        assert.strictEqual(primary.calls.length, 2)
        assert.isTrue(primary.calls[1]! - primary.calls[0]! >= 2000)
      }).pipe(Effect.scoped, Effect.provide(Stages))
    )

    it.effect("a non-retryable reason makes exactly one call", () =>
      Effect.gen(function* () {
        const primary = scripted("primary", [badRequest])
        const fallback = scripted("fallback", [])
        const pipeline = yield* Pipeline.make({
          steps: [{ upstream: primary }, { upstream: fallback }],
          retry: noJitter
        })
        const error = yield* Effect.flip(pipeline.complete(request()))
        assert.strictEqual(error._tag, "UpstreamError")
        assert.strictEqual(primary.calls.length, 1)
        assert.strictEqual(fallback.calls.length, 0, "a bad request is not sent to the fallback by default")
      }).pipe(Effect.scoped, Effect.provide(Stages))
    )

    it.effect("a retry that would end past the deadline is not made", () =>
      Effect.gen(function* () {
        const primary = scripted("primary", [rateLimited("30 seconds")])
        const fallback = scripted("fallback", [])
        const pipeline = yield* Pipeline.make({
          steps: [{ upstream: primary }, { upstream: fallback }],
          timeouts: { total: "10 seconds" }
        })
        const exit = yield* settle(pipeline.complete(request()))
        assert.isTrue(Exit.isSuccess(exit))
        if (Exit.isSuccess(exit)) assert.strictEqual(exit.value.meta.upstream, "fallback")
        assert.strictEqual(primary.calls.length, 1)
        assert.strictEqual(fallback.calls[0], primary.calls[0], "the fallback answered at once, without waiting")
      }).pipe(Effect.scoped, Effect.provide(Stages))
    )
  })

  describe("timeouts", () => {
    it.effect("a timed-out attempt moves on to the fallback instead of retrying the silent upstream", () =>
      Effect.gen(function* () {
        const primary = scripted("primary", ["hang"])
        const fallback = scripted("fallback", [])
        const pipeline = yield* Pipeline.make({
          steps: [{ upstream: primary }, { upstream: fallback }],
          timeouts: { attempt: "2 seconds" }
        })
        const exit = yield* settle(pipeline.complete(request()))
        assert.isTrue(Exit.isSuccess(exit))
        if (Exit.isSuccess(exit)) {
          assert.strictEqual(exit.value.meta.upstream, "fallback")
          assert.strictEqual(exit.value.meta.fallback?.reasonTag, "TimedOut")
        }
        assert.strictEqual(primary.calls.length, 1)
        assert.strictEqual(fallback.calls[0]! - primary.calls[0]!, 2000)
      }).pipe(Effect.scoped, Effect.provide(Stages))
    )

    it.effect("retryTimeouts retries the same upstream after a timeout", () =>
      Effect.gen(function* () {
        const primary = scripted("primary", ["hang"])
        const pipeline = yield* Pipeline.make({
          steps: [{ upstream: primary }],
          retry: { ...noJitter, retryTimeouts: true },
          timeouts: { attempt: "2 seconds" }
        })
        const exit = yield* settle(pipeline.complete(request()))
        assert.isTrue(Exit.isSuccess(exit))
        assert.strictEqual(primary.calls.length, 2)
      }).pipe(Effect.scoped, Effect.provide(Stages))
    )

    it.effect("the total deadline ends the request and the static answer takes over", () =>
      Effect.gen(function* () {
        const primary = scripted("primary", [], { delay: "4 seconds", after: unavailable })
        const pipeline = yield* Pipeline.make({
          steps: [{ upstream: primary }],
          retry: { ...noJitter, attempts: 10 },
          timeouts: { attempt: "30 seconds", total: "9 seconds" },
          staticAnswer: "Sorry, try again later."
        })
        const exit = yield* settle(pipeline.complete(request()))
        assert.isTrue(Exit.isSuccess(exit))
        if (Exit.isSuccess(exit)) {
          assert.isTrue(exit.value.meta.static)
          assert.strictEqual(exit.value.response.choices[0]?.message.content, "Sorry, try again later.")
          assert.strictEqual(exit.value.meta.fallback?.reasonTag, "TimedOut")
        }
        assert.isTrue(primary.calls.every((t) => t < 9000))
      }).pipe(Effect.scoped, Effect.provide(Stages))
    )
  })

  describe("fallback", () => {
    it.effect("a step with a condition is entered only for that reason", () =>
      Effect.gen(function* () {
        const primary = scripted("primary", [], unavailable)
        const bigContext = scripted("big-context", [])
        const last = scripted("last", [])
        const pipeline = yield* Pipeline.make({
          steps: [{ upstream: primary }, { upstream: bigContext, when: ["ContextLengthExceeded"] }, { upstream: last }],
          retry: noJitter
        })
        const exit = yield* settle(pipeline.complete(request()))
        assert.isTrue(Exit.isSuccess(exit))
        if (Exit.isSuccess(exit)) assert.strictEqual(exit.value.meta.upstream, "last")
        assert.strictEqual(bigContext.calls.length, 0)
      }).pipe(Effect.scoped, Effect.provide(Stages))
    )

    it.effect("with a static answer the pipeline's error channel holds no upstream error", () =>
      Effect.gen(function* () {
        const primary = scripted("primary", [], badRequest)
        const pipeline = yield* Pipeline.make({ steps: [{ upstream: primary }], staticAnswer: "static" })
        // The type proves it: only Roadcar's own refusals (rate limit, budget) can fail this call.
        const call: Effect.Effect<Pipeline.Answer, Pipeline.Refusal> = pipeline.complete(request())
        const answer = yield* call
        assert.isTrue(answer.meta.static)
        assert.strictEqual(answer.meta.upstream, "static")
      }).pipe(Effect.scoped, Effect.provide(Stages))
    )

    it.effect("without a static answer the last failure reaches the caller", () =>
      Effect.gen(function* () {
        const primary = scripted("primary", [], unavailable)
        const pipeline = yield* Pipeline.make({ steps: [{ upstream: primary }], retry: noJitter })
        const exit = yield* settle(pipeline.complete(request()))
        assert.isTrue(Exit.isFailure(exit))
        if (Exit.isFailure(exit)) {
          const error = exit.cause.reasons.find((r) => r._tag === "Fail")?.error as UpstreamError.UpstreamError
          assert.strictEqual(error.reason._tag, "Unavailable")
        }
      }).pipe(Effect.scoped, Effect.provide(Stages))
    )
  })

  describe("breaker alerts", () => {
    it.effect("a circuit left open and forgotten while idle resolves its breaker_open alert", () => {
      const alerts: Array<string> = []
      return Effect.gen(function* () {
        const primary = scripted(
          "primary",
          Array.from({ length: 5 }, () => unavailable)
        )
        const pipeline = yield* Pipeline.make({
          steps: [{ upstream: primary, retry: { attempts: 1 } }],
          staticAnswer: "static"
        })
        for (let i = 0; i < 5; i++) yield* pipeline.complete(request(`fail ${i}`))
        for (let i = 0; i < 10; i++) yield* Effect.yieldNow
        assert.deepStrictEqual(alerts, ["Raised breaker_open primary"])
        // Nothing calls primary again: after an hour idle the breaker forgets the open circuit, with
        // no transition of its own; within a minute the pipeline sees it closed and the alert resolves.
        for (let minute = 0; minute < 180; minute++) yield* TestClock.adjust("1 minute")
        const breaker = yield* Breaker.Breaker
        assert.strictEqual((yield* breaker.state("primary"))._tag, "Closed")
        assert.deepStrictEqual(alerts.slice(-1), ["Resolved breaker_open primary"])
        assert.isAtMost(
          alerts.filter((alert) => alert.startsWith("Raised")).length,
          13,
          "not raised every cool-down for good"
        )
        const raisedAfterResolve = alerts.slice(alerts.indexOf("Resolved breaker_open primary") + 1)
        assert.deepStrictEqual(raisedAfterResolve, [])
      }).pipe(
        Effect.scoped,
        Effect.provide(
          Layer.mergeAll(
            Breaker.layerMemory(),
            Monitor.layer().pipe(
              Layer.provide(
                AlertSink.layerCallback((alert) => void alerts.push(`${alert._tag} ${alert.rule} ${alert.subject}`))
              )
            )
          )
        )
      )
    })
  })

  describe("cache", () => {
    it.effect("identical requests in flight make one upstream call; a later one is a marked hit", () =>
      Effect.gen(function* () {
        const primary = scripted("primary", [], { delay: "1 second" })
        const pipeline = yield* Pipeline.make({ steps: [{ upstream: primary }] })
        const fiber = yield* Effect.forkChild(
          Effect.all(
            Array.from({ length: 5 }, (_, i) => pipeline.complete(request(i % 2 === 0 ? "hi" : "  hi "))),
            {
              concurrency: "unbounded"
            }
          )
        )
        yield* TestClock.adjust("1 second")
        const answers = yield* Fiber.join(fiber)
        assert.strictEqual(primary.calls.length, 1)
        assert.strictEqual(answers.filter((a) => !a.meta.cacheHit).length, 1)
        const later = yield* pipeline.complete(request("hi", { stream: false, user: "someone" }))
        assert.isTrue(later.meta.cacheHit)
        assert.strictEqual(later.meta.attempts, 0)
        assert.strictEqual(primary.calls.length, 1)
        const other = yield* Effect.forkChild(pipeline.complete(request("hi", { temperature: 0.5 })))
        yield* TestClock.adjust("1 second")
        assert.isFalse((yield* Fiber.join(other)).meta.cacheHit)
        assert.strictEqual(primary.calls.length, 2)
      }).pipe(Effect.scoped, Effect.provide(Layer.merge(Stages, ResponseCache.layer())))
    )

    it.effect("failures and static answers are not cached", () =>
      Effect.gen(function* () {
        const primary = scripted("primary", [badRequest])
        const pipeline = yield* Pipeline.make({ steps: [{ upstream: primary }], staticAnswer: "static" })
        const first = yield* pipeline.complete(request())
        assert.isTrue(first.meta.static)
        const second = yield* pipeline.complete(request())
        assert.isFalse(second.meta.static)
        assert.isFalse(second.meta.cacheHit)
        assert.strictEqual(primary.calls.length, 2)
      }).pipe(Effect.scoped, Effect.provide(Layer.merge(Stages, ResponseCache.layer())))
    )
  })

  describe("stream", () => {
    it.effect("streams the upstream's chunks and falls back before the first chunk", () =>
      Effect.gen(function* () {
        const primary = scripted("primary", [unavailable, unavailable, unavailable])
        const fallback = scripted("fallback", [])
        const pipeline = yield* Pipeline.make({
          steps: [{ upstream: primary }, { upstream: fallback }],
          retry: noJitter
        })
        const fiber = yield* Effect.forkChild(
          Effect.gen(function* () {
            const answer = yield* pipeline.stream(request())
            const chunks = yield* Stream.runCollect(answer.chunks)
            return { answer, chunks }
          }).pipe(Effect.scoped)
        )
        yield* TestClock.adjust("1 second")
        const { answer, chunks } = yield* Fiber.join(fiber)
        assert.strictEqual(answer.meta.upstream, "fallback")
        const text = chunks.map((c) => c.choices[0]?.delta.content ?? "").join("")
        assert.strictEqual(text, "answer from fallback")
        assert.strictEqual(chunks.at(-1)?.choices[0]?.finish_reason, "stop")
      }).pipe(Effect.scoped, Effect.provide(Stages))
    )

    it.effect("a stream whose first chunk does not come in time times out and falls back", () =>
      Effect.gen(function* () {
        const primary = scripted("primary", ["hang"])
        const fallback = scripted("fallback", [])
        const pipeline = yield* Pipeline.make({
          steps: [{ upstream: primary }, { upstream: fallback }],
          timeouts: { firstChunk: "3 seconds" }
        })
        const fiber = yield* Effect.forkChild(
          pipeline.stream(request()).pipe(
            Effect.flatMap((a) => Stream.runCollect(a.chunks)),
            Effect.scoped
          )
        )
        yield* TestClock.adjust(Duration.seconds(3))
        const chunks = yield* Fiber.join(fiber)
        assert.isTrue(chunks.length > 0)
        assert.strictEqual(fallback.calls[0], 3000)
      }).pipe(Effect.scoped, Effect.provide(Stages))
    )

    it.effect("a stream cut after its first chunk fails in the stream, never passing as complete", () =>
      Effect.gen(function* () {
        const primary = yield* Simulated.make({
          name: "primary",
          wordsPerChunk: 1,
          faults: Simulated.always(Simulated.SimulatedFault.CutMidStream({ afterChunks: 3 }))
        })
        const fallback = scripted("fallback", [])
        const pipeline = yield* Pipeline.make({ steps: [{ upstream: primary }, { upstream: fallback }] })
        const answer = yield* pipeline.stream(request())
        assert.strictEqual(answer.meta.upstream, "primary")
        const error = yield* Effect.flip(Stream.runCollect(answer.chunks))
        assert.strictEqual(error._tag, "UpstreamError")
        assert.strictEqual(fallback.calls.length, 0, "after the first chunk the answer is not restarted elsewhere")
      }).pipe(Effect.scoped, Effect.provide(Stages))
    )

    it.effect("a stream cut right after its role chunk is a failed attempt: retried, then the fallback", () =>
      Effect.gen(function* () {
        const primary = yield* Simulated.make({
          name: "primary",
          faults: Simulated.always(Simulated.SimulatedFault.CutMidStream({ afterChunks: 1 }))
        })
        const fallback = scripted("fallback", [])
        const pipeline = yield* Pipeline.make({
          steps: [{ upstream: primary }, { upstream: fallback }],
          retry: { baseDelay: "10 millis", jitter: false }
        })
        const fiber = yield* Effect.forkChild(
          pipeline.stream(request()).pipe(
            Effect.flatMap((answer) => Effect.map(Stream.runCollect(answer.chunks), (chunks) => ({ answer, chunks }))),
            Effect.scoped
          )
        )
        yield* TestClock.adjust("1 second")
        const { answer, chunks } = yield* Fiber.join(fiber)
        assert.strictEqual(answer.meta.upstream, "fallback")
        assert.strictEqual(yield* primary.calls, 3)
        assert.strictEqual(chunks.map((c) => c.choices[0]?.delta.content ?? "").join(""), "answer from fallback")
      }).pipe(Effect.scoped, Effect.provide(Stages))
    )

    it.effect("a stalled stream fails with a chunk-gap timeout", () =>
      Effect.gen(function* () {
        const primary = yield* Simulated.make({
          name: "primary",
          faults: Simulated.always(Simulated.SimulatedFault.StallStream({ afterChunks: 2 }))
        })
        const pipeline = yield* Pipeline.make({ steps: [{ upstream: primary }], timeouts: { chunkGap: "2 seconds" } })
        const fiber = yield* Effect.forkChild(
          pipeline.stream(request()).pipe(
            Effect.flatMap((answer) => Effect.flip(Stream.runCollect(answer.chunks))),
            Effect.scoped
          )
        )
        yield* TestClock.adjust("2 seconds")
        const error = yield* Fiber.join(fiber)
        assert.strictEqual(error.reason._tag, "TimedOut")
        if (error.reason._tag === "TimedOut") assert.strictEqual(error.reason.phase, "chunk-gap")
      }).pipe(Effect.scoped, Effect.provide(Stages))
    )

    it.effect("a stream closed before it was read still finishes its request", () =>
      Effect.gen(function* () {
        const finished: Array<Monitor.RequestOutcome> = []
        const monitor = Monitor.Monitor.of({
          ...Monitor.noop,
          requestFinished: (outcome) => Effect.sync(() => finished.push(outcome))
        })
        const primary = yield* Simulated.make({ name: "primary" })
        const pipeline = yield* Pipeline.make({ steps: [{ upstream: primary }] }).pipe(
          Effect.provideService(Monitor.Monitor, monitor)
        )
        yield* pipeline.stream(request()).pipe(Effect.scoped)
        assert.strictEqual(finished.length, 1)
        assert.strictEqual(finished[0]?.outcome, "error")
      }).pipe(Effect.scoped, Effect.provide(Stages))
    )

    it.effect("a completed stream is cached and replayed to the next streaming or JSON request", () =>
      Effect.gen(function* () {
        const primary = yield* Simulated.make({ name: "primary" })
        const pipeline = yield* Pipeline.make({ steps: [{ upstream: primary }] })
        const first = yield* pipeline.stream(request("cache me"))
        const firstChunks = yield* Stream.runCollect(first.chunks)
        const second = yield* pipeline.stream(request("cache me"))
        assert.isTrue(second.meta.cacheHit)
        const secondChunks = yield* Stream.runCollect(second.chunks)
        const text = (chunks: ReadonlyArray<ChatCompletion.ChatChunk>) =>
          chunks.map((chunk) => chunk.choices[0]?.delta.content ?? "").join("")
        assert.strictEqual(text(secondChunks), text(firstChunks))
        const json = yield* pipeline.complete(request("cache me"))
        assert.isTrue(json.meta.cacheHit)
        assert.strictEqual(json.response.choices[0]?.message.content, text(firstChunks))
        assert.strictEqual(yield* primary.calls, 1)
      }).pipe(Effect.scoped, Effect.provide(Layer.merge(Stages, ResponseCache.layer())))
    )
  })
})
