import { assert, describe, it } from "@effect/vitest"
import { AlertSink, ChatCompletion, RequestLog, StoreUnavailable } from "@roadcar/core"
import { Context, Duration, Effect, Exit, Fiber, Layer, Schema, Tracer } from "effect"
import { TestClock, TestConsole } from "effect/testing"
import * as Budget from "../src/Budget.ts"
import { request } from "./utils/Scripted.ts"

const day = 86_400_000
// 400 characters: 101 prompt tokens (estimate), plus 400 allowed output tokens = 501.
const big = request("x".repeat(400), { max_tokens: 400 })

const tokensPerDay = (tokens: number, extra: Partial<Budget.Options> = {}) =>
  Budget.layerMemory({ budgets: [{ key: "team-a", per: "day", tokens }], ...extra })

const usedOf = (apiKey: string) =>
  Budget.Budget.use((budget) => budget.status(apiKey)).pipe(
    Effect.map((statuses) => statuses.map((status) => status.used))
  )

// Lets forked work (alert delivery) run.
const settleDown = Effect.forEach(Array.from({ length: 10 }), () => Effect.yieldNow, { discard: true })

describe("Budget", () => {
  describe("reserve", () => {
    it.effect("admits what fits and refuses what does not, saying which budget and when it resets", () =>
      Effect.gen(function* () {
        const budget = yield* Budget.Budget
        assert.strictEqual(ChatCompletion.estimatePromptTokens(big) + 400, 501)
        yield* budget.reserve(big, { key: "team-a" })
        yield* TestClock.adjust("10 hours")
        const error = yield* Effect.flip(budget.reserve(big, { key: "team-a" }))
        assert.strictEqual(error._tag, "BudgetExceeded")
        if (error._tag !== "BudgetExceeded") return
        assert.strictEqual(error.budget, "tokens per day for key team-a")
        assert.strictEqual(error.resetsAt, day)
        assert.strictEqual(Duration.toMillis(error.retryAfter), 14 * 3_600_000)
        assert.include(error.message, "tokens per day for key team-a")
        assert.include(error.message, "1970-01-02T00:00:00.000Z")
        // The next day (UTC) is a new window.
        yield* TestClock.adjust("14 hours")
        yield* budget.reserve(big, { key: "team-a" })
        assert.deepStrictEqual(yield* usedOf("team-a"), [501])
      }).pipe(Effect.provide(tokensPerDay(1000)))
    )

    it.effect("month budgets are calendar months in UTC", () =>
      Effect.gen(function* () {
        const budget = yield* Budget.Budget
        yield* budget.reserve(big, { key: "team-a" })
        yield* TestClock.adjust(Duration.days(30)) // January 31st
        const error = yield* Effect.flip(budget.reserve(big, { key: "team-a" }))
        assert.strictEqual(error._tag === "BudgetExceeded" && error.resetsAt, Date.UTC(1970, 1, 1))
        yield* TestClock.adjust(Duration.days(1)) // February 1st
        yield* budget.reserve(big, { key: "team-a" })
      }).pipe(Effect.provide(Budget.layerMemory({ budgets: [{ key: "team-a", per: "month", tokens: 600 }] })))
    )

    it.effect("a key's own budget replaces the default; a request without a key has none", () =>
      Effect.gen(function* () {
        const budget = yield* Budget.Budget
        yield* budget.reserve(big, { key: "anyone" })
        assert.strictEqual((yield* Effect.flip(budget.reserve(big, { key: "anyone" })))._tag, "BudgetExceeded")
        yield* budget.reserve(big, { key: "someone-else" })
        for (let i = 0; i < 3; i++) yield* budget.reserve(big, { key: "vip" })
        for (let i = 0; i < 5; i++) yield* budget.reserve(big, {})
        const statuses = yield* budget.status("vip")
        assert.deepStrictEqual(
          statuses.map((status) => [status.budget, status.used, status.limit]),
          [["tokens per day for key vip", 1503, 2000]]
        )
      }).pipe(
        Effect.provide(
          Budget.layerMemory({
            budgets: [
              { per: "day", tokens: 600 },
              { key: "vip", per: "day", tokens: 2000 }
            ]
          })
        )
      )
    )

    it.effect("a store that cannot answer refuses with StoreUnavailable, and settling only logs", () =>
      Effect.gen(function* () {
        const budget = yield* Budget.Budget
        const error = yield* Effect.flip(budget.reserve(big, { key: "team-a" }))
        assert.strictEqual(error._tag, "StoreUnavailable")
        assert.isTrue(StoreUnavailable.isStoreUnavailable(error))
        assert.include(error.message, "budget store is unavailable")
        const reservation: Budget.Reservation = {
          counters: [
            {
              key: "k",
              budget: "tokens per day for key team-a",
              apiKey: "team-a",
              kind: "tokens",
              per: "day",
              limit: 10,
              amount: 5,
              resetsAt: day,
              timeToLive: Duration.days(1)
            }
          ],
          price: undefined,
          estimatedTokens: 5
        }
        const settled = yield* Effect.exit(budget.settle(reservation, undefined))
        assert.isTrue(Exit.isSuccess(settled))
      }).pipe(
        Effect.provide(
          Budget.layer({ budgets: [{ key: "team-a", per: "day", tokens: 1000 }] }).pipe(
            Layer.provide(
              Layer.succeed(Budget.BudgetStore, {
                reserve: () => Effect.fail(new StoreUnavailable.StoreUnavailable({ store: "budget", detail: "down" })),
                adjust: () => Effect.fail(new StoreUnavailable.StoreUnavailable({ store: "budget", detail: "down" })),
                used: () => Effect.fail(new StoreUnavailable.StoreUnavailable({ store: "budget", detail: "down" })),
                claim: () => Effect.fail(new StoreUnavailable.StoreUnavailable({ store: "budget", detail: "down" }))
              })
            )
          )
        )
      )
    )
  })

  it.effect("its store calls run in Budget.reserve / Budget.settle spans only when a tracer would export them", () =>
    Effect.gen(function* () {
      const seen: Array<string | undefined> = []
      const memory = yield* Budget.makeStoreMemory
      const record = Effect.withFiber((fiber) => {
        seen.push((Context.getOrUndefined(fiber.context, Tracer.ParentSpan) as Tracer.Span | undefined)?.name)
        return Effect.void
      })
      const observed = Budget.BudgetStore.of({
        ...memory,
        reserve: (charges) => Effect.andThen(record, memory.reserve(charges)),
        adjust: (changes) => Effect.andThen(record, memory.adjust(changes))
      })
      const budget = yield* Budget.make({ budgets: [{ per: "day", tokens: 1_000_000 }] }).pipe(
        Effect.provideService(Budget.BudgetStore, observed)
      )
      const tracer = Tracer.make({ span: (options) => new Tracer.NativeSpan(options) })
      const once = Effect.flatMap(budget.reserve(big, { key: "team-a" }), (reservation) =>
        budget.settle(reservation, ChatCompletion.usage(10, 5))
      )
      yield* once.pipe(Effect.withSpan("caller"))
      yield* once.pipe(Effect.withSpan("caller"), Effect.withTracer(tracer))
      assert.deepStrictEqual(seen, ["caller", "caller", "Budget.reserve", "Budget.settle"])
    }).pipe(Effect.scoped)
  )

  describe("settle", () => {
    it.effect("charges the real usage and releases failed calls", () =>
      Effect.gen(function* () {
        const budget = yield* Budget.Budget
        const first = yield* budget.reserve(big, { key: "team-a" })
        const second = yield* budget.reserve(big, { key: "team-a" })
        assert.strictEqual((yield* Effect.flip(budget.reserve(big, { key: "team-a" })))._tag, "BudgetExceeded")
        yield* budget.settle(first, ChatCompletion.usage(5, 5))
        assert.deepStrictEqual(yield* usedOf("team-a"), [511])
        yield* budget.settle(second, undefined)
        assert.deepStrictEqual(yield* usedOf("team-a"), [10])
        // A call that used more than its estimate is charged all of it.
        const third = yield* budget.reserve(big, { key: "team-a" })
        yield* budget.settle(third, ChatCompletion.usage(300, 400))
        assert.deepStrictEqual(yield* usedOf("team-a"), [710])
      }).pipe(Effect.provide(tokensPerDay(1100)))
    )

    it.effect("a settlement after the window ended leaves the new window alone", () =>
      Effect.gen(function* () {
        const budget = yield* Budget.Budget
        const late = yield* budget.reserve(big, { key: "team-a" })
        yield* TestClock.adjust(Duration.days(2))
        yield* budget.reserve(big, { key: "team-a" })
        yield* budget.settle(late, ChatCompletion.usage(1, 1))
        assert.deepStrictEqual(yield* usedOf("team-a"), [501])
      }).pipe(Effect.provide(tokensPerDay(1000)))
    )

    it.effect("cost is estimated at the chain's most expensive price and settled at the answering model's", () =>
      Effect.gen(function* () {
        const budget = yield* Budget.Budget
        // big at "big" prices: 10 * 101 + 30 * 400 = 13,010 millionths.
        const first = yield* budget.reserve(big, { key: "team-a" })
        assert.deepStrictEqual(first.price, { input: 10, output: 30 })
        const refused = yield* Effect.flip(budget.reserve(big, { key: "team-a" }))
        assert.strictEqual(refused._tag === "BudgetExceeded" && refused.budget, "cost per day for key team-a")
        // Answered by "small": 0.1 * 100 + 0.2 * 50 = 20 millionths.
        yield* budget.settle(first, ChatCompletion.usage(100, 50), "small")
        const [status] = yield* budget.status("team-a")
        assert.strictEqual(status?.kind, "cost")
        assert.strictEqual(status?.used, 0.00002)
        assert.strictEqual(status?.limit, 0.02)
        const second = yield* budget.reserve(big, { key: "team-a" })
        // No price for the answering model: the estimate's price is used.
        yield* budget.settle(second, ChatCompletion.usage(100, 100), "unknown")
        assert.strictEqual((yield* budget.status("team-a"))[0]?.used, (20 + 4000) / 1e6)
        // A public model without a chain is priced at its own price, one without any at the dearest.
        const other = yield* budget.reserve(request("hi", { model: "small", max_tokens: 10 }), { key: "team-b" })
        assert.deepStrictEqual(other.price, { input: 0.1, output: 0.2 })
        const unknown = yield* budget.reserve(request("hi", { model: "mystery", max_tokens: 10 }), { key: "team-b" })
        assert.deepStrictEqual(unknown.price, { input: 10, output: 30 })
        // Model names that are also properties of every object find no price, not a function.
        const usedBefore = (yield* budget.status("team-b"))[0]?.used ?? Number.NaN
        const named = yield* budget.reserve(request("hi", { model: "toString", max_tokens: 10 }), { key: "team-b" })
        assert.deepStrictEqual(named.price, { input: 10, output: 30 })
        yield* budget.settle(named, ChatCompletion.usage(100, 100), "constructor")
        // Settled at the estimate's price: 10 * 100 + 30 * 100 = 4,000 millionths.
        assert.closeTo((yield* budget.status("team-b"))[0]?.used ?? Number.NaN, usedBefore + 0.004, 1e-9)
      }).pipe(
        Effect.provide(
          Budget.layerMemory({
            budgets: [{ per: "day", cost: 0.02 }],
            prices: {
              chat: { input: 1, output: 2 },
              big: { input: 10, output: 30 },
              small: { input: 0.1, output: 0.2 }
            },
            chains: { chat: ["small", "big"] }
          })
        )
      )
    )

    it.effect("a request interrupted mid-call releases its reservation", () =>
      Effect.gen(function* () {
        const fiber = yield* Effect.forkChild(
          Budget.withBudget(Effect.never, {
            request: big,
            identity: { key: "team-a" },
            usageOf: () => ({ usage: ChatCompletion.usage(1, 1) })
          })
        )
        yield* settleDown
        assert.deepStrictEqual(yield* usedOf("team-a"), [501])
        yield* Fiber.interrupt(fiber)
        assert.deepStrictEqual(yield* usedOf("team-a"), [0])
        // A call that completes is charged what it used.
        yield* Budget.withBudget(Effect.succeed("answer"), {
          request: big,
          identity: { key: "team-a" },
          usageOf: () => ({ usage: ChatCompletion.usage(7, 3) })
        })
        assert.deepStrictEqual(yield* usedOf("team-a"), [10])
      }).pipe(Effect.provide(tokensPerDay(1000)))
    )
  })

  describe("memory store", () => {
    it.effect("drops the counters of past windows, so it holds only the current ones", () =>
      Effect.gen(function* () {
        const store = yield* Budget.makeStoreMemory
        const charge = (key: string) => ({ key, amount: 1, limit: 10, timeToLive: Duration.days(1) })
        // 100 keys a day for 30 days: a day's counters are never read again once it is over.
        for (let day = 0; day < 30; day++) {
          yield* store.reserve(Array.from({ length: 100 }, (_, index) => charge(`day${day}:key${index}`)))
          yield* TestClock.adjust("1 day")
        }
        yield* store.reserve([charge("today:key0")])
        assert.strictEqual(Budget.memoryStoreSize(store), 1)
      })
    )
  })

  describe("thresholds", () => {
    it.effect("an alert reaches the log once: through the log sink, or on its own without a sink", () =>
      Effect.gen(function* () {
        const lines = (yield* TestConsole.logLines).length
        for (const layer of [
          tokensPerDay(100, { thresholds: [0.5] }).pipe(Layer.provide(AlertSink.layerLog)),
          tokensPerDay(100, { thresholds: [0.5] })
        ]) {
          const before = (yield* TestConsole.logLines).length
          yield* Effect.gen(function* () {
            const budget = yield* Budget.Budget
            const reservation = yield* budget.reserve(request("hi", { max_tokens: 10 }), { key: "team-a" })
            yield* budget.settle(reservation, ChatCompletion.usage(30, 30))
            yield* settleDown
          }).pipe(Effect.provide(layer))
          const written = (yield* TestConsole.logLines).slice(before).map(String)
          assert.strictEqual(written.filter((line) => line.includes("past 50%")).length, 1, written.join("\n"))
        }
        assert.isAbove((yield* TestConsole.logLines).length, lines)
      }).pipe(Effect.provide(RequestLog.layerJson("Info")))
    )

    it.effect("raise one alert per threshold and budget window", () => {
      const alerts: Array<AlertSink.Alert> = []
      return Effect.gen(function* () {
        const budget = yield* Budget.Budget
        const spend = Effect.gen(function* () {
          const reservation = yield* budget.reserve(request("hi", { max_tokens: 100 }), { key: "team-a" })
          yield* budget.settle(reservation, ChatCompletion.usage(50, 50))
          yield* settleDown
        })
        for (let i = 0; i < 4; i++) yield* spend // 400 of 1000
        assert.strictEqual(alerts.length, 0)
        yield* spend // 500: at 50%
        assert.strictEqual(alerts.length, 1)
        for (let i = 0; i < 3; i++) yield* spend // 800: 80% once, 50% not again
        assert.deepStrictEqual(
          alerts.map((alert) => [alert._tag, alert.rule, alert.subject, alert.figures["threshold"]]),
          [
            ["Raised", "budget_threshold", "team-a", 0.5],
            ["Raised", "budget_threshold", "team-a", 0.8]
          ]
        )
        assert.include(alerts[1]?.message, "tokens per day for key team-a is at 80%")
        assert.strictEqual(alerts[1]?.figures["used"], 800)
        // A failed call is released, and raises nothing.
        const failed = yield* budget.reserve(request("hi", { max_tokens: 50 }), { key: "team-a" })
        yield* budget.settle(failed, undefined)
        yield* settleDown
        assert.strictEqual(alerts.length, 2)
        // The next day is a new window.
        yield* TestClock.adjust(Duration.days(1))
        for (let i = 0; i < 4; i++) yield* spend
        assert.strictEqual(alerts.length, 2)
        yield* spend
        assert.strictEqual(alerts.length, 3)
      }).pipe(
        Effect.provide(
          tokensPerDay(1000, { thresholds: [0.8, 0.5] }).pipe(
            Layer.provide(AlertSink.layerCallback((alert) => void alerts.push(alert)))
          )
        )
      )
    })
  })

  it.effect.prop(
    "concurrent reservations never exceed the budget, and the counter ends at the real usage",
    {
      limit: Schema.Int.check(Schema.isBetween({ minimum: 200, maximum: 4000 })),
      requests: Schema.Array(
        Schema.Struct({
          chars: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 2000 })),
          maxTokens: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 800 })),
          usedPercent: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 100 })),
          delayMs: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 1000 })),
          fails: Schema.Boolean
        })
      ).check(Schema.isMaxLength(30))
    },
    ({ limit, requests }) =>
      Effect.gen(function* () {
        const budget = yield* Budget.Budget
        let charged = 0
        let overLimit = 0
        const one = (spec: (typeof requests)[number]) =>
          Effect.gen(function* () {
            const asked = request("y".repeat(spec.chars), { max_tokens: spec.maxTokens })
            const reservation = yield* Effect.option(budget.reserve(asked, { key: "team-a" }))
            if (reservation._tag === "None") return
            const [used = 0] = yield* usedOf("team-a")
            if (used > limit) overLimit++
            yield* Effect.sleep(Duration.millis(spec.delayMs))
            if (spec.fails) return yield* budget.settle(reservation.value, undefined)
            const output = Math.floor((spec.maxTokens * spec.usedPercent) / 100)
            const usage = ChatCompletion.usage(ChatCompletion.estimatePromptTokens(asked), output)
            charged += usage.total_tokens
            yield* budget.settle(reservation.value, usage)
          })
        const fiber = yield* Effect.forkChild(Effect.forEach(requests, one, { concurrency: "unbounded" }))
        yield* TestClock.adjust("1 second")
        yield* Fiber.join(fiber)
        assert.strictEqual(overLimit, 0)
        const [used = 0] = yield* usedOf("team-a")
        assert.strictEqual(used, charged)
        assert.isTrue(used <= limit)
      }).pipe(Effect.provide(Budget.layerMemory({ budgets: [{ key: "team-a", per: "day", tokens: limit }] }))),
    { arbitrary: { runs: 60 } }
  )
})
