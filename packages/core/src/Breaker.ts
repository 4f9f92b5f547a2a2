/**
 * Opens a circuit per upstream when its calls keep failing, so the fallback answers at once.
 *
 * `Breaker` runs each upstream call through a circuit under the key `upstream:<name>`: the
 * `effect/persistence` `CircuitBreaker` on a `CircuitBreakerStore` (`layer`, e.g. Redis, shared by
 * replicas), or the same state machine kept in plain memory (`layerMemory`, one process). It decides
 * what counts: 5xx, connection failures, timeouts, malformed output and 429s are failures; a bad
 * request, failed authentication, context length or content filter say nothing about the
 * upstream's health and are ignored. A rejected call fails with `UpstreamError`
 * reason `CircuitOpen` (not retryable: the chain moves on). Put retry and the attempt timeout inside
 * the breaker (one outcome per attempt). It emits no metrics itself: observe `transitions`.
 *
 * @since 0.1.0
 */
import type * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as PubSub from "effect/PubSub"
import { CircuitBreaker } from "effect/persistence"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import type * as Take from "effect/Take"
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

// What one failed call says about the upstream's health.
const classifyFailure = (cause: Cause.Cause<UpstreamError>): CircuitBreaker.Outcome => {
  const error = cause.reasons.find((reason) => reason._tag === "Fail")?.error
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

const classify = <A>(exit: Exit.Exit<A, UpstreamError>): CircuitBreaker.Outcome =>
  Exit.isSuccess(exit) ? CircuitBreaker.success : classifyFailure(exit.cause)

const tripPolicyOf = (options: Options): CircuitBreaker.TripPolicy =>
  options.failureRate
    ? CircuitBreaker.rate({
        threshold: options.failureRate.threshold,
        size: options.failureRate.window,
        minimumCalls: options.failureRate.minimumCalls
      })
    : CircuitBreaker.consecutive(options.consecutiveFailures)

const openError = (upstream: string, retryAfter: Duration.Duration | undefined) =>
  new UpstreamError({
    upstream,
    reason: retryAfter ? new CircuitOpen({ retryAfter }) : new CircuitOpen({})
  })

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
    tripPolicy: tripPolicyOf(options),
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
        return Effect.fail(openError(upstream, reason._tag === "CircuitOpen" ? reason.retryAfter : undefined))
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

// =============================================================================
// In-process circuits
// =============================================================================

// One circuit, as `CircuitBreaker.layerStoreMemory` keeps it.
interface Circuit {
  state: "Closed" | "Open" | "HalfOpen"
  generation: number
  lastActivity: number
  streak: number
  ring: Array<boolean>
  ringFailures: number
  openUntil: number
  consecutiveOpenings: number
  lastOpenFor: number
  resetAt: number
  probing: boolean
}

/**
 * Builds the breaker with its circuits in plain memory (one process).
 *
 * **Details**
 *
 * The same state machine as `make` over `CircuitBreaker.layerStoreMemory`: consecutive failures or
 * a failure rate trip a circuit; it stays open for `openDuration`, doubling with each consecutive
 * opening up to `maxOpenDuration` (a longer Retry-After from the upstream counts, up to that cap);
 * then exactly one probe is let through (a concurrent call is refused); the probe's success closes
 * it, its failure opens it again; the backoff count resets once the circuit stayed closed as long as
 * it was last open; an idle circuit (one hour) is forgotten. Time is read from `Clock`, so
 * `TestClock` drives it.
 *
 * Why it exists: the store-backed breaker pays, per call, for an admission scope, several effects
 * to admit and record through the store interface and a schedule replay; here admission and
 * recording are synchronous steps around the call, which keeps the success path to a handful of
 * Effect operations.
 *
 * @category constructors
 * @since 0.1.0
 */
export const makeMemory = Effect.fnUntraced(function* (options: Options) {
  const tripPolicy = tripPolicyOf(options)
  const openMillis = Duration.toMillis(Duration.fromInputUnsafe(options.openDuration))
  const maxOpenDuration = Duration.fromInputUnsafe(options.maxOpenDuration)
  const idleTimeToLive = 60 * 60 * 1000
  const pubsub = yield* PubSub.sliding<Take.Take<Transition>>(128)
  yield* Effect.addFinalizer(() => PubSub.end(pubsub, Exit.void))

  const circuits = new Map<string, Circuit>()
  let nextGeneration = 0
  let lastSweep = 0

  const isExpired = (circuit: Circuit, now: number) => {
    switch (circuit.state) {
      case "Closed":
        return now - circuit.lastActivity >= idleTimeToLive
      case "Open":
        return now - Math.max(circuit.lastActivity, circuit.openUntil) >= idleTimeToLive
      case "HalfOpen":
        return !circuit.probing && now - circuit.lastActivity >= idleTimeToLive
    }
  }
  const sweep = (now: number) => {
    if (now - lastSweep < idleTimeToLive) return
    lastSweep = now
    for (const [circuitKey, circuit] of circuits) if (isExpired(circuit, now)) circuits.delete(circuitKey)
  }
  const lookup = (circuitKey: string, now: number): Circuit | undefined => {
    const circuit = circuits.get(circuitKey)
    return circuit !== undefined && !isExpired(circuit, now) ? circuit : undefined
  }
  const resetCounters = (circuit: Circuit) => {
    circuit.streak = 0
    circuit.ring = []
    circuit.ringFailures = 0
  }
  const open = (
    circuitKey: string,
    circuit: Circuit,
    from: "Closed" | "HalfOpen",
    openFor: Duration.Duration,
    now: number
  ): Transition => {
    circuit.state = "Open"
    circuit.generation = nextGeneration++
    circuit.lastOpenFor = Duration.toMillis(openFor)
    circuit.openUntil = now + circuit.lastOpenFor
    circuit.consecutiveOpenings++
    circuit.probing = false
    resetCounters(circuit)
    return { key: circuitKey, from, to: "Open", retryAfter: openFor, consecutiveOpenings: circuit.consecutiveOpenings }
  }
  const trips = (circuit: Circuit) => {
    if (tripPolicy._tag === "Consecutive") return circuit.streak >= tripPolicy.failures
    return (
      circuit.ring.length >= tripPolicy.minimumCalls &&
      circuit.ringFailures > 0 &&
      circuit.ringFailures / circuit.ring.length >= tripPolicy.threshold
    )
  }
  // How long an opening caused by this outcome lasts: the n-th consecutive opening lasts
  // `openDuration * 2^(n-1)`, capped; a Retry-After hint can lengthen it up to the cap.
  const openFor = (outcome: CircuitBreaker.Outcome, probe: boolean, consecutiveOpenings: number): Duration.Duration => {
    if (outcome._tag === "Ignored" || (outcome._tag === "Success" && (probe || tripPolicy._tag === "Consecutive"))) {
      return Duration.zero
    }
    const delay = Duration.min(Duration.millis(openMillis * 2 ** consecutiveOpenings), maxOpenDuration)
    return outcome._tag === "Failure" && outcome.retryAfter !== undefined
      ? Duration.max(delay, Duration.min(outcome.retryAfter, maxOpenDuration))
      : delay
  }
  const record = (
    circuitKey: string,
    generation: number,
    probe: boolean,
    consecutiveOpenings: number,
    outcome: CircuitBreaker.Outcome,
    now: number
  ): Transition | undefined => {
    const circuit = lookup(circuitKey, now)
    if (circuit === undefined || circuit.generation !== generation) return undefined
    circuit.lastActivity = now
    if (circuit.state === "HalfOpen") {
      switch (outcome._tag) {
        case "Ignored":
          circuit.probing = false
          return undefined
        case "Failure":
          return open(circuitKey, circuit, "HalfOpen", openFor(outcome, probe, consecutiveOpenings), now)
        case "Success":
          circuit.state = "Closed"
          circuit.generation = nextGeneration++
          circuit.resetAt = now + circuit.lastOpenFor
          circuit.probing = false
          resetCounters(circuit)
          return { key: circuitKey, from: "HalfOpen", to: "Closed" }
      }
    }
    if (circuit.state !== "Closed" || outcome._tag === "Ignored") return undefined
    const failed = outcome._tag === "Failure"
    circuit.streak = failed ? circuit.streak + 1 : 0
    if (tripPolicy._tag === "Rate") {
      circuit.ring.push(failed)
      if (failed) circuit.ringFailures++
      while (circuit.ring.length > tripPolicy.size) {
        if (circuit.ring.shift()) circuit.ringFailures--
      }
    }
    return trips(circuit)
      ? open(circuitKey, circuit, "Closed", openFor(outcome, probe, consecutiveOpenings), now)
      : undefined
  }
  const publish = (transition: Transition) => PubSub.publish(pubsub, [transition])

  const protect = <A, R>(upstream: string, self: Effect.Effect<A, UpstreamError, R>) =>
    Effect.uninterruptibleMask((restore) =>
      Effect.clockWith((clock) => {
        const circuitKey = key(upstream)
        const now = clock.currentTimeMillisUnsafe()
        sweep(now)
        let circuit = lookup(circuitKey, now)
        if (circuit === undefined) {
          circuit = {
            state: "Closed",
            generation: nextGeneration++,
            lastActivity: now,
            streak: 0,
            ring: [],
            ringFailures: 0,
            openUntil: 0,
            consecutiveOpenings: 0,
            lastOpenFor: 0,
            resetAt: 0,
            probing: false
          }
          circuits.set(circuitKey, circuit)
        }
        let admitted: Transition | undefined
        switch (circuit.state) {
          case "Closed":
            // A call admitted before this reset can still trip the circuit with its older count.
            if (circuit.consecutiveOpenings > 0 && now >= circuit.resetAt) circuit.consecutiveOpenings = 0
            break
          case "Open":
            if (now < circuit.openUntil)
              return Effect.fail(openError(upstream, Duration.millis(circuit.openUntil - now)))
            circuit.state = "HalfOpen"
            admitted = { key: circuitKey, from: "Open", to: "HalfOpen" }
            break
          case "HalfOpen":
            if (circuit.probing) return Effect.fail(openError(upstream, undefined))
            break
        }
        circuit.lastActivity = now
        const probe = circuit.state === "HalfOpen"
        if (probe) {
          circuit.probing = true
          circuit.generation = nextGeneration++
        }
        const generation = circuit.generation
        const consecutiveOpenings = circuit.consecutiveOpenings
        const settle = (outcome: CircuitBreaker.Outcome, exit: Exit.Exit<A, UpstreamError>) => {
          const moved = record(
            circuitKey,
            generation,
            probe,
            consecutiveOpenings,
            outcome,
            clock.currentTimeMillisUnsafe()
          )
          return moved === undefined ? exit : Effect.andThen(publish(moved), exit)
        }
        const run = Effect.matchCauseEffect(restore(self), {
          onFailure: (cause) => settle(classifyFailure(cause), Exit.failCause(cause)),
          onSuccess: (value) => settle(CircuitBreaker.success, Exit.succeed(value))
        })
        return admitted === undefined ? run : Effect.andThen(publish(admitted), run)
      })
    )

  return Breaker.of({
    protect,
    state: (upstream) =>
      Effect.clockWith((clock) => {
        const circuitKey = key(upstream)
        const now = clock.currentTimeMillisUnsafe()
        const circuit = lookup(circuitKey, now)
        const state: CircuitBreaker.State =
          circuit === undefined || circuit.state === "Closed"
            ? { _tag: "Closed", key: circuitKey }
            : circuit.state === "Open"
              ? {
                  _tag: "Open",
                  key: circuitKey,
                  retryAfter: Duration.millis(Math.max(0, circuit.openUntil - now)),
                  consecutiveOpenings: circuit.consecutiveOpenings
                }
              : {
                  _tag: "HalfOpen",
                  key: circuitKey,
                  probing: circuit.probing,
                  consecutiveOpenings: circuit.consecutiveOpenings
                }
        return Effect.succeed(state)
      }),
    transitions: Stream.fromPubSubTake(pubsub)
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
 * The breaker with its circuits in process memory: circuits are per process (see `makeMemory`).
 *
 * @category layers
 * @since 0.1.0
 */
export const layerMemory = (options: Options = defaults): Layer.Layer<Breaker> =>
  Layer.effect(Breaker, makeMemory(options))
