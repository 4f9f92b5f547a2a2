import { assert, describe, it } from "@effect/vitest"
import { Breaker, UpstreamError } from "@roadcar/core"
import { Duration, Effect, Exit, Fiber, Layer, Schema, Stream } from "effect"
import { CircuitBreaker } from "effect/persistence"
import { TestClock } from "effect/testing"

// `Breaker.layerMemory` keeps its circuits in plain memory; `Breaker.layer` runs the same policy through
// effect's `CircuitBreaker` on a `CircuitBreakerStore`. Both must behave identically: every scenario
// below is played against both and the calls' results, the states and the transitions compared.

const Op = Schema.Literals([
  "ok",
  "503",
  "429",
  "429-hint",
  "429-long-hint",
  "400",
  "slow-ok",
  "slow-503",
  "slower-ok",
  "interrupt",
  "wait-1s",
  "wait-6s",
  "wait-40s",
  "wait-2h"
])
type Op = typeof Op.Type
const Scenario = Schema.Array(Op).check(Schema.isMaxLength(40))

const consecutive: Breaker.Options = {
  consecutiveFailures: 2,
  openDuration: "5 seconds",
  maxOpenDuration: "30 seconds"
}
const rate: Breaker.Options = {
  ...consecutive,
  failureRate: { threshold: 0.5, window: 4, minimumCalls: 2 }
}

const upstreamError = (reason: UpstreamError.UpstreamError["reason"]) => UpstreamError.make("up", reason)

const call = (op: Op): Effect.Effect<string, UpstreamError.UpstreamError> => {
  switch (op) {
    case "ok":
      return Effect.succeed("ok")
    case "503":
      return Effect.fail(upstreamError(new UpstreamError.Unavailable({ status: 503 })))
    case "429":
      return Effect.fail(upstreamError(new UpstreamError.RateLimited({})))
    case "429-hint":
      return Effect.fail(upstreamError(new UpstreamError.RateLimited({ retryAfter: Duration.seconds(12) })))
    case "429-long-hint":
      return Effect.fail(upstreamError(new UpstreamError.RateLimited({ retryAfter: Duration.minutes(10) })))
    case "400":
      return Effect.fail(upstreamError(new UpstreamError.BadRequest({ status: 400, detail: "bad" })))
    case "slow-ok":
      return Effect.as(Effect.sleep("3 seconds"), "slow")
    case "slower-ok":
      return Effect.as(Effect.sleep("8 seconds"), "slower")
    default:
      return Effect.andThen(Effect.sleep("3 seconds"), call("503"))
  }
}

const describeExit = (exit: Exit.Exit<string, UpstreamError.UpstreamError>): string => {
  if (Exit.isSuccess(exit)) return exit.value
  const error = exit.cause.reasons.find((reason) => reason._tag === "Fail")?.error
  if (error === undefined) return "interrupted"
  const retryAfter = error.reason._tag === "CircuitOpen" ? error.reason.retryAfter : undefined
  return retryAfter === undefined ? error.reason._tag : `${error.reason._tag} ${Duration.toMillis(retryAfter)}ms`
}

const describeState = (state: CircuitBreaker.State): string => {
  switch (state._tag) {
    case "Closed":
      return "Closed"
    case "Open":
      return `Open ${Duration.toMillis(state.retryAfter)}ms #${state.consecutiveOpenings}`
    case "HalfOpen":
      return `HalfOpen probing=${state.probing} #${state.consecutiveOpenings}`
  }
}

const describeTransition = (transition: Breaker.Transition): string =>
  transition.to === "Open"
    ? `${transition.key} ${transition.from}->Open ${Duration.toMillis(transition.retryAfter)}ms #${transition.consecutiveOpenings}`
    : `${transition.key} ${transition.from}->${transition.to}`

// Plays a scenario against one breaker layer, on a clock of its own.
const play = (layer: Layer.Layer<Breaker.Breaker>, scenario: ReadonlyArray<Op>) =>
  Effect.gen(function* () {
    const breaker = yield* Breaker.Breaker
    const transitions: Array<string> = []
    yield* breaker.transitions.pipe(
      Stream.runForEach((transition) => Effect.sync(() => transitions.push(describeTransition(transition)))),
      Effect.forkScoped
    )
    yield* Effect.yieldNow
    const log: Array<string> = []
    const slow: Array<Fiber.Fiber<string, UpstreamError.UpstreamError>> = []
    for (const op of scenario) {
      if (op === "slow-ok" || op === "slow-503" || op === "slower-ok") {
        slow.push(yield* Effect.forkChild(breaker.protect("up", call(op))))
        yield* Effect.yieldNow
      } else if (op === "interrupt") {
        const fiber = slow.shift()
        if (fiber !== undefined)
          log.push(`interrupt: ${describeExit(yield* Fiber.interrupt(fiber).pipe(Effect.andThen(Fiber.await(fiber))))}`)
      } else if (op.startsWith("wait-")) {
        yield* TestClock.adjust(
          op === "wait-1s" ? "1 second" : op === "wait-6s" ? "6 seconds" : op === "wait-40s" ? "40 seconds" : "2 hours"
        )
      } else {
        log.push(`${op}: ${describeExit(yield* Effect.exit(breaker.protect("up", call(op))))}`)
      }
      log.push(describeState(yield* breaker.state("up")))
    }
    yield* TestClock.adjust("10 seconds")
    for (const fiber of slow) log.push(`slow: ${describeExit(yield* Fiber.await(fiber))}`)
    log.push(describeState(yield* breaker.state("up")))
    for (let i = 0; i < 3; i++) yield* Effect.yieldNow
    return { log, transitions }
  }).pipe(Effect.scoped, Effect.provide(layer), Effect.provide(TestClock.layer()))

const storeBacked = (options: Breaker.Options) =>
  Breaker.layer(options).pipe(Layer.provide(CircuitBreaker.layerStoreMemory()))

describe("Breaker.layerMemory", () => {
  it.effect.prop(
    "behaves exactly like the store-backed breaker (consecutive failures)",
    { scenario: Scenario },
    ({ scenario }) =>
      Effect.gen(function* () {
        const expected = yield* play(storeBacked(consecutive), scenario)
        const actual = yield* play(Breaker.layerMemory(consecutive), scenario)
        assert.deepStrictEqual(actual, expected)
      }),
    { arbitrary: { runs: 150 } }
  )

  it.effect.prop(
    "behaves exactly like the store-backed breaker (failure rate)",
    { scenario: Scenario },
    ({ scenario }) =>
      Effect.gen(function* () {
        const expected = yield* play(storeBacked(rate), scenario)
        const actual = yield* play(Breaker.layerMemory(rate), scenario)
        assert.deepStrictEqual(actual, expected)
      }),
    { arbitrary: { runs: 150 } }
  )

  it.effect("backs off: each consecutive opening lasts twice as long, up to the cap", () =>
    Effect.gen(function* () {
      const { log, transitions } = yield* play(Breaker.layerMemory(consecutive), [
        "503",
        "503",
        "wait-6s",
        "503",
        "wait-6s",
        "ok",
        "wait-6s",
        "503",
        "wait-40s",
        "503",
        "wait-40s",
        "503"
      ])
      assert.deepStrictEqual(transitions, [
        "upstream:up Closed->Open 5000ms #1",
        "upstream:up Open->HalfOpen",
        "upstream:up HalfOpen->Open 10000ms #2",
        "upstream:up Open->HalfOpen",
        "upstream:up HalfOpen->Open 20000ms #3",
        "upstream:up Open->HalfOpen",
        "upstream:up HalfOpen->Open 30000ms #4",
        "upstream:up Open->HalfOpen",
        "upstream:up HalfOpen->Open 30000ms #5"
      ])
      assert.strictEqual(log[8], "ok: CircuitOpen 4000ms", "still open 6s into a 10s opening")
    })
  )

  it.effect("the backoff count resets once the circuit stayed closed as long as it was last open", () =>
    Effect.gen(function* () {
      const reopened: ReadonlyArray<Op> = ["503", "503", "wait-6s", "ok", "503", "503"]
      const afterReset: ReadonlyArray<Op> = ["503", "503", "wait-6s", "ok", "wait-6s", "503", "503"]
      const soon = yield* play(Breaker.layerMemory(consecutive), reopened)
      assert.strictEqual(soon.transitions[3], "upstream:up Closed->Open 10000ms #2")
      const later = yield* play(Breaker.layerMemory(consecutive), afterReset)
      assert.strictEqual(later.transitions[3], "upstream:up Closed->Open 5000ms #1")
      assert.deepStrictEqual(soon, yield* play(storeBacked(consecutive), reopened))
      assert.deepStrictEqual(later, yield* play(storeBacked(consecutive), afterReset))
    })
  )

  it.effect("a call admitted before the circuit opened changes nothing when it ends", () =>
    Effect.gen(function* () {
      // The slower call was admitted while closed; it succeeds while the probe (failing) runs.
      const scenario: ReadonlyArray<Op> = ["slower-ok", "503", "503", "wait-6s", "slow-503", "wait-1s", "wait-1s"]
      const { log, transitions } = yield* play(Breaker.layerMemory(consecutive), scenario)
      assert.deepStrictEqual(transitions, [
        "upstream:up Closed->Open 5000ms #1",
        "upstream:up Open->HalfOpen",
        "upstream:up HalfOpen->Open 10000ms #2"
      ])
      assert.strictEqual(log.at(-3), "slow: slower")
      assert.deepStrictEqual({ log, transitions }, yield* play(storeBacked(consecutive), scenario))
    })
  )

  it.effect("lets exactly one probe through; an interrupted probe frees the slot", () =>
    Effect.gen(function* () {
      const { log } = yield* play(Breaker.layerMemory(consecutive), [
        "503",
        "503",
        "wait-6s",
        "slow-ok",
        "ok",
        "interrupt",
        "ok"
      ])
      assert.deepStrictEqual(log.slice(5), [
        "HalfOpen probing=true #1",
        "ok: CircuitOpen",
        "HalfOpen probing=true #1",
        "interrupt: interrupted",
        "HalfOpen probing=false #1",
        "ok: ok",
        "Closed",
        "Closed"
      ])
    })
  )

  it.effect("an upstream's Retry-After keeps the circuit open longer, within maxOpenDuration", () =>
    Effect.gen(function* () {
      const hinted = yield* play(Breaker.layerMemory(consecutive), ["503", "429-hint"])
      assert.strictEqual(hinted.transitions[0], "upstream:up Closed->Open 12000ms #1")
      const capped = yield* play(Breaker.layerMemory(consecutive), ["503", "429-long-hint"])
      assert.strictEqual(capped.transitions[0], "upstream:up Closed->Open 30000ms #1")
    })
  )

  it.effect("opens on the failure rate over the last calls", () =>
    Effect.gen(function* () {
      const { transitions } = yield* play(Breaker.layerMemory(rate), ["ok", "ok", "ok", "503", "ok", "503"])
      assert.deepStrictEqual(transitions, ["upstream:up Closed->Open 5000ms #1"])
    })
  )
})
