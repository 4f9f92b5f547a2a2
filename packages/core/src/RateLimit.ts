/**
 * Limits requests and tokens per key (API key, user, model, or everyone) over a window.
 *
 * `RateLimit` wraps the `effect/persistence` `RateLimiter` (memory store in one process, Redis across
 * replicas) and adds the LLM part: a request is admitted against every configured rule, by requests
 * and by tokens, where tokens are estimated before the call (prompt estimate plus `max_tokens`) and
 * settled with the real usage after it (the difference is charged or given back; a failed call gives
 * its tokens back). On excess it waits or rejects with `RateLimitRejected`, which carries `retryAfter`.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { RateLimiter } from "effect/persistence"
import * as Schema from "effect/Schema"
import { type ChatRequest, estimatePromptTokens, maxOutputTokens, type Usage } from "./ChatCompletion.ts"
import { isStoreUnavailable, type StoreUnavailable } from "./StoreUnavailable.ts"

// =============================================================================
// Options
// =============================================================================

/**
 * A limit: at most `limit` per `window`.
 *
 * @category options
 * @since 0.1.0
 */
export interface Limit {
  readonly limit: number
  readonly window: Duration.Input
}

/**
 * One rule: which requests it groups (`by`) and its request and token limits.
 *
 * @category options
 * @since 0.1.0
 */
export interface Rule {
  /** `key`: per API key; `user`: per end user (the request's `user` or the caller's); `model`: per public model; `global`: everyone. */
  readonly by: "key" | "user" | "model" | "global"
  /** Apply the rule only to requests made with this API key (a key's own limits). */
  readonly forKey?: string | undefined
  readonly requests?: Limit | undefined
  readonly tokens?: Limit | undefined
}

/**
 * @category options
 * @since 0.1.0
 */
export interface Options {
  readonly rules: ReadonlyArray<Rule>
  /** `reject` at once with `RateLimitRejected`, or `wait` for the window (up to `maxWait`, then reject). */
  readonly onExceeded: "wait" | "reject"
  /** The longest a request waits for its turn in `wait` mode (default 10s). */
  readonly maxWait?: Duration.Input | undefined
  /** Output tokens assumed when a request sets no `max_tokens` (default 1024). */
  readonly defaultMaxTokens?: number | undefined
}

/**
 * Who is asking: the values rules group by.
 *
 * @category models
 * @since 0.1.0
 */
export interface Identity {
  /** The API key's id (its name in the config, never the secret). */
  readonly key?: string | undefined
  readonly user?: string | undefined
}

// =============================================================================
// Errors
// =============================================================================

/**
 * Roadcar's own rate limit refused the request (the gateway answers 429 with `Retry-After`).
 *
 * @category errors
 * @since 0.1.0
 */
export class RateLimitRejected extends Schema.TaggedError<RateLimitRejected>()("RateLimitRejected", {
  /** What was exceeded, e.g. `requests per key`. */
  limit: Schema.String,
  /** The group, e.g. `key team-a`. */
  subject: Schema.String,
  retryAfter: Schema.Duration
}) {
  override get message(): string {
    return `rate limit exceeded: ${this.limit} for ${this.subject}; retry after ${Math.ceil(Duration.toSeconds(this.retryAfter))}s`
  }
}

// =============================================================================
// Service
// =============================================================================

/**
 * What `admit` reserved, to be settled once the answer's usage is known.
 *
 * @category models
 * @since 0.1.0
 */
export interface Reservation {
  readonly estimatedTokens: number
  readonly tokenKeys: ReadonlyArray<{ readonly key: string; readonly limit: Limit }>
}

/**
 * The rate limit service.
 *
 * @category services
 * @since 0.1.0
 */
export class RateLimit extends Context.Service<
  RateLimit,
  {
    /** Admits a request against every rule (waiting or rejecting on excess) and reserves its token estimate. */
    readonly admit: (
      request: ChatRequest,
      identity: Identity
    ) => Effect.Effect<Reservation, RateLimitRejected | StoreUnavailable>
    /** Settles a reservation: charges or returns the difference between estimate and real usage (`undefined`: the call failed, return it all). */
    readonly settle: (reservation: Reservation, usage: Usage | undefined) => Effect.Effect<void>
  }
>()("@roadcar/core/RateLimit") {}

const subjectOf = (rule: Rule, request: ChatRequest, identity: Identity): string | undefined => {
  switch (rule.by) {
    case "key":
      return identity.key
    case "user":
      return identity.user ?? request.user
    case "model":
      return request.model
    case "global":
      return "*"
  }
}

/**
 * The token estimate reserved for a request: its prompt estimate plus the output it allows.
 *
 * @category constructors
 * @since 0.1.0
 */
export const estimateTokens = (request: ChatRequest, defaultMaxTokens = 1024): number =>
  estimatePromptTokens(request) + (maxOutputTokens(request) ?? defaultMaxTokens)

/**
 * Builds the rate limit on the `RateLimiter` in context.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = Effect.fnUntraced(function* (options: Options) {
  const limiter = yield* RateLimiter.RateLimiter
  const maxWait = Duration.fromInputUnsafe(options.maxWait ?? "10 seconds")
  const mode = options.onExceeded === "wait" ? "delay" : "fail"

  // Gives back what was taken (fixed windows accept a negative count).
  const giveBack = (key: string, limit: Limit, tokens: number) =>
    tokens <= 0
      ? Effect.void
      : limiter.consume({ key, limit: limit.limit, window: limit.window, tokens: -tokens }).pipe(Effect.ignore)

  const take = (
    key: string,
    limit: Limit,
    tokens: number,
    label: string,
    subject: string
  ): Effect.Effect<void, RateLimitRejected | StoreUnavailable> =>
    limiter.consume({ key, limit: limit.limit, window: limit.window, tokens, onExceeded: mode }).pipe(
      Effect.flatMap((result) => {
        if (Duration.isZero(result.delay)) return Effect.void
        if (Duration.isGreaterThan(result.delay, maxWait)) {
          return giveBack(key, limit, tokens).pipe(
            Effect.andThen(Effect.fail(new RateLimitRejected({ limit: label, subject, retryAfter: result.delay })))
          )
        }
        return Effect.sleep(result.delay)
      }),
      Effect.catchTag("RateLimiterError", (error): Effect.Effect<void, RateLimitRejected | StoreUnavailable> => {
        const reason = error.reason
        // A store that cannot answer: refuse when its policy is fail-closed (the store says so by carrying a
        // StoreUnavailable), else admit unrecorded (fail open) and warn.
        if (reason._tag === "RateLimitStoreError") {
          return isStoreUnavailable(reason.cause)
            ? Effect.fail(reason.cause)
            : Effect.logWarning("rate limit store unavailable", reason.message)
        }
        return Effect.fail(new RateLimitRejected({ limit: label, subject, retryAfter: reason.retryAfter }))
      })
    )

  // Windows are decoded once, not on every consume.
  const rules = options.rules.map((rule) => ({
    ...rule,
    requests: rule.requests && { limit: rule.requests.limit, window: Duration.fromInputUnsafe(rule.requests.window) },
    tokens: rule.tokens && { limit: rule.tokens.limit, window: Duration.fromInputUnsafe(rule.tokens.window) }
  }))

  const admit = (request: ChatRequest, identity: Identity) =>
    Effect.suspend(() => {
      const estimatedTokens = estimateTokens(request, options.defaultMaxTokens)
      const taken: Array<{ key: string; limit: Limit; tokens: number }> = []
      const tokenKeys: Array<{ key: string; limit: Limit }> = []
      let chain: Effect.Effect<void, RateLimitRejected | StoreUnavailable> | undefined
      let steps = 0
      const then = (step: Effect.Effect<void, RateLimitRejected | StoreUnavailable>) => {
        chain = chain === undefined ? step : Effect.andThen(chain, step)
        steps++
      }
      for (const rule of rules) {
        if (rule.forKey !== undefined && rule.forKey !== identity.key) continue
        const value = subjectOf(rule, request, identity)
        if (value === undefined) continue
        const subject = rule.by === "global" ? "everyone" : `${rule.by} ${value}`
        const prefix =
          rule.forKey === undefined
            ? `roadcar:${rule.by}:${value}`
            : `roadcar:key-rule:${rule.forKey}:${rule.by}:${value}`
        const requests = rule.requests
        if (requests) {
          const key = `${prefix}:requests`
          then(
            Effect.map(take(key, requests, 1, `requests per ${rule.by}`, subject), () => {
              taken.push({ key, limit: requests, tokens: 1 })
            })
          )
        }
        const tokens = rule.tokens
        if (tokens) {
          const key = `${prefix}:tokens`
          tokenKeys.push({ key, limit: tokens })
          then(
            Effect.map(take(key, tokens, estimatedTokens, `tokens per ${rule.by}`, subject), () => {
              taken.push({ key, limit: tokens, tokens: estimatedTokens })
            })
          )
        }
      }
      const reservation: Reservation = { estimatedTokens, tokenKeys }
      if (chain === undefined) return Effect.succeed(reservation)
      return Effect.as(
        steps === 1
          ? chain
          : // A later rule refused: give back what the earlier ones took, so a refused request costs nothing.
            Effect.tapError(chain, () =>
              Effect.forEach(taken, (t) => giveBack(t.key, t.limit, t.tokens), { discard: true })
            ),
        reservation
      )
    })

  const settle = (reservation: Reservation, usage: Usage | undefined) =>
    Effect.forEach(
      reservation.tokenKeys,
      ({ key, limit }) => {
        const delta = (usage?.total_tokens ?? 0) - reservation.estimatedTokens
        if (delta < 0) return giveBack(key, limit, -delta)
        if (delta === 0) return Effect.void
        return limiter
          .consume({ key, limit: limit.limit, window: limit.window, tokens: delta, onExceeded: "delay" })
          .pipe(Effect.ignore)
      },
      { discard: true }
    )

  return RateLimit.of({ admit, settle })
})

/**
 * The rate limit layer (needs a `RateLimiter`).
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (options: Options): Layer.Layer<RateLimit, never, RateLimiter.RateLimiter> =>
  Layer.effect(RateLimit, make(options))

/**
 * The rate limit with an in-process store: limits are per process.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerMemory = (options: Options): Layer.Layer<RateLimit> =>
  layer(options).pipe(Layer.provide(RateLimiter.layer), Layer.provide(RateLimiter.layerStoreMemory))
