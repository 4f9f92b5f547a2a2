/**
 * Limits requests and tokens per key (API key, user, model, or everyone) over a window.
 *
 * `RateLimit` wraps the `effect/persistence` `RateLimiter` (`layer`, over a store: Redis across
 * replicas) or runs the same fixed-window arithmetic natively in process memory (`layerMemory`, one
 * process, at most `maxKeys` keys), and adds the LLM part: a request is admitted against every
 * configured rule, by requests and by tokens, where tokens are estimated before the call (prompt
 * estimate plus `max_tokens`) and settled with the real usage after it (the difference is charged or
 * given back; a failed call gives its tokens back). On excess it waits or rejects with
 * `RateLimitRejected`, which carries `retryAfter`.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { RateLimiter } from "effect/persistence"
import * as Schema from "effect/Schema"
import { type ChatRequest, estimatePromptTokens, maxOutputTokens, type Usage } from "./ChatCompletion.ts"
import {
  DecodedLimit,
  decodeLimit,
  FixedWindows,
  type Group,
  type Measure,
  type Mode,
  windowsOf
} from "./internal/fixedWindow.ts"
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
    /**
     * Admits a request against every rule (waiting or rejecting on excess) and reserves its token
     * estimate. A refusal, or an interruption while it waits, gives back whatever it took. Only its
     * wait can be interrupted: run it uninterruptibly to record the reservation it returns before an
     * interruption can land (as the pipeline does), and it stays interruptible while it waits.
     */
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

  // Windows are decoded once, not on every consume.
  const rules = options.rules.map((rule) => ({
    ...rule,
    requests: rule.requests && { limit: rule.requests.limit, window: Duration.fromInputUnsafe(rule.requests.window) },
    tokens: rule.tokens && { limit: rule.tokens.limit, window: Duration.fromInputUnsafe(rule.tokens.window) },
    requestsLabel: `requests per ${rule.by}`,
    tokensLabel: `tokens per ${rule.by}`
  }))
  type DecodedRule = (typeof rules)[number]

  // One consume a request makes: `tokens` from `key` under `limit`; `rule` and `value` name the
  // group in a refusal.
  interface Take {
    readonly key: string
    readonly limit: Limit
    readonly tokens: number
    readonly label: string
    readonly rule: DecodedRule
    readonly value: string
  }
  const groupOf = (take: Take) => (take.rule.by === "global" ? "everyone" : `${take.rule.by} ${take.value}`)

  // Gives back what was taken (fixed windows accept a negative count), in the mode it was taken in:
  // in `wait` mode taking pushed the window's end out, and giving back must pull it in again (given
  // back as a `fail` consume, the count would drop but the end stay, and a busy key lock itself out).
  const giveBack = (key: string, limit: Limit, tokens: number) =>
    tokens <= 0
      ? Effect.void
      : limiter
          .consume({ key, limit: limit.limit, window: limit.window, tokens: -tokens, onExceeded: mode })
          .pipe(Effect.ignore)

  const take = (t: Take): Effect.Effect<void, RateLimitRejected | StoreUnavailable> =>
    Effect.matchEffect(
      limiter.consume({ key: t.key, limit: t.limit.limit, window: t.limit.window, tokens: t.tokens, onExceeded: mode }),
      {
        onSuccess: (result): Effect.Effect<void, RateLimitRejected> => {
          if (Duration.isZero(result.delay)) return Effect.void
          if (Duration.isGreaterThan(result.delay, maxWait)) {
            return giveBack(t.key, t.limit, t.tokens).pipe(
              Effect.andThen(
                Effect.fail(new RateLimitRejected({ limit: t.label, subject: groupOf(t), retryAfter: result.delay }))
              )
            )
          }
          // The one interruptible step of an admission: interrupted, it gives back what it took.
          return Effect.onInterrupt(Effect.interruptible(Effect.sleep(result.delay)), () =>
            giveBack(t.key, t.limit, t.tokens)
          )
        },
        onFailure: (error): Effect.Effect<void, RateLimitRejected | StoreUnavailable> => {
          const reason = error.reason
          // A store that cannot answer: refuse when its policy is fail-closed (the store says so by carrying a
          // StoreUnavailable), else admit unrecorded (fail open) and warn.
          if (reason._tag === "RateLimitStoreError") {
            return isStoreUnavailable(reason.cause)
              ? Effect.fail(reason.cause)
              : Effect.logWarning("rate limit store unavailable", reason.message)
          }
          return Effect.fail(
            new RateLimitRejected({ limit: t.label, subject: groupOf(t), retryAfter: reason.retryAfter })
          )
        }
      }
    )

  // Gives back what the takes before `index` took.
  const giveBackBefore = (takes: ReadonlyArray<Take>, index: number) =>
    Effect.forEach(takes.slice(0, index), (t) => giveBack(t.key, t.limit, t.tokens), { discard: true })

  // Runs the takes in order; when one refuses (or is interrupted while it waits), gives back what the
  // earlier ones took, so a refused request costs nothing.
  const takeAll = (
    takes: ReadonlyArray<Take>,
    index: number,
    reservation: Reservation
  ): Effect.Effect<Reservation, RateLimitRejected | StoreUnavailable> =>
    Effect.matchEffect(
      index === 0 ? take(takes[0]!) : Effect.onInterrupt(take(takes[index]!), () => giveBackBefore(takes, index)),
      {
        onSuccess: () =>
          index + 1 === takes.length ? Effect.succeed(reservation) : takeAll(takes, index + 1, reservation),
        onFailure: (error) =>
          index === 0 ? Effect.fail(error) : Effect.andThen(giveBackBefore(takes, index), Effect.fail(error))
      }
    )

  const admit = (request: ChatRequest, identity: Identity) =>
    Effect.suspend(() => {
      const estimatedTokens = estimateTokens(request, options.defaultMaxTokens)
      const takes: Array<Take> = []
      const tokenKeys: Array<{ key: string; limit: Limit }> = []
      for (const rule of rules) {
        if (rule.forKey !== undefined && rule.forKey !== identity.key) continue
        const value = subjectOf(rule, request, identity)
        if (value === undefined) continue
        const prefix =
          rule.forKey === undefined
            ? `roadcar:${rule.by}:${value}`
            : `roadcar:key-rule:${rule.forKey}:${rule.by}:${value}`
        if (rule.requests) {
          takes.push({
            key: `${prefix}:requests`,
            limit: rule.requests,
            tokens: 1,
            label: rule.requestsLabel,
            rule,
            value
          })
        }
        if (rule.tokens) {
          const key = `${prefix}:tokens`
          tokenKeys.push({ key, limit: rule.tokens })
          takes.push({ key, limit: rule.tokens, tokens: estimatedTokens, label: rule.tokensLabel, rule, value })
        }
      }
      const reservation: Reservation = { estimatedTokens, tokenKeys }
      return takes.length === 0 ? Effect.succeed(reservation) : takeAll(takes, 0, reservation)
    })

  const settleKey = (key: string, limit: Limit, delta: number) =>
    delta < 0
      ? giveBack(key, limit, -delta)
      : limiter
          .consume({ key, limit: limit.limit, window: limit.window, tokens: delta, onExceeded: "delay" })
          .pipe(Effect.ignore)

  const settle = (reservation: Reservation, usage: Usage | undefined): Effect.Effect<void> => {
    const delta = (usage?.total_tokens ?? 0) - reservation.estimatedTokens
    const keys = reservation.tokenKeys
    if (delta === 0 || keys.length === 0) return Effect.void
    if (keys.length === 1) return settleKey(keys[0]!.key, keys[0]!.limit, delta)
    return Effect.forEach(keys, ({ key, limit }) => settleKey(key, limit, delta), { discard: true })
  }

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

// =============================================================================
// In process memory
// =============================================================================

/**
 * The most keys the in-process rate limit keeps by default.
 *
 * @category options
 * @since 0.1.0
 */
export const defaultMaxKeys = 100_000

/**
 * Options of the in-process rate limit.
 *
 * @category options
 * @since 0.1.0
 */
export interface MemoryOptions extends Options {
  /**
   * The most keys kept in memory (default 100,000): a key is one group of a rule (an API key, a
   * user, a model, or everyone; rules that group alike share it) with its request and token
   * windows. Beyond this the least recently used key is dropped and its windows restart when it
   * comes back, so with more groups active in one window than this, a group may be admitted early.
   * Size it above the groups active in one window; memory is about 250 bytes per key.
   */
  readonly maxKeys?: number | undefined
}

// A reservation's token key, pointing at its counter without a string lookup.
class TokenKey {
  readonly group: Group
  readonly value: string
  readonly limit: DecodedLimit
  constructor(group: Group, value: string, limit: DecodedLimit) {
    this.group = group
    this.value = value
    this.limit = limit
  }
  get key(): string {
    return `${this.group.prefix}${this.value}:tokens`
  }
}

/**
 * Builds the rate limit in process memory: the same admission as `make` over effect's `RateLimiter`
 * with `RateLimiter.layerStoreMemory` (fixed windows, the same counts, waits, retry-after, give-backs
 * and settles), computed in plain code so that admitting a request is one Effect step (waiting, in
 * `wait` mode, is the only other), with at most `maxKeys` keys in least-recently-used order.
 *
 * Trade-off of the bound: a key evicted for a newer one loses its windows, so that group starts
 * again from zero when it returns; effect's memory store instead grows with every group seen and
 * drops expired ones in a periodic sweep. Expired keys here are dropped when touched and, not being
 * touched, are the first evicted. Time is read from `Clock`, so `TestClock` drives it.
 *
 * @category constructors
 * @since 0.1.0
 */
export const makeMemory = (options: MemoryOptions): Effect.Effect<RateLimit["Service"]> =>
  Effect.sync(() => {
    const windows = new FixedWindows(options.maxKeys ?? defaultMaxKeys)
    const maxWait = Duration.fromInputUnsafe(options.maxWait ?? "10 seconds")
    const mode: Mode = options.onExceeded === "wait" ? "delay" : "fail"
    const rules = options.rules.map((rule) => ({
      by: rule.by,
      forKey: rule.forKey,
      requests: rule.requests && new DecodedLimit(rule.requests),
      tokens: rule.tokens && new DecodedLimit(rule.tokens),
      // The key prefix of `make`: rules grouping alike share their counters there too.
      group: windows.group(
        rule.forKey === undefined ? `roadcar:${rule.by}:` : `roadcar:key-rule:${rule.forKey}:${rule.by}:`
      ),
      requestsLabel: `requests per ${rule.by}`,
      tokensLabel: `tokens per ${rule.by}`
    }))
    type MemoryRule = (typeof rules)[number]

    interface Take {
      readonly rule: MemoryRule
      readonly value: string
      readonly measure: Measure
      readonly limit: DecodedLimit
      readonly tokens: number
    }
    const consume = (take: Take, tokens: number, takeMode: Mode, now: number) =>
      windows.consume(take.rule.group, take.value, take.measure, take.limit, tokens, takeMode, now)
    // In the mode it was taken in (see `make`'s giveBack: in `wait` mode the window's end moves back too).
    const giveBack = (take: Take, now: number) => {
      if (take.tokens > 0) consume(take, -take.tokens, mode, now)
    }

    // Refuses at `takes[index]`: gives back what the takes before it took, so a refused request costs nothing.
    const refuse = (takes: ReadonlyArray<Take>, index: number, retryAfter: Duration.Duration, now: number) => {
      for (let i = 0; i < index; i++) giveBack(takes[i]!, now)
      const { rule, value, measure } = takes[index]!
      return Effect.fail(
        new RateLimitRejected({
          limit: measure === "requests" ? rule.requestsLabel : rule.tokensLabel,
          subject: rule.by === "global" ? "everyone" : `${rule.by} ${value}`,
          retryAfter
        })
      )
    }

    // Runs the takes from `from` on at time `now`; in `wait` mode a take that must wait sleeps, then
    // the rest run at the time it wakes.
    const run = (
      takes: ReadonlyArray<Take>,
      from: number,
      reservation: Reservation,
      now: number
    ): Effect.Effect<Reservation, RateLimitRejected> => {
      for (let index = from; index < takes.length; index++) {
        const take = takes[index]!
        const outcome = consume(take, take.tokens, mode, now)
        if (outcome === undefined) continue
        if (mode === "fail") return refuse(takes, index, outcome, now)
        if (Duration.isGreaterThan(outcome, maxWait)) {
          giveBack(take, now)
          return refuse(takes, index, outcome, now)
        }
        // The one interruptible step of an admission: interrupted, it gives back what it took.
        const wait = Effect.onInterrupt(Effect.interruptible(Effect.sleep(outcome)), () =>
          Effect.withFiber((fiber) => {
            const at = fiber.getRef(Clock.Clock).currentTimeMillisUnsafe()
            for (let i = 0; i <= index; i++) giveBack(takes[i]!, at)
            return Effect.void
          })
        )
        return Effect.flatMap(wait, () =>
          Effect.withFiber((fiber) =>
            run(takes, index + 1, reservation, fiber.getRef(Clock.Clock).currentTimeMillisUnsafe())
          )
        )
      }
      return Effect.succeed(reservation)
    }

    const admit = (request: ChatRequest, identity: Identity): Effect.Effect<Reservation, RateLimitRejected> =>
      Effect.withFiber((fiber) => {
        const estimatedTokens = estimateTokens(request, options.defaultMaxTokens)
        const takes: Array<Take> = []
        const tokenKeys: Array<TokenKey> = []
        for (const rule of rules) {
          if (rule.forKey !== undefined && rule.forKey !== identity.key) continue
          const value = subjectOf(rule, request, identity)
          if (value === undefined) continue
          if (rule.requests) takes.push({ rule, value, measure: "requests", limit: rule.requests, tokens: 1 })
          if (rule.tokens) {
            tokenKeys.push(new TokenKey(rule.group, value, rule.tokens))
            takes.push({ rule, value, measure: "tokens", limit: rule.tokens, tokens: estimatedTokens })
          }
        }
        const reservation: Reservation = { estimatedTokens, tokenKeys }
        return takes.length === 0
          ? Effect.succeed(reservation)
          : run(takes, 0, reservation, fiber.getRef(Clock.Clock).currentTimeMillisUnsafe())
      })

    // Charges the difference (taken even past the limit, as a `delay` consume) or gives it back.
    const settleKey = (key: Reservation["tokenKeys"][number], delta: number, now: number) => {
      const settleMode = delta < 0 ? mode : "delay"
      if (key instanceof TokenKey) {
        windows.consume(key.group, key.value, "tokens", key.limit, delta, settleMode, now)
        return
      }
      // A key built elsewhere: found by its prefix.
      const parsed = windows.parse(key.key)
      if (parsed !== undefined) {
        windows.consume(parsed.group, parsed.value, parsed.measure, decodeLimit(key.limit), delta, settleMode, now)
      }
    }
    const settle = (reservation: Reservation, usage: Usage | undefined): Effect.Effect<void> => {
      const delta = (usage?.total_tokens ?? 0) - reservation.estimatedTokens
      const keys = reservation.tokenKeys
      if (delta === 0 || keys.length === 0) return Effect.void
      return Effect.withFiber((fiber) => {
        const now = fiber.getRef(Clock.Clock).currentTimeMillisUnsafe()
        for (const key of keys) settleKey(key, delta, now)
        return Effect.void
      })
    }

    const service = RateLimit.of({ admit, settle })
    windowsOf.set(service, windows)
    return service
  })

/**
 * The rate limit in process memory (see `makeMemory`): limits are per process, at most `maxKeys`
 * keys (default 100,000) are kept, the least recently used dropped first.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerMemory = (options: MemoryOptions): Layer.Layer<RateLimit> =>
  Layer.effect(RateLimit, makeMemory(options))

/**
 * How many keys (groups of a rule, each with its request and token windows) an in-process rate limit
 * holds (at most its `maxKeys`); `undefined` for one over effect's `RateLimiter` (`layer`), whose
 * store does not say.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { ChatCompletion, RateLimit } from "@roadcar/core"
 *
 * const program = Effect.gen(function* () {
 *   const rateLimit = yield* RateLimit.makeMemory({
 *     rules: [{ by: "user", requests: { limit: 10, window: "1 minute" } }],
 *     onExceeded: "reject",
 *     maxKeys: 2
 *   })
 *   const request: ChatCompletion.ChatRequest = { model: "chat", messages: [{ role: "user", content: "hi" }] }
 *   for (const user of ["a", "b", "c"]) yield* rateLimit.admit(request, { user })
 *   return RateLimit.keysHeld(rateLimit) // => 2: "a", the least recently used, was dropped
 * })
 * ```
 *
 * @category accessors
 * @since 0.1.0
 */
export const keysHeld = (service: RateLimit["Service"]): number | undefined => windowsOf.get(service)?.size
