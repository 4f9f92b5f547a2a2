import { assert, describe, it } from "@effect/vitest"
import { Breaker, ChatCompletion, Monitor, Pipeline, RateLimit, ResponseCache, type UpstreamError } from "@roadcar/core"
import * as BudgetModule from "@roadcar/core/Budget"
import { Context, Duration, Effect, Exit, Fiber, Layer, Schema } from "effect"
import { RateLimiter } from "effect/persistence"
import { RedisConnection, RedisStores } from "../src/index.ts"
import { keysUnder, redisUrl, request, type Scripted, scripted, testPrefix } from "./utils/RedisTest.ts"

// Two "replicas" are two separately built layer stacks (each with its own Redis connection and its
// own in-process stages) that share one Redis key prefix, as two gateway processes would.

interface Replica {
  readonly pipeline: Pipeline.Pipeline
  readonly rateLimit: RateLimit.RateLimit["Service"]
  readonly budget: BudgetModule.Budget["Service"]
  readonly upstream: Scripted
}

const budgetOptions = (tokens: number): BudgetModule.Options => ({ budgets: [{ per: "day", tokens }] })

const replica = (
  prefix: string,
  upstream: Scripted,
  options: { readonly rateLimit?: RateLimit.Options; readonly budget?: BudgetModule.Options } = {}
) =>
  Effect.gen(function* () {
    const stores = RedisStores.layer({ url: redisUrl, prefix })
    const stages = Layer.mergeAll(
      RateLimit.layer(options.rateLimit ?? { rules: [], onExceeded: "reject" }).pipe(Layer.provide(RateLimiter.layer)),
      Breaker.layer({ consecutiveFailures: 2, openDuration: "300 millis", maxOpenDuration: "300 millis" }),
      ResponseCache.layer(),
      BudgetModule.layer(options.budget ?? budgetOptions(1_000_000)),
      Monitor.layerNoop
    ).pipe(Layer.provide(stores))
    const context = yield* Layer.build(stages)
    const pipeline: Pipeline.Pipeline = yield* Pipeline.make({
      steps: [{ upstream, retry: { attempts: 1 } }]
    }).pipe(Effect.provideContext(context))
    return {
      pipeline,
      rateLimit: Context.get(context, RateLimit.RateLimit),
      budget: Context.get(context, BudgetModule.Budget),
      upstream
    } satisfies Replica
  })

const usedVia = (replica: Replica, apiKey: string) =>
  Effect.map(replica.budget.status(apiKey), (statuses) => statuses.map((status) => status.used))

describe.skipIf(!redisUrl)("RedisStores (Redis at REDIS_URL)", () => {
  describe("rate limits", () => {
    it.live("of N concurrent requests spread over two replicas, exactly the limit are admitted per window", () =>
      Effect.gen(function* () {
        const prefix = yield* testPrefix
        const rateLimit: RateLimit.Options = {
          rules: [{ by: "key", requests: { limit: 7, window: "1 second" } }],
          onExceeded: "reject"
        }
        const a = yield* replica(prefix, scripted("primary", []), { rateLimit })
        const b = yield* replica(prefix, scripted("primary", []), { rateLimit })
        const outcomes = (round: number) =>
          Effect.forEach(
            Array.from({ length: 30 }, (_, i) => i),
            (i) =>
              Effect.exit(
                (i % 2 === 0 ? a : b).pipeline.complete(request(`round ${round} request ${i}`), { key: "team-a" })
              ),
            { concurrency: "unbounded" }
          )
        const first = yield* outcomes(1)
        assert.strictEqual(first.filter(Exit.isSuccess).length, 7)
        for (const exit of first.filter(Exit.isFailure)) {
          const error = exit.cause.reasons.find((reason) => reason._tag === "Fail")?.error
          assert.strictEqual(error?._tag, "RateLimitRejected")
        }
        assert.strictEqual(a.upstream.calls.length + b.upstream.calls.length, 7)
        // The next window admits the limit again.
        yield* Effect.sleep("1100 millis")
        assert.strictEqual((yield* outcomes(2)).filter(Exit.isSuccess).length, 7)
        assert.strictEqual(a.upstream.calls.length + b.upstream.calls.length, 14)
      })
    )

    it.live("token limits reserve the estimate and give back the difference, across replicas", () =>
      Effect.gen(function* () {
        const prefix = yield* testPrefix
        const rateLimit: RateLimit.Options = {
          rules: [{ by: "key", tokens: { limit: 1100, window: "1 minute" } }],
          onExceeded: "reject"
        }
        const a = yield* replica(prefix, scripted("primary", []), { rateLimit })
        const b = yield* replica(prefix, scripted("primary", []), { rateLimit })
        const big = request("x".repeat(400), { max_tokens: 400 }) // 501 tokens reserved
        const first = yield* a.rateLimit.admit(big, { key: "k" })
        const second = yield* b.rateLimit.admit(big, { key: "k" })
        const refused = yield* Effect.flip(a.rateLimit.admit(big, { key: "k" }))
        assert.strictEqual(refused._tag === "RateLimitRejected" && refused.limit, "tokens per key")
        // Redis accepts the negative count that gives tokens back in a fixed window.
        yield* a.rateLimit.settle(first, ChatCompletion.usage(5, 5))
        yield* b.rateLimit.settle(second, undefined)
        yield* b.rateLimit.admit(big, { key: "k" })
        const keys = yield* Effect.promise(() => keysUnder(`${prefix}ratelimit:`))
        assert.strictEqual(keys.length, 1)
      })
    )
  })

  describe("circuit breaker", () => {
    it.live("a breaker opened through replica A makes replica B fail fast, and B's probe closes it", () =>
      Effect.gen(function* () {
        const prefix = yield* testPrefix
        const a = yield* replica(prefix, scripted("primary", ["503", "503"]))
        const b = yield* replica(prefix, scripted("primary", []))
        for (let i = 0; i < 2; i++) {
          const error = yield* Effect.flip(a.pipeline.complete(request(`a ${i}`)))
          assert.strictEqual((error as UpstreamError.UpstreamError).reason._tag, "Unavailable")
        }
        const fast = yield* Effect.flip(b.pipeline.complete(request("b 1")))
        assert.strictEqual((fast as UpstreamError.UpstreamError).reason._tag, "CircuitOpen")
        assert.strictEqual(b.upstream.calls.length, 0, "B never called its upstream")
        yield* Effect.sleep("350 millis")
        const probe = yield* b.pipeline.complete(request("b 2"))
        assert.strictEqual(probe.meta.upstream, "primary")
        assert.strictEqual(b.upstream.calls.length, 1)
        yield* a.pipeline.complete(request("a 3"))
        assert.strictEqual(a.upstream.calls.length, 3)
      })
    )
  })

  describe("response cache", () => {
    it.live("a response cached by replica A is a hit on replica B", () =>
      Effect.gen(function* () {
        const prefix = yield* testPrefix
        const a = yield* replica(prefix, scripted("primary", []))
        const b = yield* replica(prefix, scripted("primary", []))
        const first = yield* a.pipeline.complete(request("what is a roadcar?"))
        assert.isFalse(first.meta.cacheHit)
        const second = yield* b.pipeline.complete(request("  what is a roadcar?", { user: "someone" }))
        assert.isTrue(second.meta.cacheHit)
        assert.strictEqual(b.upstream.calls.length, 0)
        assert.deepStrictEqual(second.response, first.response)
        const keys = yield* Effect.promise(() => keysUnder(`${prefix}cache:`))
        assert.deepStrictEqual(keys, [`${prefix}cache:${ResponseCache.storeKey(request("what is a roadcar?"))}`])
      })
    )
  })

  describe("budgets", () => {
    let run = 0
    it.live.prop(
      "concurrent requests over two replicas never exceed a budget, and it ends at the real usage",
      {
        limit: Schema.Int.check(Schema.isBetween({ minimum: 300, maximum: 3000 })),
        requests: Schema.Array(
          Schema.Struct({
            chars: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 800 })),
            maxTokens: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 400 })),
            usedPercent: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 100 })),
            delayMs: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 15 })),
            onA: Schema.Boolean,
            fails: Schema.Boolean
          })
        ).check(Schema.isMaxLength(16))
      },
      ({ limit, requests }) =>
        Effect.gen(function* () {
          const prefix = yield* testPrefix
          const apiKey = `team-${run++}`
          const a = yield* replica(prefix, scripted("primary", []), { budget: budgetOptions(limit) })
          const b = yield* replica(prefix, scripted("primary", []), { budget: budgetOptions(limit) })
          let charged = 0
          let overLimit = 0
          const one = (spec: (typeof requests)[number]) =>
            Effect.gen(function* () {
              const [mine, other] = spec.onA ? [a, b] : [b, a]
              const asked = request("y".repeat(spec.chars), { max_tokens: spec.maxTokens })
              const reservation = yield* Effect.option(mine.budget.reserve(asked, { key: apiKey }))
              if (reservation._tag === "None") return
              const [used = 0] = yield* usedVia(other, apiKey)
              if (used > limit) overLimit++
              yield* Effect.sleep(Duration.millis(spec.delayMs))
              if (spec.fails) return yield* mine.budget.settle(reservation.value, undefined)
              const usage = ChatCompletion.usage(
                ChatCompletion.estimatePromptTokens(asked),
                Math.floor((spec.maxTokens * spec.usedPercent) / 100)
              )
              charged += usage.total_tokens
              yield* mine.budget.settle(reservation.value, usage)
            })
          yield* Effect.forEach(requests, one, { concurrency: "unbounded", discard: true })
          assert.strictEqual(overLimit, 0)
          const [used = 0] = yield* usedVia(a, apiKey)
          assert.strictEqual(used, charged)
          assert.isTrue(used <= limit)
        }).pipe(Effect.scoped),
      { arbitrary: { runs: 12 } }
    )

    it.live("a request interrupted mid-call releases its reservation on every replica", () =>
      Effect.gen(function* () {
        const prefix = yield* testPrefix
        const a = yield* replica(prefix, scripted("primary", ["hang"]), { budget: budgetOptions(10_000) })
        const b = yield* replica(prefix, scripted("primary", []), { budget: budgetOptions(10_000) })
        const big = request("x".repeat(400), { max_tokens: 400 })
        // The pipeline reserves the budget before its call and releases it when the call is interrupted.
        const fiber = yield* a.pipeline.complete(big, { key: "team-a" }).pipe(Effect.forkChild)
        for (let i = 0; i < 100 && a.upstream.calls.length === 0; i++) yield* Effect.sleep("5 millis")
        assert.deepStrictEqual(yield* usedVia(b, "team-a"), [501])
        yield* Fiber.interrupt(fiber)
        assert.deepStrictEqual(yield* usedVia(b, "team-a"), [0])
        // A completed call is charged its usage, seen from the other replica.
        yield* b.pipeline.complete(request("short"), { key: "team-a" })
        assert.deepStrictEqual(yield* usedVia(a, "team-a"), [8])
      })
    )

    it.live("an exhausted budget says which budget and when it resets; counters expire after their window", () =>
      Effect.gen(function* () {
        const prefix = yield* testPrefix
        const a = yield* replica(prefix, scripted("primary", []), { budget: budgetOptions(600) })
        const big = request("x".repeat(400), { max_tokens: 400 })
        yield* a.budget.reserve(big, { key: "team-a" })
        const error = yield* Effect.flip(a.budget.reserve(big, { key: "team-a" }))
        assert.strictEqual(error._tag, "BudgetExceeded")
        if (error._tag !== "BudgetExceeded") return
        assert.strictEqual(error.budget, "tokens per day for key team-a")
        assert.strictEqual(error.resetsAt, BudgetModule.windowOf("day", Date.now()).end)
        const keys = yield* Effect.promise(() => keysUnder(`${prefix}budget:`))
        assert.strictEqual(keys.length, 1)
        const connection = yield* RedisConnection.RedisConnection.use((c) =>
          c.redis.send<number>("PTTL", keys[0] ?? "")
        ).pipe(Effect.provide(RedisConnection.layer({ url: redisUrl, prefix })))
        assert.isTrue(connection > 0 && connection <= error.resetsAt - Date.now() + 61_000)
      })
    )
  })
})
