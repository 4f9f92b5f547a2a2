/**
 * Assembles the stages into one production pipeline, in the standard order.
 *
 * Outermost first, every request goes through:
 *
 * ```text
 * rate limit                      RateLimit (optional service): admit, reserve tokens; settle after
 *  └─ cache                       ResponseCache (optional service): hit, or one shared call in flight
 *      └─ total deadline          Timeouts.total: nothing below runs past it
 *          └─ fallback chain      step 1, then step 2 when its condition matches, ...
 *              └─ breaker         Breaker: per upstream; open = fail fast to the next step
 *                  └─ retry       Retry.schedule: backoff + jitter, Retry-After, deadline-aware
 *                      └─ attempt timeout (JSON) / first-chunk + chunk-gap (streams)
 *                          └─ upstream
 *  └─ static answer               when configured: the last resort, after the deadline too
 * ```
 *
 * The request log line and the monitor observe the whole request. With a static answer configured,
 * the error channel holds no `UpstreamError`: `Pipeline<RateLimitRejected>` says the caller can only
 * see Roadcar's own rate limit, never an upstream failure.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Channel from "effect/Channel"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as LogLevel from "effect/LogLevel"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import { CurrentLoggers, CurrentStackFrame } from "effect/References"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Tracer from "effect/Tracer"
import * as Breaker from "./Breaker.ts"
import { Budget, type BudgetExceeded, type Reservation as BudgetReservation } from "./Budget.ts"
import {
  assembleChunks,
  type ChatChunk,
  type ChatRequest,
  type ChatResponse,
  usage as makeUsage,
  responseToChunks,
  type Usage
} from "./ChatCompletion.ts"
import { tracing } from "./internal/tracing.ts"
import * as Metrics from "./Metrics.ts"
import { Monitor } from "./Monitor.ts"
import { type Identity, RateLimit, type RateLimitRejected, type Reservation } from "./RateLimit.ts"
import { type Entry as CacheEntry, type Lookup as CacheLookup, ResponseCache } from "./ResponseCache.ts"
import * as Retry from "./Retry.ts"
import type { StoreUnavailable } from "./StoreUnavailable.ts"
import * as Timeouts from "./Timeouts.ts"
import type { Upstream } from "./Upstream.ts"
import { isUpstreamError, MalformedOutput, type ReasonTag, UpstreamError } from "./UpstreamError.ts"

// =============================================================================
// Options
// =============================================================================

/**
 * One step of the fallback chain: an upstream with its retry settings and its entry condition.
 *
 * @category options
 * @since 0.1.0
 */
export interface Step {
  readonly upstream: Upstream
  /** Overrides of the pipeline's retry settings for this step. */
  readonly retry?: Partial<Retry.Options> | undefined
  /**
   * Which failures of the previous step lead here (fallback steps only). Default: every reason but
   * `BadRequest` (a request the upstream found malformed fails the same way everywhere). Use
   * `["ContextLengthExceeded"]` for a larger-context model that only takes what did not fit.
   */
  readonly when?: ReadonlyArray<ReasonTag> | undefined
}

/**
 * The pipeline's options.
 *
 * @category options
 * @since 0.1.0
 */
export interface Options {
  /** The primary step first, then the fallbacks in order. */
  readonly steps: readonly [Step, ...Array<Step>]
  /** A graceful answer of last resort (assistant text) when every step failed; not cached. */
  readonly staticAnswer?: string | undefined
  /** The public model name this pipeline serves: the `model` label of its metrics (default `"default"`). */
  readonly name?: string | undefined
  /** Record prompts and completions on the attempt spans (`gen_ai.input.messages`, `gen_ai.output.messages`); off by default. */
  readonly recordContent?: boolean | undefined
  readonly retry?: Partial<Retry.Options> | undefined
  readonly timeouts?: Partial<Timeouts.Options> | undefined
}

/**
 * Everything a caller may tell about one request.
 *
 * @category options
 * @since 0.1.0
 */
export interface CallOptions extends Identity {
  /** An id for logs and headers; generated when missing. */
  readonly requestId?: string | undefined
}

// =============================================================================
// Answers
// =============================================================================

/**
 * What happened to a request: who answered, after how many attempts, from cache or by fallback.
 *
 * @category models
 * @since 0.1.0
 */
export interface AnswerMeta {
  readonly requestId: string
  /** The public model name asked for. */
  readonly model: string
  /** The upstream (deployment) that answered; `"static"` for the static answer. */
  readonly upstream: string
  /** The provider (`gen_ai.provider.name`) of that upstream. */
  readonly provider: string
  /** Upstream calls made for this request (0 for a cache hit). */
  readonly attempts: number
  /** Time spent waiting on upstream calls (to the first chunk, for streams) and retry backoff, in ms. */
  readonly upstreamMs: number
  readonly cacheHit: boolean
  /** Set when a step other than the primary answered (or the static answer): why the primary did not. */
  readonly fallback: { readonly step: number; readonly reason: string; readonly reasonTag: ReasonTag } | undefined
  readonly static: boolean
}

/**
 * A complete answer.
 *
 * @category models
 * @since 0.1.0
 */
export interface Answer {
  readonly response: ChatResponse
  readonly meta: AnswerMeta
}

/**
 * A streamed answer, available once its first chunk arrived (retries and fallback happen before).
 * `chunks` replays that first chunk and continues; a failure after it is an `UpstreamError` in the
 * stream (the caller must not pass a cut answer off as complete).
 *
 * @category models
 * @since 0.1.0
 */
export interface StreamAnswer {
  readonly meta: AnswerMeta
  readonly chunks: Stream.Stream<ChatChunk, UpstreamError>
}

/**
 * The errors of a pipeline built from options `O`: Roadcar's own rate limit, and upstream failures
 * unless a static answer is configured.
 *
 * @category models
 * @since 0.1.0
 */
export type ErrorOf<O extends Options> = Refusal | (O extends { readonly staticAnswer: string } ? never : UpstreamError)

/**
 * Roadcar's own refusals, decided before any upstream is called: a rate limit, a budget, or a shared
 * store that is down under a fail-closed policy. They exist only when those stages are provided.
 *
 * @category models
 * @since 0.1.0
 */
export type Refusal = RateLimitRejected | BudgetExceeded | StoreUnavailable

const refusalTags: ReadonlySet<string> = new Set(["RateLimitRejected", "BudgetExceeded", "StoreUnavailable"])

/**
 * A pipeline.
 *
 * @category models
 * @since 0.1.0
 */
export interface Pipeline<E = Refusal | UpstreamError> {
  /** The upstreams of the chain, in order. */
  readonly upstreams: ReadonlyArray<Upstream>
  readonly complete: (request: ChatRequest, options?: CallOptions) => Effect.Effect<Answer, E>
  /** Opens a stream; the upstream connection lives in the caller's `Scope`. */
  readonly stream: (request: ChatRequest, options?: CallOptions) => Effect.Effect<StreamAnswer, E, Scope.Scope>
}

// =============================================================================
// Internals
// =============================================================================

// Mutable bookkeeping of one request, read by the log line and the monitor.
interface RequestState {
  readonly requestId: string
  readonly model: string
  readonly deadline: number
  attempts: number
  upstreamMs: number
  upstreamRateLimited: number
  step: number
  fallback: AnswerMeta["fallback"]
}

const defaultWhen = (tag: ReasonTag) => tag !== "BadRequest"

const staticUpstream = "static"

// Spans on the request path skip the stack trace capture (a `new Error()` per span).
const noStackTrace = (): string | undefined => undefined

// `Effect.withParentSpan(self, span)` without a stack trace, in one context change: the span
// becomes the parent span and its frame joins the stack frames together, where `withParentSpan` sets
// them one after the other (each change of either recomputes the fiber's cached references).
// Why it exists: the request path opens five spans, and this saves about a third of each one's cost.
const withParent = <A, E, R>(self: Effect.Effect<A, E, R>, span: Tracer.Span): Effect.Effect<A, E, R> =>
  Effect.updateContext(
    self,
    (context: Context.Context<R>): Context.Context<R> =>
      Context.add(Context.add(context, Tracer.ParentSpan, span), CurrentStackFrame, {
        name: span.name,
        stack: noStackTrace,
        parent: Context.get(context, CurrentStackFrame)
      }) as Context.Context<R>
  )

// `Effect.withSpan(self, name, options)` without a stack trace (see `withParent`), and only when
// the span would be seen (see `tracing`).
const withChildSpan = <A, E, R>(
  self: Effect.Effect<A, E, R>,
  name: string,
  options?: Tracer.SpanOptionsNoTrace
): Effect.Effect<A, E, R> =>
  Effect.withFiber((fiber) =>
    tracing(fiber) ? Effect.useSpan(name, options ?? {}, (span) => withParent(self, span)) : self
  )

let requestCounter = 0
const newRequestId = (): string => {
  requestCounter = (requestCounter + 1) % Number.MAX_SAFE_INTEGER
  return `req_${Date.now().toString(36)}${requestCounter.toString(36)}`
}

const staticResponse = (request: ChatRequest, content: string, now: number): ChatResponse => ({
  id: `chatcmpl-static-${now.toString(36)}`,
  object: "chat.completion",
  created: Math.floor(now / 1000),
  model: request.model,
  choices: [{ index: 0, message: { role: "assistant", content }, finish_reason: "stop" }],
  usage: makeUsage(0, 0)
})

// Whether a chunk carries part of the answer (not just the opening role).
const carriesAnswer = (chunk: ChatChunk): boolean =>
  chunk.choices.some(
    (choice) =>
      (choice.delta.content !== undefined && choice.delta.content !== null && choice.delta.content !== "") ||
      (choice.delta.tool_calls !== undefined && choice.delta.tool_calls.length > 0) ||
      (choice.delta.refusal !== undefined && choice.delta.refusal !== null) ||
      choice.finish_reason !== null
  ) ||
  (chunk.usage !== undefined && chunk.usage !== null)

// What a request reserved before its call, settled when it finishes.
interface Admission {
  rate?: Reservation
  budget?: BudgetReservation
}

// Why a stream whose reader stopped before its end is not a complete answer.
const closedEarly = () => new Error("the stream was closed before it was read to the end")

// What a request that did not finish still owes once its stream had begun: the usage it saw, or
// (`undefined`) its whole estimate; and the model that answered, for pricing.
interface Owed {
  readonly usage: Usage | undefined
  readonly answeredModel: string | undefined
  /** The upstream whose stream had begun. */
  readonly upstream: string
}

// What the log line and the monitor learn of a finished request.
interface Finished {
  readonly meta: AnswerMeta
  readonly usage: Usage | undefined
  readonly answeredModel: string | undefined
}

// An opened upstream stream: its first chunks, and the rest, in a scope the caller closes.
interface Opened {
  readonly head: ReadonlyArray<ChatChunk>
  readonly rest: Stream.Stream<ChatChunk, UpstreamError>
  /** When the attempt started (Clock millis): a stream's GenAI duration runs to its end. */
  readonly startedAt: number
}

// A request as it starts: its bookkeeping, and the monitor's notice that it started.
interface Begun {
  readonly state: RequestState
  readonly started: number
  readonly identity: Identity
  readonly announce: Effect.Effect<void>
}

// The GenAI metrics of an attempt that answered, for one upstream and answered model.
interface AnsweredMetrics {
  readonly duration: Metric.Metric<number, unknown>
  readonly input: Metric.Metric<number, unknown>
  readonly output: Metric.Metric<number, unknown>
}

// An upstream's attempt span name and metrics.
interface UpstreamLabels {
  readonly spanName: string
  readonly base: Record<string, string>
  readonly firstChunk: Metric.Metric<number, unknown>
  readonly byModel: Map<string, AnsweredMetrics>
  readonly byError: Map<string, Metric.Metric<number, unknown>>
}

// The span a fiber runs in, as `Effect.currentSpan` finds it (without its error when there is none).
const activeSpan = (fiber: Fiber.Fiber<unknown, unknown>): Tracer.Span | undefined => {
  const span = fiber.cache.span
  return span !== undefined && span._tag === "Span" ? span : undefined
}

// The cache entry of an answer.
const toEntry = (upstream: Upstream, response: ChatResponse): CacheEntry => ({
  response,
  upstream: upstream.name,
  cacheable: true
})

// =============================================================================
// Constructor
// =============================================================================

/**
 * Builds a pipeline from its options and the stage services in context.
 *
 * **Details**
 *
 * Needs `Breaker` and `Monitor`; uses `RateLimit` and `ResponseCache` when they are provided (leave
 * them out to turn those stages off). The error type follows the options: with `staticAnswer`, no
 * `UpstreamError` can reach the caller.
 *
 * @example
 * ```ts
 * import { Effect, Layer } from "effect"
 * import { Breaker, Monitor, Pipeline, Simulated } from "@roadcar/core"
 *
 * const program = Effect.gen(function*() {
 *   const primary = yield* Simulated.make({ name: "primary" })
 *   const pipeline = yield* Pipeline.make({ steps: [{ upstream: primary }], staticAnswer: "Please try again later." })
 *   const answer = yield* pipeline.complete({ model: "chat", messages: [{ role: "user", content: "hi" }] })
 *   return answer.meta.upstream
 * })
 * // pipeline: Pipeline<RateLimitRejected>, no UpstreamError
 * Effect.runPromise(program.pipe(Effect.scoped, Effect.provide(Layer.mergeAll(Breaker.layerMemory(), Monitor.layerNoop))))
 * // => "primary"
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = <const O extends Options>(
  options: O
): Effect.Effect<Pipeline<ErrorOf<O>>, never, Breaker.Breaker | Monitor | Scope.Scope> =>
  Effect.gen(function* () {
    const breaker = yield* Breaker.Breaker
    const monitor = yield* Monitor
    const rateLimit = yield* Effect.serviceOption(RateLimit)
    const budget = yield* Effect.serviceOption(Budget)
    const cache = yield* Effect.serviceOption(ResponseCache)
    const timeouts = { ...Timeouts.defaults, ...options.timeouts }
    const attemptTimeout = Duration.fromInputUnsafe(timeouts.attempt)
    const firstChunkTimeout = Duration.fromInputUnsafe(timeouts.firstChunk)
    const chunkGapTimeout = Duration.fromInputUnsafe(timeouts.chunkGap)
    const chunkGapMillis = Duration.toMillis(chunkGapTimeout)
    const totalTimeoutMillis = Duration.toMillis(Duration.fromInputUnsafe(timeouts.total))
    const steps = options.steps.map((step) => ({
      ...step,
      retry: { ...Retry.defaults, ...options.retry, ...step.retry } satisfies Retry.Options
    }))
    const upstreamByName = new Map(steps.map((step) => [step.upstream.name, step.upstream]))
    const modelLabel = options.name ?? "default"
    const recordContent = options.recordContent === true

    // Breaker transitions reach the log, the monitor, the state gauge, and (through `lastTransition`)
    // the span of the request whose call caused them.
    const lastTransition = new Map<string, { seq: number; from: string; to: string }>()
    let transitionSeq = 0
    const onTransition = (upstream: string, from: string, to: string, why?: string) => {
      lastTransition.set(upstream, { seq: ++transitionSeq, from, to })
      const line = Effect.logWarning(`circuit ${from} -> ${to}${why === undefined ? "" : ` (${why})`}`).pipe(
        Effect.annotateLogs({ upstream, circuit: to }),
        Effect.andThen(
          Metric.update(
            Metric.withAttributes(Metrics.breakerState, { upstream }),
            to === "Open" ? 2 : to === "HalfOpen" ? 1 : 0
          )
        )
      )
      if (to === "Open") return Effect.andThen(line, monitor.breakerOpened(upstream))
      if (to === "Closed") return Effect.andThen(line, monitor.breakerClosed(upstream))
      return line
    }
    yield* breaker.transitions.pipe(
      Stream.runForEach((transition) => {
        const upstream = Breaker.upstreamOf(transition.key)
        if (!upstreamByName.has(upstream)) return Effect.void
        return onTransition(upstream, transition.from, transition.to)
      }),
      Effect.forkScoped
    )
    // A circuit left open, then idle, is forgotten by the breaker without a transition (asked again it
    // is Closed): every minute, the circuits last seen open or half-open are asked for their state, and
    // one now Closed is taken as closed (its log line, gauge, and the monitor's breaker_open resolved),
    // or its alert would be raised again every cool-down for good.
    const reconcile = Effect.suspend(() =>
      Effect.forEach(
        [...lastTransition].filter(([, last]) => last.to !== "Closed"),
        ([upstream]) =>
          Effect.flatMap(breaker.state(upstream), (state) => {
            const last = lastTransition.get(upstream)
            return state._tag === "Closed" && last !== undefined && last.to !== "Closed"
              ? onTransition(upstream, last.to, "Closed", "the breaker reports it closed")
              : Effect.void
          }),
        { discard: true }
      )
    )
    yield* reconcile.pipe(Effect.delay("1 minute"), Effect.forever, Effect.forkScoped)
    yield* Effect.yieldNow // the subscriber is subscribed before any call can open a circuit

    // --- per-upstream labels -------------------------------------------------------------------

    const metricAttributes = (upstream: Upstream): Record<string, string> => ({
      "gen_ai.operation.name": "chat",
      "gen_ai.provider.name": upstream.provider,
      "gen_ai.request.model": upstream.model,
      ...(upstream.server ? { "server.address": upstream.server.address } : {})
    })

    // An upstream's attempt span name and GenAI metrics, labelled once per upstream (and per
    // answered model or error type) instead of on every attempt.
    const labelsByUpstream = new Map<string, UpstreamLabels>()
    const labelsOf = (upstream: Upstream): UpstreamLabels => {
      let found = labelsByUpstream.get(upstream.name)
      if (found === undefined) {
        const base = metricAttributes(upstream)
        found = {
          spanName: `chat ${upstream.model}`,
          base,
          firstChunk: Metrics.withLabels(Metrics.timeToFirstChunk, base),
          byModel: new Map(),
          byError: new Map()
        }
        labelsByUpstream.set(upstream.name, found)
      }
      return found
    }
    const answeredMetrics = (labels: UpstreamLabels, model: string): AnsweredMetrics => {
      let found = labels.byModel.get(model)
      if (found === undefined) {
        const finished = { ...labels.base, "gen_ai.response.model": model }
        found = {
          duration: Metrics.withLabels(Metrics.operationDuration, finished),
          input: Metrics.withLabels(Metrics.tokenUsage, { ...finished, "gen_ai.token.type": "input" }),
          output: Metrics.withLabels(Metrics.tokenUsage, { ...finished, "gen_ai.token.type": "output" })
        }
        labels.byModel.set(model, found)
      }
      return found
    }
    const failedMetric = (labels: UpstreamLabels, errorType: string): Metric.Metric<number, unknown> => {
      let found = labels.byError.get(errorType)
      if (found === undefined) {
        found = Metrics.withLabels(Metrics.operationDuration, { ...labels.base, "error.type": errorType })
        labels.byError.set(errorType, found)
      }
      return found
    }
    const inFlight = Metrics.withLabels(Metrics.inFlight, { model: modelLabel })
    const cacheHits = Metrics.withLabels(Metrics.cacheLookups, { model: modelLabel, result: "hit" })
    const cacheMisses = Metrics.withLabels(Metrics.cacheLookups, { model: modelLabel, result: "miss" })
    const outcomeMetrics = new Map<
      string,
      { readonly count: Metric.Counter<number>; readonly duration: Metric.Metric<number, unknown> }
    >()
    const outcomeMetricsOf = (outcome: string) => {
      let found = outcomeMetrics.get(outcome)
      if (found === undefined) {
        const labels = { model: modelLabel, outcome }
        found = {
          count: Metrics.withLabels(Metrics.requests, labels),
          duration: Metrics.withLabels(Metrics.requestDuration, labels)
        }
        outcomeMetrics.set(outcome, found)
      }
      return found
    }
    const stepSpanOptions = steps.map((step, index) => ({
      attributes: { "roadcar.step": index, "roadcar.upstream": step.upstream.name }
    }))

    // --- one attempt chain per step -------------------------------------------------------------

    const onFailedAttempt = (state: RequestState, upstream: Upstream, error: UpstreamError) =>
      Effect.sync(() => {
        if (error.reason._tag === "RateLimited") state.upstreamRateLimited++
      }).pipe(
        Effect.andThen(Effect.logWarning(`attempt failed: ${error.reason.description}`)),
        Effect.annotateLogs({
          request_id: state.requestId,
          upstream: upstream.name,
          attempt: state.attempts,
          reason: error.reason._tag
        })
      )

    // The breaker, retries inside it, and the step's upstream time; the step's span (current when
    // this starts) gets a `roadcar.breaker` event when this call moved the circuit and a
    // `roadcar.breaker.rejected` event when the circuit refused it.
    const withRetry = <A>(
      state: RequestState,
      step: (typeof steps)[number],
      attempt: Effect.Effect<A, UpstreamError>
    ): Effect.Effect<A, UpstreamError> =>
      Effect.withFiber((fiber) => {
        const clock = fiber.getRef(Clock.Clock)
        const span = activeSpan(fiber)
        const name = step.upstream.name
        const start = clock.currentTimeMillisUnsafe()
        const before = lastTransition.get(name)?.seq ?? 0
        const observe = (refused: boolean) => {
          if (span !== undefined) {
            const after = lastTransition.get(name)
            if (after !== undefined && after.seq !== before) {
              span.event("roadcar.breaker", clock.currentTimeNanosUnsafe(), {
                "roadcar.upstream": name,
                "roadcar.breaker.from": after.from,
                "roadcar.breaker.to": after.to
              })
            }
            if (refused) {
              span.event("roadcar.breaker.rejected", clock.currentTimeNanosUnsafe(), { "roadcar.upstream": name })
            }
          }
          state.upstreamMs += clock.currentTimeMillisUnsafe() - start
        }
        // Plain bookkeeping when the step answers or fails (an interrupted request has no answer to
        // report its upstream time in, nor a span left to annotate), so a match rather than `onExit`.
        return Effect.matchCauseEffect(protect(state, step, attempt), {
          onFailure: (cause) => {
            observe(
              cause.reasons.some((reason) => reason._tag === "Fail" && reason.error.reason._tag === "CircuitOpen")
            )
            return Effect.failCause(cause)
          },
          onSuccess: (value) => {
            observe(false)
            return Effect.succeed(value)
          }
        })
      })

    const protect = <A, R>(
      state: RequestState,
      step: (typeof steps)[number],
      attempt: Effect.Effect<A, UpstreamError, R>
    ): Effect.Effect<A, UpstreamError, R> =>
      breaker.protect(
        step.upstream.name,
        // Retries only once the first attempt failed: the success path pays for nothing else.
        Effect.catch(attempt, (first) =>
          Retry.retryFrom(first, attempt, step.retry, {
            deadline: state.deadline,
            onRetry: (event) =>
              Effect.logInfo(Retry.describe(event)).pipe(
                Effect.annotateLogs({ request_id: state.requestId, upstream: step.upstream.name }),
                Effect.andThen(
                  Metrics.spanEvent("roadcar.retry", {
                    "roadcar.retry": event.retry,
                    "roadcar.retry.delay_ms": Math.round(Duration.toMillis(event.delay)),
                    "roadcar.upstream": step.upstream.name,
                    "error.type": event.error.reason._tag,
                    "roadcar.reason": event.error.reason.description
                  })
                ),
                Effect.andThen(
                  Metrics.increment(Metrics.retries, {
                    upstream: step.upstream.name,
                    reason: event.error.reason._tag
                  })
                )
              )
          })
        )
      )

    const attemptBudget = (state: RequestState, limit: Duration.Duration, now: number) =>
      Duration.min(limit, Duration.millis(Math.max(0, state.deadline - now)))

    // The GenAI attributes of an attempt span, and of its duration metric.
    const requestAttributes = (state: RequestState, upstream: Upstream, request: ChatRequest) => {
      const attributes: Record<string, unknown> = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": upstream.provider,
        "gen_ai.request.model": upstream.model,
        "roadcar.upstream": upstream.name,
        "roadcar.attempt": state.attempts,
        "roadcar.request_id": state.requestId
      }
      if (upstream.server) {
        attributes["server.address"] = upstream.server.address
        attributes["server.port"] = upstream.server.port
      }
      if (request.temperature !== undefined) attributes["gen_ai.request.temperature"] = request.temperature
      if (request.top_p !== undefined) attributes["gen_ai.request.top_p"] = request.top_p
      const maxTokens = request.max_completion_tokens ?? request.max_tokens
      if (maxTokens !== undefined) attributes["gen_ai.request.max_tokens"] = maxTokens
      if (request.seed !== undefined) attributes["gen_ai.request.seed"] = request.seed
      if (request.presence_penalty !== undefined)
        attributes["gen_ai.request.presence_penalty"] = request.presence_penalty
      if (request.frequency_penalty !== undefined) {
        attributes["gen_ai.request.frequency_penalty"] = request.frequency_penalty
      }
      if (request.stop !== undefined && request.stop !== null) {
        attributes["gen_ai.request.stop_sequences"] = typeof request.stop === "string" ? [request.stop] : request.stop
      }
      if (recordContent) attributes["gen_ai.input.messages"] = JSON.stringify(request.messages)
      return attributes
    }

    // Records a failed attempt on its span and in the GenAI metrics (`context` holds the metric
    // registry); a typed failure is also logged, and counted when the upstream rate-limited.
    const attemptFailed = (
      state: RequestState,
      upstream: Upstream,
      labels: UpstreamLabels,
      span: Tracer.Span | undefined,
      context: Context.Context<never>,
      seconds: number,
      cause: Cause.Cause<UpstreamError>
    ): Effect.Effect<void> | undefined => {
      const error = cause.reasons.find((reason) => reason._tag === "Fail")?.error
      const errorType = error ? error.reason._tag : "interrupted"
      if (span !== undefined && span.status._tag !== "Ended") span.attribute("error.type", errorType)
      failedMetric(labels, errorType).updateUnsafe(seconds, context)
      return error === undefined ? undefined : onFailedAttempt(state, upstream, error)
    }

    // Records an attempt that answered (or opened its stream) on its span and in the GenAI metrics.
    const attemptAnswered = (
      labels: UpstreamLabels,
      span: Tracer.Span | undefined,
      context: Context.Context<never>,
      seconds: number,
      value: ChatResponse | Opened
    ): void => {
      const annotate = span !== undefined && span.status._tag !== "Ended"
      if ("head" in value) {
        labels.firstChunk.updateUnsafe(seconds, context)
        const first = value.head[0]
        if (first && annotate) {
          span.attribute("gen_ai.response.id", first.id)
          span.attribute("gen_ai.response.model", first.model)
        }
        return
      }
      const usage = value.usage
      if (annotate) {
        span.attribute("gen_ai.response.id", value.id)
        span.attribute("gen_ai.response.model", value.model)
        span.attribute(
          "gen_ai.response.finish_reasons",
          value.choices.map((choice) => choice.finish_reason ?? "unknown")
        )
        span.attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
        span.attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
        if (recordContent) {
          span.attribute("gen_ai.output.messages", JSON.stringify(value.choices.map((c) => c.message)))
        }
      }
      operationAnswered(labels, context, seconds, value.model, usage)
    }

    // The GenAI duration and tokens of an operation that answered (an attempt's JSON answer, or a
    // stream once its chunks ended).
    const operationAnswered = (
      labels: UpstreamLabels,
      context: Context.Context<never>,
      seconds: number,
      model: string,
      usage: Usage | undefined
    ): void => {
      const metrics = answeredMetrics(labels, model)
      metrics.duration.updateUnsafe(seconds, context)
      if (usage !== undefined) {
        metrics.input.updateUnsafe(usage.prompt_tokens, context)
        metrics.output.updateUnsafe(usage.completion_tokens, context)
      }
    }

    // One attempt in its `chat <model>` client span. `call` gets the attempt's start time (Clock).
    const instrumentAttempt = <A extends ChatResponse | Opened>(
      state: RequestState,
      upstream: Upstream,
      request: ChatRequest,
      call: (startedAt: number) => Effect.Effect<A, UpstreamError>
    ): Effect.Effect<A, UpstreamError> =>
      Effect.withFiber((fiber) => {
        state.attempts++
        const labels = labelsOf(upstream)
        const context = fiber.context
        const clock = fiber.getRef(Clock.Clock)
        const startedAt = clock.currentTimeMillisUnsafe()
        const attempt = call(startedAt)
        // The observers are plain bookkeeping on either exit, interruption included: a match inside
        // an uninterruptible mask (a bare match does not see an interruption); the failure's log line
        // runs like `tapError` would run it.
        const observed = (span: Tracer.Span | undefined) =>
          Effect.uninterruptibleMask((restore) =>
            Effect.matchCauseEffect(restore(attempt), {
              onFailure: (cause) => {
                const seconds = (clock.currentTimeMillisUnsafe() - startedAt) / 1000
                const logged = attemptFailed(state, upstream, labels, span, context, seconds, cause)
                return logged === undefined ? Effect.failCause(cause) : Effect.andThen(logged, Effect.failCause(cause))
              },
              onSuccess: (value) => {
                attemptAnswered(labels, span, context, (clock.currentTimeMillisUnsafe() - startedAt) / 1000, value)
                return Effect.succeed(value)
              }
            })
          )
        if (!tracing(fiber)) return observed(undefined)
        const attributes = requestAttributes(state, upstream, request)
        return Effect.useSpan(labels.spanName, { kind: "client", attributes }, (span) =>
          withParent(observed(span), span)
        )
      })

    const completeAttempt = (state: RequestState, upstream: Upstream, request: ChatRequest) =>
      instrumentAttempt(state, upstream, request, (startedAt) =>
        Timeouts.limit(
          upstream.complete(request),
          upstream.name,
          "attempt",
          attemptBudget(state, attemptTimeout, startedAt)
        )
      )

    const openAttempt = (state: RequestState, upstream: Upstream, request: ChatRequest, scope: Scope.Scope) =>
      instrumentAttempt(state, upstream, request, (startedAt) =>
        Effect.gen(function* () {
          const attemptScope = yield* Scope.fork(scope)
          const budget = attemptBudget(state, firstChunkTimeout, startedAt)
          // The upstream's pull in the attempt's scope, run by whichever fiber pulls (the stream's own
          // stages provide what they need, a span or a scope). Not `Stream.toPull`: its semaphore and
          // the context it provides again on every pull cost about 4 KB per open stream. A failure to
          // set the stream up is the first pull's failure, as with `toPull`.
          const pull = yield* Channel.toPullScoped(upstream.stream(request).channel, attemptScope).pipe(
            Effect.catchCause((cause) => Effect.succeed(Effect.failCause(cause)))
          )
          // The head is everything up to the first chunk that carries an answer (content, a tool call or a
          // finish reason): a role-only opening chunk followed by a cut still counts as a failed attempt.
          const pullHead = Effect.gen(function* () {
            const head: Array<ChatChunk> = []
            while (true) {
              const chunks = yield* pull
              head.push(...chunks)
              if (chunks.some(carriesAnswer)) return head
            }
          })
          const head = yield* pullHead.pipe(
            Effect.catchCause((cause) =>
              Cause.isDone(cause) ||
              cause.reasons.some((reason) => reason._tag === "Fail" && Cause.isDone(reason.error))
                ? Effect.fail(
                    new UpstreamError({
                      upstream: upstream.name,
                      reason: new MalformedOutput({ detail: "stream ended before its first chunk" })
                    })
                  )
                : Effect.failCause(cause as Cause.Cause<UpstreamError>)
            ),
            (first) => Timeouts.limit(first, upstream.name, "first-chunk", budget),
            Effect.onError(() => Scope.close(attemptScope, Exit.void))
          )
          // The rest is a bare pull with the chunk-gap limit: `stream` wraps it in its one stage (the
          // head replayed, the chunks recorded, the request finished) and `release`s the attempt's
          // scope, the upstream connection, as soon as it ends. No stage of its own here: each stage of
          // a stream costs memory for as long as the stream is held open. The attempt's scope is a
          // child of the caller's, so a `rest` never run is released when the caller's scope closes.
          // Each later pull within the chunk gap and the request's total deadline, whichever ends first.
          const nextPull = Effect.clockWith((clock) => {
            const left = state.deadline - clock.currentTimeMillisUnsafe()
            return left < chunkGapMillis
              ? Timeouts.limit(pull, "pipeline", "deadline", Duration.millis(Math.max(0, left)))
              : Timeouts.limit(pull, upstream.name, "chunk-gap", chunkGapTimeout)
          })
          const rest = Stream.fromPull(Effect.succeed(nextPull))
          const opened: Opened & { readonly release: Effect.Effect<void> } = {
            head,
            rest,
            startedAt,
            release: Scope.close(attemptScope, Exit.void)
          }
          return opened
        })
      )

    // Runs the chain: step 1, then each later step whose condition matches the previous failure,
    // all within the request's total deadline. `answer` shapes the value of the step that answered.
    const runChain = <A, B>(
      state: RequestState,
      request: ChatRequest,
      attempt: (upstream: Upstream, request: ChatRequest) => Effect.Effect<A, UpstreamError>,
      answer: (upstream: Upstream, value: A) => B
    ): Effect.Effect<B, UpstreamError> => {
      const runStep = (index: number): Effect.Effect<B, UpstreamError> => {
        const step = steps[index]!
        return Effect.matchEffect(
          withChildSpan(
            withRetry(state, step, attempt(step.upstream, request)),
            "roadcar.step",
            stepSpanOptions[index]
          ),
          {
            onSuccess: (value) => Effect.succeed(answer(step.upstream, value)),
            onFailure: (error) => {
              for (let next = index + 1; next < steps.length; next++) {
                const candidate = steps[next]!
                const enters = candidate.when
                  ? candidate.when.includes(error.reason._tag)
                  : defaultWhen(error.reason._tag)
                if (!enters) continue
                return Effect.suspend(() => {
                  state.step = next
                  if (state.fallback === undefined) {
                    state.fallback = { step: next, reason: error.reason.description, reasonTag: error.reason._tag }
                  }
                  return Effect.logWarning(`fallback to ${candidate.upstream.name}: ${error.message}`).pipe(
                    Effect.annotateLogs({ request_id: state.requestId }),
                    Effect.andThen(
                      Metrics.spanEvent("roadcar.fallback", {
                        "roadcar.fallback.to": candidate.upstream.name,
                        "roadcar.fallback.from": step.upstream.name,
                        "error.type": error.reason._tag,
                        "roadcar.reason": error.reason.description
                      })
                    ),
                    Effect.andThen(
                      Metrics.increment(Metrics.fallbacks, {
                        model: modelLabel,
                        upstream: candidate.upstream.name,
                        reason: error.reason._tag
                      })
                    ),
                    Effect.andThen(runStep(next))
                  )
                })
              }
              return Effect.fail(error)
            }
          }
        )
      }
      return Effect.clockWith((clock) =>
        Timeouts.limit(
          runStep(0),
          "pipeline",
          "deadline",
          Duration.millis(Math.max(0, state.deadline - clock.currentTimeMillisUnsafe()))
        )
      )
    }

    // --- observation ----------------------------------------------------------------------------

    // The log line, the metrics, the span attributes and the monitor's view of a finished request,
    // after its reservations are settled. Reads the span and the clock of the fiber it runs in (a
    // stream can finish in its reader's fiber).
    const finish = (
      begun: Begun,
      admission: Admission,
      finished: Finished | undefined,
      failure: Cause.Cause<unknown> | undefined,
      owed?: Owed
    ): Effect.Effect<void> =>
      Effect.withFiber((fiber) => {
        const { state, identity } = begun
        const latencyMs = fiber.getRef(Clock.Clock).currentTimeMillisUnsafe() - begun.started
        const error = failure === undefined ? undefined : Cause.squash(failure)
        const rejected = error !== undefined && refusalTags.has((error as { _tag?: string })._tag ?? "")
        const outcome = finished
          ? finished.meta.static
            ? "static"
            : finished.meta.fallback
              ? "fallback"
              : "success"
          : rejected
            ? "rejected"
            : "error"
        const record = () => {
          const context = fiber.context
          const metrics = outcomeMetricsOf(outcome)
          metrics.count.updateUnsafe(1, context)
          metrics.duration.updateUnsafe(latencyMs / 1000, context)
          inFlight.modifyUnsafe(-1, context)
          const span = activeSpan(fiber)
          if (span !== undefined && span.status._tag !== "Ended") {
            span.attribute("roadcar.outcome", outcome)
            span.attribute("roadcar.attempts", state.attempts)
          }
          const observed = monitor.requestFinished({
            requestId: state.requestId,
            model: state.model,
            upstream: finished?.meta.upstream,
            outcome,
            latencyMs,
            upstreamRateLimited: state.upstreamRateLimited,
            traceId: span?.traceId
          })
          const level = outcome === "error" || outcome === "rejected" ? "Warn" : "Info"
          // The line's annotations are built only when a logger will see the line.
          if (fiber.getRef(CurrentLoggers).size === 0 || LogLevel.isGreaterThan(fiber.cache.minimumLogLevel, level)) {
            return observed
          }
          const line = (level === "Warn" ? Effect.logWarning("request") : Effect.logInfo("request")).pipe(
            Effect.annotateLogs({
              request_id: state.requestId,
              key: identity.key ?? null,
              model: state.model,
              upstream: finished?.meta.upstream ?? owed?.upstream ?? null,
              answered_model: finished?.answeredModel ?? null,
              status: outcome,
              latency_ms: latencyMs,
              attempts: state.attempts,
              cache_hit: finished?.meta.cacheHit ?? false,
              fallback: state.fallback !== undefined,
              fallback_reason: state.fallback?.reason ?? null,
              input_tokens: (finished?.usage ?? owed?.usage)?.prompt_tokens ?? 0,
              output_tokens: (finished?.usage ?? owed?.usage)?.completion_tokens ?? 0,
              error: error instanceof Error ? error.message : error === undefined ? null : String(error)
            })
          )
          return Effect.andThen(observed, line)
        }
        // A finished request settles at its usage; an unfinished one owes nothing, unless its stream
        // had begun: then the usage it saw, or without one its whole estimate (left as reserved).
        const usage = finished !== undefined ? finished.usage : owed?.usage
        const answeredModel = finished !== undefined ? finished.answeredModel : owed?.answeredModel
        // Priced by the name the upstream reported, else by the model it was configured to ask for.
        const answeredBy = upstreamByName.get(finished?.meta.upstream ?? owed?.upstream ?? "")
        const priceNames =
          answeredBy === undefined
            ? answeredModel
            : answeredModel === undefined
              ? answeredBy.model
              : [answeredModel, answeredBy.model]
        const keepEstimate = finished === undefined && owed !== undefined && owed.usage === undefined
        let settle: Effect.Effect<void> | undefined
        if (!keepEstimate && admission.rate && rateLimit._tag === "Some")
          settle = rateLimit.value.settle(admission.rate, usage)
        if (!keepEstimate && admission.budget && budget._tag === "Some") {
          const settleBudget = budget.value.settle(admission.budget, usage, priceNames)
          settle = settle === undefined ? settleBudget : Effect.andThen(settle, settleBudget)
        }
        return settle === undefined ? record() : Effect.andThen(settle, Effect.suspend(record))
      })

    // Starts a request in the fiber that runs it, inside its `roadcar.pipeline` span.
    const begin = (
      fiber: Fiber.Fiber<unknown, unknown>,
      request: ChatRequest,
      options: CallOptions | undefined
    ): Begun => {
      const started = fiber.getRef(Clock.Clock).currentTimeMillisUnsafe()
      const state: RequestState = {
        requestId: options?.requestId ?? newRequestId(),
        model: request.model,
        deadline: started + totalTimeoutMillis,
        attempts: 0,
        upstreamMs: 0,
        upstreamRateLimited: 0,
        step: 0,
        fallback: undefined
      }
      const span = activeSpan(fiber)
      inFlight.modifyUnsafe(1, fiber.context)
      if (span !== undefined && span.status._tag !== "Ended") span.attribute("roadcar.request_id", state.requestId)
      return {
        state,
        started,
        identity: { key: options?.key, user: options?.user },
        announce: monitor.requestStarted(state.requestId, state.model, span?.traceId)
      }
    }

    const observeRefusal = (refusal: Refusal) => {
      const limit =
        refusal._tag === "RateLimitRejected"
          ? refusal.limit
          : refusal._tag === "BudgetExceeded"
            ? "budget"
            : "store unavailable"
      return Effect.andThen(
        Metrics.spanEvent("roadcar.rate_limited", {
          "roadcar.rate_limit.limit": limit,
          ...(refusal._tag === "StoreUnavailable"
            ? {}
            : { "roadcar.rate_limit.retry_after_ms": Math.ceil(Duration.toMillis(refusal.retryAfter)) })
        }),
        Metrics.increment(Metrics.rateLimited, { model: modelLabel, limit })
      )
    }

    // Admits a request: the rate limit, then the budget, each reservation made and written into
    // `admission` in one uninterruptible step, so an interruption cannot fall between a store recording
    // it and the pipeline holding it (a later refusal, failure or interruption then settles it). The
    // rate limit's wait, in `wait` mode, stays interruptible and gives back what it took.
    const admit = (request: ChatRequest, identity: Identity, admission: Admission): Effect.Effect<void, Refusal> => {
      const reserveBudget =
        budget._tag === "Some"
          ? Effect.suspend(() =>
              Effect.uninterruptible(
                Effect.map(budget.value.reserve(request, identity), (reservation) => {
                  admission.budget = reservation
                })
              )
            )
          : undefined
      let admitted: Effect.Effect<void, Refusal>
      if (rateLimit._tag === "Some") {
        const rate = Effect.uninterruptible(
          Effect.map(rateLimit.value.admit(request, identity), (reservation) => {
            admission.rate = reservation
          })
        )
        admitted = reserveBudget === undefined ? rate : Effect.andThen(rate, reserveBudget)
      } else {
        admitted = reserveBudget ?? Effect.void
      }
      return withChildSpan(Effect.tapError(admitted, observeRefusal), "roadcar.rate_limit")
    }

    // Counts a cache lookup and adds its event to the current (`roadcar.cache`) span.
    const recordCache = (fiber: Fiber.Fiber<unknown, unknown>, hit: boolean): void => {
      const span = activeSpan(fiber)
      if (span !== undefined) {
        span.event(
          hit ? "roadcar.cache.hit" : "roadcar.cache.miss",
          fiber.getRef(Clock.Clock).currentTimeNanosUnsafe(),
          {}
        )
      }
      ;(hit ? cacheHits : cacheMisses).updateUnsafe(1, fiber.context)
    }
    const observeCache = <A>(hit: boolean, value: A): Effect.Effect<A> =>
      Effect.withFiber((fiber) => {
        recordCache(fiber, hit)
        return Effect.succeed(value)
      })

    const metaOf = (state: RequestState, upstream: Upstream | undefined, cacheHit: boolean): AnswerMeta => ({
      requestId: state.requestId,
      model: state.model,
      upstream: upstream?.name ?? staticUpstream,
      provider: upstream?.provider ?? "roadcar.static",
      attempts: state.attempts,
      upstreamMs: state.upstreamMs,
      cacheHit,
      fallback: state.fallback,
      static: upstream === undefined
    })

    const staticFallback =
      <A>(state: RequestState, request: ChatRequest, onStatic: (response: ChatResponse) => A) =>
      (error: UpstreamError): Effect.Effect<A, UpstreamError> => {
        const content = options.staticAnswer
        if (content === undefined) return Effect.fail(error)
        return Effect.gen(function* () {
          if (state.fallback === undefined) {
            state.fallback = { step: steps.length, reason: error.reason.description, reasonTag: error.reason._tag }
          }
          yield* Effect.logWarning(`static answer: ${error.message}`).pipe(
            Effect.annotateLogs({ request_id: state.requestId })
          )
          yield* Metrics.spanEvent("roadcar.fallback", {
            "roadcar.fallback.to": staticUpstream,
            "error.type": error.reason._tag,
            "roadcar.reason": error.reason.description
          })
          yield* Metrics.increment(Metrics.fallbacks, {
            model: modelLabel,
            upstream: staticUpstream,
            reason: error.reason._tag
          })
          return onStatic(staticResponse(request, content, yield* Clock.currentTimeMillis))
        })
      }

    // --- complete -------------------------------------------------------------------------------

    // The hot path: each stage is one or two Effect steps and the bookkeeping around them is plain
    // code in those steps (no generators, no `currentSpan` lookups, metrics labelled once), because
    // every Effect step and span costs on every request.
    const complete = (request: ChatRequest, callOptions?: CallOptions): Effect.Effect<Answer, ErrorOf<O>> =>
      withChildSpan(
        // Begun (counted in flight, announced to the monitor) and finished under one mask: an
        // interruption cannot fall between the two and leave the request in flight for good.
        Effect.uninterruptibleMask((restore) =>
          Effect.withFiber((fiber) => {
            const begun = begin(fiber, request, callOptions)
            const state = begun.state
            const admission: Admission = {}
            const compute = runChain(
              state,
              request,
              (upstream, upstreamRequest) => completeAttempt(state, upstream, upstreamRequest),
              toEntry
            )
            const looked: Effect.Effect<CacheLookup, UpstreamError> =
              cache._tag === "Some"
                ? withChildSpan(
                    // `fiber` is this request's: inside the cache span, its current span is that span.
                    Effect.map(cache.value.lookup(request, compute), (found) => {
                      recordCache(fiber, found.hit)
                      return found
                    }),
                    "roadcar.cache"
                  )
                : Effect.map(compute, (entry) => ({ entry, hit: false }))
            const answered = Effect.map(
              looked,
              ({ entry, hit }): Answer => ({
                response: entry.response,
                meta: metaOf(state, upstreamByName.get(entry.upstream), hit)
              })
            )
            let run: Effect.Effect<Answer, Refusal | UpstreamError> = Effect.andThen(
              admit(request, begun.identity, admission),
              answered
            )
            if (options.staticAnswer !== undefined) {
              run = Effect.catchTag(
                run,
                "UpstreamError",
                staticFallback(
                  state,
                  request,
                  (response): Answer => ({ response, meta: metaOf(state, undefined, false) })
                )
              )
            }
            return Effect.andThen(
              begun.announce,
              Effect.onExit(restore(run), (exit) =>
                Exit.isSuccess(exit)
                  ? finish(
                      begun,
                      admission,
                      {
                        meta: exit.value.meta,
                        usage: exit.value.meta.cacheHit ? undefined : exit.value.response.usage,
                        answeredModel: exit.value.response.model
                      },
                      undefined
                    )
                  : finish(begun, admission, undefined, exit.cause)
              )
            )
          })
        ),
        "roadcar.pipeline",
        { attributes: { "gen_ai.request.model": request.model } }
      ) as Effect.Effect<Answer, ErrorOf<O>>

    // --- stream ---------------------------------------------------------------------------------

    const stream = (
      request: ChatRequest,
      callOptions?: CallOptions
    ): Effect.Effect<StreamAnswer, ErrorOf<O>, Scope.Scope> =>
      Effect.gen(function* () {
        const scope = yield* Effect.scope
        const admission: Admission = {}
        let finished = false
        // Kept for as long as the stream is open, so without the (already run) notice.
        let begun!: Begun
        const finishOnce = (exit: Exit.Exit<Finished, unknown>, owed?: Owed) =>
          Effect.suspend(() => {
            if (finished) return Effect.void
            finished = true
            return Exit.isSuccess(exit)
              ? finish(begun, admission, exit.value, undefined)
              : finish(begun, admission, undefined, exit.cause, owed)
          })
        // Begun and given its finalizer in one uninterruptible step: a stream whose chunks are never
        // run to the end (or whose caller is interrupted right away) still gets its log line and its
        // reservation settled when the caller's scope closes.
        yield* Effect.uninterruptible(
          Effect.withFiber((fiber) => {
            const started = begin(fiber, request, callOptions)
            begun = { ...started, announce: Effect.void }
            return Effect.andThen(
              started.announce,
              Scope.addFinalizer(
                scope,
                Effect.suspend(() => finishOnce(Exit.fail(closedEarly())))
              )
            )
          })
        )
        const state = begun.state
        const opened = Effect.gen(function* () {
          yield* admit(request, begun.identity, admission)
          if (cache._tag === "Some") {
            const hit = yield* cache.value.peek(request).pipe(
              Effect.flatMap((found) => observeCache(Option.isSome(found), found)),
              (peek) => withChildSpan(peek, "roadcar.cache")
            )
            if (Option.isSome(hit)) {
              return {
                meta: metaOf(state, upstreamByName.get(hit.value.upstream), true),
                chunks: Stream.fromIterable(responseToChunks(hit.value.response))
              }
            }
          }
          const { upstream, value } = yield* runChain(
            state,
            request,
            (upstream, upstreamRequest) => openAttempt(state, upstream, upstreamRequest, scope),
            (upstream, value) => ({ upstream, value })
          )
          const meta = metaOf(state, upstream, false)
          const { head, release } = value
          // The head is never empty: it ends with the first chunk that carries an answer. It is replayed
          // once and then dropped (only its model is kept).
          let pending = head.length > 0 ? (head as readonly [ChatChunk, ...Array<ChatChunk>]) : undefined
          const firstModel = head[0]?.model ?? ""
          // With a cache the answer is assembled from every chunk; without one the chunks are not kept.
          // The usage (the last chunk's that has one) and the answering model (the first's) always are.
          const seen: Array<ChatChunk> | undefined = cache._tag === "Some" ? [] : undefined
          let lastUsage: Usage | undefined
          const record = (batch: ReadonlyArray<ChatChunk>) => {
            for (const chunk of batch) {
              if (chunk.usage) lastUsage = chunk.usage
              if (seen !== undefined) seen.push(chunk)
            }
          }
          record(head)
          // The GenAI operation of a stream ends with its chunks: its duration and tokens are recorded
          // then (its attempt recorded only the time to its first chunk), or its failure's duration.
          const recordOperation = (exit: Exit.Exit<unknown, unknown>, model: string) =>
            Effect.withFiber((fiber) => {
              const labels = labelsOf(upstream)
              const seconds = (fiber.getRef(Clock.Clock).currentTimeMillisUnsafe() - value.startedAt) / 1000
              if (Exit.isSuccess(exit)) {
                operationAnswered(labels, fiber.context, seconds, model, lastUsage)
              } else {
                const error = exit.cause.reasons.find((reason) => reason._tag === "Fail")?.error
                const errorType = isUpstreamError(error) ? error.reason._tag : "cancelled"
                failedMetric(labels, errorType).updateUnsafe(seconds, fiber.context)
              }
              return Effect.void
            })
          // Once, when the chunks end, fail or are interrupted (or their reader stops early): release the
          // upstream connection, store a complete answer, then the log line and the settlement.
          let ended = false
          const end = (exit: Exit.Exit<unknown, unknown>) =>
            Effect.suspend(() => {
              if (ended) return Effect.void
              ended = true
              const response = seen === undefined ? undefined : assembleChunks(seen)
              const answeredModel = response?.model ?? firstModel
              // A stream that did not reach its end still cost the upstream's tokens: the usage seen
              // (a usage chunk can come before the end), else its estimate stays charged.
              return release.pipe(
                Effect.andThen(recordOperation(exit, answeredModel)),
                Effect.andThen(
                  Exit.isSuccess(exit) && response !== undefined && cache._tag === "Some"
                    ? cache.value.store(request, { response, upstream: upstream.name, cacheable: true })
                    : Effect.void
                ),
                Effect.andThen(
                  Exit.isSuccess(exit)
                    ? finishOnce(Exit.succeed({ meta, usage: lastUsage ?? makeUsage(0, 0), answeredModel }))
                    : finishOnce(exit as Exit.Exit<never, unknown>, {
                        usage: lastUsage,
                        answeredModel,
                        upstream: upstream.name
                      })
                )
              )
            })
          // One stream stage around the upstream's pull (not `concat` + `tap` + `onExit`, three stages
          // each holding memory while the stream is open): the head first, then the rest as it comes.
          const chunks = Stream.transformPull(value.rest, (pull, scope) => {
            const isDone = (reason: Cause.Reason<unknown>) => reason._tag === "Fail" && Cause.isDone(reason.error)
            const next = Effect.onError(
              Effect.map(pull, (batch) => {
                record(batch)
                return batch
              }),
              // The end of the chunks (`Done`, interruptions aside) is a success, as `Stream.onExit` sees it.
              (cause) =>
                end(
                  !cause.reasons.some(isDone)
                    ? Exit.failCause(cause)
                    : cause.reasons.every((reason) => isDone(reason) || reason._tag === "Interrupt")
                      ? Exit.void
                      : Exit.failCause(Cause.fromReasons(cause.reasons.filter((reason) => !isDone(reason))))
                )
            )
            const replayed = Effect.suspend(() => {
              const first = pending
              if (first === undefined) return next
              pending = undefined
              return Effect.succeed(first)
            })
            // The stage's scope closing before the upstream's chunks ended (the reader stopped early, or
            // was interrupted) is not a complete answer: never stored, logged or settled as one.
            const closed = (exit: Exit.Exit<unknown, unknown>) =>
              end(Exit.isFailure(exit) ? exit : Exit.fail(closedEarly()))
            return Effect.as(Scope.addFinalizerExit(scope, closed), replayed)
          })
          return { meta, chunks } satisfies StreamAnswer
        }).pipe(
          Effect.catchTag(
            "UpstreamError",
            staticFallback(
              state,
              request,
              (response): StreamAnswer => ({
                meta: metaOf(state, undefined, false),
                chunks: Stream.fromIterable(responseToChunks(response))
              })
            )
          ),
          Effect.onExit((exit) =>
            Exit.isFailure(exit)
              ? finishOnce(exit as Exit.Exit<never, unknown>)
              : exit.value.meta.cacheHit || exit.value.meta.static
                ? finishOnce(
                    Exit.succeed({
                      meta: exit.value.meta,
                      usage: undefined,
                      answeredModel: exit.value.meta.static ? "static" : undefined
                    })
                  )
                : Effect.void
          )
        )
        return yield* opened
      }).pipe((opening) =>
        withChildSpan(opening, "roadcar.pipeline", { attributes: { "gen_ai.request.model": request.model } })
      ) as Effect.Effect<StreamAnswer, ErrorOf<O>, Scope.Scope>

    return { upstreams: steps.map((step) => step.upstream), complete, stream } satisfies Pipeline<ErrorOf<O>>
  })

// =============================================================================
// Service
// =============================================================================

/**
 * The pipeline as a service, for programs and the gateway.
 *
 * @category services
 * @since 0.1.0
 */
export class PipelineService extends Context.Service<PipelineService, Pipeline>()("@roadcar/core/Pipeline") {}

/**
 * A pipeline layer from options (needs the stage services, see `make`).
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (options: Options): Layer.Layer<PipelineService, never, Breaker.Breaker | Monitor> =>
  Layer.effect(PipelineService, make(options as Options))
