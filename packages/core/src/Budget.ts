/**
 * Caps what each API key may spend per calendar day or month, in tokens and in cost.
 *
 * `Budget` reserves a request's estimate (prompt tokens plus `max_tokens`, priced from the price
 * table) against every budget of its API key before the call, in one atomic step of the
 * `BudgetStore` (no check-then-act race, also across replicas with the Redis store), settles the
 * reservation with the real usage after the call, and releases it when the call fails or is
 * interrupted. A request that does not fit fails with `BudgetExceeded` (which budget, when it
 * resets). When a budget's counter reaches a soft threshold (default 80%), one `budget_threshold`
 * alert per budget window goes to the `AlertSink` in context (if any). Windows are calendar days
 * and months in UTC, read from the `Clock`. It does not rate-limit: see `RateLimit` for that.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import { type Alert, AlertSink } from "./AlertSink.ts"
import { type ChatRequest, estimatePromptTokens, maxOutputTokens, type Usage } from "./ChatCompletion.ts"
import { tracing } from "./internal/tracing.ts"
import type { Identity } from "./RateLimit.ts"
import type { StoreUnavailable } from "./StoreUnavailable.ts"

// =============================================================================
// Options
// =============================================================================

/**
 * A model's prices, per million tokens, in the currency the cost budgets use.
 *
 * @category options
 * @since 0.1.0
 */
export interface Price {
  readonly input: number
  readonly output: number
}

/**
 * Prices by model name: an upstream model (what answered, e.g. `gpt-4o-mini`) or a public model
 * (what the client asked for).
 *
 * @category options
 * @since 0.1.0
 */
export type Prices = { readonly [model: string]: Price }

/**
 * One budget: tokens and/or cost per calendar day or month (UTC).
 *
 * @category options
 * @since 0.1.0
 */
export interface Rule {
  /**
   * The API key (by name) this budget is for. Leave it out for the default: every key without a
   * budget of its own gets its own budget of this size.
   */
  readonly key?: string | undefined
  readonly per: "day" | "month"
  /** Tokens (prompt + completion) per window. */
  readonly tokens?: number | undefined
  /** Cost per window, in the price table's currency. */
  readonly cost?: number | undefined
}

/**
 * @category options
 * @since 0.1.0
 */
export interface Options {
  readonly budgets: ReadonlyArray<Rule>
  readonly prices?: Prices | undefined
  /**
   * The upstream models each public model may be answered by (its fallback chain). A request's
   * estimate is priced at the most expensive of the public model and these; without an entry, at the
   * public model's own price; a model with no price at all is priced at the most expensive in the table.
   */
  readonly chains?: { readonly [publicModel: string]: ReadonlyArray<string> } | undefined
  /** Output tokens assumed when a request sets no `max_tokens` (default 1024). */
  readonly defaultMaxTokens?: number | undefined
  /** Fractions of a budget that raise a `budget_threshold` alert, once per window each (default `[0.8]`). */
  readonly thresholds?: ReadonlyArray<number> | undefined
  /** How long an alert sink may take before it is abandoned (default 5 seconds). */
  readonly alertTimeout?: Duration.Input | undefined
}

// =============================================================================
// Errors
// =============================================================================

/**
 * The request does not fit in one of its key's budgets (the gateway answers 429 with `Retry-After`).
 *
 * @category errors
 * @since 0.1.0
 */
export class BudgetExceeded extends Schema.TaggedError<BudgetExceeded>()("BudgetExceeded", {
  /** Which budget, e.g. `tokens per day for key team-a`. */
  budget: Schema.String,
  /** When its window resets, epoch milliseconds. */
  resetsAt: Schema.Number,
  /** The time until then. */
  retryAfter: Schema.Duration
}) {
  override get message(): string {
    return `budget exhausted: ${this.budget}; it resets at ${new Date(this.resetsAt).toISOString()} (in ${Math.ceil(Duration.toSeconds(this.retryAfter))}s)`
  }
}

// =============================================================================
// Store
// =============================================================================

/**
 * One counter a reservation adds to, if it stays within `limit`.
 *
 * @category models
 * @since 0.1.0
 */
export interface Charge {
  readonly key: string
  readonly amount: number
  readonly limit: number
  /** How long a counter created now lives (it outlives its window by a minute). */
  readonly timeToLive: Duration.Duration
}

/**
 * What a store says about a reservation: every counter took its amount (`recorded: false` when a
 * failing store admitted it without counting, its `fail-open` policy), or the counter at `index`
 * would go over its limit and nothing was added.
 *
 * @category models
 * @since 0.1.0
 */
export type ReserveResult =
  | { readonly _tag: "Reserved"; readonly recorded: boolean }
  | { readonly _tag: "Exceeded"; readonly index: number; readonly used: number }

/**
 * The counters behind budgets: memory in one process, Redis across replicas.
 *
 * **Details**
 *
 * - `reserve` checks every charge and adds them all, or none, in one atomic step.
 * - `adjust` adds a (possibly negative) delta to each counter that still exists and returns the
 *   new totals (`undefined` for a counter that expired: it is not recreated).
 * - `used` reads counters (0 when missing).
 * - `claim` is true for the first caller only, until the key expires (one alert per window).
 *
 * @category services
 * @since 0.1.0
 */
export class BudgetStore extends Context.Service<
  BudgetStore,
  {
    readonly reserve: (charges: ReadonlyArray<Charge>) => Effect.Effect<ReserveResult, StoreUnavailable>
    readonly adjust: (
      adjustments: ReadonlyArray<{ readonly key: string; readonly delta: number }>
    ) => Effect.Effect<ReadonlyArray<number | undefined>, StoreUnavailable>
    readonly used: (keys: ReadonlyArray<string>) => Effect.Effect<ReadonlyArray<number>, StoreUnavailable>
    readonly claim: (key: string, timeToLive: Duration.Duration) => Effect.Effect<boolean, StoreUnavailable>
  }
>()("@roadcar/core/BudgetStore") {}

// How many entries each in-process store holds (for tests of its bound).
const memoryStoreSizes = new WeakMap<BudgetStore["Service"], () => number>()

/**
 * How many counters an in-process budget store holds (`undefined` for other stores).
 *
 * @internal
 */
export const memoryStoreSize = (store: BudgetStore["Service"]): number | undefined => memoryStoreSizes.get(store)?.()

// Expired counters are dropped when read, and all at once at most this often: every key's counters of a
// past window (its day or month) are never read again.
const sweepEveryMs = 60_000

/**
 * Builds an in-process budget store: counters expire with the `Clock`; expired ones are dropped when
 * read and swept once a minute, on a call (no background fiber).
 *
 * @category constructors
 * @since 0.1.0
 */
export const makeStoreMemory: Effect.Effect<BudgetStore["Service"]> = Effect.sync(() => {
  const counters = new Map<string, { value: number; readonly expiresAt: number }>()
  let nextSweep = 0
  const live = (key: string, now: number) => {
    const found = counters.get(key)
    if (found === undefined) return undefined
    if (found.expiresAt <= now) {
      counters.delete(key)
      return undefined
    }
    return found
  }
  const withNow = <A>(f: (now: number) => A): Effect.Effect<A> =>
    Effect.withFiber((fiber) => {
      const now = fiber.getRef(Clock.Clock).currentTimeMillisUnsafe()
      if (now >= nextSweep) {
        nextSweep = now + sweepEveryMs
        for (const [key, counter] of counters) if (counter.expiresAt <= now) counters.delete(key)
      }
      return Effect.succeed(f(now))
    })
  const store = BudgetStore.of({
    reserve: (charges) =>
      withNow((now): ReserveResult => {
        for (let index = 0; index < charges.length; index++) {
          const charge = charges[index]!
          const used = live(charge.key, now)?.value ?? 0
          if (used + charge.amount > charge.limit) return { _tag: "Exceeded", index, used }
        }
        for (const charge of charges) {
          const found = live(charge.key, now)
          if (found) found.value += charge.amount
          else counters.set(charge.key, { value: charge.amount, expiresAt: now + Duration.toMillis(charge.timeToLive) })
        }
        return { _tag: "Reserved", recorded: true }
      }),
    adjust: (adjustments) =>
      withNow((now) =>
        adjustments.map(({ key, delta }) => {
          const found = live(key, now)
          if (found === undefined) return undefined
          found.value += delta
          return found.value
        })
      ),
    used: (keys) => withNow((now) => keys.map((key) => live(key, now)?.value ?? 0)),
    claim: (key, timeToLive) =>
      withNow((now) => {
        if (live(key, now)) return false
        counters.set(key, { value: 1, expiresAt: now + Duration.toMillis(timeToLive) })
        return true
      })
  })
  memoryStoreSizes.set(store, () => counters.size)
  return store
})

/**
 * The in-process budget store: budgets are per process.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerStoreMemory: Layer.Layer<BudgetStore> = Layer.effect(BudgetStore, makeStoreMemory)

// =============================================================================
// Service
// =============================================================================

/**
 * One budget counter a reservation took from.
 *
 * @category models
 * @since 0.1.0
 */
export interface Counter {
  /** The store key: the budget and its window. */
  readonly key: string
  /** e.g. `tokens per day for key team-a`. */
  readonly budget: string
  /** The API key's name. */
  readonly apiKey: string
  readonly kind: "tokens" | "cost"
  readonly per: "day" | "month"
  /** Tokens, or cost in millionths of the currency. */
  readonly limit: number
  /** What the reservation took (same unit). */
  readonly amount: number
  readonly resetsAt: number
  readonly timeToLive: Duration.Duration
}

/**
 * What `reserve` took, to be settled once the answer's usage is known.
 *
 * @category models
 * @since 0.1.0
 */
export interface Reservation {
  /** Empty when no budget applies, or when a failing store admitted the request unrecorded. */
  readonly counters: ReadonlyArray<Counter>
  /** The price the estimate used (also used to settle when the answering model has no price). */
  readonly price: Price | undefined
  readonly estimatedTokens: number
}

/**
 * A budget's state in its current window.
 *
 * @category models
 * @since 0.1.0
 */
export interface Status {
  readonly budget: string
  readonly kind: "tokens" | "cost"
  readonly per: "day" | "month"
  /** Tokens, or cost in the price table's currency (in-flight reservations included). */
  readonly used: number
  readonly limit: number
  readonly resetsAt: number
}

/**
 * The budget service.
 *
 * @category services
 * @since 0.1.0
 */
export class Budget extends Context.Service<
  Budget,
  {
    /** Reserves the request's estimate against every budget of its key, atomically. */
    readonly reserve: (
      request: ChatRequest,
      identity: Identity
    ) => Effect.Effect<Reservation, BudgetExceeded | StoreUnavailable>
    /**
     * Settles a reservation with the real usage (`undefined`: the call failed or was interrupted,
     * release it all), priced at the answering model's price when the table has one: `answeredModel`
     * is its name, or its names in order (the name the upstream reported, e.g. a dated version, then
     * the model the upstream was configured to ask for); without a price, at the estimate's.
     */
    readonly settle: (
      reservation: Reservation,
      usage: Usage | undefined,
      answeredModel?: string | ReadonlyArray<string> | undefined
    ) => Effect.Effect<void>
    /** The state of every budget of an API key in its current window. */
    readonly status: (apiKey: string) => Effect.Effect<ReadonlyArray<Status>, StoreUnavailable>
  }
>()("@roadcar/core/Budget") {}

// =============================================================================
// Internals
// =============================================================================

const millionths = 1_000_000
// Counters outlive their window by this much, so late settlements still find them.
const grace = 60_000

/**
 * The calendar window (UTC) that contains `now`: its id, start and end (epoch ms).
 *
 * @category constructors
 * @since 0.1.0
 */
export const windowOf = (
  per: "day" | "month",
  now: number
): { readonly id: string; readonly start: number; readonly end: number } => {
  const date = new Date(now)
  const year = date.getUTCFullYear()
  const month = date.getUTCMonth()
  if (per === "month") {
    const start = Date.UTC(year, month, 1)
    return { id: new Date(start).toISOString().slice(0, 7), start, end: Date.UTC(year, month + 1, 1) }
  }
  const day = date.getUTCDate()
  const start = Date.UTC(year, month, day)
  return { id: new Date(start).toISOString().slice(0, 10), start, end: Date.UTC(year, month, day + 1) }
}

/**
 * The cost of some tokens at a price, in millionths of the currency, rounded up.
 *
 * @example
 * ```ts
 * import { Budget } from "@roadcar/core"
 * Budget.costMillionths({ input: 0.15, output: 0.6 }, 1000, 500) // => 450 (0.00045 in the currency)
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const costMillionths = (price: Price, inputTokens: number, outputTokens: number): number =>
  // Rounded to 1/1000 first, so float noise (0.15 * 1000 = 150.00000000000003) does not round up.
  Math.ceil(Math.round((price.input * inputTokens + price.output * outputTokens) * 1000) / 1000)

const encode = (value: string) => encodeURIComponent(value)

// =============================================================================
// Constructor
// =============================================================================

/**
 * Builds the budget service on the `BudgetStore` in context; alerts go to the `AlertSink` in
 * context when there is one (otherwise they are only logged).
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = Effect.fnUntraced(function* (options: Options) {
  const store = yield* BudgetStore
  const sink = yield* Effect.serviceOption(AlertSink)
  const scope = yield* Effect.scope
  // A map, not the record: a model named like an object's own property (`constructor`, `toString`)
  // must find no price rather than a function (which would price every request at NaN).
  const prices = new Map(Object.entries(options.prices ?? {}))
  const priced = [...prices.values()]
  const chains = new Map(Object.entries(options.chains ?? {}))
  const defaultMaxTokens = options.defaultMaxTokens ?? 1024
  const thresholds = [...(options.thresholds ?? [0.8])].filter((t) => t > 0).sort((a, b) => a - b)
  const alertTimeout = Duration.fromInputUnsafe(options.alertTimeout ?? "5 seconds")

  // The price an estimate uses: the most expensive candidate for this request.
  const estimatePrice = (model: string, input: number, output: number): Price | undefined => {
    const own = [model, ...(chains.get(model) ?? [])].flatMap((name) => {
      const price = prices.get(name)
      return price ? [price] : []
    })
    const candidates = own.length > 0 ? own : priced
    let best: Price | undefined
    let bestCost = -1
    for (const price of candidates) {
      const cost = costMillionths(price, input, output)
      if (cost > bestCost) {
        best = price
        bestCost = cost
      }
    }
    return best
  }

  // Keys with budgets of their own (they replace the every-key budgets for that key).
  const ownKeys: ReadonlySet<string> = new Set(
    options.budgets.flatMap((rule) => (rule.key === undefined ? [] : [rule.key]))
  )
  // The current day and month, computed again only when `now` leaves them.
  const windows: Partial<Record<"day" | "month", ReturnType<typeof windowOf>>> = {}
  const currentWindow = (per: "day" | "month", now: number) => {
    const known = windows[per]
    if (known !== undefined && now >= known.start && now < known.end) return known
    const window = windowOf(per, now)
    windows[per] = window
    return window
  }

  const countersFor = (apiKey: string, now: number, tokens: number, cost: number): Array<Counter> => {
    const counters: Array<Counter> = []
    const hasOwn = ownKeys.has(apiKey)
    for (const rule of options.budgets) {
      if (rule.key === undefined ? hasOwn : rule.key !== apiKey) continue
      const window = currentWindow(rule.per, now)
      const scopeName = rule.key === undefined ? "every-key" : "own"
      const base = `budget:{${encode(apiKey)}}:${scopeName}:${rule.per}:${window.id}`
      const timeToLive = Duration.millis(Math.max(1, window.end - now) + grace)
      const common = { apiKey, per: rule.per, resetsAt: window.end, timeToLive }
      if (rule.tokens !== undefined) {
        counters.push({
          ...common,
          key: `${base}:tokens`,
          budget: `tokens per ${rule.per} for key ${apiKey}`,
          kind: "tokens",
          limit: Math.floor(rule.tokens),
          amount: tokens
        })
      }
      if (rule.cost !== undefined) {
        counters.push({
          ...common,
          key: `${base}:cost`,
          budget: `cost per ${rule.per} for key ${apiKey}`,
          kind: "cost",
          limit: Math.round(rule.cost * millionths),
          amount: cost
        })
      }
    }
    return counters
  }

  // One step on the way in (plain code around the store's call), a span only when traced.
  const reserve = (
    request: ChatRequest,
    identity: Identity
  ): Effect.Effect<Reservation, BudgetExceeded | StoreUnavailable> =>
    Effect.withFiber((fiber) => {
      const prompt = estimatePromptTokens(request)
      const output = maxOutputTokens(request) ?? defaultMaxTokens
      const price = estimatePrice(request.model, prompt, output)
      const estimatedTokens = prompt + output
      const apiKey = identity.key
      if (apiKey === undefined) return Effect.succeed<Reservation>({ counters: [], price, estimatedTokens })
      const now = fiber.getRef(Clock.Clock).currentTimeMillisUnsafe()
      const cost = price ? costMillionths(price, prompt, output) : 0
      const counters = countersFor(apiKey, now, estimatedTokens, cost)
      if (counters.length === 0) return Effect.succeed<Reservation>({ counters, price, estimatedTokens })
      const reserved = Effect.flatMap(store.reserve(counters), (result): Effect.Effect<Reservation, BudgetExceeded> => {
        if (result._tag === "Reserved") {
          return Effect.succeed({ counters: result.recorded ? counters : [], price, estimatedTokens })
        }
        const counter = counters[result.index] ?? counters[0]!
        return Effect.fail(
          new BudgetExceeded({
            budget: counter.budget,
            resetsAt: counter.resetsAt,
            retryAfter: Duration.millis(Math.max(0, counter.resetsAt - now))
          })
        )
      })
      return tracing(fiber)
        ? reserved.pipe(Effect.withSpan("Budget.reserve", undefined, { captureStackTrace: false }))
        : reserved
    })

  const describe = (counter: Counter, value: number) =>
    counter.kind === "tokens" ? `${value} tokens` : `${(value / millionths).toFixed(4)} in cost`

  const alert = (counter: Counter, total: number, threshold: number, now: number): Alert => ({
    _tag: "Raised",
    rule: "budget_threshold",
    subject: counter.apiKey,
    message: `Budget ${counter.budget} is at ${Math.floor((total / counter.limit) * 100)}% (${describe(counter, total)} of ${describe(counter, counter.limit)}), past ${Math.round(threshold * 100)}%; it resets at ${new Date(counter.resetsAt).toISOString()}.`,
    figures: {
      used: counter.kind === "tokens" ? total : total / millionths,
      limit: counter.kind === "tokens" ? counter.limit : counter.limit / millionths,
      fraction: total / counter.limit,
      threshold,
      resetsAt: counter.resetsAt
    },
    exampleTraceIds: [],
    at: now
  })

  // Raises each threshold a counter has reached, once per window across every replica.
  const checkThresholds = (counter: Counter, total: number) =>
    Effect.forEach(
      thresholds.filter((threshold) => counter.limit > 0 && total >= threshold * counter.limit),
      (threshold) =>
        Effect.gen(function* () {
          const first = yield* store.claim(`${counter.key}:alert:${threshold}`, counter.timeToLive)
          if (!first) return
          const raised = alert(counter, total, threshold, yield* Clock.currentTimeMillis)
          // The sink decides what is logged (its log sink writes the alert, once); without one, a line here.
          if (Option.isNone(sink)) {
            yield* Effect.logWarning(raised.message).pipe(
              Effect.annotateLogs({ "alert.rule": raised.rule, "alert.subject": raised.subject })
            )
          } else {
            yield* sink.value.send(raised).pipe(
              Effect.timeout(alertTimeout),
              Effect.catchCause((cause) => Effect.logWarning("Budget: the alert sink failed or timed out", cause)),
              Effect.forkIn(scope)
            )
          }
        }),
      { discard: true }
    )

  // The thresholds `total` has reached on `counter` (none on almost every request: plain code first).
  const reached = (counter: Counter, total: number): ReadonlyArray<number> =>
    counter.limit > 0 && thresholds.length > 0 && total >= thresholds[0]! * counter.limit
      ? thresholds.filter((threshold) => total >= threshold * counter.limit)
      : []

  const checkAll = (counters: ReadonlyArray<Counter>, totals: ReadonlyMap<string, number | undefined>) => {
    const due: Array<readonly [Counter, number, ReadonlyArray<number>]> = []
    for (const counter of counters) {
      const total = totals.get(counter.key)
      if (total === undefined) continue
      const hit = reached(counter, total)
      if (hit.length > 0) due.push([counter, total, hit])
    }
    return due.length === 0
      ? Effect.void
      : Effect.forEach(due, ([counter, total]) => checkThresholds(counter, total), { discard: true })
  }

  // The price of the first of the answering model's names the table knows.
  const priceOf = (names: string | ReadonlyArray<string> | undefined): Price | undefined => {
    for (const name of typeof names === "string" ? [names] : (names ?? [])) {
      const price = prices.get(name)
      if (price !== undefined) return price
    }
    return undefined
  }

  // The settlement: deltas computed in plain code, one store call when a count changed, the threshold
  // check only when a counter reached one; a span only when traced.
  const settle = (
    reservation: Reservation,
    usage: Usage | undefined,
    answeredModel?: string | ReadonlyArray<string> | undefined
  ): Effect.Effect<void> => {
    if (reservation.counters.length === 0) return Effect.void
    return Effect.withFiber((fiber) => {
      const price = priceOf(answeredModel) ?? reservation.price
      const actualCost = usage && price ? costMillionths(price, usage.prompt_tokens, usage.completion_tokens) : 0
      const changed: Array<{ readonly key: string; readonly delta: number }> = []
      const unchanged: Array<string> = []
      for (const counter of reservation.counters) {
        const actual = usage === undefined ? 0 : counter.kind === "tokens" ? usage.total_tokens : actualCost
        const delta = actual - counter.amount
        if (delta !== 0) changed.push({ key: counter.key, delta })
        else unchanged.push(counter.key)
      }
      const check = usage !== undefined && thresholds.length > 0
      if (changed.length === 0 && !check) return Effect.void
      const adjusted = changed.length === 0 ? Effect.succeed([]) : store.adjust(changed)
      let settled: Effect.Effect<void, StoreUnavailable> = Effect.asVoid(adjusted)
      if (check) {
        // The new totals: adjusted counters report theirs, the others are read.
        settled = Effect.flatMap(adjusted, (totals) => {
          const byKey = new Map<string, number | undefined>(changed.map((d, index) => [d.key, totals[index]]))
          if (unchanged.length === 0) return checkAll(reservation.counters, byKey)
          return Effect.flatMap(store.used(unchanged), (read) => {
            for (const [index, key] of unchanged.entries()) byKey.set(key, read[index])
            return checkAll(reservation.counters, byKey)
          })
        })
      }
      const guarded = Effect.uninterruptible(
        Effect.catchTag(settled, "StoreUnavailable", (error) =>
          Effect.logWarning(`Budget: a reservation could not be settled (${error.detail})`)
        )
      )
      return tracing(fiber)
        ? guarded.pipe(Effect.withSpan("Budget.settle", undefined, { captureStackTrace: false }))
        : guarded
    })
  }

  const status = (apiKey: string) =>
    Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      const counters = countersFor(apiKey, now, 0, 0)
      const used = yield* store.used(counters.map((counter) => counter.key))
      return counters.map((counter, index): Status => {
        const value = used[index] ?? 0
        return {
          budget: counter.budget,
          kind: counter.kind,
          per: counter.per,
          used: counter.kind === "tokens" ? value : value / millionths,
          limit: counter.kind === "tokens" ? counter.limit : counter.limit / millionths,
          resetsAt: counter.resetsAt
        }
      })
    })

  return Budget.of({ reserve, settle, status })
})

/**
 * Runs `self` inside a reservation: reserves before it, settles with the usage `usageOf` reads from
 * its result, and releases the reservation when it fails or is interrupted.
 *
 * **Example** (Guarding a call)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { Budget, ChatCompletion } from "@roadcar/core"
 *
 * declare const call: Effect.Effect<ChatCompletion.ChatResponse>
 * const request: ChatCompletion.ChatRequest = { model: "chat", messages: [{ role: "user", content: "hi" }] }
 * const guarded = Budget.withBudget(call, {
 *   request,
 *   identity: { key: "team-a" },
 *   usageOf: (response) => ({ usage: response.usage, answeredModel: response.model })
 * })
 * ```
 *
 * @category combinators
 * @since 0.1.0
 */
export const withBudget = <A, E, R>(
  self: Effect.Effect<A, E, R>,
  options: {
    readonly request: ChatRequest
    readonly identity: Identity
    readonly usageOf: (value: A) => { readonly usage: Usage | undefined; readonly answeredModel?: string | undefined }
  }
): Effect.Effect<A, E | BudgetExceeded | StoreUnavailable, R | Budget> =>
  Budget.use((budget) =>
    Effect.acquireUseRelease(
      budget.reserve(options.request, options.identity),
      () => self,
      (reservation, exit) => {
        if (Exit.isFailure(exit)) return budget.settle(reservation, undefined)
        const { usage, answeredModel } = options.usageOf(exit.value)
        return budget.settle(reservation, usage, answeredModel)
      }
    )
  )

/**
 * The budget layer (needs a `BudgetStore`; uses the `AlertSink` in context when provided).
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (options: Options): Layer.Layer<Budget, never, BudgetStore> => Layer.effect(Budget, make(options))

/**
 * The budget with an in-process store: budgets are per process.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerMemory = (options: Options): Layer.Layer<Budget> =>
  layer(options).pipe(Layer.provide(layerStoreMemory))
