/**
 * Roadcar's one configuration: upstreams, public models and their fallback chains, the stages'
 * settings, the gateway's server and keys. Validated with Schema.
 *
 * Every field has a production-sensible default, so `{}` is a valid config: one public model, `chat`,
 * answered by the simulated model. Unknown fields and bad values are errors that name the field, the
 * value and the fix (`retry.attempts: expected a value between 1 and 10, got 0`); references are
 * checked too (a model whose upstream does not exist). Secrets are never written in the file: they are
 * read from the environment (`{ "env": "OPENAI_API_KEY" }`) into `Redacted` values, and API keys of
 * the gateway are stored as SHA-256 hashes.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Schema from "effect/Schema"
import * as SchemaIssue from "effect/SchemaIssue"
import { defaults as breakerDefaults } from "./Breaker.ts"
import type * as UpstreamError from "./UpstreamError.ts"

// =============================================================================
// Field schemas
// =============================================================================

const durationHint = 'use a duration such as "250 millis", "30 seconds" or "5 minutes"'

/**
 * A duration text's milliseconds; `undefined` when it is not a finite duration of at least 0.
 */
const durationMillis = (text: string): number | undefined => {
  try {
    const duration = Duration.fromInputUnsafe(text as Duration.Input)
    const millis = Duration.toMillis(duration)
    return Duration.isFinite(duration) && millis >= 0 ? millis : undefined
  } catch {
    return undefined
  }
}

/** A duration text that `accepts` (by its milliseconds); `tooShort` says why another is refused. */
const durationFilter = (accepts: (millis: number) => boolean, tooShort: (text: string) => string) =>
  Schema.makeFilter((text: string) => {
    const millis = durationMillis(text)
    if (millis === undefined) return `${durationHint}, got "${text}"`
    return accepts(millis) ? true : tooShort(text)
  })

/**
 * A duration written as text (`"250 millis"`, `"30 seconds"`, `"5 minutes"`).
 *
 * @category schemas
 * @since 0.1.0
 */
export const DurationText = Schema.String.check(
  durationFilter(
    () => true,
    (text) => `${durationHint}, got "${text}"`
  )
)

/** A duration text above 0: a time limit or a window, which 0 would make fail or divide by. */
const PositiveDurationText = Schema.String.check(
  durationFilter(
    (millis) => millis > 0,
    (text) => `must be above 0; ${durationHint}, got "${text}"`
  )
)

/**
 * The shortest `monitor.coolDown`: the monitor re-checks its rules every second, so a shorter
 * cool-down re-raises a still-firing alert at every check.
 */
const minimumCoolDownMs = 1_000

const CoolDownText = Schema.String.check(
  durationFilter(
    (millis) => millis >= minimumCoolDownMs,
    (text) =>
      `must be at least 1 second (a rule raises at most once per cool-down and the monitor checks every second, so a shorter one repeats an alert at every check); use a duration such as "1 minute" or "5 minutes", got "${text}"`
  )
)

const PositiveInt = Schema.Int.check(Schema.isGreaterThan(0))
const Ratio = Schema.Number.check(Schema.isBetween({ minimum: 0, maximum: 1 }))

/** A monitor rate threshold: a share of requests from 0 up to, not including, 1. */
const RateThreshold = Schema.Number.check(
  Schema.makeFilter((rate: number) =>
    Number.isFinite(rate) && rate >= 0 && rate < 1
      ? true
      : `expected a share of requests from 0 up to but not including 1 (e.g. 0.2 for 20%), or false to turn the rule off, got ${rate}`
  )
)

/**
 * A secret read from the environment: `{ "env": "OPENAI_API_KEY" }`.
 *
 * @category schemas
 * @since 0.1.0
 */
export const SecretRef = Schema.Struct({ env: Schema.String.check(Schema.isNonEmpty()) })

const Limit = Schema.Struct({ limit: PositiveInt, window: DurationText })

const RateLimitRule = Schema.Struct({
  by: Schema.Literals(["key", "user", "model", "global"]),
  requests: Schema.optionalKey(Limit),
  tokens: Schema.optionalKey(Limit)
})

const ReasonTagSchema = Schema.Literals([
  "RateLimited",
  "TimedOut",
  "Unavailable",
  "ConnectionFailed",
  "BadRequest",
  "Authentication",
  "ContextLengthExceeded",
  "ContentFiltered",
  "MalformedOutput",
  "CircuitOpen"
])

const Retry = Schema.Struct({
  attempts: Schema.optionalKey(Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 10 }))),
  baseDelay: Schema.optionalKey(DurationText),
  factor: Schema.optionalKey(Schema.Number.check(Schema.isBetween({ minimum: 1, maximum: 10 }))),
  maxDelay: Schema.optionalKey(DurationText),
  jitter: Schema.optionalKey(Schema.Boolean),
  retryTimeouts: Schema.optionalKey(Schema.Boolean)
})

const Fault = Schema.Struct({
  kind: Schema.Literals([
    "rate-limited",
    "unavailable",
    "connection-reset",
    "hang",
    "malformed-output",
    "slow-first-chunk",
    "cut-mid-stream",
    "stall-stream",
    "context-length-exceeded",
    "content-filtered"
  ]),
  retryAfter: Schema.optionalKey(DurationText),
  status: Schema.optionalKey(Schema.Int.check(Schema.isBetween({ minimum: 500, maximum: 599 }))),
  delay: Schema.optionalKey(DurationText),
  afterChunks: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)))
})

/**
 * An upstream deployment.
 *
 * @category schemas
 * @since 0.1.0
 */
export const UpstreamConfig = Schema.Struct({
  provider: Schema.Literals(["simulated", "openai", "openai-compatible", "anthropic"]),
  /** The model the upstream is asked for (required but for `simulated`). */
  model: Schema.optionalKey(Schema.String.check(Schema.isNonEmpty())),
  baseUrl: Schema.optionalKey(Schema.String.check(Schema.isPattern(/^https?:\/\/[^\s]+$/))),
  apiKey: Schema.optionalKey(SecretRef),
  /** gen_ai.provider.name reported for this upstream (default: the provider). */
  providerName: Schema.optionalKey(Schema.String),
  headers: Schema.optionalKey(Schema.Record(Schema.String, Schema.String)),
  maxTokensDefault: Schema.optionalKey(PositiveInt),
  retry: Schema.optionalKey(Retry),
  /** Simulated only: time before each answer / each later chunk. */
  latency: Schema.optionalKey(DurationText),
  chunkLatency: Schema.optionalKey(DurationText),
  /** Simulated only: which calls fail and how. */
  faults: Schema.optionalKey(
    Schema.Struct({
      failFirst: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))),
      rate: Schema.optionalKey(Ratio),
      seed: Schema.optionalKey(Schema.Int),
      kinds: Schema.optionalKey(Schema.Array(Fault).check(Schema.isMinLength(1)))
    })
  )
})

/**
 * @category models
 * @since 0.1.0
 */
export type UpstreamConfig = typeof UpstreamConfig.Type

const Fallback = Schema.Struct({
  upstream: Schema.String,
  when: Schema.optionalKey(Schema.Array(ReasonTagSchema).check(Schema.isMinLength(1)))
})

/**
 * A public model: the upstream that serves it, its fallbacks in order, and its last resort.
 *
 * @category schemas
 * @since 0.1.0
 */
export const ModelConfig = Schema.Struct({
  upstream: Schema.String,
  fallbacks: Schema.optionalKey(Schema.Array(Fallback)),
  staticAnswer: Schema.optionalKey(Schema.String)
})

/**
 * A gateway API key: its name (logged), its SHA-256 hash (hex; `roadcar hash-key` prints it), the
 * models it may use, and its own rate limits.
 *
 * @category schemas
 * @since 0.1.0
 */
export const KeyConfig = Schema.Struct({
  name: Schema.String.check(
    Schema.makeFilter(
      (name: string) => /^[A-Za-z0-9._-]{1,64}$/.test(name) || "expected 1 to 64 letters, digits, '.', '_' or '-'"
    )
  ),
  sha256: Schema.String.check(
    Schema.makeFilter(
      (hash: string) =>
        /^[0-9a-f]{64}$/.test(hash) ||
        "expected the key's SHA-256 hex digest (64 lowercase hex characters; `roadcar hash-key` prints it)"
    )
  ),
  models: Schema.optionalKey(Schema.Array(Schema.String)),
  rateLimit: Schema.optionalKey(Schema.Array(RateLimitRule))
})

/**
 * The whole configuration file.
 *
 * @category schemas
 * @since 0.1.0
 */
export const RoadcarConfig = Schema.Struct({
  $schema: Schema.optionalKey(Schema.String),
  logLevel: Schema.optionalKey(Schema.Literals(["Trace", "Debug", "Info", "Warn", "Error", "None"])),
  server: Schema.optionalKey(
    Schema.Struct({
      host: Schema.optionalKey(Schema.String.check(Schema.isNonEmpty())),
      port: Schema.optionalKey(Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 65535 }))),
      bodyLimitBytes: Schema.optionalKey(PositiveInt),
      drainTimeout: Schema.optionalKey(DurationText)
    })
  ),
  upstreams: Schema.optionalKey(Schema.Record(Schema.String, UpstreamConfig)),
  models: Schema.optionalKey(Schema.Record(Schema.String, ModelConfig)),
  retry: Schema.optionalKey(Retry),
  timeouts: Schema.optionalKey(
    Schema.Struct({
      attempt: Schema.optionalKey(PositiveDurationText),
      firstChunk: Schema.optionalKey(PositiveDurationText),
      chunkGap: Schema.optionalKey(PositiveDurationText),
      total: Schema.optionalKey(PositiveDurationText)
    })
  ),
  breaker: Schema.optionalKey(
    Schema.Struct({
      consecutiveFailures: Schema.optionalKey(PositiveInt),
      failureRate: Schema.optionalKey(
        Schema.Struct({ threshold: Ratio, window: PositiveInt, minimumCalls: PositiveInt })
      ),
      openDuration: Schema.optionalKey(DurationText),
      maxOpenDuration: Schema.optionalKey(DurationText)
    })
  ),
  rateLimit: Schema.optionalKey(
    Schema.Struct({
      onExceeded: Schema.optionalKey(Schema.Literals(["wait", "reject"])),
      maxWait: Schema.optionalKey(DurationText),
      defaultMaxTokens: Schema.optionalKey(PositiveInt),
      /**
       * The most keys (one group of a rule: a user, an API key...) the in-process rate limit keeps
       * (default 100,000), the least recently used dropped first: its windows restart.
       */
      maxKeys: Schema.optionalKey(PositiveInt),
      rules: Schema.optionalKey(Schema.Array(RateLimitRule))
    })
  ),
  cache: Schema.optionalKey(
    Schema.Struct({
      enabled: Schema.optionalKey(Schema.Boolean),
      capacity: Schema.optionalKey(PositiveInt),
      timeToLive: Schema.optionalKey(DurationText)
    })
  ),
  monitor: Schema.optionalKey(
    Schema.Struct({
      window: Schema.optionalKey(PositiveDurationText),
      coolDown: Schema.optionalKey(CoolDownText),
      slowRequest: Schema.optionalKey(Schema.Union([DurationText, Schema.Literal(false)])),
      hangingRequest: Schema.optionalKey(Schema.Union([DurationText, Schema.Literal(false)])),
      errorRate: Schema.optionalKey(Schema.Union([RateThreshold, Schema.Literal(false)])),
      fallbackRate: Schema.optionalKey(Schema.Union([RateThreshold, Schema.Literal(false)])),
      minimumRequests: Schema.optionalKey(PositiveInt),
      breakerOpen: Schema.optionalKey(Schema.Boolean),
      upstreamRateLimited: Schema.optionalKey(Schema.Union([PositiveInt, Schema.Literal(false)]))
    })
  ),
  redis: Schema.optionalKey(
    Schema.Struct({
      /** The Redis URL, a secret (it may hold a password): default the `REDIS_URL` variable, else redis://127.0.0.1:6379. */
      url: Schema.optionalKey(SecretRef),
      prefix: Schema.optionalKey(Schema.String),
      poolSize: Schema.optionalKey(Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 64 }))),
      commandTimeout: Schema.optionalKey(DurationText),
      policies: Schema.optionalKey(
        Schema.Struct({
          rateLimit: Schema.optionalKey(Schema.Literals(["fail-open", "fail-closed"])),
          budget: Schema.optionalKey(Schema.Literals(["fail-open", "fail-closed"]))
        })
      )
    })
  ),
  /** Where each stage keeps its state: `memory` (per process, the default) or `redis` (shared by replicas). */
  stores: Schema.optionalKey(
    Schema.Struct({
      rateLimit: Schema.optionalKey(Schema.Literals(["memory", "redis"])),
      breaker: Schema.optionalKey(Schema.Literals(["memory", "redis"])),
      cache: Schema.optionalKey(Schema.Literals(["memory", "redis"])),
      budget: Schema.optionalKey(Schema.Literals(["memory", "redis"]))
    })
  ),
  budgets: Schema.optionalKey(
    Schema.Struct({
      rules: Schema.Array(
        Schema.Struct({
          /** The key (by name) the budget is for; without it, every key gets a budget of this size. */
          key: Schema.optionalKey(Schema.String),
          per: Schema.Literals(["day", "month"]),
          tokens: Schema.optionalKey(PositiveInt),
          cost: Schema.optionalKey(Schema.Number.check(Schema.isGreaterThan(0)))
        })
      ),
      /** Prices per million tokens, by model (public or upstream model name). */
      prices: Schema.optionalKey(
        Schema.Record(
          Schema.String,
          Schema.Struct({
            input: Schema.Number.check(Schema.isGreaterThanOrEqualTo(0)),
            output: Schema.Number.check(Schema.isGreaterThanOrEqualTo(0))
          })
        )
      ),
      /** Fractions of a budget that raise an alert, once per window (default [0.8]). */
      thresholds: Schema.optionalKey(Schema.Array(Ratio))
    })
  ),
  alerts: Schema.optionalKey(
    Schema.Struct({
      /** Also log every alert (default true). */
      log: Schema.optionalKey(Schema.Boolean),
      /** POST every alert to a Slack-compatible webhook; the URL is a secret read from the environment. */
      webhook: Schema.optionalKey(
        Schema.Struct({
          url: SecretRef,
          timeout: Schema.optionalKey(PositiveDurationText),
          maxAttempts: Schema.optionalKey(Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 20 })))
        })
      )
    })
  ),
  keys: Schema.optionalKey(Schema.Array(KeyConfig))
})

/**
 * @category models
 * @since 0.1.0
 */
export type RoadcarConfig = typeof RoadcarConfig.Type

// =============================================================================
// Errors
// =============================================================================

/**
 * The configuration is invalid. `problems` lists every problem, each naming the field, the value and
 * the fix.
 *
 * @category errors
 * @since 0.1.0
 */
export class ConfigError extends Schema.TaggedError<ConfigError>()("ConfigError", {
  source: Schema.String,
  problems: Schema.Array(Schema.String)
}) {
  override get message(): string {
    return `invalid configuration in ${this.source}:\n${this.problems.map((problem) => `  - ${problem}`).join("\n")}`
  }
}

// =============================================================================
// Decoding
// =============================================================================

const pathText = (path: ReadonlyArray<PropertyKey>): string =>
  path.reduce<string>(
    (text, key) => (typeof key === "number" ? `${text}[${key}]` : text === "" ? String(key) : `${text}.${String(key)}`),
    ""
  ) || "(root)"

const valueText = (value: unknown): string => {
  const text = JSON.stringify(value)
  return text === undefined ? String(value) : text.length > 60 ? `${text.slice(0, 57)}...` : text
}

const distance = (a: string, b: string): number => {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    let previous = row[0]!
    row[0] = i
    for (let j = 1; j <= b.length; j++) {
      const current = row[j]!
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, previous + (a[i - 1] === b[j - 1] ? 0 : 1))
      previous = current
    }
  }
  return row[b.length]!
}

/**
 * The closest of `candidates` to `word`, if one is close enough to be a likely typo.
 *
 * @category constructors
 * @since 0.1.0
 */
export const suggest = (word: string, candidates: Iterable<string>): string | undefined => {
  let best: string | undefined
  let bestDistance = Math.max(2, Math.floor(word.length / 3)) + 1
  for (const candidate of candidates) {
    const d = distance(word.toLowerCase(), candidate.toLowerCase())
    if (d < bestDistance) {
      best = candidate
      bestDistance = d
    }
  }
  return best
}

const fieldsAt = (path: ReadonlyArray<PropertyKey>): ReadonlyArray<string> => {
  // Walk the schema's structure along the path to list the allowed fields where an unknown one was found.
  let ast: SchemaAST | undefined = RoadcarConfig.ast as SchemaAST
  for (const key of path) {
    if (ast === undefined) return []
    ast = childOf(ast, key)
  }
  return ast ? fieldNames(ast) : []
}

// The small part of Schema's AST read by `fieldsAt`.
interface SchemaAST {
  readonly _tag: string
  readonly propertySignatures?: ReadonlyArray<{ readonly name: PropertyKey; readonly type: SchemaAST }>
  readonly indexSignatures?: ReadonlyArray<{ readonly type: SchemaAST }>
  readonly types?: ReadonlyArray<SchemaAST>
  readonly rest?: ReadonlyArray<SchemaAST>
}

const childOf = (ast: SchemaAST, key: PropertyKey): SchemaAST | undefined => {
  if (ast.types) {
    for (const member of ast.types) {
      const child = childOf(member, key)
      if (child) return child
    }
    return undefined
  }
  const field = ast.propertySignatures?.find((signature) => signature.name === key)
  if (field) return field.type
  if (typeof key === "number" && ast.rest?.[0]) return ast.rest[0]
  return ast.indexSignatures?.[0]?.type
}

const fieldNames = (ast: SchemaAST): ReadonlyArray<string> =>
  ast.types
    ? ast.types.flatMap(fieldNames)
    : (ast.propertySignatures ?? []).map((signature) => String(signature.name)).filter((name) => name !== "$schema")

const describeIssue = (issue: SchemaIssue.Issue, path: ReadonlyArray<PropertyKey>, out: Array<string>): void => {
  switch (issue._tag) {
    case "Pointer":
      describeIssue(issue.issue, [...path, ...issue.path], out)
      return
    case "Composite":
      for (const inner of issue.issues) describeIssue(inner, path, out)
      return
    case "AnyOf":
      for (const inner of issue.issues) describeIssue(inner, path, out)
      if (issue.issues.length === 0) {
        const text = String(SchemaIssue.makeFormatterDefault()(issue)).split("\n")[0] ?? "an allowed value"
        const got = issue.input !== undefined && !text.includes(", got ") ? `, got ${valueText(issue.input)}` : ""
        out.push(`${pathText(path)}: ${text.replace(/^Expected/, "expected one of")}${got}`)
      }
      return
    case "UnexpectedKey": {
      const name = String(path.at(-1))
      const allowed = fieldsAt(path.slice(0, -1))
      const guess = suggest(name, allowed)
      out.push(
        `${pathText(path)}: unknown field${guess ? `; did you mean "${guess}"?` : ""}${
          allowed.length > 0 ? ` Allowed here: ${allowed.join(", ")}` : " Remove it"
        }`
      )
      return
    }
    case "MissingKey":
      out.push(`${pathText(path)}: required field is missing`)
      return
    default: {
      const text = String(SchemaIssue.makeFormatterDefault()(issue)).split("\n")[0] ?? "invalid value"
      const got = "input" in issue && issue.input !== undefined ? `, got ${valueText(issue.input)}` : ""
      out.push(`${pathText(path)}: ${text.replace(/^Expected/, "expected")}${text.includes("got ") ? "" : got}`)
    }
  }
}

const checkReferences = (config: RoadcarConfig): Array<string> => {
  const problems: Array<string> = []
  const upstreams = Object.keys(config.upstreams ?? {})
  const known = new Set([...upstreams, "simulated"])
  const check = (path: string, name: string) => {
    if (known.has(name)) return
    const guess = suggest(name, known)
    problems.push(
      `${path}: ${valueText(name)} is not a configured upstream; ${
        guess ? `did you mean "${guess}"? ` : ""
      }use one of: ${[...known].join(", ")} (or add it under "upstreams")`
    )
  }
  for (const [model, entry] of Object.entries(config.models ?? {})) {
    check(`models.${model}.upstream`, entry.upstream)
    for (const [index, fallback] of (entry.fallbacks ?? []).entries()) {
      check(`models.${model}.fallbacks[${index}].upstream`, fallback.upstream)
    }
  }
  const models = new Set(Object.keys(resolveModels(config)))
  const names = new Set<string>()
  for (const [index, key] of (config.keys ?? []).entries()) {
    for (const [modelIndex, model] of (key.models ?? []).entries()) {
      if (!models.has(model)) {
        problems.push(
          `keys[${index}].models[${modelIndex}]: ${valueText(model)} is not a configured model; use one of: ${[...models].join(", ")}`
        )
      }
    }
    if (names.has(key.name))
      problems.push(`keys[${index}].name: ${valueText(key.name)} is used twice; key names must be unique`)
    names.add(key.name)
  }
  const keyNames = new Set((config.keys ?? []).map((key) => key.name))
  for (const [index, rule] of (config.budgets?.rules ?? []).entries()) {
    if (rule.tokens === undefined && rule.cost === undefined) {
      problems.push(`budgets.rules[${index}]: set "tokens", "cost" or both (a budget with neither limits nothing)`)
    }
    if (rule.key !== undefined && !keyNames.has(rule.key)) {
      problems.push(
        `budgets.rules[${index}].key: ${valueText(rule.key)} is not a configured key; use one of: ${[...keyNames].join(", ") || "(no keys configured)"}`
      )
    }
    if (rule.cost !== undefined && Object.keys(config.budgets?.prices ?? {}).length === 0) {
      problems.push(
        `budgets.rules[${index}].cost: a cost budget needs "budgets.prices" (per million input and output tokens)`
      )
    }
  }
  const failureRate = config.breaker?.failureRate
  if (failureRate !== undefined && failureRate.minimumCalls > failureRate.window) {
    problems.push(
      `breaker.failureRate.minimumCalls: ${failureRate.minimumCalls} is more than breaker.failureRate.window (${failureRate.window}), the number of recent calls the failure rate is computed over, so the rate could never be reached; set minimumCalls to at most ${failureRate.window} or window to at least ${failureRate.minimumCalls}`
    )
  }
  const openText = config.breaker?.openDuration ?? String(breakerDefaults.openDuration)
  const maxOpenText = config.breaker?.maxOpenDuration ?? String(breakerDefaults.maxOpenDuration)
  if ((durationMillis(openText) ?? 0) > (durationMillis(maxOpenText) ?? Number.POSITIVE_INFINITY)) {
    const field =
      config.breaker?.maxOpenDuration === undefined ? `(the default, "${maxOpenText}")` : `("${maxOpenText}")`
    problems.push(
      `breaker.openDuration: "${openText}" is longer than breaker.maxOpenDuration ${field}, the longest a circuit stays open, so it would be cut to that; set maxOpenDuration to at least "${openText}" or openDuration to at most "${maxOpenText}"`
    )
  }
  for (const [name, upstream] of Object.entries(config.upstreams ?? {})) {
    if (upstream.provider === "anthropic" && upstream.apiKey === undefined) {
      problems.push(`upstreams.${name}.apiKey: required for provider "anthropic", e.g. { "env": "ANTHROPIC_API_KEY" }`)
    }
    if (upstream.provider !== "simulated" && upstream.model === undefined) {
      problems.push(
        `upstreams.${name}.model: required for provider "${upstream.provider}" (the model name the upstream is asked for)`
      )
    }
    if (upstream.provider === "simulated") {
      for (const field of ["providerName", "headers"] as const) {
        if (upstream[field] !== undefined) {
          problems.push(`upstreams.${name}.${field}: not for provider "simulated" (it makes no HTTP calls); remove it`)
        }
      }
    }
    if (upstream.provider !== "simulated") {
      for (const field of ["latency", "chunkLatency", "faults"] as const) {
        if (upstream[field] !== undefined) {
          problems.push(`upstreams.${name}.${field}: only for provider "simulated"; remove it`)
        }
      }
    }
    if (upstream.provider === "openai-compatible" && upstream.baseUrl === undefined) {
      problems.push(
        `upstreams.${name}.baseUrl: required for provider "openai-compatible" (e.g. "http://127.0.0.1:11434/v1" for Ollama)`
      )
    }
  }
  return problems
}

/**
 * Whether any stage keeps its state in Redis.
 *
 * @category accessors
 * @since 0.1.0
 */
export const usesRedis = (config: RoadcarConfig): boolean =>
  Object.values(config.stores ?? {}).some((store) => store === "redis")

/**
 * The public models of a config; with none configured, `chat` served by the simulated model.
 *
 * @category accessors
 * @since 0.1.0
 */
export const resolveModels = (config: RoadcarConfig): Readonly<Record<string, typeof ModelConfig.Type>> =>
  config.models && Object.keys(config.models).length > 0 ? config.models : { chat: { upstream: "simulated" } }

/**
 * Validates a parsed config file.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { RoadcarConfig } from "@roadcar/core"
 *
 * const error = Effect.runSync(Effect.flip(RoadcarConfig.decode({ retry: { attempts: 0 } }, "inline")))
 * error.problems // => ["retry.attempts: expected a value between 1 and 10, got 0"]
 * ```
 *
 * @category decoding
 * @since 0.1.0
 */
export const decode = (input: unknown, source = "config"): Effect.Effect<RoadcarConfig, ConfigError> =>
  Effect.suspend(() => {
    const exit = Schema.decodeUnknownExit(RoadcarConfig)(input, {
      onExcessProperty: "error",
      errors: "all",
      reportInput: true
    })
    if (Exit.isFailure(exit)) {
      const problems: Array<string> = []
      for (const reason of exit.cause.reasons) {
        if (reason._tag === "Fail") describeIssue(reason.error.issue, [], problems)
      }
      return Effect.fail(new ConfigError({ source, problems: problems.length > 0 ? problems : ["invalid value"] }))
    }
    const problems = checkReferences(exit.value)
    return problems.length > 0 ? Effect.fail(new ConfigError({ source, problems })) : Effect.succeed(exit.value)
  })

/**
 * Parses JSON text and validates it; a syntax error says where it is.
 *
 * @category decoding
 * @since 0.1.0
 */
export const decodeJson = (text: string, source = "config"): Effect.Effect<RoadcarConfig, ConfigError> =>
  Effect.suspend(() => {
    let parsed: unknown
    try {
      parsed = JSON.parse(text)
    } catch (error) {
      return Effect.fail(
        new ConfigError({
          source,
          problems: [`not valid JSON: ${error instanceof Error ? error.message : String(error)}`]
        })
      )
    }
    return decode(parsed, source)
  })

/**
 * The reason tags a fallback's `when` accepts.
 *
 * @category models
 * @since 0.1.0
 */
export type ReasonTag = UpstreamError.ReasonTag
