import { assert, describe, it } from "@effect/vitest"
import { Timeouts, UpstreamError } from "@roadcar/core"
import { Duration, Effect, Exit, Fiber } from "effect"
import { TestClock } from "effect/testing"

const limit = <A, E>(self: Effect.Effect<A, E>, after: Duration.Input) =>
  Timeouts.limit(self, "up", "attempt", Duration.fromInputUnsafe(after))

const reasonOf = <A, E>(exit: Exit.Exit<A, E>): string => {
  if (Exit.isSuccess(exit)) return `ok ${String(exit.value)}`
  const error = exit.cause.reasons.find((reason) => reason._tag === "Fail")?.error
  if (error instanceof UpstreamError.UpstreamError && error.reason._tag === "TimedOut") {
    return `TimedOut ${error.reason.phase} ${Duration.toMillis(error.reason.after)}ms`
  }
  return error === undefined ? "interrupted" : `failed ${String(error)}`
}

describe("Timeouts.limit", () => {
  describe("under the TestClock", () => {
    it.effect("an effect that answers at once is returned as is, success or failure", () =>
      Effect.gen(function* () {
        assert.strictEqual(yield* limit(Effect.succeed(1), "1 second"), 1)
        assert.strictEqual(reasonOf(yield* Effect.exit(limit(Effect.fail("boom"), "1 second"))), "failed boom")
        assert.strictEqual(yield* limit(Effect.succeed(2), "0 millis"), 2)
        // Not an `Exit` yet, but done without suspending: run in its own fiber, no timer needed.
        assert.strictEqual(
          yield* limit(
            Effect.sync(() => 3),
            "1 second"
          ),
          3
        )
        const failed = yield* Effect.exit(
          limit(
            Effect.suspend(() => Effect.fail("late boom")),
            "1 second"
          )
        )
        assert.strictEqual(reasonOf(failed), "failed late boom")
      })
    )

    it.effect("times out exactly when the limit is reached and interrupts the effect", () =>
      Effect.gen(function* () {
        let interrupted = false
        const slow = Effect.sleep("5 seconds").pipe(
          Effect.as("late"),
          Effect.onInterrupt(() => Effect.sync(() => (interrupted = true)))
        )
        const fiber = yield* Effect.forkChild(limit(slow, "2 seconds"))
        yield* TestClock.adjust("1999 millis")
        assert.isUndefined(fiber.pollUnsafe(), "still running before the limit")
        yield* TestClock.adjust("1 millis")
        assert.strictEqual(reasonOf(yield* Fiber.await(fiber)), "TimedOut attempt 2000ms")
        assert.isTrue(interrupted, "the timed-out effect was interrupted")
      })
    )

    it.effect("an effect that suspends and answers within the limit succeeds", () =>
      Effect.gen(function* () {
        const fiber = yield* Effect.forkChild(limit(Effect.as(Effect.sleep("1 second"), "in time"), "2 seconds"))
        yield* TestClock.adjust("1 second")
        assert.strictEqual(reasonOf(yield* Fiber.await(fiber)), "ok in time")
        yield* TestClock.adjust("5 seconds")
      })
    )

    it.effect("interrupting the caller interrupts the effect", () =>
      Effect.gen(function* () {
        let interrupted = false
        const slow = Effect.never.pipe(Effect.onInterrupt(() => Effect.sync(() => (interrupted = true))))
        const fiber = yield* Effect.forkChild(limit(slow, "10 seconds"))
        yield* Effect.yieldNow
        yield* Fiber.interrupt(fiber)
        assert.isTrue(interrupted)
      })
    )

    it.effect("an infinite limit never times out", () =>
      Effect.gen(function* () {
        const fiber = yield* Effect.forkChild(limit(Effect.as(Effect.sleep("1 day"), "done"), Duration.infinity))
        yield* TestClock.adjust("1 day")
        assert.strictEqual(reasonOf(yield* Fiber.await(fiber)), "ok done")
      })
    )
  })

  describe("on the live clock", () => {
    it.live("times out a slow effect after the limit and interrupts it", () =>
      Effect.gen(function* () {
        let interrupted = false
        const slow = Effect.sleep("2 seconds").pipe(Effect.onInterrupt(() => Effect.sync(() => (interrupted = true))))
        const started = Date.now()
        const exit = yield* Effect.exit(limit(slow, "30 millis"))
        const elapsed = Date.now() - started
        assert.strictEqual(reasonOf(exit), "TimedOut attempt 30ms")
        assert.isTrue(interrupted)
        assert.isTrue(elapsed >= 25 && elapsed < 1500, `timed out after ${elapsed}ms`)
      })
    )

    it.live("an effect that suspends and answers in time succeeds, failures pass through", () =>
      Effect.gen(function* () {
        assert.strictEqual(yield* limit(Effect.as(Effect.sleep("5 millis"), "in time"), "2 seconds"), "in time")
        const failed = yield* Effect.exit(
          limit(Effect.andThen(Effect.sleep("5 millis"), Effect.fail("boom")), "2 seconds")
        )
        assert.strictEqual(reasonOf(failed), "failed boom")
      })
    )

    it.live("interrupting the caller interrupts the effect and stops the timer", () =>
      Effect.gen(function* () {
        let interrupted = false
        const slow = Effect.never.pipe(Effect.onInterrupt(() => Effect.sync(() => (interrupted = true))))
        const fiber = yield* Effect.forkChild(limit(slow, "10 seconds"))
        yield* Effect.sleep("5 millis")
        yield* Fiber.interrupt(fiber)
        assert.isTrue(interrupted)
        assert.strictEqual(reasonOf(yield* Fiber.await(fiber)), "interrupted")
      })
    )
  })
})
