/**
 * Retries a failed upstream attempt with exponential backoff and jitter, within bounds.
 *
 * `Retry.schedule` is a named `Schedule`: exponential backoff with jitter and a cap, only for retryable
 * reasons, never sooner than the upstream's Retry-After, never past the request's deadline, and by
 * default not after a timed-out attempt (the fallback chain moves on instead). Every decision to retry
 * is logged (`retry 1/3 in 412ms: upstream unavailable (503)`). It holds no state and emits no metrics
 * itself: the `onRetry` hook reports each retry to whoever observes.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Random from "effect/Random"
import * as Schedule from "effect/Schedule"
import type { UpstreamError } from "./UpstreamError.ts"

/**
 * Retry settings for one upstream (one fallback step).
 *
 * @category options
 * @since 0.1.0
 */
export interface Options {
  /** Attempts in total, the first included (default 3). */
  readonly attempts: number
  /** Delay before the first retry (default 250ms); doubles (`factor`) on each retry. */
  readonly baseDelay: Duration.Input
  /** Growth per retry (default 2). */
  readonly factor: number
  /** No backoff delay exceeds this (default 5s), except a longer Retry-After from the upstream. */
  readonly maxDelay: Duration.Input
  /** Apply ±20% jitter to each delay (default true). */
  readonly jitter: boolean
  /** Retry an attempt that timed out on the same upstream (default false: move on to the fallback). */
  readonly retryTimeouts: boolean
}

/**
 * The production defaults: 3 attempts, 250ms → 500ms backoff with jitter, capped at 5s.
 *
 * @category options
 * @since 0.1.0
 */
export const defaults: Options = {
  attempts: 3,
  baseDelay: "250 millis",
  factor: 2,
  maxDelay: "5 seconds",
  jitter: true,
  retryTimeouts: false
}

/**
 * What a retry hook is told before the wait.
 *
 * @category models
 * @since 0.1.0
 */
export interface RetryEvent {
  /** 1 for the first retry. */
  readonly retry: number
  /** Attempts allowed in total (so the last possible retry is `attempts - 1` of `attempts`). */
  readonly of: number
  readonly delay: Duration.Duration
  readonly error: UpstreamError
}

/**
 * Whether an error is worth another attempt on the same upstream under these options.
 *
 * @category combinators
 * @since 0.1.0
 */
export const shouldRetry = (options: Pick<Options, "retryTimeouts">, error: UpstreamError): boolean =>
  error.isRetryable && (options.retryTimeouts || error.reason._tag !== "TimedOut")

/**
 * The retry schedule for one request.
 *
 * **Details**
 *
 * `deadline` is the request's total deadline in epoch milliseconds (Clock time): a retry whose wait
 * would end at or after it is not made, so the caller fails (and falls back) at once instead of
 * sleeping into the deadline. `onRetry` runs before each wait (log it, count it, add a span event).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Retry } from "@roadcar/core"
 *
 * const call = Effect.fail(flakyError) // an Effect<ChatResponse, UpstreamError>
 * call.pipe(Effect.retry(Retry.schedule(Retry.defaults, { deadline: Infinity, onRetry: () => Effect.void })))
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const schedule = (
  options: Options,
  context: {
    readonly deadline: number
    readonly onRetry: (event: RetryEvent) => Effect.Effect<void>
  }
): Schedule.Schedule<Duration.Duration, UpstreamError> => {
  const maxDelay = Duration.fromInputUnsafe(options.maxDelay)
  const retries = options.attempts - 1
  const backoff = Schedule.exponential(options.baseDelay, options.factor).pipe(
    options.jitter ? Schedule.jittered : (self) => self,
    Schedule.modifyDelay(({ duration }) => Effect.succeed(Duration.min(duration, maxDelay))),
    Schedule.setInputType<UpstreamError>(),
    Schedule.modifyDelay(({ duration, input }) => {
      const hint = input.retryAfter
      return Effect.succeed(hint !== undefined ? Duration.max(duration, hint) : duration)
    })
  )
  return Schedule.while(backoff, ({ attempt, duration, input, now }) => {
    if (attempt > retries || !shouldRetry(options, input)) return Effect.succeed(false)
    if (now + Duration.toMillis(duration) >= context.deadline) return Effect.succeed(false)
    return Effect.as(context.onRetry({ retry: attempt, of: options.attempts, delay: duration, error: input }), true)
  })
}

/**
 * Retries `attempt` after it failed with `first`: the same decisions, delays, hook calls and sleeps
 * as `Effect.retry` with `schedule(options, context)` fed `first` as its first input.
 *
 * **Details**
 *
 * The n-th retry waits `baseDelay * factor^(n-1)` (±20% jitter, drawn from `Random`, when `jitter`),
 * at most `maxDelay`, at least the error's Retry-After; it is not made when the attempts are spent,
 * the reason is not retryable, or the wait would end at or after `deadline` (Clock time). `onRetry`
 * runs before each wait. Unlike `Effect.retry`, the retried attempt does not see
 * `Schedule.CurrentMetadata`.
 *
 * Why it exists: driving a composed `Schedule` through `Effect.retry` costs several Effect steps per
 * combinator on every retry; this loop is a few. The pipeline's retries go through it.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Retry } from "@roadcar/core"
 *
 * const call = Effect.fail(flakyError) // an Effect<ChatResponse, UpstreamError>
 * call.pipe(
 *   Effect.catch((first) => Retry.retryFrom(first, call, Retry.defaults, { deadline: Infinity, onRetry: () => Effect.void }))
 * )
 * ```
 *
 * @category combinators
 * @since 0.1.0
 */
export const retryFrom = <A, R>(
  first: UpstreamError,
  attempt: Effect.Effect<A, UpstreamError, R>,
  options: Options,
  context: {
    readonly deadline: number
    readonly onRetry: (event: RetryEvent) => Effect.Effect<void>
  }
): Effect.Effect<A, UpstreamError, R> =>
  Effect.clockWith((clock) => {
    const baseMillis = Duration.toMillis(Duration.fromInputUnsafe(options.baseDelay))
    const maxDelay = Duration.fromInputUnsafe(options.maxDelay)
    const retries = options.attempts - 1
    let retry = 0
    const decide = (
      error: UpstreamError,
      now: number,
      backoff: Duration.Duration
    ): Effect.Effect<A, UpstreamError, R> => {
      const capped = Duration.min(backoff, maxDelay)
      const hint = error.retryAfter
      const delay = hint !== undefined ? Duration.max(capped, hint) : capped
      if (retry > retries || !shouldRetry(options, error)) return Effect.fail(error)
      if (now + Duration.toMillis(delay) >= context.deadline) return Effect.fail(error)
      return Effect.andThen(
        context.onRetry({ retry, of: options.attempts, delay, error }),
        Effect.andThen(Effect.sleep(delay), Effect.catch(attempt, next))
      )
    }
    const next = (error: UpstreamError): Effect.Effect<A, UpstreamError, R> => {
      const now = clock.currentTimeMillisUnsafe()
      retry++
      const millis = baseMillis * options.factor ** (retry - 1)
      return options.jitter
        ? Effect.flatMap(Random.next, (random) =>
            decide(error, now, Duration.millis(millis * 0.8 * (1 - random) + millis * 1.2 * random))
          )
        : decide(error, now, Duration.millis(millis))
    }
    return next(first)
  })

/**
 * The log line of one retry, e.g. `retry 1/3 in 412ms: upstream unavailable (503)`.
 *
 * @category combinators
 * @since 0.1.0
 */
export const describe = (event: RetryEvent): string =>
  `retry ${event.retry}/${event.of} in ${Math.round(Duration.toMillis(event.delay))}ms: ${event.error.reason.description}`
