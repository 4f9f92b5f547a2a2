import { assert, describe, it } from "@effect/vitest"
import { AlertSink, Breaker, Budget, ChatCompletion, Monitor, Pipeline, RateLimit } from "@roadcar/core"
import { Duration, Effect, Exit, Fiber, Layer, Schema } from "effect"
import { TestClock } from "effect/testing"
import { badRequest, request, scripted } from "./utils/Scripted.ts"

const perKey = (limit: number, onExceeded: "wait" | "reject" = "reject") =>
  RateLimit.layerMemory({ rules: [{ by: "key", requests: { limit, window: "10 seconds" } }], onExceeded })

describe("RateLimit", () => {
  it.effect.prop(
    "never admits more than the limit in any window, and admits again after it",
    {
      limit: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 15 })),
      extra: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 10 }))
    },
    ({ limit, extra }) =>
      Effect.gen(function* () {
        const rateLimit = yield* RateLimit.RateLimit
        const admit = rateLimit.admit(request(), { key: "team-a" }).pipe(Effect.exit)
        const exits = yield* Effect.forEach(Array.from({ length: limit + extra }), () => admit)
        assert.strictEqual(exits.filter(Exit.isSuccess).length, limit)
        const other = yield* rateLimit.admit(request(), { key: "team-b" }).pipe(Effect.exit)
        assert.isTrue(Exit.isSuccess(other), "another key has its own window")
        yield* TestClock.adjust(Duration.sum(Duration.seconds(10), Duration.millis(1)))
        assert.isTrue(Exit.isSuccess(yield* admit))
      }).pipe(Effect.provide(perKey(limit))),
    { arbitrary: { runs: 30 } }
  )

  it.effect("a rejection says what was exceeded and when to retry", () =>
    Effect.gen(function* () {
      const rateLimit = yield* RateLimit.RateLimit
      yield* rateLimit.admit(request(), { key: "team-a" })
      yield* TestClock.adjust("4 seconds")
      const error = yield* Effect.flip(rateLimit.admit(request(), { key: "team-a" }))
      if (error._tag !== "RateLimitRejected") return assert.fail(`expected RateLimitRejected, got ${error._tag}`)
      assert.strictEqual(error.limit, "requests per key")
      assert.strictEqual(error.subject, "key team-a")
      assert.strictEqual(Math.round(Duration.toSeconds(error.retryAfter)), 6)
      assert.match(error.message, /retry after 6s/)
    }).pipe(Effect.provide(perKey(1)))
  )

  it.effect("wait mode delays the request until the window has room", () =>
    Effect.gen(function* () {
      const rateLimit = yield* RateLimit.RateLimit
      yield* rateLimit.admit(request(), { key: "k" })
      const waiting = yield* Effect.forkChild(rateLimit.admit(request(), { key: "k" }))
      yield* TestClock.adjust("9 seconds")
      assert.isUndefined(waiting.pollUnsafe())
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(waiting)
    }).pipe(Effect.provide(perKey(1, "wait")))
  )

  it.effect("token limits reserve the estimate, settle with real usage, and give back failed calls", () =>
    Effect.gen(function* () {
      const rateLimit = yield* RateLimit.RateLimit
      const big = request("x".repeat(400), { max_tokens: 400 }) // ~ 101 prompt + 400 output
      const estimate = RateLimit.estimateTokens(big)
      assert.strictEqual(estimate, ChatCompletion.estimatePromptTokens(big) + 400)
      const first = yield* rateLimit.admit(big, { key: "k" })
      // A second reservation does not fit in 1000 tokens...
      const second = yield* rateLimit.admit(big, { key: "k" })
      const third = yield* Effect.flip(rateLimit.admit(big, { key: "k" }))
      assert.strictEqual(third._tag === "RateLimitRejected" && third.limit, "tokens per key")
      // ...until the first call turns out to use only 10 tokens, and the second fails.
      yield* rateLimit.settle(first, ChatCompletion.usage(5, 5))
      yield* rateLimit.settle(second, undefined)
      yield* rateLimit.admit(big, { key: "k" })
    }).pipe(
      Effect.provide(
        RateLimit.layerMemory({
          rules: [{ by: "key", tokens: { limit: 1100, window: "1 minute" } }],
          onExceeded: "reject"
        })
      )
    )
  )

  it.effect("a request refused by a later rule costs nothing under the earlier ones", () =>
    Effect.gen(function* () {
      const rateLimit = yield* RateLimit.RateLimit
      yield* rateLimit.admit(request(), { key: "a", user: "u" })
      // user u is now exhausted; key b's request is refused by the user rule and must not count for key b
      yield* Effect.flip(rateLimit.admit(request(), { key: "b", user: "u" }))
      yield* rateLimit.admit(request(), { key: "b", user: "v" })
    }).pipe(
      Effect.provide(
        RateLimit.layerMemory({
          rules: [
            { by: "key", requests: { limit: 1, window: "1 minute" } },
            { by: "user", requests: { limit: 1, window: "1 minute" } }
          ],
          onExceeded: "reject"
        })
      )
    )
  )

  it.effect("in the pipeline, a rejected request never reaches the upstream", () =>
    Effect.gen(function* () {
      const primary = scripted("primary", [])
      const pipeline = yield* Pipeline.make({ steps: [{ upstream: primary }], staticAnswer: "static" })
      yield* pipeline.complete(request("one"), { key: "k" })
      const error = yield* Effect.flip(pipeline.complete(request("two"), { key: "k" }))
      assert.strictEqual(error._tag, "RateLimitRejected")
      assert.strictEqual(primary.calls.length, 1)
    }).pipe(Effect.scoped, Effect.provide(Layer.mergeAll(Breaker.layerMemory(), Monitor.layerNoop, perKey(1))))
  )

  it.effect("in the pipeline, a budget is reserved before the call, settled after, and refuses when spent", () =>
    Effect.gen(function* () {
      const primary = scripted("primary", [badRequest])
      const pipeline = yield* Pipeline.make({ steps: [{ upstream: primary }] })
      const budget = yield* Budget.Budget
      // The failed call's reservation is released: nothing is spent.
      yield* Effect.flip(pipeline.complete(request("fails", { max_tokens: 10 }), { key: "k" }))
      assert.deepStrictEqual(
        (yield* budget.status("k")).map((status) => status.used),
        [0]
      )
      // A successful call is charged its real usage (5 + 3 tokens in the scripted answer).
      yield* pipeline.complete(request("ok", { max_tokens: 10 }), { key: "k" })
      assert.deepStrictEqual(
        (yield* budget.status("k")).map((status) => status.used),
        [8]
      )
      // A request whose estimate no longer fits is refused before any upstream call.
      const calls = primary.calls.length
      const refused = yield* Effect.flip(pipeline.complete(request("big", { max_tokens: 50 }), { key: "k" }))
      assert.strictEqual(refused._tag, "BudgetExceeded")
      assert.strictEqual(primary.calls.length, calls)
    }).pipe(
      Effect.scoped,
      Effect.provide(
        Layer.mergeAll(
          Breaker.layerMemory(),
          Monitor.layerNoop,
          Budget.layerMemory({ budgets: [{ per: "day", tokens: 40 }] }).pipe(Layer.provide(AlertSink.layerLog))
        )
      )
    )
  )
})
