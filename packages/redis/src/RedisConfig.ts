/**
 * Settings of the Redis connection behind Roadcar's shared stores, and each store's fault policy.
 *
 * `RedisConfig` holds the options (URL, key prefix, pool size, command and connect timeouts, fault
 * policies), their defaults, `resolve` (options to settled values) and `config` (the same options
 * read from the environment: `REDIS_URL`, `ROADCAR_REDIS_PREFIX`, ...). The URL may carry a password:
 * it is kept `Redacted` and never logged (logs name the host and port only).
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"

/**
 * What a store does when Redis is unreachable or slower than the command timeout.
 *
 * - `fail-open`: the request is served as if the store had no say (unlimited, unrecorded); the
 *   failure is logged and a `store_unavailable` alert is raised once per outage.
 * - `fail-closed`: the request fails with `StoreUnavailable` (the gateway answers 503).
 *
 * @category options
 * @since 0.1.0
 */
export type FaultPolicy = "fail-open" | "fail-closed"

/**
 * @category options
 * @since 0.1.0
 */
export interface Options {
  /** `redis://[user:password@]host:port[/db]` (or `rediss://`); default `REDIS_URL`, else `redis://127.0.0.1:6379`. */
  readonly url?: string | Redacted.Redacted<string> | undefined
  /** Prepended to every key (default `roadcar:`); replicas that share state use the same prefix. */
  readonly prefix?: string | undefined
  /** Connections commands are spread over, round robin (default 1: node-redis pipelines on one connection). */
  readonly poolSize?: number | undefined
  /** The longest a store operation waits for Redis (default 250 ms). */
  readonly commandTimeout?: Duration.Input | undefined
  /** The longest one connection attempt takes (default 2 seconds); startup waits at most this long. */
  readonly connectTimeout?: Duration.Input | undefined
  /** After an operation times out, operations fail at once for this long instead of waiting again (default 1 second). */
  readonly failFastFor?: Duration.Input | undefined
  /** Commands queued on one connection before new ones are refused (default 1,000). */
  readonly maxQueuedCommands?: number | undefined
  /** Fault policies of the stores that can choose (default: rate limit `fail-open`, budget `fail-closed`). */
  readonly policies?:
    | { readonly rateLimit?: FaultPolicy | undefined; readonly budget?: FaultPolicy | undefined }
    | undefined
}

/**
 * The settled options.
 *
 * @category models
 * @since 0.1.0
 */
export interface Resolved {
  readonly url: Redacted.Redacted<string>
  /** `host:port`, for logs (no credentials). */
  readonly address: string
  readonly prefix: string
  readonly poolSize: number
  readonly commandTimeout: Duration.Duration
  readonly connectTimeout: Duration.Duration
  readonly failFastFor: Duration.Duration
  readonly maxQueuedCommands: number
  readonly policies: { readonly rateLimit: FaultPolicy; readonly budget: FaultPolicy }
}

/**
 * @category options
 * @since 0.1.0
 */
export const defaults = {
  url: "redis://127.0.0.1:6379",
  prefix: "roadcar:",
  poolSize: 1,
  commandTimeout: Duration.millis(250),
  connectTimeout: Duration.seconds(2),
  failFastFor: Duration.seconds(1),
  maxQueuedCommands: 1000,
  policies: { rateLimit: "fail-open", budget: "fail-closed" }
} as const satisfies Omit<Resolved, "url" | "address"> & { readonly url: string }

/**
 * The `host:port` of a Redis URL, for logs.
 *
 * @category constructors
 * @since 0.1.0
 */
export const addressOf = (url: string): string => {
  try {
    const parsed = new URL(url)
    return `${parsed.hostname}:${parsed.port || "6379"}`
  } catch {
    return "(invalid url)"
  }
}

/**
 * Settles options: fills defaults; the URL falls back to `REDIS_URL`, then to the local default.
 *
 * @category constructors
 * @since 0.1.0
 */
export const resolve = (options: Options = {}): Resolved => {
  const given = options.url ?? process.env["REDIS_URL"] ?? defaults.url
  const url = Redacted.isRedacted(given) ? given : Redacted.make(given)
  return {
    url,
    address: addressOf(Redacted.value(url)),
    prefix: options.prefix ?? defaults.prefix,
    poolSize: Math.max(1, Math.floor(options.poolSize ?? defaults.poolSize)),
    commandTimeout: Duration.fromInputUnsafe(options.commandTimeout ?? defaults.commandTimeout),
    connectTimeout: Duration.fromInputUnsafe(options.connectTimeout ?? defaults.connectTimeout),
    failFastFor: Duration.fromInputUnsafe(options.failFastFor ?? defaults.failFastFor),
    maxQueuedCommands: Math.max(1, Math.floor(options.maxQueuedCommands ?? defaults.maxQueuedCommands)),
    policies: {
      rateLimit: options.policies?.rateLimit ?? defaults.policies.rateLimit,
      budget: options.policies?.budget ?? defaults.policies.budget
    }
  }
}

const policy = (name: string) => Config.Literals(["fail-open", "fail-closed"], name).pipe(Config.option)

/**
 * The options from the environment: `REDIS_URL`, `ROADCAR_REDIS_PREFIX`, `ROADCAR_REDIS_POOL_SIZE`,
 * `ROADCAR_REDIS_COMMAND_TIMEOUT` (a duration, e.g. `250 millis`), `ROADCAR_REDIS_CONNECT_TIMEOUT`,
 * `ROADCAR_REDIS_RATE_LIMIT_POLICY` and `ROADCAR_REDIS_BUDGET_POLICY` (`fail-open` or `fail-closed`).
 * Unset ones take the defaults.
 *
 * @category configuration
 * @since 0.1.0
 */
export const config: Config.Config<Options> = Config.all({
  url: Config.Redacted("REDIS_URL").pipe(Config.option),
  prefix: Config.String("ROADCAR_REDIS_PREFIX").pipe(Config.option),
  poolSize: Config.Int("ROADCAR_REDIS_POOL_SIZE").pipe(Config.option),
  commandTimeout: Config.Duration("ROADCAR_REDIS_COMMAND_TIMEOUT").pipe(Config.option),
  connectTimeout: Config.Duration("ROADCAR_REDIS_CONNECT_TIMEOUT").pipe(Config.option),
  rateLimit: policy("ROADCAR_REDIS_RATE_LIMIT_POLICY"),
  budget: policy("ROADCAR_REDIS_BUDGET_POLICY")
}).pipe(
  Config.map((read): Options => {
    const value = Option.getOrUndefined
    return {
      url: value(read.url),
      prefix: value(read.prefix),
      poolSize: value(read.poolSize),
      commandTimeout: value(read.commandTimeout),
      connectTimeout: value(read.connectTimeout),
      policies: { rateLimit: value(read.rateLimit), budget: value(read.budget) }
    }
  })
)

/**
 * Reads {@link config} and settles it.
 *
 * @category configuration
 * @since 0.1.0
 */
export const fromEnv: Effect.Effect<Resolved, Config.ConfigError> = Effect.map(config, resolve)
