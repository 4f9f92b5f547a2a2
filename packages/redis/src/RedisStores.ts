/**
 * The layers that swap Roadcar's in-process stores for Redis, so replicas share their state.
 *
 * `RedisStores` gives one layer per store (rate limiter, circuit breaker, response cache, budget),
 * each on the `RedisConnection` in context, and `layer(options)`, which opens one connection and
 * provides them all. Every store operation waits at most the command timeout. Fault policies:
 * the rate limiter and budgets follow `policies` (`fail-open` or `fail-closed`); the response cache
 * and the circuit breaker always fail open, because failing closed would turn a Redis outage into
 * a full outage for no gain (a missed cache entry costs one upstream call; an unrecorded breaker
 * outcome only delays an opening). The rate limiter and breaker stores are `effect/persistence`'s
 * own Redis stores (Lua scripts), wrapped with the deadline and the policy.
 *
 * **Example** (Two replicas' stage layers)
 *
 * ```ts
 * import { Breaker, RateLimit } from "@roadcar/core"
 * import { RedisStores } from "@roadcar/redis"
 * import { Layer } from "effect"
 * import { RateLimiter } from "effect/persistence"
 *
 * const Stores = RedisStores.layer({ url: "redis://127.0.0.1:6379", prefix: "roadcar:" })
 * const Stages = Layer.mergeAll(
 *   RateLimit.layer({ rules: [{ by: "key", requests: { limit: 60, window: "1 minute" } }], onExceeded: "reject" }).pipe(
 *     Layer.provide(RateLimiter.layer)
 *   ),
 *   Breaker.layer()
 * ).pipe(Layer.provide(Stores))
 * ```
 *
 * @since 0.1.0
 */
import type { NodeRedis } from "@effect/platform-node/NodeRedis"
import type * as Budget from "@roadcar/core/Budget"
import type * as ResponseCache from "@roadcar/core/ResponseCache"
import { isStoreUnavailable, StoreUnavailable } from "@roadcar/core/StoreUnavailable"
import type * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { CircuitBreaker, RateLimiter } from "effect/persistence"
import * as Redis from "effect/persistence/Redis"
import * as RedisBudgetStore from "./RedisBudgetStore.ts"
import * as RedisConfig from "./RedisConfig.ts"
import * as RedisConnection from "./RedisConnection.ts"
import * as RedisResponseCacheStore from "./RedisResponseCacheStore.ts"

// =============================================================================
// Rate limiter
// =============================================================================

/**
 * Builds the Redis rate limiter store, with the rate limit fault policy.
 *
 * **Details**
 *
 * A failure is a `RateLimiterError` with reason `RateLimitStoreError`. Under `fail-closed` its
 * `cause` is a `StoreUnavailable`, which `RateLimit` turns into a refusal (503); under `fail-open`
 * `RateLimit` logs it and admits the request. Keys are `<prefix>ratelimit:<rule key>`.
 *
 * @category constructors
 * @since 0.1.0
 */
export const makeRateLimiter = Effect.fnUntraced(function* (policy?: RedisConfig.FaultPolicy | undefined) {
  const connection = yield* RedisConnection.RedisConnection
  const onFault = policy ?? connection.config.policies.rateLimit
  const inner = yield* RateLimiter.makeStoreRedis({ prefix: `${connection.config.prefix}ratelimit:` }).pipe(
    Effect.provideService(Redis.Redis, connection.redis)
  )
  const failure = (detail: string) =>
    new RateLimiter.RateLimiterError({
      reason: new RateLimiter.RateLimitStoreError({
        message: detail,
        ...(onFault === "fail-closed" ? { cause: new StoreUnavailable({ store: "rate limit", detail }) } : {})
      })
    })
  const isFault = (error: RateLimiter.RateLimiterError) => error.reason._tag === "RateLimitStoreError"
  const guard = <A>(self: Effect.Effect<A, RateLimiter.RateLimiterError>) =>
    connection.run(self, { store: "rate limit", isFault, unavailable: (detail) => failure(detail) }).pipe(
      // Under fail-closed, every store failure carries a StoreUnavailable for RateLimit to raise.
      Effect.mapError((error) =>
        onFault === "fail-closed" && isFault(error) && !isStoreUnavailable(error.reason.cause)
          ? failure(RedisConnection.describeFailure(error))
          : error
      )
    )
  return RateLimiter.RateLimiterStore.of({
    fixedWindow: (options) => guard(inner.fixedWindow(options)),
    tokenBucket: (options) => guard(inner.tokenBucket(options)),
    adaptiveConsume: (options) => guard(inner.adaptiveConsume(options)),
    adaptiveFeedback: (options) => guard(inner.adaptiveFeedback(options))
  })
})

/**
 * The Redis rate limiter store (needs a `RedisConnection`); `policy` overrides the connection's.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerRateLimiter = (
  policy?: RedisConfig.FaultPolicy | undefined
): Layer.Layer<RateLimiter.RateLimiterStore, never, RedisConnection.RedisConnection> =>
  Layer.effect(RateLimiter.RateLimiterStore, makeRateLimiter(policy))

// =============================================================================
// Circuit breaker
// =============================================================================

// The generation of an admission made without Redis (no real generation is negative).
const unrecordedGeneration = -1

/**
 * Builds the Redis circuit breaker store (always fail open).
 *
 * **Details**
 *
 * When Redis cannot answer, `admit` lets the call through unrecorded (its outcome is not recorded)
 * and `record` drops the outcome; `state` fails (`Breaker.state` then reports Closed). Circuits are hashes
 * at `<prefix>breaker:upstream:<name>`; their times come from Redis `TIME`, so replica clocks do
 * not matter.
 *
 * @category constructors
 * @since 0.1.0
 */
export const makeCircuitBreaker = Effect.gen(function* () {
  const connection = yield* RedisConnection.RedisConnection
  const inner = Context.get(
    yield* Layer.build(
      CircuitBreaker.layerStoreRedis({ prefix: `${connection.config.prefix}breaker:` }).pipe(
        Layer.provide(Layer.succeed(Redis.Redis, connection.redis))
      )
    ),
    CircuitBreaker.CircuitBreakerStore
  )
  const isFault = (error: CircuitBreaker.CircuitBreakerError) => error.reason._tag === "CircuitBreakerStoreError"
  const options = {
    store: "circuit breaker",
    isFault,
    unavailable: (detail: string) =>
      new CircuitBreaker.CircuitBreakerError({
        reason: new CircuitBreaker.CircuitBreakerStoreError({ message: `circuit breaker store unavailable: ${detail}` })
      })
  }
  // While Redis cannot answer, a call runs unrecorded: the connection has logged and alerted the
  // outage once, so this admission spares the circuit breaker's error line on every call.
  const unrecorded: CircuitBreaker.Admission = {
    generation: unrecordedGeneration,
    probe: false,
    consecutiveOpenings: 0,
    transition: undefined
  }
  return CircuitBreaker.CircuitBreakerStore.of({
    admit: (key) =>
      connection.run(inner.admit(key), options).pipe(Effect.catchIf(isFault, () => Effect.succeed(unrecorded))),
    record: (record) =>
      record.generation === unrecordedGeneration
        ? Effect.succeed(undefined)
        : connection.run(inner.record(record), options).pipe(Effect.catchIf(isFault, () => Effect.succeed(undefined))),
    state: (key) => connection.run(inner.state(key), options)
  })
})

/**
 * The Redis circuit breaker store (needs a `RedisConnection`).
 *
 * @category layers
 * @since 0.1.0
 */
export const layerCircuitBreaker: Layer.Layer<
  CircuitBreaker.CircuitBreakerStore,
  never,
  RedisConnection.RedisConnection
> = Layer.effect(CircuitBreaker.CircuitBreakerStore, makeCircuitBreaker)

// =============================================================================
// Response cache and budget
// =============================================================================

/**
 * The Redis response cache store (needs a `RedisConnection`; always fail open).
 *
 * @category layers
 * @since 0.1.0
 */
export const layerResponseCache: Layer.Layer<ResponseCache.ResponseCacheStore, never, RedisConnection.RedisConnection> =
  RedisResponseCacheStore.layer

/**
 * The Redis budget store (needs a `RedisConnection`); `policy` overrides the connection's budget policy.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerBudget: (
  policy?: RedisConfig.FaultPolicy | undefined
) => Layer.Layer<Budget.BudgetStore, never, RedisConnection.RedisConnection> = RedisBudgetStore.layer

// =============================================================================
// Everything
// =============================================================================

/**
 * Every store a Redis provides.
 *
 * @category models
 * @since 0.1.0
 */
export type Stores =
  | RateLimiter.RateLimiterStore
  | CircuitBreaker.CircuitBreakerStore
  | ResponseCache.ResponseCacheStore
  | Budget.BudgetStore

/**
 * Opens one connection and provides every store on it, plus the connection, `Redis` and `NodeRedis`.
 *
 * **Details**
 *
 * Alerts (`store_unavailable`) go to the `AlertSink` provided to this layer, if any. Fails only on
 * an invalid URL; Redis being down at startup is not an error.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (
  options: RedisConfig.Options = {}
): Layer.Layer<Stores | RedisConnection.RedisConnection | Redis.Redis | NodeRedis, Redis.RedisError> =>
  Layer.mergeAll(layerRateLimiter(), layerCircuitBreaker, layerResponseCache, layerBudget()).pipe(
    Layer.provideMerge(RedisConnection.layer(options))
  )

/**
 * {@link layer} with the options read from the environment (see `RedisConfig.config`: `REDIS_URL`,
 * `ROADCAR_REDIS_PREFIX`, `ROADCAR_REDIS_POOL_SIZE`, `ROADCAR_REDIS_COMMAND_TIMEOUT`, ...).
 *
 * @category layers
 * @since 0.1.0
 */
export const layerConfig: Layer.Layer<
  Stores | RedisConnection.RedisConnection | Redis.Redis | NodeRedis,
  Redis.RedisError | Config.ConfigError
> = Layer.unwrap(Effect.map(RedisConfig.config, layer))
