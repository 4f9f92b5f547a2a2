/**
 * Turns on OpenTelemetry export for a Roadcar program with one layer: the pipeline's spans, the
 * metrics in Effect's `MetricRegistry` and, when asked, Effect's logs, sent over OTLP/HTTP
 * (protobuf or JSON) to a collector, Jaeger, or any OTLP endpoint.
 *
 * `layer(options)` is for code; `layerFromEnv()` reads the standard `OTEL_*` variables and is a
 * no-op when none asks for export, which is what `roadcar serve` uses. Both are built on Effect's
 * own OTLP exporters (`effect/observability`), so no OpenTelemetry SDK is involved: spans are
 * Effect spans, metrics are read from the registry the pipeline records into. Export never runs on
 * the request path: ending a span only appends it to a batch; batches are posted on an interval
 * (and when full) by a background fiber, each request is time-limited, only a few may be in flight,
 * and a collector that fails is paused for a minute (its batches dropped) rather than retried
 * forever. When the layer's scope closes, what is buffered is flushed, within `shutdownTimeout`.
 *
 * @since 0.1.0
 */
import * as ConfigProvider from "effect/ConfigProvider"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Headers from "effect/http/Headers"
import * as Layer from "effect/Layer"
import * as OtlpExporter from "effect/observability/OtlpExporter"
import * as OtlpLogger from "effect/observability/OtlpLogger"
import * as OtlpMetrics from "effect/observability/OtlpMetrics"
import * as OtlpSerialization from "effect/observability/OtlpSerialization"
import * as OtlpTracer from "effect/observability/OtlpTracer"
import * as Redacted from "effect/Redacted"
import * as Result from "effect/Result"
import * as Tracer from "effect/Tracer"
import * as ExportClient from "./internal/exportClient.ts"
import * as Sampler from "./Sampler.ts"
import * as TelemetryEnv from "./TelemetryEnv.ts"

// =============================================================================
// Options
// =============================================================================

/**
 * The OTLP/HTTP encodings: `http/protobuf` (the OpenTelemetry default) and `http/json`.
 *
 * @category options
 * @since 0.1.0
 */
export type Protocol = "http/protobuf" | "http/json"

/**
 * Headers sent with exports: a record, or a `Redacted` one (e.g. read from a secret).
 *
 * @category options
 * @since 0.1.0
 */
export type ExportHeaders = Redacted.Redacted<Record<string, string>> | Record<string, string>

/**
 * One signal's own export settings, each replacing the shared option of the same name (in
 * {@link Options}) for that signal only, as `OTEL_EXPORTER_OTLP_TRACES_HEADERS` does; what is
 * unset falls back to the shared option.
 *
 * @example
 * ```ts
 * import { Telemetry } from "@roadcar/opentelemetry"
 *
 * // spans to a hosted backend with its key, in JSON; the other settings are the shared ones
 * const traces: Telemetry.SignalOptions = {
 *   endpoint: "https://api.honeycomb.io/v1/traces",
 *   headers: { "x-honeycomb-team": "my-key" },
 *   protocol: "http/json"
 * }
 * ```
 *
 * @category options
 * @since 0.1.0
 */
export interface SignalOptions {
  /** The signal's full URL, used as is (default `${endpoint}/v1/traces`, `/v1/metrics` or `/v1/logs`). */
  readonly endpoint?: string | undefined
  /** The signal's headers, instead of the shared `headers` (not merged with them). */
  readonly headers?: ExportHeaders | undefined
  /** The signal's body encoding (default the shared `protocol`). */
  readonly protocol?: Protocol | undefined
  /** The signal's compression (default the shared `compression`). */
  readonly compression?: "gzip" | "none" | undefined
  /** The time limit of one export request of the signal (default the shared `exportTimeout`). */
  readonly exportTimeout?: Duration.Input | undefined
}

/**
 * What to export, where, and how.
 *
 * **Details**
 *
 * `headers`, `protocol`, `compression` and `exportTimeout` apply to every signal; a signal's own
 * settings in `signals` (`signals.traces.headers`, `signals.metrics.protocol`, ...) replace the
 * shared ones for that signal only, as `OTEL_EXPORTER_OTLP_TRACES_HEADERS` does. (`traces`,
 * `metrics` and `logs` say which signals are exported.)
 *
 * @example
 * ```ts
 * import { Telemetry } from "@roadcar/opentelemetry"
 *
 * // metrics to a local collector without a key, traces to a hosted backend with one
 * const options: Telemetry.Options = {
 *   endpoint: "http://localhost:4318",
 *   signals: {
 *     traces: { endpoint: "https://api.honeycomb.io/v1/traces", headers: { "x-honeycomb-team": "my-key" } }
 *   }
 * }
 * ```
 *
 * @category options
 * @since 0.1.0
 */
export interface Options {
  /** Export spans (default `true`). */
  readonly traces?: boolean | undefined
  /** Export the metrics of the current `MetricRegistry` (default `true`). */
  readonly metrics?: boolean | undefined
  /** Export Effect's log lines too, besides the existing loggers (default `false`). */
  readonly logs?: boolean | undefined
  /** The collector's base URL; signals go to `/v1/traces`, `/v1/metrics`, `/v1/logs` (default `http://localhost:4318`). */
  readonly endpoint?: string | undefined
  /** The body encoding (default `http/protobuf`). */
  readonly protocol?: Protocol | undefined
  /** Headers sent with every export, e.g. a vendor API key; never logged (their names are redacted). */
  readonly headers?: ExportHeaders | undefined
  /** Gzip export bodies of 1KB or more (default `"none"`). */
  readonly compression?: "gzip" | "none" | undefined
  /** A signal's own endpoint, headers, protocol, compression or export timeout, instead of the shared ones. */
  readonly signals?:
    | {
        readonly traces?: SignalOptions | undefined
        readonly metrics?: SignalOptions | undefined
        readonly logs?: SignalOptions | undefined
      }
    | undefined
  /** `service.name` (default `roadcar`). */
  readonly serviceName?: string | undefined
  /** `service.version` (default none). */
  readonly serviceVersion?: string | undefined
  /** More resource attributes, e.g. `{ "deployment.environment": "prod" }`. */
  readonly resourceAttributes?: Record<string, string> | undefined
  /** Which traces are exported (default `Sampler.defaultSampler`, i.e. `parentbased_always_on`). */
  readonly sampler?: Sampler.Sampler | undefined
  /** How often buffered spans are posted (default 5 seconds); a full batch goes at once. */
  readonly tracesExportInterval?: Duration.Input | undefined
  /** How often metrics are posted (default 10 seconds). */
  readonly metricsExportInterval?: Duration.Input | undefined
  /** How often buffered log lines are posted (default 1 second). */
  readonly logsExportInterval?: Duration.Input | undefined
  /** Spans (or log lines) per export request (default 512). */
  readonly maxBatchSize?: number | undefined
  /** Time limit of one export request (default 10 seconds). */
  readonly exportTimeout?: Duration.Input | undefined
  /** Export requests in flight per signal; beyond, a batch is refused (default 2). */
  readonly maxConcurrentExports?: number | undefined
  /** How long closing the layer may wait for the final flush (default 3 seconds). */
  readonly shutdownTimeout?: Duration.Input | undefined
  /** Metric temporality (default `cumulative`; `delta` for backends that prefer it). */
  readonly metricsTemporality?: "cumulative" | "delta" | undefined
}

/**
 * The default collector base URL, where Jaeger all-in-one and the OpenTelemetry Collector listen.
 *
 * @category constants
 * @since 0.1.0
 */
export const defaultEndpoint = "http://localhost:4318"

/**
 * The default `service.name`.
 *
 * @category constants
 * @since 0.1.0
 */
export const defaultServiceName = "roadcar"

// =============================================================================
// Layers
// =============================================================================

const signalUrl = (base: string, path: string): string => `${base.endsWith("/") ? base.slice(0, -1) : base}${path}`

const checkUrl = (name: string, value: string): string => {
  let parsed: URL
  try {
    parsed = new URL(value)
  } catch {
    throw new RangeError(`Telemetry.layer: ${name} is not a valid URL`)
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new RangeError(`Telemetry.layer: ${name} must be an http(s) URL`)
  }
  return value
}

const checkPositiveInt = (name: string, value: number): number => {
  if (!Number.isInteger(value) || value < 1) {
    throw new RangeError(`Telemetry.layer: ${name} must be a positive integer, got ${value}`)
  }
  return value
}

const checkDuration = (name: string, value: Duration.Input): Duration.Duration => {
  const duration = Duration.fromInput(value)
  if (duration._tag === "None" || Duration.toMillis(duration.value) <= 0) {
    throw new RangeError(`Telemetry.layer: ${name} must be a positive duration`)
  }
  return duration.value
}

type Signal = "traces" | "metrics" | "logs"

interface SignalSettings {
  readonly url: string
  readonly headers: Record<string, string> | undefined
  readonly protocol: Protocol
  readonly compression: "gzip" | "none"
  readonly exportTimeout: Duration.Duration
}

const unredacted = (headers: ExportHeaders | undefined): Record<string, string> | undefined =>
  headers === undefined ? undefined : Redacted.isRedacted(headers) ? Redacted.value(headers) : headers

// Headers fetch could not send would fail every export, with the value in the logged error.
const checkHeaders = (name: string, headers: ExportHeaders | undefined): Record<string, string> | undefined => {
  const entries = unredacted(headers)
  const problem = entries === undefined ? undefined : TelemetryEnv.headersProblem(entries)
  if (problem !== undefined) throw new RangeError(`Telemetry.layer: ${name}: ${problem}`)
  return entries
}

// A signal's export settings: its own option (in `signals`), else the shared one, else the default.
const settings = (
  options: Options,
  signal: Signal,
  endpoint: string,
  exportTimeout: Duration.Duration
): SignalSettings => {
  const own = options.signals?.[signal]
  const timeout =
    own?.exportTimeout === undefined
      ? exportTimeout
      : checkDuration(`signals.${signal}.exportTimeout`, own.exportTimeout)
  return {
    url: checkUrl(`signals.${signal}.endpoint`, own?.endpoint ?? signalUrl(endpoint, `/v1/${signal}`)),
    headers:
      own?.headers === undefined
        ? checkHeaders("headers", options.headers)
        : checkHeaders(`signals.${signal}.headers`, own.headers),
    protocol: own?.protocol ?? options.protocol ?? "http/protobuf",
    compression: own?.compression ?? options.compression ?? "none",
    exportTimeout: timeout
  }
}

/**
 * Exports spans, metrics and (when asked) logs over OTLP/HTTP for as long as the layer lives.
 *
 * **Details**
 *
 * Provide it once, around the whole program (the gateway server, or your `main`), not per request:
 * it installs the tracer every `Effect.withSpan` uses, snapshots the `MetricRegistry` it is built
 * with on every metrics interval, and adds an OTLP logger beside the existing ones. It provides
 * `OtlpExporter.Flusher`, whose `flush` drains every signal at once (see {@link flush}).
 *
 * **Gotchas**
 *
 * Throws a `RangeError` naming the option when a URL, a duration, a count or a header (never its
 * value) is invalid. The
 * collector is never contacted while building, so an unreachable one does not fail the layer: each
 * failed export is logged as a warning (without header values) and the signal pauses for a minute.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Telemetry } from "@roadcar/opentelemetry"
 *
 * const program = Effect.succeed("answer").pipe(Effect.withSpan("demo"))
 * // the span is posted to http://localhost:4318/v1/traces when the layer's scope closes
 * await Effect.runPromise(program.pipe(Effect.provide(Telemetry.layer({ serviceName: "demo" })))) // => "answer"
 * ```
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (options: Options = {}): Layer.Layer<OtlpExporter.Flusher> => {
  const endpoint = checkUrl("endpoint", options.endpoint ?? defaultEndpoint)
  const exportTimeout = checkDuration("exportTimeout", options.exportTimeout ?? Duration.seconds(10))
  const shutdownTimeout = checkDuration("shutdownTimeout", options.shutdownTimeout ?? Duration.seconds(3))
  const maxConcurrent = checkPositiveInt("maxConcurrentExports", options.maxConcurrentExports ?? 2)
  const maxBatchSize = checkPositiveInt("maxBatchSize", options.maxBatchSize ?? 512)
  const resource = {
    serviceName: options.serviceName ?? defaultServiceName,
    serviceVersion: options.serviceVersion,
    attributes: { ...options.resourceAttributes }
  }
  // Each signal its own client (so a slow metrics endpoint cannot take the traces' slots) and encoding.
  const transport = (signal: SignalSettings) =>
    Layer.mergeAll(
      ExportClient.layer({ timeout: signal.exportTimeout, maxConcurrent }),
      signal.protocol === "http/json" ? OtlpSerialization.layerJson : OtlpSerialization.layerProtobuf
    )
  const common = (signal: SignalSettings) =>
    ({ resource, url: signal.url, headers: signal.headers, compression: signal.compression, shutdownTimeout }) as const

  const signals: Array<Layer.Layer<OtlpExporter.Flusher>> = []
  const used: Array<SignalSettings> = []
  if (options.traces ?? true) {
    const traces = settings(options, "traces", endpoint, exportTimeout)
    used.push(traces)
    const sampler = options.sampler ?? Sampler.defaultSampler
    const tracer = OtlpTracer.make({
      ...common(traces),
      exportInterval: checkDuration("tracesExportInterval", options.tracesExportInterval ?? Duration.seconds(5)),
      maxBatchSize
    }).pipe(Effect.map((inner) => Sampler.tracer(inner, sampler)))
    signals.push(
      Layer.effect(Tracer.Tracer, tracer).pipe(
        Layer.provideMerge(OtlpExporter.layerFlusher),
        Layer.provide(transport(traces))
      )
    )
  }
  if (options.metrics ?? true) {
    const metrics = settings(options, "metrics", endpoint, exportTimeout)
    used.push(metrics)
    signals.push(
      OtlpMetrics.layer({
        ...common(metrics),
        exportInterval: checkDuration("metricsExportInterval", options.metricsExportInterval ?? Duration.seconds(10)),
        temporality: options.metricsTemporality
      }).pipe(Layer.provide(transport(metrics)))
    )
  }
  if (options.logs ?? false) {
    const logs = settings(options, "logs", endpoint, exportTimeout)
    used.push(logs)
    signals.push(
      OtlpLogger.layer({
        ...common(logs),
        exportInterval: checkDuration("logsExportInterval", options.logsExportInterval ?? Duration.seconds(1)),
        maxBatchSize,
        mergeWithExisting: true
      }).pipe(Layer.provide(transport(logs)))
    )
  }

  // The exporters are configured here and only here: Effect's resource builder would otherwise also
  // read OTEL_RESOURCE_ATTRIBUTES / OTEL_SERVICE_VERSION from the ambient ConfigProvider.
  const isolatedConfig = ConfigProvider.layer(ConfigProvider.fromUnknown({}))
  // Export failures are logged; should a logger render the failed request's headers, redact ours too.
  const redactedNames = Layer.succeed(Headers.CurrentRedactedNames)([
    ...Headers.CurrentRedactedNames.defaultValue(),
    ...new Set(used.flatMap((signal) => Object.keys(signal.headers ?? {}).map((name) => name.toLowerCase())))
  ])
  return Layer.mergeAll(OtlpExporter.layerFlusher, ...signals).pipe(
    Layer.provide(Layer.mergeAll(isolatedConfig, redactedNames))
  )
}

/**
 * Options of {@link layerFromEnv}.
 *
 * @category options
 * @since 0.1.0
 */
export interface FromEnvOptions {
  /** The variables to read (default: through the current `ConfigProvider`, i.e. `process.env`). */
  readonly env?: TelemetryEnv.Env | undefined
  /** What the environment does not set, e.g. `serviceVersion`; the environment wins. */
  readonly defaults?: Options | undefined
}

const signalNames: ReadonlyArray<Signal> = ["traces", "metrics", "logs"]

// The environment wins over the defaults option by option, and in `signals` setting by setting: a
// signal's own variable does not drop the defaults' other settings for that signal.
const withDefaults = (defaults: Options | undefined, env: Options): Options => {
  const merged: Options = { ...defaults, ...env }
  if (defaults?.signals === undefined || env.signals === undefined) return merged
  const signals: Record<string, SignalOptions> = {}
  for (const signal of signalNames) {
    signals[signal] = { ...defaults.signals[signal], ...env.signals[signal] }
  }
  return { ...merged, signals }
}

/**
 * {@link layer} configured by the standard `OTEL_*` variables (see `TelemetryEnv.parse`); a no-op
 * layer when none of them asks for export.
 *
 * **Details**
 *
 * `OTEL_EXPORTER_OTLP_ENDPOINT` alone turns on traces and metrics to that collector, with
 * `service.name` `roadcar`. The variables come from `env` when given, else from the current
 * `ConfigProvider` (`process.env` by default; `ConfigProvider.fromEnv({ env })` in tests). A
 * variable with an unusable value fails the layer with a `TelemetryEnvError` naming it.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Telemetry } from "@roadcar/opentelemetry"
 *
 * const telemetry = Telemetry.layerFromEnv({ env: { OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318" } })
 * const program = Effect.succeed("traced").pipe(Effect.withSpan("demo"))
 * await Effect.runPromise(program.pipe(Effect.provide(telemetry))) // => "traced"
 * ```
 *
 * @category layers
 * @since 0.1.0
 */
export const layerFromEnv = (
  options: FromEnvOptions = {}
): Layer.Layer<OtlpExporter.Flusher, TelemetryEnv.TelemetryEnvError> =>
  Layer.unwrap(
    Effect.gen(function* () {
      const env = options.env ?? (yield* TelemetryEnv.read)
      const parsed = yield* Effect.fromResult(TelemetryEnv.parse(env))
      return parsed === undefined ? OtlpExporter.layerFlusher : layer(withDefaults(options.defaults, parsed))
    })
  )

/**
 * Whether the standard `OTEL_*` variables in `env` ask for any export (what makes
 * {@link layerFromEnv} more than a no-op); a bad value is reported as not enabled.
 *
 * @example
 * ```ts
 * import { Telemetry } from "@roadcar/opentelemetry"
 * Telemetry.enabledByEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://localhost:4318" }) // => true
 * Telemetry.enabledByEnv({ OTEL_SDK_DISABLED: "true", OTEL_EXPORTER_OTLP_ENDPOINT: "http://localhost:4318" }) // => false
 * ```
 *
 * @category configuration
 * @since 0.1.0
 */
export const enabledByEnv = (env: TelemetryEnv.Env): boolean => {
  const parsed = TelemetryEnv.parse(env)
  return Result.isSuccess(parsed) && parsed.success !== undefined
}

/**
 * Posts everything buffered now (spans, metrics, logs), e.g. before a serverless instance is frozen.
 * It cannot fail; bound it with `Effect.timeoutOption` if the collector may be slow.
 *
 * @category tracing
 * @since 0.1.0
 */
export const flush: Effect.Effect<void, never, OtlpExporter.Flusher> = OtlpExporter.Flusher.use(
  (flusher) => flusher.flush
)
