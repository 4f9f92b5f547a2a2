/**
 * @roadcar/redis: Redis stores for Roadcar replicas (rate limits, circuit breakers, response cache,
 * budgets), with a fault policy per store.
 *
 * @since 0.1.0
 */
export * as RedisBudgetStore from "./RedisBudgetStore.ts"
export * as RedisConfig from "./RedisConfig.ts"
export * as RedisConnection from "./RedisConnection.ts"
export * as RedisFromConfig from "./RedisFromConfig.ts"
export * as RedisResponseCacheStore from "./RedisResponseCacheStore.ts"
export * as RedisStores from "./RedisStores.ts"
