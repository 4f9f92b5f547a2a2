/**
 * Builds a running Roadcar from its configuration: every upstream, and one pipeline per public model
 * with its fallback chain, on the stage services.
 *
 * `Roadcar.make` turns a validated `RoadcarConfig` into upstreams (providers over the `HttpClient` in
 * context, or the simulated model) and pipelines; `Roadcar.layerStages` provides the stages the config
 * turns on, with in-process stores (the Redis stores replace them when state is shared). Secrets are
 * read from the environment here, once, into `Redacted` values; a missing one is a `ConfigError` that
 * names the variable.
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as HttpClient from "effect/http/HttpClient"
import * as Layer from "effect/Layer"
import { type CircuitBreaker, RateLimiter } from "effect/persistence"
import type * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as AlertSink from "./AlertSink.ts"
import * as AlertWebhook from "./AlertWebhook.ts"
import * as Breaker from "./Breaker.ts"
import * as Budget from "./Budget.ts"
import * as Monitor from "./Monitor.ts"
import * as Pipeline from "./Pipeline.ts"
import * as Anthropic from "./providers/Anthropic.ts"
import * as OpenAiCompatible from "./providers/OpenAiCompatible.ts"
import * as RateLimit from "./RateLimit.ts"
import * as ResponseCache from "./ResponseCache.ts"
import type * as Retry from "./Retry.ts"
import { ConfigError, type RoadcarConfig, resolveModels, type UpstreamConfig } from "./RoadcarConfig.ts"
import * as Simulated from "./Simulated.ts"
import type { Upstream } from "./Upstream.ts"

/**
 * A running configuration: its upstreams and one pipeline per public model.
 *
 * @category models
 * @since 0.1.0
 */
export interface Roadcar {
  readonly config: RoadcarConfig
  readonly upstreams: ReadonlyMap<string, Upstream>
  /** Public model name → its pipeline. */
  readonly models: ReadonlyMap<string, Pipeline.Pipeline>
}

type Fault = NonNullable<NonNullable<UpstreamConfig["faults"]>["kinds"]>[number]

const toFault = (fault: Fault): Simulated.SimulatedFault => {
  const F = Simulated.SimulatedFault
  switch (fault.kind) {
    case "rate-limited":
      return F.RateLimited({ retryAfter: fault.retryAfter as Duration.Input | undefined })
    case "unavailable":
      return F.Unavailable({ status: fault.status ?? 503 })
    case "connection-reset":
      return F.ConnectionReset()
    case "hang":
      return F.Hang()
    case "malformed-output":
      return F.MalformedOutput()
    case "slow-first-chunk":
      return F.SlowFirstChunk({ delay: (fault.delay ?? "5 seconds") as Duration.Input })
    case "cut-mid-stream":
      return F.CutMidStream({ afterChunks: fault.afterChunks ?? 2 })
    case "stall-stream":
      return F.StallStream({ afterChunks: fault.afterChunks ?? 2 })
    case "context-length-exceeded":
      return F.ContextLengthExceeded()
    case "content-filtered":
      return F.ContentFiltered()
  }
}

const faultScript = (faults: UpstreamConfig["faults"]): Simulated.FaultScript => {
  if (faults === undefined) return Simulated.healthy
  const kinds = (faults.kinds ?? [{ kind: "unavailable" as const }]).map(toFault)
  if (faults.rate !== undefined) return Simulated.random({ seed: faults.seed ?? 1, rate: faults.rate, faults: kinds })
  if (faults.failFirst !== undefined) return Simulated.failFirst(faults.failFirst, kinds[0]!)
  return Simulated.healthy
}

// Reads a secret named by a config field (`{ "env": "VAR" }`); a missing variable names the field.
const readSecret = (field: string, variable: string): Effect.Effect<Redacted.Redacted<string>, ConfigError> =>
  Effect.gen(function* () {
    return yield* Config.Redacted(variable)
  }).pipe(
    Effect.mapError(
      () =>
        new ConfigError({
          source: "environment",
          problems: [`${field}: the environment variable ${variable} is not set; export it before starting`]
        })
    )
  )

const secret = (name: string, ref: { readonly env: string } | undefined) =>
  ref === undefined
    ? Effect.succeed<Redacted.Redacted<string> | undefined>(undefined)
    : readSecret(`upstreams.${name}.apiKey`, ref.env)

/**
 * Builds one upstream from its config entry.
 *
 * @category constructors
 * @since 0.1.0
 */
export const makeUpstream = (
  name: string,
  config: UpstreamConfig
): Effect.Effect<Upstream, ConfigError, HttpClient.HttpClient> =>
  Effect.gen(function* () {
    switch (config.provider) {
      case "simulated":
        return Simulated.makeUnsafe({
          name,
          model: config.model,
          latency: config.latency as Duration.Input | undefined,
          chunkLatency: config.chunkLatency as Duration.Input | undefined,
          faults: faultScript(config.faults)
        })
      case "anthropic": {
        const apiKey = yield* secret(name, config.apiKey)
        if (apiKey === undefined) {
          return yield* new ConfigError({
            source: "config",
            problems: [
              `upstreams.${name}.apiKey: required for provider "anthropic", e.g. { "env": "ANTHROPIC_API_KEY" }`
            ]
          })
        }
        return yield* Anthropic.make({
          name,
          model: config.model ?? "",
          apiKey,
          baseUrl: config.baseUrl,
          maxTokensDefault: config.maxTokensDefault,
          headers: config.headers,
          provider: config.providerName
        })
      }
      default: {
        const apiKey = yield* secret(name, config.apiKey)
        return yield* OpenAiCompatible.make({
          name,
          model: config.model ?? "",
          baseUrl: config.baseUrl ?? "https://api.openai.com/v1",
          apiKey,
          headers: config.headers,
          provider: config.providerName ?? (config.provider === "openai" ? "openai" : "openai-compatible")
        })
      }
    }
  })

const retryOf = (retry: RoadcarConfig["retry"]): Partial<Retry.Options> | undefined =>
  retry === undefined ? undefined : (retry as Partial<Retry.Options>)

/**
 * The pipeline options of one public model.
 *
 * @category constructors
 * @since 0.1.0
 */
export const pipelineOptions = (
  config: RoadcarConfig,
  model: string,
  upstreams: ReadonlyMap<string, Upstream>
): Pipeline.Options => {
  const entry = resolveModels(config)[model]!
  const step = (name: string, when?: Pipeline.Step["when"]): Pipeline.Step => ({
    upstream: upstreams.get(name)!,
    retry: retryOf(config.upstreams?.[name]?.retry),
    when
  })
  return {
    name: model,
    steps: [step(entry.upstream), ...(entry.fallbacks ?? []).map((fallback) => step(fallback.upstream, fallback.when))],
    staticAnswer: entry.staticAnswer,
    retry: retryOf(config.retry),
    timeouts: config.timeouts as Pipeline.Options["timeouts"]
  }
}

/**
 * Builds the upstreams and pipelines of a config.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = (
  config: RoadcarConfig
): Effect.Effect<Roadcar, ConfigError, HttpClient.HttpClient | Breaker.Breaker | Monitor.Monitor | Scope.Scope> =>
  Effect.gen(function* () {
    const upstreams = new Map<string, Upstream>()
    const configured = { simulated: { provider: "simulated" as const }, ...config.upstreams }
    for (const [name, entry] of Object.entries(configured)) upstreams.set(name, yield* makeUpstream(name, entry))
    const models = new Map<string, Pipeline.Pipeline>()
    for (const model of Object.keys(resolveModels(config))) {
      models.set(model, yield* Pipeline.make(pipelineOptions(config, model, upstreams)))
    }
    return { config, upstreams, models }
  })

const millis = (text: string | false | undefined): number | false | undefined =>
  text === undefined || text === false ? text : Duration.toMillis(Duration.fromInputUnsafe(text as Duration.Input))

/**
 * The rate limit rules of a config: the global rules, then every key's own rules.
 *
 * @category constructors
 * @since 0.1.0
 */
export const rateLimitRules = (config: RoadcarConfig): ReadonlyArray<RateLimit.Rule> =>
  // Windows are duration texts, validated by the config schema.
  [
    ...(config.rateLimit?.rules ?? []),
    ...(config.keys ?? []).flatMap((key) => (key.rateLimit ?? []).map((rule) => ({ ...rule, forKey: key.name })))
  ] as ReadonlyArray<RateLimit.Rule>

/**
 * The monitor options of a config.
 *
 * @category constructors
 * @since 0.1.0
 */
export const monitorOptions = (config: RoadcarConfig): Monitor.Options => {
  const monitor = config.monitor ?? {}
  return {
    windowMs: millis(monitor.window) as number | undefined,
    coolDownMs: millis(monitor.coolDown) as number | undefined,
    slowMs: millis(monitor.slowRequest),
    hangingMs: millis(monitor.hangingRequest),
    errorRate: monitor.errorRate,
    fallbackRate: monitor.fallbackRate,
    minimumRequests: monitor.minimumRequests,
    breakerOpen: monitor.breakerOpen,
    upstreamRateLimited: monitor.upstreamRateLimited
  }
}

/**
 * Where a config sends alerts: the log (unless `alerts.log` is false) and the webhook when configured.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerAlertSink = (
  config: RoadcarConfig
): Layer.Layer<AlertSink.AlertSink, ConfigError, HttpClient.HttpClient> => {
  const webhook = config.alerts?.webhook
  const log = config.alerts?.log === false ? [] : [AlertSink.layerLog]
  if (webhook === undefined) return log.length > 0 ? AlertSink.layerLog : AlertSink.layerMany([])
  const webhookLayer = Layer.unwrap(
    Effect.map(readSecret("alerts.webhook.url", webhook.url.env), (url) =>
      AlertWebhook.layer({
        url,
        timeout: webhook.timeout as Duration.Input | undefined,
        maxAttempts: webhook.maxAttempts
      })
    )
  )
  return AlertSink.layerMany<ConfigError, HttpClient.HttpClient>([...log, webhookLayer])
}

/**
 * The stores under the stages. Each left out is in process memory; `@roadcar/redis` gives Redis ones
 * (`RedisStores.layersFor(config)`), chosen per store by the config's `stores` section.
 *
 * @category models
 * @since 0.1.0
 */
export interface StoreLayers {
  readonly rateLimiter?: Layer.Layer<RateLimiter.RateLimiterStore, StoreError, AlertSink.AlertSink> | undefined
  readonly circuitBreaker?: Layer.Layer<CircuitBreaker.CircuitBreakerStore, StoreError, AlertSink.AlertSink> | undefined
  readonly responseCache?: Layer.Layer<ResponseCache.ResponseCacheStore, StoreError, AlertSink.AlertSink> | undefined
  readonly budget?: Layer.Layer<Budget.BudgetStore, StoreError, AlertSink.AlertSink> | undefined
}

/**
 * The budget options of a config: its rules and prices, each public model's chain of upstream models.
 *
 * @category constructors
 * @since 0.1.0
 */
export const budgetOptions = (config: RoadcarConfig): Budget.Options => ({
  budgets: config.budgets?.rules ?? [],
  prices: config.budgets?.prices,
  thresholds: config.budgets?.thresholds,
  defaultMaxTokens: config.rateLimit?.defaultMaxTokens,
  chains: Object.fromEntries(
    Object.entries(resolveModels(config)).map(([model, entry]) => [
      model,
      [entry.upstream, ...(entry.fallbacks ?? []).map((fallback) => fallback.upstream)].map(
        (name) => config.upstreams?.[name]?.model ?? name
      )
    ])
  )
})

/**
 * The stage services a config turns on: the breaker, the monitor (alerts to `sink`, by default the
 * config's `layerAlertSink`), and the rate limit, response cache and budgets when configured, each on
 * its store from `stores` (in process memory when left out: `RateLimit.layerMemory`, at most
 * `rateLimit.maxKeys` keys, and `Breaker.layerMemory`).
 *
 * @category layers
 * @since 0.1.0
 */
export const layerStages = (
  config: RoadcarConfig,
  options: {
    readonly sink?: Layer.Layer<AlertSink.AlertSink, ConfigError, HttpClient.HttpClient> | undefined
    readonly stores?: StoreLayers | undefined
  } = {}
): Layer.Layer<Stages, ConfigError | StoreError, HttpClient.HttpClient> => {
  const sink = options.sink ?? layerAlertSink(config)
  const stores = options.stores ?? {}
  const rules = rateLimitRules(config)
  const rateLimitOptions: RateLimit.Options = {
    rules,
    onExceeded: config.rateLimit?.onExceeded ?? "reject",
    maxWait: config.rateLimit?.maxWait as Duration.Input | undefined,
    defaultMaxTokens: config.rateLimit?.defaultMaxTokens
  }
  const rateLimit =
    rules.length === 0
      ? Layer.empty
      : stores.rateLimiter
        ? RateLimit.layer(rateLimitOptions).pipe(Layer.provide(RateLimiter.layer), Layer.provide(stores.rateLimiter))
        : RateLimit.layerMemory({ ...rateLimitOptions, maxKeys: config.rateLimit?.maxKeys })
  const cacheTier = stores.responseCache ?? Layer.empty
  const cache =
    config.cache?.enabled === false
      ? Layer.empty
      : ResponseCache.layer({
          capacity: config.cache?.capacity ?? ResponseCache.defaults.capacity,
          timeToLive: (config.cache?.timeToLive ?? ResponseCache.defaults.timeToLive) as Duration.Input
        }).pipe(Layer.provide(cacheTier))
  const budget =
    (config.budgets?.rules.length ?? 0) > 0
      ? Budget.layer(budgetOptions(config)).pipe(Layer.provide(stores.budget ?? Budget.layerStoreMemory))
      : Layer.empty
  const breakerOptions = { ...Breaker.defaults, ...(config.breaker as Partial<Breaker.Options>) }
  const breaker = stores.circuitBreaker
    ? Breaker.layer(breakerOptions).pipe(Layer.provide(stores.circuitBreaker))
    : Breaker.layerMemory(breakerOptions)
  const stages = Layer.mergeAll(breaker, Monitor.layer(monitorOptions(config)), rateLimit, cache, budget)
  return Layer.provide(stages, sink)
}

/**
 * The stage services.
 *
 * @category models
 * @since 0.1.0
 */
export type Stages =
  | Breaker.Breaker
  | Monitor.Monitor
  | RateLimit.RateLimit
  | ResponseCache.ResponseCache
  | Budget.Budget

/**
 * A store could not be set up (e.g. an invalid Redis URL).
 *
 * @category errors
 * @since 0.1.0
 */
export class StoreError extends Schema.TaggedError<StoreError>()("StoreError", { detail: Schema.String }) {
  override get message(): string {
    return `a store could not be set up: ${this.detail}`
  }
}
