import { assert, describe, it } from "@effect/vitest"
import { Breaker, Monitor, Pipeline, UpstreamError } from "@roadcar/core"
import { Effect, Fiber, Layer, Stream } from "effect"
import { TestClock } from "effect/testing"
import { request, scripted, unavailable } from "./utils/Scripted.ts"

const options = { consecutiveFailures: 3, openDuration: "10 seconds", maxOpenDuration: "1 minute" } as const
const fail = (status: number) => Effect.fail(UpstreamError.make("up", new UpstreamError.Unavailable({ status })))

describe("Breaker", () => {
  it.effect("opens after consecutive failures, fails fast, lets one probe through, closes on success", () =>
    Effect.gen(function* () {
      const breaker = yield* Breaker.Breaker
      const transitions: Array<string> = []
      yield* breaker.transitions.pipe(
        Stream.runForEach((t) => Effect.sync(() => transitions.push(`${t.from}->${t.to}`))),
        Effect.forkScoped
      )
      yield* Effect.yieldNow // let the subscriber subscribe
      let calls = 0
      const call = (ok: boolean) =>
        breaker.protect(
          "up",
          Effect.suspend(() => {
            calls++
            return ok ? Effect.succeed("ok") : fail(503)
          })
        )
      for (let i = 0; i < 3; i++) assert.strictEqual((yield* Effect.flip(call(false))).reason._tag, "Unavailable")
      assert.strictEqual((yield* breaker.state("up"))._tag, "Open")
      const rejected = yield* Effect.flip(call(true))
      assert.strictEqual(rejected.reason._tag, "CircuitOpen")
      assert.isFalse(rejected.isRetryable)
      assert.strictEqual(calls, 3, "an open circuit makes no call")
      yield* TestClock.adjust("10 seconds")
      // Half-open: one probe at a time; a concurrent call is refused while it runs.
      const probe = yield* Effect.forkChild(
        breaker.protect("up", Effect.sleep("1 second").pipe(Effect.andThen(Effect.succeed("probe"))))
      )
      yield* Effect.yieldNow
      assert.strictEqual((yield* Effect.flip(call(true))).reason._tag, "CircuitOpen")
      yield* TestClock.adjust("1 second")
      assert.strictEqual(yield* Fiber.join(probe), "probe")
      assert.strictEqual((yield* breaker.state("up"))._tag, "Closed")
      assert.strictEqual(yield* call(true), "ok")
      yield* Effect.yieldNow
      assert.deepStrictEqual(transitions, ["Closed->Open", "Open->HalfOpen", "HalfOpen->Closed"])
    }).pipe(Effect.provide(Breaker.layerMemory(options)))
  )

  it.effect("a failed probe opens the circuit again, for longer", () =>
    Effect.gen(function* () {
      const breaker = yield* Breaker.Breaker
      for (let i = 0; i < 3; i++) yield* Effect.flip(breaker.protect("up", fail(500)))
      yield* TestClock.adjust("10 seconds")
      yield* Effect.flip(breaker.protect("up", fail(500)))
      const state = yield* breaker.state("up")
      assert.strictEqual(state._tag, "Open")
      if (state._tag === "Open") assert.isTrue(state.consecutiveOpenings >= 2)
      yield* TestClock.adjust("10 seconds")
      assert.strictEqual((yield* Effect.flip(breaker.protect("up", Effect.succeed(1)))).reason._tag, "CircuitOpen")
    }).pipe(Effect.provide(Breaker.layerMemory(options)))
  )

  it.effect("client errors say nothing about the upstream's health", () =>
    Effect.gen(function* () {
      const breaker = yield* Breaker.Breaker
      for (let i = 0; i < 10; i++) {
        yield* Effect.flip(
          breaker.protect(
            "up",
            Effect.fail(UpstreamError.make("up", new UpstreamError.BadRequest({ status: 400, detail: "x" })))
          )
        )
      }
      assert.strictEqual((yield* breaker.state("up"))._tag, "Closed")
    }).pipe(Effect.provide(Breaker.layerMemory(options)))
  )

  it.effect("in the pipeline, an open primary sends requests straight to the fallback", () =>
    Effect.gen(function* () {
      const primary = scripted("primary", [], unavailable)
      const fallback = scripted("fallback", [])
      const pipeline = yield* Pipeline.make({
        steps: [{ upstream: primary, retry: { attempts: 1 } }, { upstream: fallback }]
      })
      for (let i = 0; i < 3; i++) yield* pipeline.complete(request(`q${i}`))
      assert.strictEqual(primary.calls.length, 3)
      const answer = yield* pipeline.complete(request("after"))
      assert.strictEqual(answer.meta.upstream, "fallback")
      assert.strictEqual(answer.meta.fallback?.reasonTag, "CircuitOpen")
      assert.strictEqual(primary.calls.length, 3, "the open circuit made no call")
    }).pipe(Effect.scoped, Effect.provide(Layer.merge(Breaker.layerMemory(options), Monitor.layerNoop)))
  )
})
