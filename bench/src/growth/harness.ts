/**
 * The in-process pipeline the growth part measures, and the handles to fill and inspect its stores.
 *
 * `Pipeline.make` (via `Pipeline.layer`) around an upstream that answers at once, with
 * `RateLimit.layerMemory` keyed by user (one generous rule on requests and tokens, windows of an hour so
 * that no key expires during the run; at most `maxKeys` keys, least recently used out),
 * `ResponseCache.layer({ capacity })`, `Breaker.layerMemory()`, `Monitor.layer()` with
 * `AlertSink.layerLog`, and no logger. The rate limit's key count is read with `RateLimit.keysHeld`.
 * `fill` adds users through the same services the pipeline calls (`RateLimit.admit`,
 * `ResponseCache.store`), which is much faster than whole requests; `run` sends requests through the
 * pipeline.
 */
import { AlertSink, Breaker, Monitor, Pipeline, RateLimit, ResponseCache } from "@roadcar/core"
import type { ChatRequest } from "@roadcar/core/ChatCompletion"
import type { Upstream } from "@roadcar/core/Upstream"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Stream from "effect/Stream"
import { response } from "../inprocess/fixtures.ts"

/** The rate-limit window of the growth run: long enough that nothing expires while it runs. */
export const window = "1 hour"

/** The rate-limit rule: per user, on requests and tokens, generous. */
export const rule: RateLimit.Rule = {
  by: "user",
  requests: { limit: 1_000_000_000, window },
  tokens: { limit: 1_000_000_000_000, window }
}

/** Request `i`: a prompt no other request has (the cache misses). */
export const request = (i: number): ChatRequest => ({
  model: "bench",
  messages: [{ role: "user", content: `growth question ${i}` }]
})

/** User `u`'s name. */
export const user = (u: number): string => `user-${u}`

/** A built pipeline with handles on its stores. */
export interface Harness {
  /** Sends requests `from` .. `from + count - 1` through the pipeline, request `i` as `userOf(i)`. */
  readonly run: (from: number, count: number, userOf: (i: number) => string) => Promise<void>
  /** Adds users `from` .. `from + count - 1` to the stores as a request would (rate limit and cache entry). */
  readonly fill: (from: number, count: number) => Promise<void>
  /** Stores `count` cache entries with no user (fills the cache without adding rate-limit keys). */
  readonly fillCache: (count: number) => Promise<void>
  /** Keys the rate limit holds (`RateLimit.keysHeld`: one per user here, at most `maxKeys`). */
  readonly rateLimitKeys: () => number
  readonly cacheEntries: () => Promise<number>
  /** Upstream calls made (each a cache miss). */
  readonly upstreamCalls: () => number
  readonly close: () => Promise<void>
}

/** Builds the pipeline with a cache of `capacity` entries and a rate limit of at most `maxKeys` keys. */
export const build = async (capacity: number, maxKeys: number = RateLimit.defaultMaxKeys): Promise<Harness> => {
  let calls = 0
  const upstream: Upstream = {
    name: "bench",
    provider: "bench",
    model: "bench-model",
    complete: () =>
      Effect.sync(() => {
        calls++
        return response
      }),
    stream: () => Stream.die("the growth benchmark does not stream")
  }
  const stages = Layer.mergeAll(
    RateLimit.layerMemory({ rules: [rule], onExceeded: "reject", maxKeys }),
    ResponseCache.layer({ capacity, timeToLive: window }),
    Breaker.layerMemory(),
    Monitor.layer().pipe(Layer.provide(AlertSink.layerLog)),
    Logger.layer([])
  )
  const runtime = ManagedRuntime.make(
    Pipeline.layer({
      steps: [{ upstream }],
      name: "bench",
      retry: { attempts: 3, baseDelay: "0 millis", jitter: false }
    }).pipe(Layer.provideMerge(stages))
  )
  const context = await runtime.context()
  const pipeline = Context.get(context, Pipeline.PipelineService)
  const rateLimit = Context.get(context, RateLimit.RateLimit)
  const cache = Context.get(context, ResponseCache.ResponseCache)
  const runPromise = Effect.runPromiseWith(context as Context.Context<never>)
  const entry = { response, upstream: "bench", cacheable: true }
  return {
    run: (from, count, userOf) =>
      runPromise(
        Effect.gen(function* () {
          for (let i = from; i < from + count; i++) yield* pipeline.complete(request(i), { user: userOf(i) })
        })
      ),
    fill: (from, count) =>
      runPromise(
        Effect.gen(function* () {
          for (let u = from; u < from + count; u++) {
            const chat = request(-1 - u)
            yield* rateLimit.admit(chat, { user: user(u) })
            yield* cache.store(chat, entry)
          }
        })
      ),
    fillCache: (count) =>
      runPromise(
        Effect.gen(function* () {
          for (let i = 0; i < count; i++) yield* cache.store(request(-1_000_000_000 - i), entry)
        })
      ),
    rateLimitKeys: () => {
      const held = RateLimit.keysHeld(rateLimit)
      if (held === undefined) throw new Error("the growth harness's rate limit is not the in-process one")
      return held
    },
    cacheEntries: () => runPromise(cache.size),
    upstreamCalls: () => calls,
    close: () => runtime.dispose()
  }
}
