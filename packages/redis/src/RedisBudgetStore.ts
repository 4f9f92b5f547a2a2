/**
 * Budget counters in Redis, shared by every replica: the `BudgetStore` of `@roadcar/core/Budget`.
 *
 * A reservation is one Lua script: it checks every counter against its limit and adds to all of
 * them, or to none, in one step, so concurrent requests on any number of replicas can never reserve
 * past a budget. Counters are integers (tokens, or cost in millionths) under
 * `<prefix><budget key>`, and expire a minute after their window ends. The counters of one API key
 * share a Redis Cluster hash tag (`{key}`), so the script's keys are always in one slot. When Redis
 * cannot answer, a reservation fails with `StoreUnavailable` (`fail-closed`) or is admitted
 * unrecorded (`fail-open`); settling always only logs.
 *
 * @since 0.1.0
 */

import type { Charge, ReserveResult } from "@roadcar/core/Budget"
import * as Budget from "@roadcar/core/Budget"
import { StoreUnavailable } from "@roadcar/core/StoreUnavailable"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redis from "effect/persistence/Redis"
import type { FaultPolicy } from "./RedisConfig.ts"
import { describeFailure, RedisConnection } from "./RedisConnection.ts"

// KEYS: the counters. ARGV: amount, limit and time to live (ms) of each, in order.
const reserveScript = Redis.script((keys: ReadonlyArray<string>, args: ReadonlyArray<number>) => [...keys, ...args], {
  numberOfKeys: (keys) => keys.length,
  lua: `
for i = 1, #KEYS do
  local used = tonumber(redis.call("GET", KEYS[i]) or "0")
  local amount = tonumber(ARGV[3 * i - 2])
  local limit = tonumber(ARGV[3 * i - 1])
  if used + amount > limit then
    return { 0, i - 1, tostring(used) }
  end
end
for i = 1, #KEYS do
  redis.call("INCRBY", KEYS[i], ARGV[3 * i - 2])
  if redis.call("PTTL", KEYS[i]) < 0 then
    redis.call("PEXPIRE", KEYS[i], ARGV[3 * i])
  end
end
return { 1, 0, "0" }
`
}).withReturnType<readonly [reserved: number, index: number, used: string]>()

// KEYS: the counters. ARGV: the delta of each. A counter that expired is not recreated ("").
const adjustScript = Redis.script(
  (keys: ReadonlyArray<string>, deltas: ReadonlyArray<number>) => [...keys, ...deltas],
  {
    numberOfKeys: (keys) => keys.length,
    lua: `
local totals = {}
for i = 1, #KEYS do
  if redis.call("EXISTS", KEYS[i]) == 1 then
    totals[i] = tostring(redis.call("INCRBY", KEYS[i], ARGV[i]))
  else
    totals[i] = ""
  end
end
return totals
`
  }
).withReturnType<ReadonlyArray<string>>()

const millis = (duration: Duration.Duration) => Math.max(1, Math.ceil(Duration.toMillis(duration)))

/**
 * Builds the Redis budget store with a fault policy for reservations.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = Effect.fnUntraced(function* (policy?: FaultPolicy | undefined) {
  const connection = yield* RedisConnection
  const { redis, config } = connection
  const onFault = policy ?? config.policies.budget
  const prefixed = (key: string) => `${config.prefix}${key}`
  const reserveRedis = redis.eval(reserveScript)
  const adjustRedis = redis.eval(adjustScript)

  const run = <A>(operation: string, self: Effect.Effect<A, Redis.RedisError>) =>
    connection.run(
      Effect.mapError(
        self,
        (error) => new StoreUnavailable({ store: "budget", detail: `${operation}: ${describeFailure(error)}` })
      ),
      {
        store: "budget",
        isFault: () => true,
        unavailable: (detail) => new StoreUnavailable({ store: "budget", detail })
      }
    )

  const reserve = (charges: ReadonlyArray<Charge>): Effect.Effect<ReserveResult, StoreUnavailable> =>
    run(
      "reserve",
      reserveRedis(
        charges.map((charge) => prefixed(charge.key)),
        charges.flatMap((charge) => [Math.round(charge.amount), Math.floor(charge.limit), millis(charge.timeToLive)])
      )
    ).pipe(
      Effect.map(
        ([reserved, index, used]): ReserveResult =>
          reserved === 1 ? { _tag: "Reserved", recorded: true } : { _tag: "Exceeded", index, used: Number(used) }
      ),
      Effect.catchTag("StoreUnavailable", (error) =>
        onFault === "fail-open"
          ? Effect.succeed<ReserveResult>({ _tag: "Reserved", recorded: false })
          : Effect.fail(error)
      )
    )

  return Budget.BudgetStore.of({
    reserve,
    adjust: (adjustments) =>
      run(
        "adjust",
        adjustRedis(
          adjustments.map((adjustment) => prefixed(adjustment.key)),
          adjustments.map((adjustment) => Math.round(adjustment.delta))
        )
      ).pipe(Effect.map((totals) => totals.map((total) => (total === "" ? undefined : Number(total))))),
    used: (keys) =>
      keys.length === 0
        ? Effect.succeed([])
        : run("read", redis.send<ReadonlyArray<string | null>>("MGET", ...keys.map(prefixed))).pipe(
            Effect.map((values) => values.map((value) => (value === null ? 0 : Number(value))))
          ),
    claim: (key, timeToLive) =>
      run("claim", redis.send<string | null>("SET", prefixed(key), "1", "PX", String(millis(timeToLive)), "NX")).pipe(
        Effect.map((reply) => reply === "OK")
      )
  })
})

/**
 * The Redis budget store (needs a `RedisConnection`); `policy` overrides the connection's budget policy.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (policy?: FaultPolicy | undefined): Layer.Layer<Budget.BudgetStore, never, RedisConnection> =>
  Layer.effect(Budget.BudgetStore, make(policy))
