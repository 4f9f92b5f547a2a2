/**
 * Watches every request of the pipeline and raises alerts when something goes wrong.
 *
 * The pipeline tells the `Monitor` when a request starts and finishes, and when an upstream's circuit
 * breaker opens or closes. The monitor checks six rules (slow requests, hanging requests, error rate,
 * fallback rate, open breakers, upstream 429s), raises an `Alert` at most once per cool-down for each
 * rule and subject, and resolves it once when the condition clears. Alerts go to the `AlertSink` on a
 * background fiber and to the `alerts` stream. Recording a request is a few arithmetic operations on
 * fixed-size bucketed counters; the monitor never fails, blocks or slows a request, and it keeps no
 * list of requests except those in flight. It emits no metrics or spans itself.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as PubSub from "effect/PubSub"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { type Alert, AlertSink, type Rule } from "./AlertSink.ts"

// =============================================================================
// Models
// =============================================================================

/**
 * How one request ended, as the pipeline reports it to {@link Monitor}.
 *
 * **Details**
 *
 * - `model` is the public model name the client asked for; most rules are per model.
 * - `upstream` is the deployment that answered, `undefined` when none did.
 * - `outcome`: `"fallback"` and `"static"` both count as fallbacks; `"rejected"` (our own rate limit)
 *   counts in no rate, since it says nothing about the upstreams.
 * - `upstreamRateLimited` is the number of upstream 429 responses seen while serving the request.
 *
 * @category models
 * @since 0.1.0
 */
export interface RequestOutcome {
  readonly requestId: string
  readonly model: string
  readonly upstream: string | undefined
  readonly outcome: "success" | "fallback" | "static" | "error" | "rejected"
  readonly latencyMs: number
  readonly upstreamRateLimited: number
  readonly traceId?: string | undefined
}

/**
 * Thresholds of the monitor. Every field is optional; `false` turns a rule off.
 *
 * **Details**
 *
 * | field | default | meaning |
 * | --- | --- | --- |
 * | `windowMs` | 60 000 | sliding window of the rate and count rules (counted in 60 buckets) |
 * | `coolDownMs` | 300 000 | a rule raises at most once per cool-down for the same subject |
 * | `checkIntervalMs` | 1 000 | how often hanging requests and sliding windows are re-checked |
 * | `slowMs` | 10 000 | `slow_request` when a finished request took longer |
 * | `hangingMs` | 60 000 | `hanging_request` when a request is in flight longer |
 * | `errorRate` | 0.2 | `error_rate` when errors / requests in the window is above it |
 * | `fallbackRate` | 0.3 | `fallback_rate` when (fallback + static) / requests is above it |
 * | `minimumRequests` | 20 | both rates hold only with at least this many requests in the window |
 * | `breakerOpen` | true | `breaker_open` while an upstream's breaker is open |
 * | `upstreamRateLimited` | 10 | `upstream_rate_limited` when upstream 429s in the window are above it |
 * | `sinkTimeoutMs` | 10 000 | a sink call that takes longer is abandoned and logged |
 * | `maxSubjects` | 1 000 | models and upstreams tracked; further ones share the subject `"(other)"` |
 * | `maxInFlight` | 100 000 | requests tracked for hanging detection; the oldest are forgotten |
 * | `exampleTraceIds` | 3 | trace ids kept per rule and subject for the alerts |
 *
 * A window is counted in 60 buckets of `windowMs / 60`, so an outcome leaves it between
 * `windowMs * 59 / 60` and `windowMs` after it was recorded.
 *
 * @category options
 * @since 0.1.0
 */
export interface Options {
  readonly windowMs?: number | undefined
  readonly coolDownMs?: number | undefined
  readonly checkIntervalMs?: number | undefined
  readonly slowMs?: number | false | undefined
  readonly hangingMs?: number | false | undefined
  readonly errorRate?: number | false | undefined
  readonly fallbackRate?: number | false | undefined
  readonly minimumRequests?: number | undefined
  readonly breakerOpen?: boolean | undefined
  readonly upstreamRateLimited?: number | false | undefined
  readonly sinkTimeoutMs?: number | undefined
  readonly maxSubjects?: number | undefined
  readonly maxInFlight?: number | undefined
  readonly exampleTraceIds?: number | undefined
}

/**
 * The monitor service.
 *
 * **Details**
 *
 * - `requestStarted` / `requestFinished` are called by the pipeline for every request; both are
 *   O(1) and never fail. A request finished without being started is still counted.
 * - `breakerOpened` / `breakerClosed` report an upstream's circuit breaker transitions.
 * - `alerts` is every alert raised or resolved from the moment the stream is subscribed to; a
 *   subscriber more than 1 024 alerts behind misses the newest ones.
 *
 * @category services
 * @since 0.1.0
 */
export class Monitor extends Context.Service<
  Monitor,
  {
    readonly requestStarted: (requestId: string, model: string, traceId?: string | undefined) => Effect.Effect<void>
    readonly requestFinished: (outcome: RequestOutcome) => Effect.Effect<void>
    readonly breakerOpened: (upstream: string) => Effect.Effect<void>
    readonly breakerClosed: (upstream: string) => Effect.Effect<void>
    readonly alerts: Stream.Stream<Alert>
  }
>()("@roadcar/core/Monitor") {}

/**
 * The subject that models and upstreams share once `maxSubjects` are tracked.
 *
 * @category models
 * @since 0.1.0
 */
export const overflowSubject = "(other)"

// =============================================================================
// Options
// =============================================================================

interface Settings {
  readonly windowMs: number
  readonly coolDownMs: number
  readonly checkIntervalMs: number
  readonly slowMs: number | undefined
  readonly hangingMs: number | undefined
  readonly errorRate: number | undefined
  readonly fallbackRate: number | undefined
  readonly minimumRequests: number
  readonly breakerOpen: boolean
  readonly upstreamRateLimited: number | undefined
  readonly sinkTimeoutMs: number
  readonly maxSubjects: number
  readonly maxInFlight: number
  readonly exampleTraceIds: number
}

const BUCKETS = 60
const QUEUE_CAPACITY = 1024

const positive = (name: string, value: number): string | undefined =>
  Number.isFinite(value) && value > 0 ? undefined : `${name} must be a finite number above 0, got ${value}`
const nonNegative = (name: string, value: number): string | undefined =>
  Number.isFinite(value) && value >= 0 ? undefined : `${name} must be a finite number of at least 0, got ${value}`
const share = (name: string, value: number): string | undefined =>
  Number.isFinite(value) && value >= 0 && value < 1 ? undefined : `${name} must be in [0, 1), got ${value}`
const integer = (name: string, value: number, minimum: number): string | undefined =>
  Number.isInteger(value) && value >= minimum ? undefined : `${name} must be an integer of at least ${minimum}`

const orOff = (value: number | false | undefined, fallback: number): number | undefined =>
  value === false ? undefined : (value ?? fallback)

const settings = (options: Options): Settings => ({
  windowMs: options.windowMs ?? 60_000,
  coolDownMs: options.coolDownMs ?? 300_000,
  checkIntervalMs: options.checkIntervalMs ?? 1_000,
  slowMs: orOff(options.slowMs, 10_000),
  hangingMs: orOff(options.hangingMs, 60_000),
  errorRate: orOff(options.errorRate, 0.2),
  fallbackRate: orOff(options.fallbackRate, 0.3),
  minimumRequests: options.minimumRequests ?? 20,
  breakerOpen: options.breakerOpen ?? true,
  upstreamRateLimited: orOff(options.upstreamRateLimited, 10),
  sinkTimeoutMs: options.sinkTimeoutMs ?? 10_000,
  maxSubjects: options.maxSubjects ?? 1_000,
  maxInFlight: options.maxInFlight ?? 100_000,
  exampleTraceIds: options.exampleTraceIds ?? 3
})

const problems = (s: Settings): ReadonlyArray<string> =>
  [
    positive("windowMs", s.windowMs),
    nonNegative("coolDownMs", s.coolDownMs),
    positive("checkIntervalMs", s.checkIntervalMs),
    s.slowMs === undefined ? undefined : nonNegative("slowMs", s.slowMs),
    s.hangingMs === undefined ? undefined : nonNegative("hangingMs", s.hangingMs),
    s.errorRate === undefined ? undefined : share("errorRate", s.errorRate),
    s.fallbackRate === undefined ? undefined : share("fallbackRate", s.fallbackRate),
    integer("minimumRequests", s.minimumRequests, 1),
    s.upstreamRateLimited === undefined ? undefined : nonNegative("upstreamRateLimited", s.upstreamRateLimited),
    positive("sinkTimeoutMs", s.sinkTimeoutMs),
    integer("maxSubjects", s.maxSubjects, 1),
    integer("maxInFlight", s.maxInFlight, 1),
    integer("exampleTraceIds", s.exampleTraceIds, 0)
  ].filter((problem): problem is string => problem !== undefined)

// =============================================================================
// Internal state: bucketed windows, trace rings, rule states
// =============================================================================

// Fields counted per model in its window.
const REQUESTS = 0 // finished requests that were not rejected
const ERRORS = 1
const FALLBACKS = 2 // "fallback" or "static"
const SLOW = 3
const RATE_LIMITED = 4 // upstream 429s
const REJECTED = 5
const FIELDS = 6

/** Counts over a sliding window, kept in a ring of `BUCKETS` fixed-size buckets. */
class BucketWindow {
  readonly totals = new Float64Array(FIELDS)
  private readonly counts = new Float64Array(BUCKETS * FIELDS)
  private readonly slowest = new Float64Array(BUCKETS)
  private lastBucket = Number.NEGATIVE_INFINITY
  private readonly bucketMs: number

  constructor(windowMs: number) {
    this.bucketMs = windowMs / BUCKETS
  }

  /** Drops the buckets that left the window by `now`: at most `BUCKETS` of them, O(1) amortised. */
  advance(now: number): void {
    const bucket = Math.floor(now / this.bucketMs)
    if (bucket <= this.lastBucket) return
    if (this.lastBucket !== Number.NEGATIVE_INFINITY) {
      const steps = Math.min(bucket - this.lastBucket, BUCKETS)
      for (let step = 1; step <= steps; step++) this.clear((this.lastBucket + step) % BUCKETS)
    }
    this.lastBucket = bucket
  }

  /** Adds `n` to `field` in the current bucket; call `advance(now)` first. */
  add(field: number, n: number): void {
    this.counts[this.slot() * FIELDS + field]! += n
    this.totals[field]! += n
  }

  /** Remembers a slow request's latency for the window's `slowestMs`. */
  noteSlow(latencyMs: number): void {
    const slot = this.slot()
    if (latencyMs > this.slowest[slot]!) this.slowest[slot] = latencyMs
  }

  /** The slowest slow request still in the window (rare path: scans the buckets). */
  slowestMs(): number {
    let max = 0
    for (let slot = 0; slot < BUCKETS; slot++) max = Math.max(max, this.slowest[slot]!)
    return max
  }

  isEmpty(): boolean {
    for (let field = 0; field < FIELDS; field++) if (this.totals[field] !== 0) return false
    return true
  }

  private slot(): number {
    const bucket = this.lastBucket === Number.NEGATIVE_INFINITY ? 0 : this.lastBucket
    return ((bucket % BUCKETS) + BUCKETS) % BUCKETS
  }

  private clear(rawSlot: number): void {
    const slot = ((rawSlot % BUCKETS) + BUCKETS) % BUCKETS
    const base = slot * FIELDS
    for (let field = 0; field < FIELDS; field++) {
      this.totals[field]! -= this.counts[base + field]!
      this.counts[base + field] = 0
    }
    this.slowest[slot] = 0
  }
}

/** The last few trace ids of one kind, with when they were seen. */
class TraceRing {
  private readonly ids: Array<string>
  private readonly seenAt: Float64Array
  private readonly capacity: number
  private next = 0
  private size = 0

  constructor(capacity: number) {
    this.capacity = capacity
    this.ids = new Array<string>(capacity)
    this.seenAt = new Float64Array(capacity)
  }

  push(traceId: string | undefined, now: number): void {
    if (traceId === undefined || this.capacity === 0) return
    this.ids[this.next] = traceId
    this.seenAt[this.next] = now
    this.next = (this.next + 1) % this.capacity
    if (this.size < this.capacity) this.size++
  }

  /** Most recent first, only those seen at or after `since`. */
  recent(since: number): ReadonlyArray<string> {
    const out: Array<string> = []
    for (let i = 1; i <= this.size; i++) {
      const index = (this.next - i + this.capacity) % this.capacity
      if (this.seenAt[index]! >= since) out.push(this.ids[index]!)
    }
    return out
  }
}

/** Deduplication state of one rule for one subject. */
class RuleState {
  firing = false
  lastRaisedAt = Number.NEGATIVE_INFINITY
}

interface InFlight {
  readonly state: ModelState
  readonly startedAt: number
  readonly traceId: string | undefined
}

class ModelState {
  readonly subject: string
  readonly window: BucketWindow
  readonly errorTraces: TraceRing
  readonly fallbackTraces: TraceRing
  readonly slowTraces: TraceRing
  readonly rateLimitTraces: TraceRing
  readonly slow = new RuleState()
  readonly hanging = new RuleState()
  readonly errorRate = new RuleState()
  readonly fallbackRate = new RuleState()
  readonly rateLimited = new RuleState()
  inFlight = 0
  hangingNow = 0
  oldestHangingMs = 0
  readonly hangingTraceIds: Array<string> = []

  constructor(subject: string, windowMs: number, traces: number) {
    this.subject = subject
    this.window = new BucketWindow(windowMs)
    this.errorTraces = new TraceRing(traces)
    this.fallbackTraces = new TraceRing(traces)
    this.slowTraces = new TraceRing(traces)
    this.rateLimitTraces = new TraceRing(traces)
  }

  rules(): ReadonlyArray<RuleState> {
    return [this.slow, this.hanging, this.errorRate, this.fallbackRate, this.rateLimited]
  }
}

class UpstreamState {
  readonly breaker = new RuleState()
  open = false
  openedAt = 0
  readonly subject: string

  constructor(subject: string) {
    this.subject = subject
  }
}

// =============================================================================
// Formatting (rare path only)
// =============================================================================

const round1 = (n: number): number => Math.round(n * 10) / 10
const formatMs = (ms: number): string =>
  ms < 1_000 ? `${Math.round(ms)}ms` : ms < 120_000 ? `${round1(ms / 1_000)}s` : `${round1(ms / 60_000)}min`
const formatShare = (rate: number): string => `${round1(rate * 100)}%`
const plural = (n: number, word: string): string => `${n} ${word}${n === 1 ? "" : "s"}`

// =============================================================================
// Constructors
// =============================================================================

/**
 * Builds a monitor that sends its alerts to the `AlertSink` in context.
 *
 * **Details**
 *
 * Forks two fibers in the current scope: one re-checks hanging requests and sliding windows every
 * `checkIntervalMs`, the other hands alerts to the sink one at a time, each bounded by
 * `sinkTimeoutMs`. A sink that fails or times out is logged at Warning; up to 1 024 alerts wait for
 * a slow sink, later ones are dropped (and counted in a log line). Invalid options are a defect
 * (`RangeError`).
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = (options: Options = {}): Effect.Effect<Monitor["Service"], never, AlertSink | Scope.Scope> =>
  Effect.gen(function* () {
    const s = settings(options)
    const invalid = problems(s)
    if (invalid.length > 0) return yield* Effect.die(new RangeError(`Monitor.make: ${invalid.join("; ")}`))

    const sink = yield* AlertSink
    const clock = yield* Clock.Clock
    const pubsub = yield* PubSub.sliding<Alert>(QUEUE_CAPACITY)
    const queue = yield* Queue.dropping<Alert>(QUEUE_CAPACITY)
    yield* Effect.addFinalizer(() => PubSub.shutdown(pubsub))
    let dropped = 0

    const models = new Map<string, ModelState>()
    const upstreams = new Map<string, UpstreamState>()
    const inFlight = new Map<string, InFlight>()

    // ---- emission -------------------------------------------------------------

    const emit = (alert: Alert): void => {
      PubSub.publishUnsafe(pubsub, alert)
      if (!Queue.offerUnsafe(queue, alert)) dropped++
    }

    const alert = (
      tag: Alert["_tag"],
      rule: Rule,
      subject: string,
      message: string,
      figures: Record<string, number>,
      exampleTraceIds: ReadonlyArray<string>,
      at: number
    ): void => emit({ _tag: tag, rule, subject, message, figures, exampleTraceIds, at })

    /** 1 = raise, -1 = resolve, 0 = nothing; updates the rule's state. O(1), no allocation. */
    const decide = (state: RuleState, holds: boolean, now: number): 1 | -1 | 0 => {
      if (holds) {
        if (now - state.lastRaisedAt < s.coolDownMs) return 0
        state.firing = true
        state.lastRaisedAt = now
        return 1
      }
      if (!state.firing) return 0
      state.firing = false
      return -1
    }

    // ---- subjects --------------------------------------------------------------

    const modelState = (model: string): ModelState => {
      let state = models.get(model)
      if (state === undefined) {
        const subject = models.size + upstreams.size >= s.maxSubjects ? overflowSubject : model
        state = models.get(subject)
        if (state === undefined) {
          state = new ModelState(subject, s.windowMs, s.exampleTraceIds)
          models.set(subject, state)
        }
      }
      return state
    }

    const upstreamState = (upstream: string): UpstreamState => {
      let state = upstreams.get(upstream)
      if (state === undefined) {
        const subject = models.size + upstreams.size >= s.maxSubjects ? overflowSubject : upstream
        state = upstreams.get(subject)
        if (state === undefined) {
          state = new UpstreamState(subject)
          upstreams.set(subject, state)
        }
      }
      return state
    }

    const settled = (rule: RuleState, now: number): boolean => !rule.firing && now - rule.lastRaisedAt >= s.coolDownMs

    /** Forgets subjects with nothing in their window, nothing in flight and no rule in its cool-down. */
    const evictIdle = (now: number): void => {
      for (const [key, state] of models) {
        if (state.inFlight === 0 && state.window.isEmpty() && state.rules().every((rule) => settled(rule, now))) {
          models.delete(key)
        }
      }
      for (const [key, state] of upstreams) {
        if (!state.open && settled(state.breaker, now)) upstreams.delete(key)
      }
    }

    // ---- rules -----------------------------------------------------------------

    const windowText = formatMs(s.windowMs)

    const checkSlow = (m: ModelState, now: number, latencyMs: number | undefined): void => {
      if (s.slowMs === undefined) return
      const count = m.window.totals[SLOW]!
      const decision = decide(m.slow, count > 0, now)
      if (decision === 0) return
      const threshold = formatMs(s.slowMs)
      const slowestMs = m.window.slowestMs()
      const figures: Record<string, number> = {
        slowRequests: count,
        slowestMs,
        thresholdMs: s.slowMs,
        windowMs: s.windowMs
      }
      if (latencyMs !== undefined) figures["latencyMs"] = latencyMs
      if (decision === 1) {
        alert(
          "Raised",
          "slow_request",
          m.subject,
          `Model ${m.subject}: ${plural(count, "request")} slower than ${threshold} in the last ${windowText} (slowest ${formatMs(slowestMs)}).`,
          figures,
          m.slowTraces.recent(now - s.windowMs),
          now
        )
      } else {
        alert(
          "Resolved",
          "slow_request",
          m.subject,
          `Model ${m.subject}: no request slower than ${threshold} in the last ${windowText}.`,
          figures,
          [],
          now
        )
      }
    }

    const checkRate = (
      m: ModelState,
      now: number,
      rule: "error_rate" | "fallback_rate",
      threshold: number | undefined
    ): void => {
      if (threshold === undefined) return
      const isError = rule === "error_rate"
      const requests = m.window.totals[REQUESTS]!
      const hits = m.window.totals[isError ? ERRORS : FALLBACKS]!
      const rate = requests === 0 ? 0 : hits / requests
      const decision = decide(
        isError ? m.errorRate : m.fallbackRate,
        requests >= s.minimumRequests && rate > threshold,
        now
      )
      if (decision === 0) return
      const noun = isError ? "error" : "fallback"
      const hitsName = isError ? "errors" : "fallbacks"
      const figures: Record<string, number> = {
        requests,
        [hitsName]: hits,
        [isError ? "errorRate" : "fallbackRate"]: rate,
        threshold,
        minimumRequests: s.minimumRequests,
        windowMs: s.windowMs
      }
      const detail = `${formatShare(rate)} (${hits} of ${plural(requests, "request")}) in the last ${windowText}`
      if (decision === 1) {
        alert(
          "Raised",
          rule,
          m.subject,
          `Model ${m.subject}: ${noun} rate ${detail}, above ${formatShare(threshold)}.`,
          figures,
          (isError ? m.errorTraces : m.fallbackTraces).recent(now - s.windowMs),
          now
        )
      } else {
        const why =
          requests < s.minimumRequests
            ? `fewer than ${s.minimumRequests} requests`
            : `not above ${formatShare(threshold)}`
        alert("Resolved", rule, m.subject, `Model ${m.subject}: ${noun} rate ${detail}, ${why}.`, figures, [], now)
      }
    }

    const checkRateLimited = (m: ModelState, now: number): void => {
      if (s.upstreamRateLimited === undefined) return
      const count = m.window.totals[RATE_LIMITED]!
      const decision = decide(m.rateLimited, count > s.upstreamRateLimited, now)
      if (decision === 0) return
      const figures = {
        upstreamRateLimited: count,
        threshold: s.upstreamRateLimited,
        requests: m.window.totals[REQUESTS]! + m.window.totals[REJECTED]!,
        windowMs: s.windowMs
      }
      const detail = `${plural(count, "upstream 429 response")} in the last ${windowText}`
      if (decision === 1) {
        alert(
          "Raised",
          "upstream_rate_limited",
          m.subject,
          `Model ${m.subject}: ${detail}, above ${s.upstreamRateLimited}.`,
          figures,
          m.rateLimitTraces.recent(now - s.windowMs),
          now
        )
      } else {
        alert(
          "Resolved",
          "upstream_rate_limited",
          m.subject,
          `Model ${m.subject}: ${detail}, not above ${s.upstreamRateLimited}.`,
          figures,
          [],
          now
        )
      }
    }

    const checkHanging = (m: ModelState, now: number): void => {
      if (s.hangingMs === undefined) return
      const decision = decide(m.hanging, m.hangingNow > 0, now)
      if (decision === 0) return
      const threshold = formatMs(s.hangingMs)
      const figures = {
        hangingRequests: m.hangingNow,
        oldestMs: m.oldestHangingMs,
        inFlight: m.inFlight,
        thresholdMs: s.hangingMs
      }
      if (decision === 1) {
        alert(
          "Raised",
          "hanging_request",
          m.subject,
          `Model ${m.subject}: ${plural(m.hangingNow, "request")} in flight for longer than ${threshold} (oldest ${formatMs(m.oldestHangingMs)}).`,
          figures,
          m.hangingTraceIds.slice(),
          now
        )
      } else {
        alert(
          "Resolved",
          "hanging_request",
          m.subject,
          `Model ${m.subject}: no request in flight for longer than ${threshold}.`,
          figures,
          [],
          now
        )
      }
    }

    const checkBreaker = (u: UpstreamState, now: number): void => {
      if (!s.breakerOpen) return
      const decision = decide(u.breaker, u.open, now)
      if (decision === 0) return
      const openForMs = now - u.openedAt
      if (decision === 1) {
        const since = openForMs > 0 ? ` for ${formatMs(openForMs)}` : ""
        alert(
          "Raised",
          "breaker_open",
          u.subject,
          `Upstream ${u.subject}: circuit breaker open${since}.`,
          { openForMs },
          [],
          now
        )
      } else {
        alert(
          "Resolved",
          "breaker_open",
          u.subject,
          `Upstream ${u.subject}: circuit breaker closed after ${formatMs(openForMs)}.`,
          { openForMs },
          [],
          now
        )
      }
    }

    const checkWindowRules = (m: ModelState, now: number, latencyMs: number | undefined): void => {
      checkSlow(m, now, latencyMs)
      checkRate(m, now, "error_rate", s.errorRate)
      checkRate(m, now, "fallback_rate", s.fallbackRate)
      checkRateLimited(m, now)
    }

    // ---- hot path ----------------------------------------------------------------

    const onStarted = (requestId: string, model: string, traceId: string | undefined, now: number): void => {
      const previous = inFlight.get(requestId)
      if (previous !== undefined) {
        previous.state.inFlight--
        inFlight.delete(requestId)
      }
      const state = modelState(model)
      state.inFlight++
      inFlight.set(requestId, { state, startedAt: now, traceId })
      if (inFlight.size > s.maxInFlight) {
        const oldest = inFlight.keys().next()
        if (!oldest.done) {
          inFlight.get(oldest.value)!.state.inFlight--
          inFlight.delete(oldest.value)
        }
      }
    }

    const onFinished = (outcome: RequestOutcome, now: number): void => {
      const started = inFlight.get(outcome.requestId)
      if (started !== undefined) {
        started.state.inFlight--
        inFlight.delete(outcome.requestId)
      }
      const m = modelState(outcome.model)
      const window = m.window
      window.advance(now)
      switch (outcome.outcome) {
        case "rejected":
          window.add(REJECTED, 1)
          break
        case "error":
          window.add(REQUESTS, 1)
          window.add(ERRORS, 1)
          m.errorTraces.push(outcome.traceId, now)
          break
        case "fallback":
        case "static":
          window.add(REQUESTS, 1)
          window.add(FALLBACKS, 1)
          m.fallbackTraces.push(outcome.traceId, now)
          break
        default:
          window.add(REQUESTS, 1)
      }
      const slow = s.slowMs !== undefined && outcome.latencyMs > s.slowMs
      if (slow) {
        window.add(SLOW, 1)
        window.noteSlow(outcome.latencyMs)
        m.slowTraces.push(outcome.traceId, now)
      }
      if (outcome.upstreamRateLimited > 0) {
        window.add(RATE_LIMITED, outcome.upstreamRateLimited)
        m.rateLimitTraces.push(outcome.traceId, now)
      }
      checkWindowRules(m, now, slow ? outcome.latencyMs : undefined)
    }

    const onBreaker = (upstream: string, open: boolean, now: number): void => {
      const u = upstreamState(upstream)
      if (open && !u.open) u.openedAt = now
      u.open = open
      checkBreaker(u, now)
    }

    // ---- periodic check ----------------------------------------------------------

    const findHanging = (now: number): void => {
      for (const m of models.values()) {
        m.hangingNow = 0
        m.oldestHangingMs = 0
        m.hangingTraceIds.length = 0
      }
      if (s.hangingMs === undefined) return
      // `inFlight` is in start order: stop at the first request that is not hanging yet.
      for (const request of inFlight.values()) {
        const age = now - request.startedAt
        if (age <= s.hangingMs) break
        const m = request.state
        if (m.hangingNow === 0) m.oldestHangingMs = age
        m.hangingNow++
        if (request.traceId !== undefined && m.hangingTraceIds.length < s.exampleTraceIds) {
          m.hangingTraceIds.push(request.traceId)
        }
      }
    }

    const check = (now: number): void => {
      findHanging(now)
      for (const m of models.values()) {
        m.window.advance(now)
        checkWindowRules(m, now, undefined)
        checkHanging(m, now)
      }
      for (const u of upstreams.values()) checkBreaker(u, now)
      evictIdle(now)
    }

    const now = (): number => clock.currentTimeMillisUnsafe()

    // A defect in one check is logged and the next check still runs.
    yield* Effect.sleep(s.checkIntervalMs).pipe(
      Effect.andThen(Effect.sync(() => check(now()))),
      Effect.catchCause((cause) => Effect.logError("Monitor: the periodic check failed", cause)),
      Effect.forever,
      Effect.forkScoped
    )

    // ---- delivery ----------------------------------------------------------------

    const deliver = (next: Alert): Effect.Effect<void> =>
      Effect.suspend(() => {
        const lost = dropped
        dropped = 0
        const reportDropped =
          lost === 0
            ? Effect.void
            : Effect.logWarning(`Monitor: ${plural(lost, "alert")} dropped, the alert sink is too slow`)
        return reportDropped.pipe(
          Effect.andThen(sink.send(next).pipe(Effect.timeout(s.sinkTimeoutMs))),
          Effect.catchCause((cause) =>
            Effect.logWarning("Monitor: the alert sink failed or timed out; the alert was not delivered", cause).pipe(
              Effect.annotateLogs({ "alert.state": next._tag, "alert.rule": next.rule, "alert.subject": next.subject })
            )
          )
        )
      })

    yield* Queue.take(queue).pipe(Effect.flatMap(deliver), Effect.forever, Effect.forkScoped)

    return Monitor.of({
      requestStarted: (requestId, model, traceId) => Effect.sync(() => onStarted(requestId, model, traceId, now())),
      requestFinished: (outcome) => Effect.sync(() => onFinished(outcome, now())),
      breakerOpened: (upstream) => Effect.sync(() => onBreaker(upstream, true, now())),
      breakerClosed: (upstream) => Effect.sync(() => onBreaker(upstream, false, now())),
      alerts: Stream.fromPubSub(pubsub)
    })
  })

/**
 * A monitor that records nothing and never alerts: every call is `Effect.void`.
 *
 * @category constructors
 * @since 0.1.0
 */
export const noop: Monitor["Service"] = Monitor.of({
  requestStarted: () => Effect.void,
  requestFinished: () => Effect.void,
  breakerOpened: () => Effect.void,
  breakerClosed: () => Effect.void,
  alerts: Stream.empty
})

// =============================================================================
// Layers
// =============================================================================

/**
 * Provides a {@link Monitor} with the given thresholds; its alerts go to the `AlertSink` in context.
 *
 * **Example** (Alert on a 10% error rate, log the alerts)
 *
 * ```ts
 * import { Layer } from "effect"
 * import { AlertSink, Monitor } from "@roadcar/core"
 *
 * const MonitorLive = Monitor.layer({ errorRate: 0.1, hangingMs: false }).pipe(Layer.provide(AlertSink.layerLog))
 * ```
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (options: Options = {}): Layer.Layer<Monitor, never, AlertSink> =>
  Layer.effect(Monitor, make(options))

/**
 * Provides the {@link noop} monitor: nothing is recorded, no fiber runs.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerNoop: Layer.Layer<Monitor> = Layer.succeed(Monitor, noop)
