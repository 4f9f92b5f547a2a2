/**
 * `@roadcar/opentelemetry`: Roadcar's spans, metrics and (opt-in) logs over OTLP/HTTP, on with one
 * layer or the standard `OTEL_*` variables.
 *
 * @since 0.1.0
 */

/**
 * Which traces are exported: `always_on`, `always_off`, `traceidratio`, `parentbased_*`.
 *
 * @since 0.1.0
 */
export * as Sampler from "./Sampler.ts"

/**
 * The layers: `layer(options)`, `layerFromEnv()`, and `flush`.
 *
 * @since 0.1.0
 */
export * as Telemetry from "./Telemetry.ts"

/**
 * Reading the `OTEL_*` environment variables.
 *
 * @since 0.1.0
 */
export * as TelemetryEnv from "./TelemetryEnv.ts"
