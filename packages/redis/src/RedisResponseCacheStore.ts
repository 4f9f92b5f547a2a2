/**
 * Cached answers in Redis, shared by every replica: the `ResponseCacheStore` of
 * `@roadcar/core/ResponseCache`.
 *
 * Each answer is one string key, `<prefix>cache:<sha256 of the canonical request>`, holding the
 * entry as JSON (encoded and checked with `ResponseCache.EntrySchema`), written with `SET ... PX`
 * so Redis drops it when its time to live ends. The in-process cache stays in front of it (and
 * coalesces identical requests in flight per replica). A Redis fault only ever skips this tier
 * (the answer is computed as on a miss): the cache fails open. An entry that no longer decodes
 * (written by another version) counts as a miss.
 *
 * @since 0.1.0
 */
import * as ResponseCache from "@roadcar/core/ResponseCache"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as Redis from "effect/persistence/Redis"
import * as Schema from "effect/Schema"
import { describeFailure, RedisConnection } from "./RedisConnection.ts"

const EntryJson = Schema.fromJsonString(ResponseCache.EntrySchema)
const decode = Schema.decodeUnknownEffect(EntryJson)
const encode = Schema.encodeEffect(EntryJson)

/**
 * Builds the Redis response cache store.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = Effect.gen(function* () {
  const connection = yield* RedisConnection
  const { redis, config } = connection
  const key = (hash: string) => `${config.prefix}cache:${hash}`
  const run = <A>(self: Effect.Effect<A, Redis.RedisError>) =>
    connection.run(
      Effect.mapError(self, (error) => new ResponseCache.ResponseCacheStoreError({ detail: describeFailure(error) })),
      {
        store: "response cache",
        isFault: () => true,
        unavailable: (detail) => new ResponseCache.ResponseCacheStoreError({ detail })
      }
    )
  return ResponseCache.ResponseCacheStore.of({
    get: (hash) =>
      run(redis.send<string | null>("GET", key(hash))).pipe(
        Effect.flatMap((text) =>
          text === null
            ? Effect.succeedNone
            : decode(text).pipe(
                Effect.map(Option.some),
                Effect.catch((error) =>
                  Effect.as(
                    Effect.logWarning(`response cache: an entry in Redis does not decode, ignored: ${error.message}`),
                    Option.none()
                  )
                )
              )
        )
      ),
    set: (hash, entry, timeToLive) =>
      encode(entry).pipe(
        Effect.mapError((error) => new ResponseCache.ResponseCacheStoreError({ detail: error.message })),
        Effect.flatMap((json) =>
          run(redis.send("SET", key(hash), json, "PX", String(Math.max(1, Math.ceil(Duration.toMillis(timeToLive))))))
        ),
        Effect.asVoid
      )
  })
})

/**
 * The Redis response cache store (needs a `RedisConnection`).
 *
 * @category layers
 * @since 0.1.0
 */
export const layer: Layer.Layer<ResponseCache.ResponseCacheStore, never, RedisConnection> = Layer.effect(
  ResponseCache.ResponseCacheStore,
  make
)
