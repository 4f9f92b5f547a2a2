/**
 * Roadcar's metrics: the OpenTelemetry GenAI client metrics and Roadcar's own, with labels of bounded
 * cardinality only.
 *
 * The metrics live in Effect's process-wide `MetricRegistry`, so `/metrics` (Prometheus text, where
 * dots become underscores) and the OTLP exporter read the same values. Labels are public model names,
 * upstream names, outcomes and reason tags: all fixed by the configuration, never a raw key, user or
 * prompt. The pipeline records them; a program can read them with `Metric.value`.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import type * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"

// Every metric below is registered with a factory that builds it with fixed attributes, so a
// labelled update reuses one metric per label set (its series key computed once) instead of
// `Metric.withAttributes` per update (merge + sort + JSON.stringify of the attributes every time).
type AnyMetric = Metric.Metric<number, unknown>
const factories = new Map<AnyMetric, (attributes: Record<string, string>) => AnyMetric>()
const labelledCache = new Map<AnyMetric, Map<string, AnyMetric>>()

const family = <M extends AnyMetric>(make: (attributes: Record<string, string> | undefined) => M): M => {
  const metric = make(undefined)
  factories.set(metric, make)
  return metric
}

const labelled = (metric: AnyMetric, attributes: Record<string, string>): AnyMetric => {
  let key = ""
  for (const name in attributes) key += `${name}\u0000${attributes[name]}\u0001`
  let byKey = labelledCache.get(metric)
  if (byKey === undefined) {
    byKey = new Map()
    labelledCache.set(metric, byKey)
  }
  let found = byKey.get(key)
  if (found === undefined) {
    const make = factories.get(metric)
    found = make ? make({ ...attributes }) : Metric.withAttributes(metric, attributes)
    byKey.set(key, found)
  }
  return found
}

// GenAI semantic-convention bucket boundaries (seconds; tokens).
const durationBoundaries = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
const tokenBoundaries = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864]

// =============================================================================
// GenAI client metrics
// =============================================================================

/**
 * `gen_ai.client.operation.duration`: seconds per upstream attempt.
 *
 * @category metrics
 * @since 0.1.0
 */
export const operationDuration = family((attributes) =>
  Metric.histogram("gen_ai.client.operation.duration", {
    description: "GenAI operation duration (one upstream attempt), in seconds",
    boundaries: durationBoundaries,
    ...(attributes ? { attributes } : {})
  })
)

/**
 * `gen_ai.client.token.usage`: tokens per answer, by `gen_ai.token.type` (`input` / `output`).
 *
 * @category metrics
 * @since 0.1.0
 */
export const tokenUsage = family((attributes) =>
  Metric.histogram("gen_ai.client.token.usage", {
    description: "Tokens used per GenAI operation, by gen_ai.token.type",
    boundaries: tokenBoundaries,
    ...(attributes ? { attributes } : {})
  })
)

/**
 * `gen_ai.client.operation.time_to_first_chunk`: seconds until a stream's first chunk.
 *
 * @category metrics
 * @since 0.1.0
 */
export const timeToFirstChunk = family((attributes) =>
  Metric.histogram("gen_ai.client.operation.time_to_first_chunk", {
    description: "Time to the first chunk of a streamed GenAI operation, in seconds",
    boundaries: durationBoundaries,
    ...(attributes ? { attributes } : {})
  })
)

// =============================================================================
// Roadcar's own
// =============================================================================

/**
 * Requests by `model` and `outcome` (`success`, `fallback`, `static`, `error`, `rejected`).
 *
 * @category metrics
 * @since 0.1.0
 */
export const requests = family((attributes) =>
  Metric.counter("roadcar_requests_total", {
    description: "Requests by public model and outcome",
    incremental: true,
    ...(attributes ? { attributes } : {})
  })
)

/**
 * Request latency in seconds by `model` and `outcome`.
 *
 * @category metrics
 * @since 0.1.0
 */
export const requestDuration = family((attributes) =>
  Metric.histogram("roadcar_request_duration_seconds", {
    description: "Request latency through the pipeline, in seconds",
    boundaries: durationBoundaries,
    ...(attributes ? { attributes } : {})
  })
)

/**
 * Retries by `upstream` and `reason`.
 *
 * @category metrics
 * @since 0.1.0
 */
export const retries = family((attributes) =>
  Metric.counter("roadcar_retries_total", {
    description: "Retries by upstream and reason",
    incremental: true,
    ...(attributes ? { attributes } : {})
  })
)

/**
 * Fallbacks by `model`, the `upstream` that took over, and the `reason` the previous step failed.
 *
 * @category metrics
 * @since 0.1.0
 */
export const fallbacks = family((attributes) =>
  Metric.counter("roadcar_fallbacks_total", {
    description: "Fallbacks by model, answering step and reason",
    incremental: true,
    ...(attributes ? { attributes } : {})
  })
)

/**
 * Cache lookups by `model` and `result` (`hit` / `miss`).
 *
 * @category metrics
 * @since 0.1.0
 */
export const cacheLookups = family((attributes) =>
  Metric.counter("roadcar_cache_lookups_total", {
    description: "Response cache lookups by model and result",
    incremental: true,
    ...(attributes ? { attributes } : {})
  })
)

/**
 * Requests refused by Roadcar's own rate limit, by `model` and `limit`.
 *
 * @category metrics
 * @since 0.1.0
 */
export const rateLimited = family((attributes) =>
  Metric.counter("roadcar_rate_limited_total", {
    description: "Requests refused by Roadcar's rate limit",
    incremental: true,
    ...(attributes ? { attributes } : {})
  })
)

/**
 * Breaker state per `upstream`: 0 closed, 1 half-open, 2 open.
 *
 * @category metrics
 * @since 0.1.0
 */
export const breakerState = family((attributes) =>
  Metric.gauge("roadcar_breaker_state", {
    description: "Circuit breaker state per upstream: 0 closed, 1 half-open, 2 open",
    ...(attributes ? { attributes } : {})
  })
)

/**
 * Requests in flight by `model`.
 *
 * @category metrics
 * @since 0.1.0
 */
export const inFlight = family((attributes) =>
  Metric.gauge("roadcar_requests_in_flight", {
    description: "Requests in flight by model",
    ...(attributes ? { attributes } : {})
  })
)

/**
 * Requests the gateway refused before they reached a pipeline (unknown or missing key, a body that
 * is not a valid chat request, an unknown model or one the key may not use), by the error `code` of
 * the answer (`invalid_api_key`, `invalid_json`, `model_not_found`, ...): a bounded label set.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Metrics } from "@roadcar/core"
 *
 * Effect.runSync(Metrics.record(Metrics.refused, { code: "invalid_json" }, 1))
 * ```
 *
 * @category metrics
 * @since 0.1.0
 */
export const refused = family((attributes) =>
  Metric.counter("roadcar_requests_refused_total", {
    description: "Requests refused before they reached a pipeline, by error code",
    incremental: true,
    ...(attributes ? { attributes } : {})
  })
)

/**
 * The gateway's own time per request (total minus upstream time), in seconds.
 *
 * @category metrics
 * @since 0.1.0
 */
export const overhead = family((attributes) =>
  Metric.histogram("roadcar_gateway_overhead_seconds", {
    description: "Gateway overhead per request (total time minus time spent on upstream calls), in seconds",
    boundaries: [0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1],
    ...(attributes ? { attributes } : {})
  })
)

/**
 * The metric with these labels: the same metric (and series) on every call for the same label set,
 * to update directly (`updateUnsafe` / `modifyUnsafe`) on a hot path.
 *
 * @example
 * ```ts
 * import { Effect, Metric } from "effect"
 * import { Metrics } from "@roadcar/core"
 *
 * const hits = Metrics.withLabels(Metrics.cacheLookups, { model: "chat", result: "hit" })
 * Effect.runPromise(Metric.update(hits, 1))
 * ```
 *
 * @category metrics
 * @since 0.1.0
 */
export const withLabels = <M extends Metric.Metric<number, unknown>>(
  metric: M,
  attributes: Record<string, string>
): M => labelled(metric as AnyMetric, attributes) as M

/**
 * Adds one to a counter with labels.
 *
 * @category metrics
 * @since 0.1.0
 */
export const increment = (counter: Metric.Counter<number>, attributes: Record<string, string>): Effect.Effect<void> =>
  Metric.update(labelled(counter as AnyMetric, attributes), 1)

/**
 * Records a value in a histogram with labels.
 *
 * @category metrics
 * @since 0.1.0
 */
export const record = (
  histogram: Metric.Metric<number, unknown>,
  attributes: Record<string, string>,
  value: number
): Effect.Effect<void> => Metric.update(labelled(histogram as AnyMetric, attributes), value)

/**
 * Adds a span event with attributes to the current span, if there is one.
 *
 * @category tracing
 * @since 0.1.0
 */
export const spanEvent = (name: string, attributes: Record<string, unknown>): Effect.Effect<void> =>
  // Reads the span from the fiber: `Effect.option(Effect.currentSpan)` builds (and, outside a span,
  // fails with) an error with a stack trace on every call.
  Effect.withFiber((fiber) => {
    const span = fiber.cache.span
    if (span !== undefined && span._tag === "Span") {
      span.event(name, fiber.getRef(Clock.Clock).currentTimeNanosUnsafe(), attributes)
    }
    return Effect.void
  })

/**
 * Adds `delta` to a gauge with labels.
 *
 * @category metrics
 * @since 0.1.0
 */
export const modify = (
  gauge: Metric.Gauge<number>,
  attributes: Record<string, string>,
  delta: number
): Effect.Effect<void> => Metric.modify(labelled(gauge as AnyMetric, attributes), delta)

/**
 * Records several labelled histogram values in one step.
 *
 * @category metrics
 * @since 0.1.0
 */
export const recordAll = (
  entries: ReadonlyArray<readonly [Metric.Metric<number, unknown>, Record<string, string>, number]>
): Effect.Effect<void> =>
  Effect.contextWith((context: Context.Context<never>) => {
    for (const [histogram, attributes, value] of entries) {
      labelled(histogram as AnyMetric, attributes).updateUnsafe(value, context)
    }
    return Effect.void
  })
