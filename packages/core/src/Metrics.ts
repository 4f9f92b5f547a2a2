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
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"

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
export const operationDuration = Metric.histogram("gen_ai.client.operation.duration", {
  description: "GenAI operation duration (one upstream attempt), in seconds",
  boundaries: durationBoundaries
})

/**
 * `gen_ai.client.token.usage`: tokens per answer, by `gen_ai.token.type` (`input` / `output`).
 *
 * @category metrics
 * @since 0.1.0
 */
export const tokenUsage = Metric.histogram("gen_ai.client.token.usage", {
  description: "Tokens used per GenAI operation, by gen_ai.token.type",
  boundaries: tokenBoundaries
})

/**
 * `gen_ai.client.operation.time_to_first_chunk`: seconds until a stream's first chunk.
 *
 * @category metrics
 * @since 0.1.0
 */
export const timeToFirstChunk = Metric.histogram("gen_ai.client.operation.time_to_first_chunk", {
  description: "Time to the first chunk of a streamed GenAI operation, in seconds",
  boundaries: durationBoundaries
})

// =============================================================================
// Roadcar's own
// =============================================================================

/**
 * Requests by `model` and `outcome` (`success`, `fallback`, `static`, `error`, `rejected`).
 *
 * @category metrics
 * @since 0.1.0
 */
export const requests = Metric.counter("roadcar_requests_total", {
  description: "Requests by public model and outcome",
  incremental: true
})

/**
 * Request latency in seconds by `model` and `outcome`.
 *
 * @category metrics
 * @since 0.1.0
 */
export const requestDuration = Metric.histogram("roadcar_request_duration_seconds", {
  description: "Request latency through the pipeline, in seconds",
  boundaries: durationBoundaries
})

/**
 * Retries by `upstream` and `reason`.
 *
 * @category metrics
 * @since 0.1.0
 */
export const retries = Metric.counter("roadcar_retries_total", {
  description: "Retries by upstream and reason",
  incremental: true
})

/**
 * Fallbacks by `model`, the `upstream` that took over, and the `reason` the previous step failed.
 *
 * @category metrics
 * @since 0.1.0
 */
export const fallbacks = Metric.counter("roadcar_fallbacks_total", {
  description: "Fallbacks by model, answering step and reason",
  incremental: true
})

/**
 * Cache lookups by `model` and `result` (`hit` / `miss`).
 *
 * @category metrics
 * @since 0.1.0
 */
export const cacheLookups = Metric.counter("roadcar_cache_lookups_total", {
  description: "Response cache lookups by model and result",
  incremental: true
})

/**
 * Requests refused by Roadcar's own rate limit, by `model` and `limit`.
 *
 * @category metrics
 * @since 0.1.0
 */
export const rateLimited = Metric.counter("roadcar_rate_limited_total", {
  description: "Requests refused by Roadcar's rate limit",
  incremental: true
})

/**
 * Breaker state per `upstream`: 0 closed, 1 half-open, 2 open.
 *
 * @category metrics
 * @since 0.1.0
 */
export const breakerState = Metric.gauge("roadcar_breaker_state", {
  description: "Circuit breaker state per upstream: 0 closed, 1 half-open, 2 open"
})

/**
 * Requests in flight by `model`.
 *
 * @category metrics
 * @since 0.1.0
 */
export const inFlight = Metric.gauge("roadcar_requests_in_flight", { description: "Requests in flight by model" })

/**
 * The gateway's own time per request (total minus upstream time), in seconds.
 *
 * @category metrics
 * @since 0.1.0
 */
export const overhead = Metric.histogram("roadcar_gateway_overhead_seconds", {
  description: "Gateway overhead per request (total time minus time spent on upstream calls), in seconds",
  boundaries: [0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1]
})

/**
 * Adds one to a counter with labels.
 *
 * @category metrics
 * @since 0.1.0
 */
export const increment = (counter: Metric.Counter<number>, attributes: Record<string, string>): Effect.Effect<void> =>
  Metric.update(Metric.withAttributes(counter, attributes), 1)

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
): Effect.Effect<void> => Metric.update(Metric.withAttributes(histogram, attributes), value)

/**
 * Adds a span event with attributes to the current span, if there is one.
 *
 * @category tracing
 * @since 0.1.0
 */
export const spanEvent = (name: string, attributes: Record<string, unknown>): Effect.Effect<void> =>
  Effect.flatMap(Effect.option(Effect.currentSpan), (span) =>
    span._tag === "Some"
      ? Effect.map(Clock.currentTimeNanos, (now) => span.value.event(name, now, attributes))
      : Effect.void
  )
