/**
 * Roadcar's candidates: `Pipeline.make` with every stage on and in-process stores, around an upstream
 * that answers at once (or fails twice, then answers), run on a context built once.
 *
 * Stages: `RateLimit.layerMemory` (one generous per-key rule on requests and tokens, so nothing is
 * refused), `ResponseCache.layer` (capacity below the request ring, so every call misses and stores),
 * `Breaker.layerMemory`, `Monitor.layer` with `AlertSink.layerLog` (or `Monitor.layerNoop`), 3
 * attempts with zero backoff, the default timeouts (30 s per attempt, 60 s in total). The request log
 * line is formatted as JSON and recorded as a span event like `RequestLog.layerJson` does, but not
 * written (the benchmark measures the pipeline, not stdout), or logging is off. With no tracer
 * installed (Effect's in-memory default) the pipeline opens no spans of its own; the `traced` variant
 * installs a tracer that creates every span as an exporter would receive it. Metrics go to the
 * default registry.
 */
import { AlertSink, Breaker, Monitor, Pipeline, RateLimit, RequestLog, ResponseCache } from "@roadcar/core"
import type { Upstream } from "@roadcar/core/Upstream"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Stream from "effect/Stream"
import * as Tracer from "effect/Tracer"
import { FailTwice, requests, response, upstreamError } from "./fixtures.ts"
import type { Candidate, Path } from "./measure.ts"
import { rawEffectCandidate, verifyAnswers } from "./raw.ts"

/** Which variant of the full pipeline. */
export interface Variant {
  readonly id: string
  readonly label: string
  readonly path: Path
  /** `alerting`: `Monitor.layer()` + `AlertSink.layerLog`; `noop`: `Monitor.layerNoop`. */
  readonly monitor: "alerting" | "noop"
  /** `json`: the request log formatted as JSON and recorded on the span, not written; `off`: no logger. */
  readonly log: "json" | "off"
  /** `recording`: a tracer is installed and every span is created (as for an exporter); default none. */
  readonly tracer?: "recording" | undefined
}

// A tracer other than Effect's default: spans are created, kept by nobody (an exporter's share of
// the cost is its batching and sending, not measured here).
const recordingTracer = Tracer.make({ span: (options) => new Tracer.NativeSpan(options) })

/** The pipeline options of every variant. */
export const pipelineOptions = (upstream: Upstream): Pipeline.Options => ({
  steps: [{ upstream }],
  name: "bench",
  retry: { attempts: 3, baseDelay: "0 millis", jitter: false },
  timeouts: { attempt: "30 seconds", total: "60 seconds" }
})

/** The stage layers of a variant (everything but the pipeline). */
export const stages = (variant: Pick<Variant, "monitor" | "log">) =>
  Layer.mergeAll(
    RateLimit.layerMemory({
      rules: [
        {
          by: "key",
          requests: { limit: 1_000_000_000, window: "1 minute" },
          tokens: { limit: 1_000_000_000_000, window: "1 minute" }
        }
      ],
      onExceeded: "reject"
    }),
    ResponseCache.layer({ capacity: 1024, timeToLive: "10 minutes" }),
    Breaker.layerMemory(),
    variant.monitor === "alerting" ? Monitor.layer().pipe(Layer.provide(AlertSink.layerLog)) : Monitor.layerNoop,
    variant.log === "json" ? Logger.layer([RequestLog.formatJson, Logger.tracerLogger]) : Logger.layer([])
  )

/** An upstream that answers at once, or fails its first two attempts of every three. */
export const benchUpstream = (path: Path): { readonly upstream: Upstream; readonly attempts: () => number } => {
  const script = new FailTwice()
  const complete: Upstream["complete"] =
    path === "success"
      ? () => Effect.succeed(response)
      : () => Effect.suspend(() => (script.next() ? Effect.fail(upstreamError) : Effect.succeed(response)))
  return {
    upstream: {
      name: "bench",
      provider: "bench",
      model: "bench-model",
      complete,
      stream: () => Stream.die("the in-process benchmark does not stream")
    },
    attempts: () => script.attempts
  }
}

/** A built pipeline and the context it runs in. */
export interface Built {
  readonly pipeline: Pipeline.Pipeline
  readonly context: Context.Context<never>
  readonly close: () => Promise<void>
}

/** Builds the stages and the pipeline once; calls then run on the built context. */
export const build = async (
  variant: Pick<Variant, "monitor" | "log" | "tracer">,
  upstream: Upstream
): Promise<Built> => {
  const runtime = ManagedRuntime.make(
    Pipeline.layer(pipelineOptions(upstream)).pipe(Layer.provideMerge(stages(variant)))
  )
  const built = await runtime.context()
  const context = variant.tracer === "recording" ? Context.add(built, Tracer.Tracer, recordingTracer) : built
  const pipeline = await runtime.runPromise(Effect.service(Pipeline.PipelineService))
  return { pipeline, context: context as Context.Context<never>, close: () => runtime.dispose() }
}

/** One Roadcar candidate. */
export const candidate = async (variant: Variant): Promise<Candidate> => {
  const { upstream, attempts } = benchUpstream(variant.path)
  const built = await build(variant, upstream)
  const run = Effect.runPromiseWith(built.context)
  const identity = { key: "bench" }
  const call = (i: number) => run(built.pipeline.complete(requests[i]!, identity))
  return {
    id: variant.id,
    label: variant.label,
    path: variant.path,
    baseline: rawEffectCandidate,
    call,
    verify: async () => {
      const problem = await verifyAnswers(call)()
      if (problem !== undefined) return problem
      const before = attempts()
      const answer = await call(4000)
      const made = answer.meta.attempts
      const expected = variant.path === "success" ? 1 : 3
      if (made !== expected) return `expected ${expected} attempts, the answer says ${made}`
      if (variant.path === "fail-twice" && attempts() - before !== 3) return "the upstream did not see 3 attempts"
      if (answer.meta.cacheHit) return "a cache hit: the cache must miss on every call"
      return undefined
    },
    close: built.close
  }
}

/** The Roadcar variants measured. */
export const variants: ReadonlyArray<Variant> = [
  {
    id: "roadcar",
    label: "Roadcar full pipeline (alerting monitor, JSON request log)",
    path: "success",
    monitor: "alerting",
    log: "json"
  },
  {
    id: "roadcar-traced",
    label: "Roadcar full pipeline, a tracer installed (every span created)",
    path: "success",
    monitor: "alerting",
    log: "json",
    tracer: "recording"
  },
  {
    id: "roadcar-monitor-noop",
    label: "Roadcar full pipeline, Monitor.layerNoop",
    path: "success",
    monitor: "noop",
    log: "json"
  },
  {
    id: "roadcar-logs-off",
    label: "Roadcar full pipeline, no logger",
    path: "success",
    monitor: "alerting",
    log: "off"
  },
  {
    id: "roadcar-fail-twice",
    label: "Roadcar full pipeline, fail twice then succeed",
    path: "fail-twice",
    monitor: "alerting",
    log: "json"
  }
]
