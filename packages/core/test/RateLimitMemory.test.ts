import { assert, describe, it } from "@effect/vitest"
import { ChatCompletion, RateLimit } from "@roadcar/core"
import { Clock, Duration, Effect, Exit, Fiber, Layer, Schema } from "effect"
import { RateLimiter } from "effect/persistence"
import { TestClock } from "effect/testing"
import { DecodedLimit, FixedWindows, windowsOf } from "../src/internal/fixedWindow.ts"
import { request } from "./utils/Scripted.ts"

// `RateLimit.layerMemory` keeps its fixed windows in plain memory, at most `maxKeys` of them;
// `RateLimit.layer` runs the same rules through effect's `RateLimiter` over
// `RateLimiter.layerStoreMemory`. Below the capacity both must admit, refuse, wait and settle alike:
// random rules and random sequences of requests, settles and clock moves are played against both.

const Window = Schema.Literals([1000, 2500, "10 seconds", "1 minute", "1500 micros"])
const Rule = Schema.Struct({
  by: Schema.Literals(["key", "user", "model", "global"]),
  forKey: Schema.optionalKey(Schema.Literals(["k1"])),
  requests: Schema.optionalKey(
    Schema.Struct({ limit: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 4 })), window: Window })
  ),
  tokens: Schema.optionalKey(
    Schema.Struct({ limit: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 400 })), window: Window })
  )
})
const Op = Schema.Union([
  Schema.TaggedStruct("admit", {
    key: Schema.Literals(["k1", "k2", "k3"]),
    user: Schema.optionalKey(Schema.Literals(["u1", "u2"])),
    model: Schema.Literals(["m1", "m2"]),
    prompt: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 400 })),
    maxTokens: Schema.optionalKey(Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 200 })))
  }),
  Schema.TaggedStruct("settle", {
    reservation: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 60 })),
    // Missing: the call failed and gives back its whole estimate.
    used: Schema.optionalKey(Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 500 })))
  }),
  // Steps that land on window boundaries as well as anywhere.
  Schema.TaggedStruct("advance", {
    millis: Schema.Union([
      Schema.Literals([250, 500, 1000]),
      Schema.Literals([1, 2500, 10_000]),
      Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 12_000 }))
    ])
  })
])
const Scenario = Schema.Struct({
  rules: Schema.Array(Rule).check(Schema.isMinLength(1), Schema.isMaxLength(3)),
  onExceeded: Schema.Literals(["wait", "reject"]),
  maxWait: Schema.Literals([500, "3 seconds", "20 seconds"]),
  ops: Schema.Array(Op).check(Schema.isMinLength(15), Schema.isMaxLength(60))
})
type Scenario = typeof Scenario.Type

const optionsOf = (scenario: Scenario): RateLimit.Options => ({
  rules: scenario.rules,
  onExceeded: scenario.onExceeded,
  maxWait: scenario.maxWait,
  defaultMaxTokens: 64
})

const effectBacked = (options: RateLimit.Options) =>
  RateLimit.layer(options).pipe(Layer.provide(RateLimiter.layer), Layer.provide(RateLimiter.layerStoreMemory))

const describeExit = (exit: Exit.Exit<readonly [RateLimit.Reservation, number], unknown>): string => {
  if (Exit.isSuccess(exit)) return `admitted at ${exit.value[1]}ms (${exit.value[0].estimatedTokens} tokens)`
  const error = exit.cause.reasons.find((reason) => reason._tag === "Fail")?.error
  if (!Schema.is(RateLimit.RateLimitRejected)(error)) return `failed: ${String(error)}`
  return `rejected: ${error.limit} for ${error.subject}, retry after ${Duration.toMillis(error.retryAfter)}ms`
}

// Plays a scenario on one rate limit layer, on a clock of its own. Every admit runs in a fiber of its
// own (in `wait` mode it may sleep); its outcome is logged, in order, once it is done.
const play = (layer: Layer.Layer<RateLimit.RateLimit>, scenario: Scenario) =>
  Effect.gen(function* () {
    const rateLimit = yield* RateLimit.RateLimit
    const log: Array<string> = []
    const reservations: Array<RateLimit.Reservation> = []
    const pending: Array<{
      readonly id: number
      readonly fiber: Fiber.Fiber<readonly [RateLimit.Reservation, number], RateLimit.RateLimitRejected | unknown>
    }> = []
    const collect = () => {
      for (let i = 0; i < pending.length; ) {
        const { id, fiber } = pending[i]!
        const exit = fiber.pollUnsafe()
        if (exit === undefined) {
          i++
          continue
        }
        pending.splice(i, 1)
        log.push(`#${id} ${describeExit(exit)}`)
        if (Exit.isSuccess(exit)) reservations.push(exit.value[0])
      }
    }
    let id = 0
    for (const op of scenario.ops) {
      switch (op._tag) {
        case "admit": {
          const chat = request("x".repeat(op.prompt), {
            model: op.model,
            ...(op.maxTokens === undefined ? {} : { max_tokens: op.maxTokens })
          })
          const admitted = rateLimit
            .admit(chat, { key: op.key, user: op.user })
            .pipe(
              Effect.flatMap((reservation) => Effect.map(Clock.currentTimeMillis, (at) => [reservation, at] as const))
            )
          pending.push({ id: id++, fiber: yield* Effect.forkChild(admitted) })
          yield* Effect.yieldNow
          yield* Effect.yieldNow
          break
        }
        case "settle": {
          const reservation = reservations[op.reservation % Math.max(1, reservations.length)]
          if (reservation !== undefined) {
            yield* rateLimit.settle(reservation, op.used === undefined ? undefined : ChatCompletion.usage(op.used, 0))
            log.push(`settled ${op.used ?? "failed"}`)
          }
          break
        }
        case "advance":
          yield* TestClock.adjust(Duration.millis(op.millis))
          break
      }
      collect()
    }
    // Let every waiting request finish.
    for (let round = 0; round < 6 && pending.length > 0; round++) {
      yield* TestClock.adjust("30 seconds")
      collect()
    }
    assert.strictEqual(pending.length, 0, "every request finished")
    return log
  }).pipe(Effect.scoped, Effect.provide(layer), Effect.provide(TestClock.layer()))

const perUser = (maxKeys: number, limit = 1) =>
  RateLimit.layerMemory({
    rules: [{ by: "user", requests: { limit, window: "10 seconds" } }],
    onExceeded: "reject",
    maxKeys
  })

const windowsOfService = Effect.map(Effect.service(RateLimit.RateLimit), (service) => windowsOf.get(service)!)

const admits = (user: string) =>
  Effect.isSuccess(Effect.flatMap(Effect.service(RateLimit.RateLimit), (rl) => rl.admit(request(), { user })))

describe("RateLimit.layerMemory", () => {
  it.effect.prop(
    "admits, refuses, waits and settles exactly like RateLimit.layer over effect's RateLimiter memory store",
    { scenario: Scenario },
    ({ scenario }) =>
      Effect.gen(function* () {
        const options = optionsOf(scenario)
        const expected = yield* play(effectBacked(options), scenario)
        const actual = yield* play(RateLimit.layerMemory(options), scenario)
        assert.deepStrictEqual(actual, expected)
      }),
    { arbitrary: { runs: 300, size: 100 } }
  )

  it.effect("a window resets when it ends, and a refusal says how long is left", () =>
    Effect.gen(function* () {
      const rateLimit = yield* RateLimit.RateLimit
      const admit = Effect.flip(rateLimit.admit(request(), { user: "u" }))
      yield* rateLimit.admit(request(), { user: "u" })
      yield* rateLimit.admit(request(), { user: "u" })
      yield* TestClock.adjust("4 seconds")
      const refused = yield* admit
      assert.strictEqual(refused._tag === "RateLimitRejected" && Duration.toMillis(refused.retryAfter), 6000)
      yield* TestClock.adjust(Duration.millis(5999))
      const stillRefused = yield* admit
      assert.strictEqual(stillRefused._tag === "RateLimitRejected" && Duration.toMillis(stillRefused.retryAfter), 1)
      yield* TestClock.adjust(Duration.millis(1))
      yield* rateLimit.admit(request(), { user: "u" })
      yield* rateLimit.admit(request(), { user: "u" })
      assert.isFalse(yield* admits("u"), "the new window holds two again")
    }).pipe(Effect.provide(perUser(10, 2)))
  )

  it.effect("wait mode waits for the window up to maxWait, and refuses with the wait beyond it", () =>
    Effect.gen(function* () {
      const rateLimit = yield* RateLimit.RateLimit
      const admitAt = Effect.andThen(rateLimit.admit(request(), { key: "k" }), Clock.currentTimeMillis)
      assert.strictEqual(yield* admitAt, 0)
      yield* TestClock.adjust("6 seconds")
      const waiting = yield* Effect.forkChild(admitAt)
      yield* TestClock.adjust("3 seconds")
      assert.isUndefined(waiting.pollUnsafe(), "waits for the next window")
      yield* TestClock.adjust("1 second")
      assert.strictEqual(yield* Fiber.join(waiting), 10_000)
      // The window after it is taken too: 10 seconds is more than maxWait.
      const refused = yield* Effect.flip(rateLimit.admit(request(), { key: "k" }))
      assert.strictEqual(refused._tag === "RateLimitRejected" && Duration.toMillis(refused.retryAfter), 10_000)
      // The refused request gave back its count and the window time it was queued for: the next one
      // is told the same wait, not the window after it (refusals never push a key's windows out).
      const again = yield* Effect.flip(rateLimit.admit(request(), { key: "k" }))
      assert.strictEqual(again._tag === "RateLimitRejected" && Duration.toMillis(again.retryAfter), 10_000)
      yield* TestClock.adjust("5 seconds")
      const waitingAgain = yield* Effect.forkChild(admitAt)
      yield* TestClock.adjust("5 seconds")
      assert.strictEqual(yield* Fiber.join(waitingAgain), 20_000)
    }).pipe(
      Effect.provide(
        RateLimit.layerMemory({
          rules: [{ by: "key", requests: { limit: 1, window: "10 seconds" } }],
          onExceeded: "wait",
          maxWait: "5 seconds"
        })
      )
    )
  )

  it.effect("keeps at most maxKeys keys however many users come", () =>
    Effect.gen(function* () {
      const windows = yield* windowsOfService
      const rateLimit = yield* RateLimit.RateLimit
      for (let user = 0; user < 2 * 50; user++) {
        yield* rateLimit.admit(request(), { user: `u${user}` })
        assert.isAtMost(windows.size, 50)
      }
      assert.strictEqual(windows.size, 50)
      // The last 50 users, least recently used first.
      assert.deepStrictEqual(windows.keys().slice(0, 2), ["roadcar:user:u50", "roadcar:user:u51"])
    }).pipe(
      Effect.provide(
        RateLimit.layerMemory({
          rules: [
            { by: "user", requests: { limit: 5, window: "1 minute" }, tokens: { limit: 10_000, window: "1 minute" } }
          ],
          onExceeded: "reject",
          maxKeys: 50
        })
      )
    )
  )

  it("the counters themselves never exceed their capacity", () => {
    const windows = new FixedWindows(100)
    const group = windows.group("roadcar:user:")
    const limit = new DecodedLimit({ limit: 3, window: "1 minute" })
    for (let user = 0; user < 200; user++) {
      assert.isUndefined(windows.consume(group, `u${user}`, "requests", limit, 1, "fail", 0))
      assert.isUndefined(windows.consume(group, `u${user}`, "tokens", limit, 2, "fail", 0))
      assert.isAtMost(windows.size, 100)
    }
    assert.deepStrictEqual(
      windows.keys(),
      Array.from({ length: 100 }, (_, i) => `roadcar:user:u${i + 100}`)
    )
    // An evicted user's window restarts; a kept one's does not.
    assert.isUndefined(windows.consume(group, "u0", "requests", limit, 3, "fail", 0))
    assert.isDefined(windows.consume(group, "u199", "requests", limit, 3, "fail", 0))
  })

  it.effect("evicts the least recently used counter; an evicted group's window starts again", () =>
    Effect.gen(function* () {
      assert.isTrue(yield* admits("a"))
      assert.isTrue(yield* admits("b"))
      // `a` is used again (refused, but used): `b` is now the least recently used.
      assert.isFalse(yield* admits("a"))
      assert.isTrue(yield* admits("c"))
      const windows = yield* windowsOfService
      assert.deepStrictEqual(windows.keys(), ["roadcar:user:a", "roadcar:user:c"])
      assert.isFalse(yield* admits("a"), "a kept its window")
      assert.isTrue(yield* admits("b"), "b was evicted: its window restarted")
    }).pipe(Effect.provide(perUser(2)))
  )

  it.effect("an expired counter is dropped when touched", () =>
    Effect.gen(function* () {
      const rateLimit = yield* RateLimit.RateLimit
      const windows = yield* windowsOfService
      const reservation = yield* rateLimit.admit(request(), { user: "u" })
      assert.strictEqual(windows.size, 1)
      yield* TestClock.adjust("2 seconds")
      // Giving back to an expired window leaves nothing to keep.
      yield* rateLimit.settle(reservation, undefined)
      assert.strictEqual(windows.size, 0)
    }).pipe(
      Effect.provide(
        RateLimit.layerMemory({
          rules: [{ by: "user", tokens: { limit: 10_000, window: "1 second" } }],
          onExceeded: "reject"
        })
      )
    )
  )

  it.effect("settles a reservation it did not make by its token keys, like the store-backed one", () =>
    Effect.gen(function* () {
      const options: RateLimit.Options = {
        rules: [{ by: "user", tokens: { limit: 200, window: "1 minute" } }],
        onExceeded: "reject",
        defaultMaxTokens: 100
      }
      const outcomes = (layer: Layer.Layer<RateLimit.RateLimit>) =>
        Effect.gen(function* () {
          const rateLimit = yield* RateLimit.RateLimit
          const admit = Effect.isSuccess(rateLimit.admit(request(), { user: "u" }))
          const first = yield* admit
          const second = yield* admit
          // Built by hand: the estimate of `request()` under the user's token key.
          yield* rateLimit.settle(
            {
              estimatedTokens: RateLimit.estimateTokens(request(), 100),
              tokenKeys: [{ key: "roadcar:user:u:tokens", limit: { limit: 200, window: "1 minute" } }]
            },
            undefined
          )
          return [first, second, yield* admit]
        }).pipe(Effect.provide(layer))
      assert.deepStrictEqual(yield* outcomes(effectBacked(options)), [true, false, true])
      assert.deepStrictEqual(yield* outcomes(RateLimit.layerMemory(options)), [true, false, true])
    })
  )

  it.effect("keysHeld counts the groups an in-process rate limit holds, and is undefined for a store-backed one", () =>
    Effect.gen(function* () {
      const options: RateLimit.MemoryOptions = {
        rules: [
          { by: "user", requests: { limit: 5, window: "1 minute" } },
          { by: "key", tokens: { limit: 10_000, window: "1 minute" } }
        ],
        onExceeded: "reject",
        maxKeys: 3
      }
      const memory = yield* RateLimit.makeMemory(options)
      assert.strictEqual(RateLimit.keysHeld(memory), 0)
      // One group per user and one for the API key `k`.
      yield* memory.admit(request(), { key: "k", user: "a" })
      assert.strictEqual(RateLimit.keysHeld(memory), 2)
      yield* memory.admit(request(), { key: "k", user: "b" })
      assert.strictEqual(RateLimit.keysHeld(memory), 3)
      // Capped at maxKeys.
      yield* memory.admit(request(), { key: "k", user: "c" })
      assert.strictEqual(RateLimit.keysHeld(memory), 3)
      const storeBacked = yield* RateLimit.RateLimit.pipe(Effect.provide(effectBacked(options)))
      yield* storeBacked.admit(request(), { key: "k", user: "a" })
      assert.isUndefined(RateLimit.keysHeld(storeBacked))
    })
  )

  it.effect("refuses a capacity below one key", () =>
    Effect.gen(function* () {
      const exit = yield* Effect.exit(RateLimit.makeMemory({ rules: [], onExceeded: "reject", maxKeys: 0 }))
      assert.isTrue(Exit.hasDies(exit))
    })
  )
})
