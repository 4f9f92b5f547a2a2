/**
 * Opens a circuit per upstream when its calls keep failing, so the fallback answers at once.
 *
 * `Breaker` runs each upstream call through the `effect/persistence` `CircuitBreaker` under the key
 * `upstream:<name>`. It decides what counts: 5xx, connection failures, timeouts, malformed output and
 * 429s are failures; a bad request, failed authentication, context length or content filter say
 * nothing about the upstream's health and are ignored. A rejected call fails with `UpstreamError`
 * reason `CircuitOpen` (not retryable: the chain moves on). Put retry and the attempt timeout inside
 * the breaker (one outcome per attempt). It emits no metrics itself: observe `transitions`.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import { CircuitBreaker } from "effect/persistence"
import * as Schedule from "effect/Schedule"
import type * as Stream from "effect/Stream"
import { CircuitOpen, UpstreamError } from "./UpstreamError.ts"

/**
 * When a circuit opens and for how long.
 *
 * @category options
 * @since 0.1.0
 */
export interface Options {
  /** Open after this many failures in a row (default 5). */
  readonly consecutiveFailures: number
  /** Or open when the failure rate over the last `rateWindow` calls reaches this (0..1; default off). */
  readonly failureRate?:
    | { readonly threshold: number; readonly window: number; readonly minimumCalls: number }
    | undefined
  /** How long the circuit stays open before one probe is let through (default 30s, doubling to 5 minutes). */
  readonly openDuration: Duration.Input
  readonly maxOpenDuration: Duration.Input
}

/**
 * @category options
 * @since 0.1.0
 */
export const defaults: Options = {
  consecutiveFailures: 5,
  openDuration: "30 seconds",
  maxOpenDuration: "5 minutes"
}

/**
 * A circuit transition, as reported by `effect/persistence` `CircuitBreaker`.
 *
 * @category models
 * @since 0.1.0
 */
export type Transition = CircuitBreaker.Transition

/**
 * The breaker service.
 *
 * @category services
 * @since 0.1.0
 */
export class Breaker extends Context.Service<
  Breaker,
  {
    /** Runs one upstream call through the circuit of `upstream`. */
    readonly protect: <A, R>(
      upstream: string,
      self: Effect.Effect<A, UpstreamError, R>
    ) => Effect.Effect<A, UpstreamError, R>
    /** The circuit's current state. */
    readonly state: (upstream: string) => Effect.Effect<CircuitBreaker.State>
    /** Every transition (Closed → Open → HalfOpen → Closed), for logs, metrics and the monitor. */
    readonly transitions: Stream.Stream<Transition>
  }
>()("@roadcar/core/Breaker") {}

/**
 * The circuit key of an upstream.
 *
 * @category constructors
 * @since 0.1.0
 */
export const key = (upstream: string): string => `upstream:${upstream}`

/**
 * The upstream name of a circuit key.
 *
 * @category constructors
 * @since 0.1.0
 */
export const upstreamOf = (circuitKey: string): string =>
  circuitKey.startsWith("upstream:") ? circuitKey.slice("upstream:".length) : circuitKey

const classify = <A>(exit: Exit.Exit<A, UpstreamError>): CircuitBreaker.Outcome => {
  if (Exit.isSuccess(exit)) return CircuitBreaker.success
  const error = exit.cause.reasons.find((reason) => reason._tag === "Fail")?.error
  if (error === undefined) return CircuitBreaker.ignored // interrupted: says nothing about health
  switch (error.reason._tag) {
    case "BadRequest":
    case "Authentication":
    case "ContextLengthExceeded":
    case "ContentFiltered":
    case "CircuitOpen":
      return CircuitBreaker.ignored
    case "RateLimited":
      return CircuitBreaker.failure(error.reason.retryAfter ? { retryAfter: error.reason.retryAfter } : undefined)
    default:
      return CircuitBreaker.failure()
  }
}

/**
 * Builds the breaker on the `CircuitBreakerStore` in context (memory or Redis).
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = Effect.fnUntraced(function* (options: Options) {
  const openDuration = Duration.fromInputUnsafe(options.openDuration)
  const maxOpenDuration = Duration.fromInputUnsafe(options.maxOpenDuration)
  const breaker = yield* CircuitBreaker.make({
    tripPolicy: options.failureRate
      ? CircuitBreaker.rate({
          threshold: options.failureRate.threshold,
          size: options.failureRate.window,
          minimumCalls: options.failureRate.minimumCalls
        })
      : CircuitBreaker.consecutive(options.consecutiveFailures),
    openDuration: Schedule.exponential(openDuration).pipe(
      Schedule.modifyDelay(({ duration }) => Effect.succeed(Duration.min(duration, maxOpenDuration)))
    ),
    maxOpenDuration
  })
  const protect = <A, R>(upstream: string, self: Effect.Effect<A, UpstreamError, R>) =>
    breaker.execute(self, { key: key(upstream), classify }).pipe(
      Effect.catchTag("CircuitBreakerError", (error) => {
        // A store error only surfaces with `onStoreError: "fail"`: the circuit cannot admit the call.
        const reason = error.reason
        const retryAfter = reason._tag === "CircuitOpen" ? reason.retryAfter : undefined
        return Effect.fail(
          new UpstreamError({
            upstream,
            reason: retryAfter ? new CircuitOpen({ retryAfter }) : new CircuitOpen({})
          })
        )
      })
    )
  return Breaker.of({
    protect,
    state: (upstream) =>
      breaker
        .state(key(upstream))
        .pipe(Effect.catch(() => Effect.succeed<CircuitBreaker.State>({ _tag: "Closed", key: key(upstream) }))),
    transitions: breaker.transitions
  })
})

/**
 * The breaker layer (needs a `CircuitBreakerStore`).
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (options: Options = defaults): Layer.Layer<Breaker, never, CircuitBreaker.CircuitBreakerStore> =>
  Layer.effect(Breaker, make(options))

/**
 * The breaker with an in-process store: circuits are per process.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerMemory = (options: Options = defaults): Layer.Layer<Breaker> =>
  layer(options).pipe(Layer.provide(CircuitBreaker.layerStoreMemory()))
