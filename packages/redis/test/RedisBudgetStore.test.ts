import * as Budget from "@roadcar/core/Budget"
import { Context, Effect, Layer } from "effect"
import { RedisBudgetStore, RedisConnection } from "../src/index.ts"
import { suite } from "./suites/BudgetStoreSuite.ts"
import { redisUrl, testPrefix } from "./utils/RedisTest.ts"

suite("memory", Budget.makeStoreMemory)

suite(
  "Redis at REDIS_URL",
  Effect.gen(function* () {
    const prefix = yield* testPrefix
    const context = yield* Layer.build(
      RedisBudgetStore.layer().pipe(Layer.provide(RedisConnection.layer({ url: redisUrl, prefix })))
    )
    return Context.get(context, Budget.BudgetStore)
  }).pipe(Effect.orDie),
  { skip: !redisUrl }
)
