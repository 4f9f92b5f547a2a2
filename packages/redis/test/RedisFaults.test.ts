import { assert, describe, it } from "@effect/vitest"
import { AlertSink, Breaker, Monitor, Pipeline, RateLimit, ResponseCache, StoreUnavailable } from "@roadcar/core"
import * as Budget from "@roadcar/core/Budget"
import { Context, Duration, Effect, Exit, Fiber, Layer } from "effect"
import { RateLimiter } from "effect/persistence"
import { createClient } from "redis"
import { type RedisConfig, RedisConnection, RedisStores } from "../src/index.ts"
import { ownRedis, redisUrl, request, scripted, timed } from "./utils/RedisTest.ts"

// Redis faults: nothing listening, a server the test stops and restarts, a frozen server. These
// tests start their own redis-server (or use a dead port) and only run where the Redis tests run.

const commandTimeout = 200
const slack = 250

const stack = (options: RedisConfig.Options, alerts: Array<AlertSink.Alert>) =>
  Effect.gen(function* () {
    const stores = RedisStores.layer({
      commandTimeout: `${commandTimeout} millis`,
      connectTimeout: "300 millis",
      failFastFor: "500 millis",
      ...options
    }).pipe(Layer.provide(AlertSink.layerCallback((alert) => void alerts.push(alert))))
    const context = yield* Layer.build(
      Layer.mergeAll(
        RateLimit.layer({
          rules: [{ by: "global", requests: { limit: 100, window: "1 minute" } }],
          onExceeded: "reject"
        }).pipe(Layer.provide(RateLimiter.layer)),
        Breaker.layer(),
        ResponseCache.layer(),
        Budget.layer({ budgets: [{ per: "day", tokens: 100_000 }] }),
        Monitor.layerNoop
      ).pipe(Layer.provideMerge(stores))
    )
    const upstream = scripted("primary", [])
    // Requests through the pipeline carry no key: the (fail-open) rate limit is global, and the
    // (fail-closed) budget, which applies to keys, is exercised directly through `budget`.
    const pipeline: Pipeline.Pipeline = yield* Pipeline.make({ steps: [{ upstream, retry: { attempts: 1 } }] }).pipe(
      Effect.provideContext(context)
    )
    return {
      pipeline,
      upstream,
      budget: Context.get(context, Budget.Budget),
      rateLimit: Context.get(context, RateLimit.RateLimit),
      connection: Context.get(context, RedisConnection.RedisConnection),
      cacheStore: Context.get(context, ResponseCache.ResponseCacheStore),
      limiterStore: Context.get(context, RateLimiter.RateLimiterStore)
    }
  })

const waitUntil = (condition: Effect.Effect<boolean>, what: string) =>
  Effect.gen(function* () {
    for (let i = 0; i < 200; i++) {
      if (yield* condition) return
      yield* Effect.sleep("25 millis")
    }
    assert.fail(`timed out waiting until ${what}`)
  })

const rules = (alerts: ReadonlyArray<AlertSink.Alert>) => alerts.map((alert) => `${alert._tag} ${alert.rule}`)

describe.skipIf(!redisUrl)("Redis faults", () => {
  it.live("nothing listening: the replica starts, fail-open stores serve, the fail-closed budget refuses at once", () =>
    Effect.gen(function* () {
      const alerts: Array<AlertSink.Alert> = []
      const started = yield* timed(stack({ url: "redis://127.0.0.1:1", prefix: "dead:" }, alerts))
      assert.isBelow(started.ms, 1000, "startup waits at most about the connect timeout")
      const replica = started.value
      assert.isFalse(yield* replica.connection.available)

      // Rate limit (fail-open), cache and breaker (always fail-open): the request is answered.
      const answered = yield* timed(replica.pipeline.complete(request("hello")))
      assert.strictEqual(answered.value.meta.upstream, "primary")
      assert.isBelow(answered.ms, commandTimeout + slack)
      // Budget (fail-closed by default): refused with StoreUnavailable, without waiting.
      const refused = yield* timed(Effect.flip(replica.budget.reserve(request(), { key: "team-a" })))
      assert.strictEqual(refused.value._tag, "StoreUnavailable")
      assert.include(refused.value.message, "budget store is unavailable")
      assert.isBelow(refused.ms, commandTimeout + slack)
      // One alert for the outage, however many requests met it.
      yield* Effect.sleep("50 millis")
      assert.deepStrictEqual(rules(alerts), ["Raised store_unavailable"])
      assert.strictEqual(alerts[0]?.subject, "redis 127.0.0.1:1")
    }).pipe(Effect.scoped)
  )

  it.live("the policies can be swapped: budget fail-open admits unrecorded, rate limit fail-closed refuses", () =>
    Effect.gen(function* () {
      const replica = yield* stack(
        { url: "redis://127.0.0.1:1", prefix: "dead:", policies: { rateLimit: "fail-closed", budget: "fail-open" } },
        []
      )
      const reservation = yield* replica.budget.reserve(request(), { key: "team-a" })
      assert.deepStrictEqual(reservation.counters, [], "admitted, nothing recorded to settle")
      // The store's failure carries a StoreUnavailable for RateLimit to turn into a 503.
      const error = yield* Effect.flip(
        replica.limiterStore.fixedWindow({
          key: "k",
          tokens: 1,
          refillRate: Duration.millis(100),
          limit: 10
        })
      )
      assert.strictEqual(error.reason._tag, "RateLimitStoreError")
      assert.isTrue(
        error.reason._tag === "RateLimitStoreError" && StoreUnavailable.isStoreUnavailable(error.reason.cause)
      )
    }).pipe(Effect.scoped)
  )

  it.live("a Redis that stops and restarts: the policy holds while it is down and service recovers by itself", () =>
    Effect.gen(function* () {
      const redis = yield* ownRedis
      const alerts: Array<AlertSink.Alert> = []
      const replica = yield* stack({ url: redis.url, prefix: "own:" }, alerts)
      const reserved = yield* replica.budget.reserve(request(), { key: "team-a" })
      assert.strictEqual(reserved.counters.length, 1)

      yield* redis.stop
      yield* waitUntil(
        Effect.map(replica.connection.available, (up) => !up),
        "the outage is noticed"
      )
      const refused = yield* timed(Effect.exit(replica.budget.reserve(request(), { key: "team-a" })))
      assert.isTrue(Exit.isFailure(refused.value))
      assert.isBelow(refused.ms, commandTimeout + slack)
      const answered = yield* timed(replica.pipeline.complete(request("while down")))
      assert.isBelow(answered.ms, commandTimeout + slack)

      yield* redis.start
      yield* waitUntil(
        Effect.map(Effect.exit(replica.budget.reserve(request(), { key: "team-a" })), Exit.isSuccess),
        "the budget store answers again"
      )
      yield* replica.pipeline.complete(request("after"))
      yield* Effect.sleep("50 millis")
      assert.deepStrictEqual(rules(alerts), ["Raised store_unavailable", "Resolved store_unavailable"])
    }).pipe(Effect.scoped)
  )

  it.live("a stall of this process longer than the command timeout is not taken for a Redis outage", () =>
    Effect.gen(function* () {
      const redis = yield* ownRedis
      const alerts: Array<AlertSink.Alert> = []
      const replica = yield* stack({ url: redis.url, prefix: "stall:" }, alerts)
      yield* replica.budget.reserve(request(), { key: "team-a" }) // scripts loaded, connection warm
      for (let round = 0; round < 3; round++) {
        const call = yield* Effect.forkChild(replica.budget.reserve(request(), { key: "team-a" }), {
          startImmediately: true
        })
        // The command leaves on the next tick; then this process stalls (a long GC, a starved CPU)
        // while the reply waits on the socket, past the command timeout.
        yield* Effect.promise(() => new Promise<void>((resolve) => process.nextTick(resolve)))
        const until = Date.now() + commandTimeout * 2
        while (Date.now() < until) {
          // busy: the event loop is blocked
        }
        const exit = yield* Fiber.await(call)
        assert.isTrue(Exit.isSuccess(exit), `round ${round}: ${String(exit)}`)
      }
      assert.deepStrictEqual(rules(alerts), [], "no outage raised")
    }).pipe(Effect.scoped)
  )

  it.live("a frozen Redis: a call waits at most the command timeout, the next ones fail fast, thawing recovers", () =>
    Effect.gen(function* () {
      const redis = yield* ownRedis
      const alerts: Array<AlertSink.Alert> = []
      const replica = yield* stack({ url: redis.url, prefix: "own:" }, alerts)
      yield* replica.budget.reserve(request(), { key: "team-a" })

      yield* redis.freeze
      const first = yield* timed(Effect.flip(replica.budget.reserve(request(), { key: "team-a" })))
      assert.strictEqual(first.value._tag, "StoreUnavailable")
      assert.include(first.value.message, `did not answer within ${commandTimeout}ms`)
      assert.isAtLeast(first.ms, commandTimeout - 20)
      assert.isBelow(first.ms, commandTimeout + slack)
      const next = yield* timed(Effect.flip(replica.budget.reserve(request(), { key: "team-a" })))
      assert.isBelow(next.ms, 50, "fails fast after a timeout")
      // The fail-open stores (rate limit, cache, breaker) serve the request without waiting.
      const answered = yield* timed(replica.pipeline.complete(request("frozen")))
      assert.strictEqual(answered.value.meta.upstream, "primary")
      assert.isBelow(answered.ms, 50, "every store of the request fails fast")

      yield* redis.thaw
      yield* waitUntil(
        Effect.map(Effect.exit(replica.budget.reserve(request(), { key: "team-a" })), Exit.isSuccess),
        "the budget store answers again"
      )
      yield* waitUntil(
        Effect.map(Effect.exit(replica.budget.reserve(request(), { key: "team-a" })), () => alerts.length === 2),
        "the outage is resolved"
      )
      // The one operation that timed out is one failure (the calls after it failed fast, uncounted).
      assert.deepStrictEqual(rules(alerts), ["Raised store_unavailable", "Resolved store_unavailable"])
      assert.strictEqual(alerts[1]?.figures["failures"], 1)
    }).pipe(Effect.scoped)
  )

  it.live("a Redis that refuses writes (out of memory) but answers reads is one outage, not one per request", () =>
    Effect.gen(function* () {
      const redis = yield* ownRedis
      const alerts: Array<AlertSink.Alert> = []
      const replica = yield* stack({ url: redis.url, prefix: "oom:" }, alerts)
      const admin = createClient({ url: redis.url })
      yield* Effect.addFinalizer(() => Effect.promise(() => admin.quit().catch(() => undefined)))
      yield* Effect.promise(async () => {
        await admin.connect()
        await admin.configSet({ maxmemory: "1mb", "maxmemory-policy": "noeviction" })
        try {
          for (let i = 0; i < 100_000; i++) await admin.set(`fill:${i}`, "x".repeat(1000))
        } catch {
          // full: writes are refused with OOM from here on
        }
      })
      for (let round = 0; round < 5; round++) {
        const write = yield* Effect.exit(replica.budget.reserve(request(), { key: "team-a" }))
        assert.isTrue(Exit.isFailure(write), `round ${round}: the write is refused`)
        yield* replica.cacheStore.get(`read-${round}`) // a read still answers
      }
      yield* Effect.sleep("50 millis")
      assert.deepStrictEqual(rules(alerts), ["Raised store_unavailable"], "one outage while writes keep failing")

      yield* Effect.promise(() => admin.configSet("maxmemory", "0"))
      yield* waitUntil(
        Effect.map(Effect.exit(replica.budget.reserve(request(), { key: "team-a" })), () => alerts.length === 2),
        "the outage is resolved"
      )
      assert.deepStrictEqual(rules(alerts), ["Raised store_unavailable", "Resolved store_unavailable"])
      assert.strictEqual(alerts[1]?.figures["failures"], 5)
    }).pipe(Effect.scoped)
  )
})

describe("RedisConnection", () => {
  it.live("an invalid URL fails the layer at startup, without echoing the URL", () =>
    Effect.gen(function* () {
      const exit = yield* Effect.exit(
        Layer.build(RedisConnection.layer({ url: "http://user:secret@example.invalid:1" }))
      )
      assert.isTrue(Exit.isFailure(exit))
      if (Exit.isSuccess(exit)) return
      const error = exit.cause.reasons.find((reason) => reason._tag === "Fail")?.error
      assert.strictEqual(error?._tag, "RedisError")
      assert.notInclude(String(error?.cause), "secret")
    }).pipe(Effect.scoped)
  )
})
