import { assert, describe, it } from "@effect/vitest"
import { AlertSink, Breaker, Budget, ChatCompletion, Monitor, Pipeline, RateLimit, type Upstream } from "@roadcar/core"
import { Duration, Effect, Exit, Fiber, Layer, Schema, Stream } from "effect"
import { RateLimiter } from "effect/persistence"
import { TestClock } from "effect/testing"
import { badRequest, request, response, scripted, unavailable } from "./utils/Scripted.ts"

// The stages every pipeline needs (breaker, monitor) beside the ones a test is about.
const withStages = <A, E>(...layers: ReadonlyArray<Layer.Layer<A, E>>) =>
  Layer.mergeAll(Breaker.layerMemory(), Monitor.layerNoop, ...layers)

const perKey = (limit: number, onExceeded: "wait" | "reject" = "reject") =>
  RateLimit.layerMemory({ rules: [{ by: "key", requests: { limit, window: "10 seconds" } }], onExceeded })

// Both implementations: in process memory, and over effect's `RateLimiter` and a store (here its
// memory store; Redis in production), whose consumes can take a round trip (`slowStore`).
const overStore = (options: RateLimit.Options, store: Layer.Layer<RateLimiter.RateLimiterStore>) =>
  RateLimit.layer(options).pipe(Layer.provide(RateLimiter.layer), Layer.provide(store))
const slowStore = (delay: Duration.Input) =>
  Layer.effect(
    RateLimiter.RateLimiterStore,
    Effect.map(Effect.service(RateLimiter.RateLimiterStore), (store) =>
      RateLimiter.RateLimiterStore.of({
        ...store,
        // Recorded at once, answered `delay` later: a Redis command executed whose reply is in transit.
        fixedWindow: (options) => Effect.tap(store.fixedWindow(options), () => Effect.sleep(delay))
      })
    )
  ).pipe(Layer.provide(RateLimiter.layerStoreMemory))
const implementations: ReadonlyArray<
  readonly [string, (options: RateLimit.Options) => Layer.Layer<RateLimit.RateLimit>]
> = [
  ["in memory", RateLimit.layerMemory],
  ["over effect's RateLimiter", (options) => overStore(options, RateLimiter.layerStoreMemory)]
]

// A request whose token estimate is exactly `tokens`.
const costing = (tokens: number) =>
  request("hi", { max_tokens: tokens - ChatCompletion.estimatePromptTokens(request("hi")) })

// Whether `effect` completes without the clock moving (under TestClock a wait never ends by itself).
const completesAtOnce = <A, E>(effect: Effect.Effect<A, E>) =>
  Effect.gen(function* () {
    const fiber = yield* Effect.forkChild(effect)
    for (let i = 0; i < 10 && fiber.pollUnsafe() === undefined; i++) yield* Effect.yieldNow
    const done = fiber.pollUnsafe() !== undefined
    yield* Fiber.interrupt(fiber)
    return done
  })

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

  describe.each(implementations)("wait mode, %s", (_, make) => {
    const tokensPerMinute = (limit: number, maxWait: Duration.Input) =>
      make({ rules: [{ by: "key", tokens: { limit, window: "1 minute" } }], onExceeded: "wait", maxWait })

    it.effect("refusals and give-backs pull the window's end in again: a busy key is never locked out", () =>
      Effect.gen(function* () {
        const rateLimit = yield* RateLimit.RateLimit
        const whole = costing(100)
        yield* rateLimit.settle(yield* rateLimit.admit(whole, { key: "k" }), ChatCompletion.usage(50, 50))
        // Each refusal (a wait past maxWait) says the window ends at 60 s, however many came before.
        for (let second = 0; second < 30; second += 5) {
          const refused = yield* Effect.flip(rateLimit.admit(whole, { key: "k" }))
          assert.strictEqual(
            refused._tag === "RateLimitRejected" && Duration.toSeconds(refused.retryAfter),
            60 - second
          )
          yield* TestClock.adjust("5 seconds")
        }
        yield* TestClock.adjust("30 seconds")
        assert.isTrue(yield* completesAtOnce(rateLimit.admit(whole, { key: "k" })), "admitted when its window ended")

        // A call that used less than its estimate gives the rest back, the window's time with it.
        yield* TestClock.adjust("2 minutes")
        yield* rateLimit.settle(yield* rateLimit.admit(whole, { key: "k" }), ChatCompletion.usage(5, 5))
        yield* TestClock.adjust("7 seconds") // 10 tokens hold the window for 6 s
        assert.isTrue(yield* completesAtOnce(rateLimit.admit(whole, { key: "k" })), "90 tokens were given back")
      }).pipe(Effect.provide(tokensPerMinute(100, "10 seconds")))
    )

    it.effect("a request interrupted while it waits gives back what it took", () =>
      Effect.gen(function* () {
        const rateLimit = yield* RateLimit.RateLimit
        const held = yield* rateLimit.admit(costing(100), { key: "k" })
        const waiter = yield* Effect.forkChild(rateLimit.admit(costing(100), { key: "k" }))
        yield* TestClock.adjust("1 second")
        assert.isUndefined(waiter.pollUnsafe(), "the second request waits for room")
        yield* Fiber.interrupt(waiter)
        yield* rateLimit.settle(held, undefined)
        // Nothing is held any more: 100 of 150 tokens fit at once.
        assert.isTrue(yield* completesAtOnce(rateLimit.admit(costing(100), { key: "k" })))
      }).pipe(Effect.provide(tokensPerMinute(150, "5 minutes")))
    )
  })

  it.effect("in the pipeline, a request interrupted while its store records the admission gives it back", () =>
    Effect.gen(function* () {
      const primary = scripted("primary", [])
      const pipeline = yield* Pipeline.make({ steps: [{ upstream: primary }] })
      const rateLimit = yield* RateLimit.RateLimit
      const request = costing(100)
      const fiber = yield* Effect.forkChild(pipeline.complete(request, { key: "k" }))
      yield* TestClock.adjust("20 millis") // the store's round trip takes 50 ms
      // The interruption waits for the store's answer (the admission is recorded or not at all), and
      // then for what is given back.
      const interrupted = yield* Effect.forkChild(Fiber.interrupt(fiber))
      yield* TestClock.adjust("200 millis")
      yield* Fiber.join(interrupted)
      assert.strictEqual(primary.calls.length, 0)
      // The 100 tokens it reserved were given back: two more requests of 100 fit in the 200.
      const fits = Effect.forkChild(rateLimit.admit(request, { key: "k" }))
      const first = yield* fits
      const second = yield* fits
      yield* TestClock.adjust("200 millis")
      yield* Fiber.join(first)
      yield* Fiber.join(second)
    }).pipe(
      Effect.scoped,
      Effect.provide(
        withStages(
          overStore(
            { rules: [{ by: "key", tokens: { limit: 200, window: "1 minute" } }], onExceeded: "reject" },
            slowStore("50 millis")
          )
        )
      )
    )
  )

  it.effect("in the pipeline, a request interrupted while its budget is reserved releases the reservation", () =>
    Effect.gen(function* () {
      const pipeline = yield* Pipeline.make({ steps: [{ upstream: scripted("primary", []) }] })
      const budget = yield* Budget.Budget
      const fiber = yield* Effect.forkChild(pipeline.complete(costing(100), { key: "k" }))
      yield* TestClock.adjust("20 millis") // the store's round trip takes 50 ms
      // The interruption waits for the store's answer (the admission is recorded or not at all), and
      // then for what is given back.
      const interrupted = yield* Effect.forkChild(Fiber.interrupt(fiber))
      yield* TestClock.adjust("200 millis")
      yield* Fiber.join(interrupted)
      assert.deepStrictEqual(
        (yield* budget.status("k")).map((status) => status.used),
        [0]
      )
    }).pipe(
      Effect.scoped,
      Effect.provide(
        withStages(
          Budget.layer({ budgets: [{ per: "day", tokens: 1000 }] }).pipe(
            Layer.provide(
              Layer.effect(
                Budget.BudgetStore,
                Effect.map(Budget.makeStoreMemory, (store) =>
                  Budget.BudgetStore.of({
                    ...store,
                    reserve: (charges) => Effect.andThen(Effect.sleep("50 millis"), store.reserve(charges))
                  })
                )
              )
            )
          )
        )
      )
    )
  )

  it.effect("in the pipeline, a cost budget charges the answering upstream's price, by its configured model", () =>
    Effect.gen(function* () {
      const primary = scripted("primary", [unavailable, unavailable, unavailable])
      // The fallback is configured to ask for "mini" and reports a dated version of it.
      const backup: Upstream.Upstream = {
        name: "backup",
        provider: "test",
        model: "mini",
        complete: () =>
          Effect.succeed({ ...response("mini-2024-07-18", "from backup"), usage: ChatCompletion.usage(1000, 1000) }),
        stream: () => Stream.empty
      }
      const pipeline = yield* Pipeline.make({
        steps: [{ upstream: primary, retry: { attempts: 1 } }, { upstream: backup }]
      })
      const budget = yield* Budget.Budget
      const answer = yield* pipeline.complete(request("priced", { model: "chat", max_tokens: 10 }), { key: "k" })
      assert.strictEqual(answer.meta.upstream, "backup")
      // 1000 x 0.15 + 1000 x 0.6 per million: the mini price, not the big one the estimate used.
      assert.closeTo((yield* budget.status("k"))[0]?.used ?? Number.NaN, 0.00075, 1e-9)
    }).pipe(
      Effect.scoped,
      Effect.provide(
        withStages(
          Budget.layerMemory({
            budgets: [{ per: "day", cost: 1 }],
            prices: { big: { input: 2.5, output: 10 }, mini: { input: 0.15, output: 0.6 } },
            chains: { chat: ["big", "mini"] }
          })
        )
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
    }).pipe(Effect.scoped, Effect.provide(withStages(perKey(1))))
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
        withStages(
          Budget.layerMemory({ budgets: [{ per: "day", tokens: 40 }] }).pipe(Layer.provide(AlertSink.layerLog))
        )
      )
    )
  )
})
