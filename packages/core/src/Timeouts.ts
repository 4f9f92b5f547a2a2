/**
 * Time limits for upstream calls: per attempt, time to first chunk, gap between chunks, and the
 * request's total deadline.
 *
 * Each limit fails with `UpstreamError` reason `TimedOut` naming its phase, so retry and fallback can
 * tell a silent upstream from a broken one. The stream limits apply while chunks flow: the first chunk
 * must come within `firstChunk`, each next one within `chunkGap` of the previous.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import { TimedOut, UpstreamError } from "./UpstreamError.ts"

/**
 * The time limits.
 *
 * @category options
 * @since 0.1.0
 */
export interface Options {
  /** One upstream attempt, JSON answers (default 30s). */
  readonly attempt: Duration.Input
  /** From the request to the first streamed chunk (default 15s). */
  readonly firstChunk: Duration.Input
  /** Between two streamed chunks (default 10s). */
  readonly chunkGap: Duration.Input
  /** The whole request, every retry and fallback included (default 60s). */
  readonly total: Duration.Input
}

/**
 * @category options
 * @since 0.1.0
 */
export const defaults: Options = {
  attempt: "30 seconds",
  firstChunk: "15 seconds",
  chunkGap: "10 seconds",
  total: "60 seconds"
}

const timedOut = (upstream: string, phase: TimedOut["phase"], after: Duration.Duration) =>
  new UpstreamError({ upstream, reason: new TimedOut({ phase, after }) })

// The clock every fiber has unless a program provides another one (a `TestClock`, say): `Date.now`
// and `setTimeout`.
const liveClock = Context.get(Context.empty(), Clock.Clock)
const maxTimerMillis = 2 ** 31 - 1

/**
 * Fails an effect with `TimedOut` after `after` (the effect is interrupted).
 *
 * **Details**
 *
 * The same guarantees as `Effect.timeoutOrElse`: the effect runs in a fiber of its own, is
 * interrupted (and awaited) when the time is up or when the caller is interrupted, and the time is
 * the `Clock`'s, so `TestClock` drives it. The construction is cheaper: an effect that is already an
 * `Exit` is returned as is; otherwise the effect's fiber starts at once and, when it finishes without
 * suspending (a cached or in-memory answer), its exit is returned with no timer at all; otherwise one
 * `setTimeout` races it on the live clock. Only under another clock does it fall back to racing a
 * `Clock` sleep.
 *
 * Why it exists: `Effect.timeoutOrElse` forks two fibers (the effect and a sleep) and a timer for
 * every call, which was a large part of the pipeline's per-request overhead (two limits per request).
 *
 * @category combinators
 * @since 0.1.0
 */
export const limit = <A, E, R>(
  self: Effect.Effect<A, E, R>,
  upstream: string,
  phase: TimedOut["phase"],
  after: Duration.Duration
): Effect.Effect<A, E | UpstreamError, R> =>
  !Duration.isFinite(after) || Exit.isExit(self) // an `Exit` (`Effect.succeed`, say) is already done
    ? self
    : Effect.flatMap(Effect.forkChild(self, { startImmediately: true }), (fiber) => {
        const done = fiber.pollUnsafe()
        if (done !== undefined) return done
        return Effect.clockWith((clock) => {
          const millis = Duration.toMillis(after)
          return clock === liveClock && millis > 0 && millis <= maxTimerMillis
            ? raceTimer(fiber, millis, () => timedOut(upstream, phase, after))
            : raceClock(fiber, after, () => timedOut(upstream, phase, after))
        })
      })

// The running effect against one `setTimeout`.
const raceTimer = <A, E>(
  fiber: Fiber.Fiber<A, E>,
  millis: number,
  onTimeout: () => UpstreamError
): Effect.Effect<A, E | UpstreamError> =>
  Effect.callback<A, E | UpstreamError>((resume) => {
    const timer = setTimeout(() => {
      stopObserving()
      resume(Effect.andThen(Fiber.interrupt(fiber), Effect.fail(onTimeout())))
    }, millis)
    const stopObserving = fiber.addObserver((exit) => {
      clearTimeout(timer)
      resume(exit)
    })
    return Effect.suspend(() => {
      clearTimeout(timer)
      stopObserving()
      return Fiber.interrupt(fiber)
    })
  })

// The running effect against a sleep on the fiber's `Clock` (a `TestClock`, say).
const raceClock = <A, E>(
  fiber: Fiber.Fiber<A, E>,
  after: Duration.Duration,
  onTimeout: () => UpstreamError
): Effect.Effect<A, E | UpstreamError> =>
  Effect.flatMap(
    Effect.timeoutOption(Fiber.await(fiber), after),
    (exit): Effect.Effect<A, E | UpstreamError> =>
      Option.isSome(exit) ? exit.value : Effect.andThen(Fiber.interrupt(fiber), Effect.fail(onTimeout()))
  ).pipe(Effect.onInterrupt(() => Fiber.interrupt(fiber)))
