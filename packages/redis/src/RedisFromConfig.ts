/**
 * The Redis stores a Roadcar config asks for, as `Roadcar.StoreLayers`.
 *
 * The config's `stores` section says, per stage, `memory` or `redis`; `redis` gives the connection
 * settings and fault policies. Every Redis store shares one connection (the connection layer is one
 * value, so Effect builds it once). The URL is a secret: read from the variable the config names, or
 * `REDIS_URL`, else `redis://127.0.0.1:6379`.
 *
 * @since 0.1.0
 */
import type { AlertSink, Roadcar, RoadcarConfig } from "@roadcar/core"
import { StoreError } from "@roadcar/core/Roadcar"
import * as Config from "effect/Config"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as RedisConfig from "./RedisConfig.ts"
import * as RedisConnection from "./RedisConnection.ts"
import * as RedisStores from "./RedisStores.ts"

/**
 * The connection options of a config's `redis` section (the URL read from the environment).
 *
 * @category constructors
 * @since 0.1.0
 */
export const options = (config: RoadcarConfig.RoadcarConfig): Effect.Effect<RedisConfig.Options, StoreError> =>
  Effect.gen(function* () {
    const redis = config.redis ?? {}
    const variable = redis.url?.env ?? "REDIS_URL"
    const url = yield* Config.option(Config.Redacted(variable)).pipe(
      Effect.mapError(() => new StoreError({ detail: `the environment variable ${variable} could not be read` }))
    )
    if (redis.url !== undefined && Option.isNone(url)) {
      return yield* new StoreError({
        detail: `redis.url: the environment variable ${variable} is not set; export it before starting`
      })
    }
    return {
      url: Option.getOrUndefined(url),
      prefix: redis.prefix,
      poolSize: redis.poolSize,
      commandTimeout: redis.commandTimeout as Duration.Input | undefined,
      policies: redis.policies
    }
  })

/**
 * The store layers for `Roadcar.layerStages`: Redis where the config's `stores` say `redis`.
 *
 * @example
 * ```ts
 * import { Roadcar } from "@roadcar/core"
 * import { RedisFromConfig } from "@roadcar/redis"
 *
 * const stages = Roadcar.layerStages(config, { stores: RedisFromConfig.storeLayers(config) })
 * ```
 *
 * @category layers
 * @since 0.1.0
 */
export const storeLayers = (config: RoadcarConfig.RoadcarConfig): Roadcar.StoreLayers => {
  const stores = config.stores ?? {}
  const connection: Layer.Layer<RedisConnection.RedisConnection, StoreError> = Layer.unwrap(
    Effect.map(options(config), (resolved) =>
      RedisConnection.layer(resolved).pipe(
        Layer.catchTag("RedisError", (error) =>
          Layer.effectDiscard(Effect.fail(new StoreError({ detail: error.message })))
        )
      )
    )
  ) as Layer.Layer<RedisConnection.RedisConnection, StoreError>
  const onRedis = <A>(
    layer: Layer.Layer<A, never, RedisConnection.RedisConnection>
  ): Layer.Layer<A, StoreError, AlertSink.AlertSink> => Layer.provide(layer, connection)
  return {
    ...(stores.rateLimit === "redis" ? { rateLimiter: onRedis(RedisStores.layerRateLimiter()) } : {}),
    ...(stores.breaker === "redis" ? { circuitBreaker: onRedis(RedisStores.layerCircuitBreaker) } : {}),
    ...(stores.cache === "redis" ? { responseCache: onRedis(RedisStores.layerResponseCache) } : {}),
    ...(stores.budget === "redis" ? { budget: onRedis(RedisStores.layerBudget()) } : {})
  }
}
