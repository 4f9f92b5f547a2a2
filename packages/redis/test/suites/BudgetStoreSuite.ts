// The behaviour every BudgetStore must have, run against the memory store and the Redis store.

import { assert, describe, it } from "@effect/vitest"
import type * as Budget from "@roadcar/core/Budget"
import { Duration, Effect, type Scope } from "effect"

const charge = (key: string, amount: number, limit: number, timeToLive = Duration.minutes(1)): Budget.Charge => ({
  key,
  amount,
  limit,
  timeToLive
})

export const suite = (
  name: string,
  makeStore: Effect.Effect<Budget.BudgetStore["Service"], never, Scope.Scope>,
  options: { readonly skip?: boolean } = {}
) =>
  describe.skipIf(options.skip === true)(`BudgetStore (${name})`, () => {
    it.live("reserves every charge or none", () =>
      Effect.gen(function* () {
        const store = yield* makeStore
        assert.deepStrictEqual(yield* store.reserve([charge("a", 5, 10), charge("b", 5, 7)]), {
          _tag: "Reserved",
          recorded: true
        })
        assert.deepStrictEqual(yield* store.reserve([charge("a", 5, 10), charge("b", 5, 7)]), {
          _tag: "Exceeded",
          index: 1,
          used: 5
        })
        assert.deepStrictEqual(yield* store.used(["a", "b", "never"]), [5, 5, 0])
        // A charge larger than its whole limit never fits.
        assert.deepStrictEqual(yield* store.reserve([charge("c", 11, 10)]), { _tag: "Exceeded", index: 0, used: 0 })
      })
    )

    it.live("concurrent reservations never pass the limit", () =>
      Effect.gen(function* () {
        const store = yield* makeStore
        const results = yield* Effect.forEach(
          Array.from({ length: 50 }),
          () => store.reserve([charge("shared", 3, 100)]),
          { concurrency: "unbounded" }
        )
        assert.strictEqual(results.filter((result) => result._tag === "Reserved").length, 33)
        assert.deepStrictEqual(yield* store.used(["shared"]), [99])
      })
    )

    it.live("adjusts live counters, by negative deltas too, and leaves expired ones alone", () =>
      Effect.gen(function* () {
        const store = yield* makeStore
        yield* store.reserve([charge("a", 5, 10, Duration.millis(150))])
        assert.deepStrictEqual(
          yield* store.adjust([
            { key: "a", delta: -2 },
            { key: "missing", delta: 3 }
          ]),
          [3, undefined]
        )
        assert.deepStrictEqual(yield* store.used(["missing"]), [0])
        yield* Effect.sleep("200 millis")
        assert.deepStrictEqual(yield* store.adjust([{ key: "a", delta: 4 }]), [undefined])
        assert.deepStrictEqual(yield* store.used(["a"]), [0])
      })
    )

    it.live("claims a key once until it expires", () =>
      Effect.gen(function* () {
        const store = yield* makeStore
        assert.isTrue(yield* store.claim("alert", Duration.millis(150)))
        assert.isFalse(yield* store.claim("alert", Duration.millis(150)))
        yield* Effect.sleep("200 millis")
        assert.isTrue(yield* store.claim("alert", Duration.millis(150)))
      })
    )
  })
