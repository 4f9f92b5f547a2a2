import { assert, describe, it } from "@effect/vitest"
import { Retry, UpstreamError } from "@roadcar/core"
import { Clock, Duration, Effect, Exit, Fiber, Random, Schema } from "effect"
import { TestClock } from "effect/testing"

// `Retry.retryFrom` is a hand-written loop for `Effect.retry` with `Retry.schedule`: every scenario
// below is played through both, on a clock and a random generator of their own, and compared.

const Step = Schema.Literals(["ok", "503", "429", "429-hint", "429-long-hint", "timeout", "400"])
type Step = typeof Step.Type

const Scenario = Schema.Struct({
  script: Schema.Array(Step).check(Schema.isMaxLength(6)),
  attempts: Schema.Literals([1, 2, 3, 4]),
  baseDelay: Schema.Literals([0, 100, 250]),
  factor: Schema.Literals([1, 2, 3]),
  maxDelay: Schema.Literals([150, 5000]),
  jitter: Schema.Boolean,
  retryTimeouts: Schema.Boolean,
  deadline: Schema.Literals([300, 700, 3000, 60000]),
  seed: Schema.Literals([1, 2, 3])
})
type Scenario = typeof Scenario.Type

const reasonOf = (step: Step): UpstreamError.Reason | undefined => {
  switch (step) {
    case "ok":
      return undefined
    case "503":
      return new UpstreamError.Unavailable({ status: 503 })
    case "429":
      return new UpstreamError.RateLimited({})
    case "429-hint":
      return new UpstreamError.RateLimited({ retryAfter: Duration.millis(400) })
    case "429-long-hint":
      return new UpstreamError.RateLimited({ retryAfter: Duration.seconds(90) })
    case "timeout":
      return new UpstreamError.TimedOut({ phase: "attempt", after: Duration.seconds(1) })
    case "400":
      return new UpstreamError.BadRequest({ status: 400, detail: "bad" })
  }
}

type Runner = (
  first: UpstreamError.UpstreamError,
  attempt: Effect.Effect<string, UpstreamError.UpstreamError>,
  options: Retry.Options,
  context: { readonly deadline: number; readonly onRetry: (event: Retry.RetryEvent) => Effect.Effect<void> }
) => Effect.Effect<string, UpstreamError.UpstreamError>

// How the pipeline retried before `retryFrom`: the first failure replayed to `Effect.retry`.
const withSchedule: Runner = (first, attempt, options, context) => {
  let replay = true
  return Effect.retry(
    Effect.suspend(() => {
      if (!replay) return attempt
      replay = false
      return Effect.fail(first)
    }),
    Retry.schedule(options, context)
  )
}

const play = (run: Runner, scenario: Scenario) =>
  Effect.gen(function* () {
    const calls: Array<number> = []
    const events: Array<string> = []
    const attempt = Effect.flatMap(Clock.currentTimeMillis, (now) => {
      const reason = reasonOf(scenario.script[calls.length] ?? "ok")
      calls.push(now)
      return reason === undefined ? Effect.succeed("answer") : Effect.fail(UpstreamError.make("up", reason))
    })
    const options: Retry.Options = {
      attempts: scenario.attempts,
      baseDelay: Duration.millis(scenario.baseDelay),
      factor: scenario.factor,
      maxDelay: Duration.millis(scenario.maxDelay),
      jitter: scenario.jitter,
      retryTimeouts: scenario.retryTimeouts
    }
    const context = {
      deadline: scenario.deadline,
      onRetry: (event: Retry.RetryEvent) =>
        Effect.flatMap(Clock.currentTimeMillis, (now) =>
          Effect.sync(() => {
            events.push(`${now}: ${Retry.describe(event)} (${event.error.reason._tag})`)
          })
        )
    }
    const program = Effect.catch(attempt, (first) => run(first, attempt, options, context))
    const fiber = yield* Effect.forkChild(Random.withSeed(program, scenario.seed))
    let elapsed = 0
    while (fiber.pollUnsafe() === undefined && elapsed < 200_000) {
      yield* TestClock.adjust("50 millis")
      elapsed += 50
    }
    const exit = yield* Fiber.await(fiber)
    const result = Exit.isSuccess(exit)
      ? exit.value
      : String(exit.cause.reasons.map((reason) => (reason._tag === "Fail" ? reason.error.reason._tag : reason._tag)))
    return { result, calls, events }
  }).pipe(Effect.provide(TestClock.layer()))

describe("Retry.retryFrom", () => {
  it.effect.prop(
    "makes the same retries, at the same times, with the same hook calls, as Effect.retry with Retry.schedule",
    { scenario: Scenario },
    ({ scenario }) =>
      Effect.gen(function* () {
        const expected = yield* play(withSchedule, scenario)
        const actual = yield* play(Retry.retryFrom, scenario)
        assert.deepStrictEqual(actual, expected)
      }),
    { arbitrary: { runs: 200 } }
  )

  it.effect("backs off exponentially, honours Retry-After, and stops before the deadline", () =>
    Effect.gen(function* () {
      const base: Scenario = {
        script: ["503", "429-hint", "503", "503"],
        attempts: 4,
        baseDelay: 100,
        factor: 2,
        maxDelay: 5000,
        jitter: false,
        retryTimeouts: false,
        deadline: 60000,
        seed: 1
      }
      const { result, calls, events } = yield* play(Retry.retryFrom, base)
      assert.strictEqual(result, "Unavailable")
      assert.deepStrictEqual(calls, [0, 100, 500, 900])
      assert.deepStrictEqual(events, [
        "0: retry 1/4 in 100ms: upstream unavailable (503) (Unavailable)",
        "100: retry 2/4 in 400ms: rate limited (429, retry after 400ms) (RateLimited)",
        "500: retry 3/4 in 400ms: upstream unavailable (503) (Unavailable)"
      ])
      const late = yield* play(Retry.retryFrom, { ...base, deadline: 700 })
      assert.deepStrictEqual(late.calls, [0, 100, 500], "the wait that would end at 900ms is past the deadline")
      const exactly = yield* play(Retry.retryFrom, { ...base, script: ["503", "503"], deadline: 300 })
      assert.deepStrictEqual(exactly.calls, [0, 100], "a wait that would end exactly at the deadline is not made")
      const timedOut = yield* play(Retry.retryFrom, { ...base, script: ["timeout"] })
      assert.deepStrictEqual(timedOut.calls, [0], "a timed-out attempt is not retried by default")
    })
  )
})
