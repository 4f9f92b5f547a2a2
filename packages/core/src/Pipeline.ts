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
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import type * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
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
import * as Metrics from "./Metrics.ts"
import { Monitor } from "./Monitor.ts"
import { type Identity, RateLimit, type RateLimitRejected, type Reservation } from "./RateLimit.ts"
import { ResponseCache } from "./ResponseCache.ts"
import * as Retry from "./Retry.ts"
import type { StoreUnavailable } from "./StoreUnavailable.ts"
import * as Timeouts from "./Timeouts.ts"
import type { Upstream } from "./Upstream.ts"
import { MalformedOutput, type ReasonTag, TimedOut, UpstreamError } from "./UpstreamError.ts"

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

// `Effect.retry` whose schedule is built only once the first attempt failed: the success path pays
// for no schedule. The first failure is replayed to the schedule as its first input.
const retryAfterFirstFailure = <A, R>(
  attempt: Effect.Effect<A, UpstreamError, R>,
  schedule: () => Schedule.Schedule<unknown, UpstreamError>
): Effect.Effect<A, UpstreamError, R> =>
  Effect.catch(attempt, (first) => {
    let replay = true
    return Effect.retry(
      Effect.suspend(() => {
        if (!replay) return attempt
        replay = false
        return Effect.fail(first)
      }),
      schedule()
    )
  })

const defaultWhen = (tag: ReasonTag) => tag !== "BadRequest"

const staticUpstream = "static"

// Spans on the request path skip the stack trace capture (a `new Error()` per span).
const noStack = { captureStackTrace: false } as const

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
}

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
    const totalTimeout = Duration.fromInputUnsafe(timeouts.total)
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
    yield* breaker.transitions.pipe(
      Stream.runForEach((transition) => {
        const upstream = Breaker.upstreamOf(transition.key)
        if (!upstreamByName.has(upstream)) return Effect.void
        lastTransition.set(upstream, { seq: ++transitionSeq, from: transition.from, to: transition.to })
        const line = Effect.logWarning(`circuit ${transition.from} -> ${transition.to}`).pipe(
          Effect.annotateLogs({ upstream, circuit: transition.to }),
          Effect.andThen(
            Metric.update(
              Metric.withAttributes(Metrics.breakerState, { upstream }),
              transition.to === "Open" ? 2 : transition.to === "HalfOpen" ? 1 : 0
            )
          )
        )
        if (transition.to === "Open") return Effect.andThen(line, monitor.breakerOpened(upstream))
        if (transition.to === "Closed") return Effect.andThen(line, monitor.breakerClosed(upstream))
        return line
      }),
      Effect.forkScoped
    )
    yield* Effect.yieldNow // the subscriber is subscribed before any call can open a circuit

    // --- one attempt chain per step -------------------------------------------------------------

    const onFailedAttempt = (state: RequestState, upstream: Upstream) => (error: UpstreamError) =>
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

    const withRetry = <A, R>(
      state: RequestState,
      step: (typeof steps)[number],
      attempt: Effect.Effect<A, UpstreamError, R>
    ): Effect.Effect<A, UpstreamError, R> =>
      Effect.suspend(() => {
        const before = lastTransition.get(step.upstream.name)?.seq ?? 0
        return protect(state, step, attempt).pipe(
          Effect.onExit((exit) => {
            const after = lastTransition.get(step.upstream.name)
            const refused =
              Exit.isFailure(exit) &&
              exit.cause.reasons.some((reason) => reason._tag === "Fail" && reason.error.reason._tag === "CircuitOpen")
            return Effect.andThen(
              after !== undefined && after.seq !== before
                ? Metrics.spanEvent("roadcar.breaker", {
                    "roadcar.upstream": step.upstream.name,
                    "roadcar.breaker.from": after.from,
                    "roadcar.breaker.to": after.to
                  })
                : Effect.void,
              refused
                ? Metrics.spanEvent("roadcar.breaker.rejected", { "roadcar.upstream": step.upstream.name })
                : Effect.void
            )
          })
        )
      })

    const protect = <A, R>(
      state: RequestState,
      step: (typeof steps)[number],
      attempt: Effect.Effect<A, UpstreamError, R>
    ): Effect.Effect<A, UpstreamError, R> =>
      breaker.protect(
        step.upstream.name,
        retryAfterFirstFailure(attempt, () =>
          Retry.schedule(step.retry, {
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

    const attemptBudget = (state: RequestState, limit: Duration.Duration) =>
      Effect.map(Clock.currentTimeMillis, (now) =>
        Duration.min(limit, Duration.millis(Math.max(0, state.deadline - now)))
      )

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

    const metricAttributes = (upstream: Upstream): Record<string, string> => ({
      "gen_ai.operation.name": "chat",
      "gen_ai.provider.name": upstream.provider,
      "gen_ai.request.model": upstream.model,
      ...(upstream.server ? { "server.address": upstream.server.address } : {})
    })

    // Records the outcome of one attempt on its span and in the GenAI metrics. The labels of an
    // upstream are built once; the response-model labels once per answered model.
    const labelsByUpstream = new Map<
      string,
      { base: Record<string, string>; byModel: Map<string, Record<string, string>> }
    >()
    const labelsOf = (upstream: Upstream) => {
      let found = labelsByUpstream.get(upstream.name)
      if (found === undefined) {
        found = { base: metricAttributes(upstream), byModel: new Map() }
        labelsByUpstream.set(upstream.name, found)
      }
      return found
    }
    const observeAttempt =
      (upstream: Upstream, startedAt: number) =>
      (exit: Exit.Exit<ChatResponse | Opened, UpstreamError>): Effect.Effect<void> =>
        Effect.clockWith((clock) => {
          const seconds = (clock.currentTimeMillisUnsafe() - startedAt) / 1000
          const labels = labelsOf(upstream)
          if (Exit.isFailure(exit)) {
            const error = exit.cause.reasons.find((reason) => reason._tag === "Fail")?.error
            const errorType = error ? error.reason._tag : "interrupted"
            return Effect.andThen(
              Effect.annotateCurrentSpan({ "error.type": errorType }),
              Metrics.record(Metrics.operationDuration, { ...labels.base, "error.type": errorType }, seconds)
            )
          }
          const value = exit.value
          if ("head" in value) {
            const first = value.head[0]
            const record = Metrics.record(Metrics.timeToFirstChunk, labels.base, seconds)
            return first
              ? Effect.andThen(
                  record,
                  Effect.annotateCurrentSpan({ "gen_ai.response.id": first.id, "gen_ai.response.model": first.model })
                )
              : record
          }
          const usage = value.usage
          let responseLabels = labels.byModel.get(value.model)
          if (responseLabels === undefined) {
            responseLabels = { ...labels.base, "gen_ai.response.model": value.model }
            labels.byModel.set(value.model, responseLabels)
          }
          const finished = responseLabels
          return Effect.andThen(
            Effect.annotateCurrentSpan({
              "gen_ai.response.id": value.id,
              "gen_ai.response.model": value.model,
              "gen_ai.response.finish_reasons": value.choices.map((choice) => choice.finish_reason ?? "unknown"),
              "gen_ai.usage.input_tokens": usage.prompt_tokens,
              "gen_ai.usage.output_tokens": usage.completion_tokens,
              ...(recordContent
                ? { "gen_ai.output.messages": JSON.stringify(value.choices.map((c) => c.message)) }
                : {})
            }),
            Metrics.recordAll([
              [Metrics.operationDuration, finished, seconds],
              [Metrics.tokenUsage, { ...finished, "gen_ai.token.type": "input" }, usage.prompt_tokens],
              [Metrics.tokenUsage, { ...finished, "gen_ai.token.type": "output" }, usage.completion_tokens]
            ])
          )
        })

    const instrumentAttempt = <A extends ChatResponse | Opened>(
      state: RequestState,
      upstream: Upstream,
      request: ChatRequest,
      attempt: Effect.Effect<A, UpstreamError>
    ): Effect.Effect<A, UpstreamError> =>
      Effect.suspend(() => {
        state.attempts++
        const attributes = requestAttributes(state, upstream, request)
        return Effect.flatMap(Clock.currentTimeMillis, (startedAt) =>
          attempt.pipe(
            Effect.onExit((exit: Exit.Exit<A, UpstreamError>) => observeAttempt(upstream, startedAt)(exit)),
            Effect.tapError(onFailedAttempt(state, upstream)),
            Effect.withSpan(`chat ${upstream.model}`, { kind: "client", attributes }, noStack)
          )
        )
      })

    const completeAttempt = (state: RequestState, upstream: Upstream, request: ChatRequest) =>
      instrumentAttempt(
        state,
        upstream,
        request,
        attemptBudget(state, attemptTimeout).pipe(
          Effect.flatMap((budget) => Timeouts.limit(upstream.complete(request), upstream.name, "attempt", budget))
        )
      )

    const openAttempt = (state: RequestState, upstream: Upstream, request: ChatRequest, scope: Scope.Scope) =>
      instrumentAttempt(
        state,
        upstream,
        request,
        Effect.gen(function* () {
          const attemptScope = yield* Scope.fork(scope)
          const budget = yield* attemptBudget(state, firstChunkTimeout)
          const pull = yield* Stream.toPull(upstream.stream(request)).pipe(Scope.provide(attemptScope))
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
          const gap = chunkGapTimeout
          const rest = Stream.fromPull(
            Effect.succeed(
              Effect.timeoutOrElse(pull, {
                duration: gap,
                orElse: () =>
                  Effect.fail(
                    new UpstreamError({
                      upstream: upstream.name,
                      reason: new TimedOut({ phase: "chunk-gap", after: gap })
                    })
                  )
              })
            )
          ).pipe(Stream.ensuring(Scope.close(attemptScope, Exit.void)))
          return { head, rest } satisfies Opened
        })
      )

    // Adds the time an effect takes to the request's upstream time.
    const timed =
      (state: RequestState) =>
      <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
        Effect.flatMap(Clock.currentTimeMillis, (start) =>
          Effect.ensuring(
            self,
            Effect.map(Clock.currentTimeMillis, (end) => {
              state.upstreamMs += end - start
            })
          )
        )

    // Runs the chain: step 1, then each later step whose condition matches the previous failure.
    const runChain = <A>(
      state: RequestState,
      request: ChatRequest,
      attempt: (upstream: Upstream, request: ChatRequest) => Effect.Effect<A, UpstreamError>
    ): Effect.Effect<{ readonly value: A; readonly upstream: Upstream }, UpstreamError> => {
      const runStep = (
        index: number
      ): Effect.Effect<{ readonly value: A; readonly upstream: Upstream }, UpstreamError> => {
        const step = steps[index]!
        const upstreamRequest = request
        return withRetry(state, step, attempt(step.upstream, upstreamRequest)).pipe(
          timed(state),
          Effect.withSpan(
            "roadcar.step",
            { attributes: { "roadcar.step": index, "roadcar.upstream": step.upstream.name } },
            noStack
          ),
          Effect.map((value) => ({ value, upstream: step.upstream })),
          Effect.catch((error) => {
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
          })
        )
      }
      return Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Timeouts.limit(runStep(0), "pipeline", "deadline", Duration.millis(Math.max(0, state.deadline - now)))
      )
    }

    // --- observation ----------------------------------------------------------------------------

    const finish = (
      state: RequestState,
      started: number,
      identity: Identity,
      admission: Admission,
      exit: Exit.Exit<Finished, unknown>
    ) =>
      Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis
        const latencyMs = now - started
        const success = Exit.isSuccess(exit) ? exit.value : undefined
        const error = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
        const rejected = error !== undefined && refusalTags.has((error as { _tag?: string })._tag ?? "")
        const outcome = success
          ? success.meta.static
            ? "static"
            : success.meta.fallback
              ? "fallback"
              : "success"
          : rejected
            ? "rejected"
            : "error"
        if (admission.rate && rateLimit._tag === "Some") yield* rateLimit.value.settle(admission.rate, success?.usage)
        if (admission.budget && budget._tag === "Some") {
          yield* budget.value.settle(admission.budget, success?.usage, success?.answeredModel)
        }
        const labels = { model: modelLabel, outcome }
        yield* Metrics.increment(Metrics.requests, labels)
        yield* Metrics.record(Metrics.requestDuration, labels, latencyMs / 1000)
        yield* Metrics.modify(Metrics.inFlight, { model: modelLabel }, -1)
        yield* Effect.annotateCurrentSpan({ "roadcar.outcome": outcome, "roadcar.attempts": state.attempts })
        const span = yield* Effect.option(Effect.currentSpan)
        yield* monitor.requestFinished({
          requestId: state.requestId,
          model: state.model,
          upstream: success?.meta.upstream,
          outcome,
          latencyMs,
          upstreamRateLimited: state.upstreamRateLimited,
          traceId: Option.isSome(span) ? span.value.traceId : undefined
        })
        const annotations = {
          request_id: state.requestId,
          key: identity.key ?? null,
          model: state.model,
          upstream: success?.meta.upstream ?? null,
          answered_model: success?.answeredModel ?? null,
          status: outcome,
          latency_ms: latencyMs,
          attempts: state.attempts,
          cache_hit: success?.meta.cacheHit ?? false,
          fallback: state.fallback !== undefined,
          fallback_reason: state.fallback?.reason ?? null,
          input_tokens: success?.usage?.prompt_tokens ?? 0,
          output_tokens: success?.usage?.completion_tokens ?? 0,
          error: error instanceof Error ? error.message : error === undefined ? null : String(error)
        }
        const line =
          outcome === "error" || outcome === "rejected" ? Effect.logWarning("request") : Effect.logInfo("request")
        yield* line.pipe(Effect.annotateLogs(annotations))
      })

    const begin = (request: ChatRequest, options: CallOptions | undefined) =>
      Effect.gen(function* () {
        const started = yield* Clock.currentTimeMillis
        const state: RequestState = {
          requestId: options?.requestId ?? newRequestId(),
          model: request.model,
          deadline: started + Duration.toMillis(totalTimeout),
          attempts: 0,
          upstreamMs: 0,
          upstreamRateLimited: 0,
          step: 0,
          fallback: undefined
        }
        const span = yield* Effect.option(Effect.currentSpan)
        yield* monitor.requestStarted(
          state.requestId,
          state.model,
          span._tag === "Some" ? span.value.traceId : undefined
        )
        yield* Metrics.modify(Metrics.inFlight, { model: modelLabel }, 1)
        yield* Effect.annotateCurrentSpan({ "roadcar.request_id": state.requestId })
        return { state, started, identity: { key: options?.key, user: options?.user } satisfies Identity }
      })

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

    // Admits a request: the rate limit, then the budget (its reservation made uninterruptibly, so an
    // interruption cannot fall between the store recording it and the pipeline holding it). Whatever
    // was reserved is written into `admission` at once, so a later refusal or failure still settles it.
    const admit = (request: ChatRequest, identity: Identity, admission: Admission) =>
      Effect.gen(function* () {
        if (rateLimit._tag === "Some") admission.rate = yield* rateLimit.value.admit(request, identity)
        if (budget._tag === "Some") {
          const reserve = budget.value.reserve(request, identity)
          admission.budget = yield* Effect.uninterruptible(reserve)
        }
      }).pipe(Effect.tapError(observeRefusal), Effect.withSpan("roadcar.rate_limit", undefined, noStack))

    const observeCache = (hit: boolean) =>
      Effect.andThen(
        Metrics.spanEvent(hit ? "roadcar.cache.hit" : "roadcar.cache.miss", {}),
        Metrics.increment(Metrics.cacheLookups, { model: modelLabel, result: hit ? "hit" : "miss" })
      )

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

    const complete = (request: ChatRequest, callOptions?: CallOptions): Effect.Effect<Answer, ErrorOf<O>> =>
      Effect.gen(function* () {
        const { state, started, identity } = yield* begin(request, callOptions)
        const admission: Admission = {}
        const run = Effect.gen(function* () {
          yield* admit(request, identity, admission)
          const compute = runChain(state, request, (upstream, upstreamRequest) =>
            completeAttempt(state, upstream, upstreamRequest)
          ).pipe(Effect.map(({ upstream, value }) => ({ response: value, upstream: upstream.name, cacheable: true })))
          const looked =
            cache._tag === "Some"
              ? yield* cache.value.lookup(request, compute).pipe(
                  Effect.tap((looked) => observeCache(looked.hit)),
                  Effect.withSpan("roadcar.cache", undefined, noStack)
                )
              : { entry: yield* compute, hit: false }
          const upstream = upstreamByName.get(looked.entry.upstream)
          return { response: looked.entry.response, meta: metaOf(state, upstream, looked.hit) } satisfies Answer
        }).pipe(
          Effect.catchTag(
            "UpstreamError",
            staticFallback(state, request, (response): Answer => ({ response, meta: metaOf(state, undefined, false) }))
          )
        )
        return yield* run.pipe(
          Effect.onExit((exit) =>
            finish(
              state,
              started,
              identity,
              admission,
              Exit.map(exit, (answer) => ({
                meta: answer.meta,
                usage: answer.meta.cacheHit ? undefined : answer.response.usage,
                answeredModel: answer.response.model
              }))
            )
          )
        )
      }).pipe(
        Effect.withSpan("roadcar.pipeline", { attributes: { "gen_ai.request.model": request.model } }, noStack)
      ) as Effect.Effect<Answer, ErrorOf<O>>

    // --- stream ---------------------------------------------------------------------------------

    const stream = (
      request: ChatRequest,
      callOptions?: CallOptions
    ): Effect.Effect<StreamAnswer, ErrorOf<O>, Scope.Scope> =>
      Effect.gen(function* () {
        const scope = yield* Effect.scope
        const { state, started, identity } = yield* begin(request, callOptions)
        const admission: Admission = {}
        let finished = false
        const finishOnce = (exit: Exit.Exit<Finished, unknown>) =>
          Effect.suspend(() => {
            if (finished) return Effect.void
            finished = true
            return finish(state, started, identity, admission, exit)
          })
        // A stream whose chunks are never run to the end still gets its log line and its
        // reservation settled when the caller's scope closes.
        yield* Scope.addFinalizer(
          scope,
          Effect.suspend(() => finishOnce(Exit.fail(new Error("the stream was closed before it was read to the end"))))
        )
        const opened = Effect.gen(function* () {
          yield* admit(request, identity, admission)
          if (cache._tag === "Some") {
            const hit = yield* cache.value.peek(request).pipe(
              Effect.tap((found) => observeCache(Option.isSome(found))),
              Effect.withSpan("roadcar.cache", undefined, noStack)
            )
            if (Option.isSome(hit)) {
              return {
                meta: metaOf(state, upstreamByName.get(hit.value.upstream), true),
                chunks: Stream.fromIterable(responseToChunks(hit.value.response))
              }
            }
          }
          const { upstream, value } = yield* runChain(state, request, (upstream, upstreamRequest) =>
            openAttempt(state, upstream, upstreamRequest, scope)
          )
          const meta = metaOf(state, upstream, false)
          const seen: Array<ChatChunk> = [...value.head]
          const chunks = Stream.concat(
            Stream.fromIterable(value.head),
            value.rest.pipe(Stream.tap((chunk) => Effect.sync(() => seen.push(chunk))))
          ).pipe(
            Stream.onExit((exit) => {
              const response = assembleChunks(seen)
              return Effect.andThen(
                Exit.isSuccess(exit) && cache._tag === "Some"
                  ? cache.value.store(request, { response, upstream: upstream.name, cacheable: true })
                  : Effect.void,
                finishOnce(Exit.map(exit, () => ({ meta, usage: response.usage, answeredModel: response.model })))
              )
            })
          )
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
      }).pipe(
        Effect.withSpan("roadcar.pipeline", { attributes: { "gen_ai.request.model": request.model } }, noStack)
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
