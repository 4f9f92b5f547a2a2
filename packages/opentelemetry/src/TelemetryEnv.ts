/**
 * Reads the standard `OTEL_*` environment variables into `Telemetry.Options`.
 *
 * `parse` is a pure function of an environment record: it says whether anything was requested
 * (`undefined` when not, so `Telemetry.layerFromEnv` installs nothing), which signals are on, where
 * they go and how they are sampled, batched and timed; a value it cannot use is a
 * `TelemetryEnvError` naming the variable (never echoing a header value). `read` collects the
 * variables through the current `ConfigProvider` (by default `process.env`). Only OTLP over HTTP is
 * supported: `grpc` is refused rather than silently posting HTTP to a gRPC port.
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import * as Data from "effect/Data"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Result from "effect/Result"
import * as Sampler from "./Sampler.ts"
import type * as Telemetry from "./Telemetry.ts"

// =============================================================================
// Models
// =============================================================================

/**
 * An environment record: variable name to value (missing or empty means unset).
 *
 * @category models
 * @since 0.1.0
 */
export type Env = Readonly<Record<string, string | undefined>>

/**
 * A telemetry variable that has a value Roadcar cannot use.
 *
 * @category errors
 * @since 0.1.0
 */
export class TelemetryEnvError extends Data.TaggedError("TelemetryEnvError")<{
  /** The variable, e.g. `OTEL_TRACES_SAMPLER`. */
  readonly variable: string
  /** What is wrong with it (never the value of a header). */
  readonly detail: string
}> {
  override get message(): string {
    return `${this.variable}: ${this.detail}`
  }
}

/**
 * Every variable {@link parse} reads.
 *
 * @category constants
 * @since 0.1.0
 */
export const variables = [
  "OTEL_SDK_DISABLED",
  "OTEL_SERVICE_NAME",
  "OTEL_RESOURCE_ATTRIBUTES",
  "OTEL_EXPORTER_OTLP_ENDPOINT",
  "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
  "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
  "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
  "OTEL_EXPORTER_OTLP_HEADERS",
  "OTEL_EXPORTER_OTLP_PROTOCOL",
  "OTEL_EXPORTER_OTLP_COMPRESSION",
  "OTEL_EXPORTER_OTLP_TIMEOUT",
  "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
  "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
  "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
  "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
  "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
  "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
  "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION",
  "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
  "OTEL_EXPORTER_OTLP_LOGS_HEADERS",
  "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
  "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION",
  "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT",
  "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
  "OTEL_TRACES_EXPORTER",
  "OTEL_METRICS_EXPORTER",
  "OTEL_LOGS_EXPORTER",
  "OTEL_TRACES_SAMPLER",
  "OTEL_TRACES_SAMPLER_ARG",
  "OTEL_BSP_SCHEDULE_DELAY",
  "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
  "OTEL_METRIC_EXPORT_INTERVAL"
] as const

// =============================================================================
// Parsing
// =============================================================================

const decode = (text: string): string => {
  try {
    return decodeURIComponent(text)
  } catch {
    return text
  }
}

/**
 * Parses a `key=value,key2=value2` list (`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`):
 * keys and values are trimmed and percent-decoded; entries without `=` or with an empty key are
 * skipped; a repeated key keeps its last value.
 *
 * @example
 * ```ts
 * import { TelemetryEnv } from "@roadcar/opentelemetry"
 * TelemetryEnv.parseKeyValues("deployment.environment=prod, team = llm%20ops,broken")
 * // => { "deployment.environment": "prod", team: "llm ops" }
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const parseKeyValues = (text: string | undefined): Record<string, string> => {
  const entries: Record<string, string> = {}
  for (const entry of (text ?? "").split(",")) {
    const at = entry.indexOf("=")
    if (at < 0) continue
    const key = decode(entry.slice(0, at).trim())
    if (key === "") continue
    entries[key] = decode(entry.slice(at + 1).trim())
  }
  return entries
}

const exporterList = (text: string | undefined): ReadonlyArray<string> | undefined => {
  if (text === undefined) return undefined
  const names = text
    .split(",")
    .map((name) => name.trim().toLowerCase())
    .filter((name) => name !== "")
  return names.length === 0 ? undefined : names
}

const present = (env: Env, name: string): string | undefined => {
  const value = env[name]
  return value === undefined || value.trim() === "" ? undefined : value.trim()
}

type Parsed<A> = Result.Result<A, TelemetryEnvError>

const fail = (variable: string, detail: string): Parsed<never> =>
  Result.fail(new TelemetryEnvError({ variable, detail }))

// RFC 7230 `token`: the characters a header name may contain.
const headerNameChar = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]$/

const codePoint = (char: string): string => `U+${char.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0")}`

// What is wrong with a header value and how to fix it, without showing any of the value; `undefined` when
// fetch can send it. A value is Latin-1 text without control characters (a tab inside is allowed, RFC 7230).
const headerValueProblem = (value: string): string | undefined => {
  for (const char of value) {
    const code = char.codePointAt(0)!
    if (code === 0x0a || code === 0x0d || (code < 0x20 && code !== 0x09) || code === 0x7f) {
      return `contains the control character ${codePoint(char)}${code === 0x0a || code === 0x0d ? " (a line break)" : ""}; remove it (look for a stray %${code.toString(16).toUpperCase().padStart(2, "0")} or a literal one in the variable)`
    }
    if (code > 0xff) {
      return "contains a character above U+00FF, which cannot be sent in an HTTP header; keep to ASCII (beware of pasted typographic quotes or dashes)"
    }
  }
  return undefined
}

/**
 * What is wrong with some export headers, without showing any value (nor a name past its first bad
 * character: `authorization: Bearer sk-1=` puts a secret in the "name"); `undefined` when fetch can
 * send them all. Used for the environment variables here and for `Telemetry.layer`'s options.
 *
 * @internal
 */
export const headersProblem = (entries: Readonly<Record<string, string>>): string | undefined => {
  for (const [name, value] of Object.entries(entries)) {
    const chars = Array.from(name)
    const bad = chars.findIndex((char) => !headerNameChar.test(char))
    if (bad >= 0) {
      const char = chars[bad]!
      const code = char.codePointAt(0)!
      const what =
        char === " " ? "a space" : code > 0x20 && code < 0x7f ? `"${char}"` : `the character ${codePoint(char)}`
      const which = bad === 0 ? "a header name" : `the header name beginning "${chars.slice(0, bad).join("")}"`
      return (
        `${which} contains ${what}, which header names cannot contain (only letters, digits and !#$%&'*+-.^_\`|~); ` +
        "write the headers as name=value,name2=value2 (the rest is not shown)"
      )
    }
    const problem = headerValueProblem(value)
    if (problem !== undefined) return `the value of header "${name}" (not shown) ${problem}`
  }
  return undefined
}

// `OTEL_EXPORTER_OTLP_HEADERS` (or a signal's `OTEL_EXPORTER_OTLP_<SIGNAL>_HEADERS`), validated here: a
// header fetch refuses would otherwise fail every export (with the value in the logged error) and turn
// that signal off, instead of failing at start by its name. `undefined` when the variable is unset.
const headers = (env: Env, variable: string): Parsed<Record<string, string> | undefined> => {
  if (present(env, variable) === undefined) return Result.succeed(undefined)
  const entries = parseKeyValues(present(env, variable))
  const problem = headersProblem(entries)
  if (problem !== undefined) return fail(variable, problem)
  return Result.succeed(Object.keys(entries).length > 0 ? entries : undefined)
}

const url = (env: Env, name: string): Parsed<string | undefined> => {
  const value = present(env, name)
  if (value === undefined) return Result.succeed(undefined)
  try {
    const parsed = new URL(value)
    return parsed.protocol === "http:" || parsed.protocol === "https:"
      ? Result.succeed(value)
      : fail(name, `must be an http(s) URL, got protocol "${parsed.protocol}"`)
  } catch {
    return fail(name, "is not a valid URL")
  }
}

const positiveInt = (env: Env, name: string): Parsed<number | undefined> => {
  const value = present(env, name)
  if (value === undefined) return Result.succeed(undefined)
  const number = Number(value)
  return Number.isInteger(number) && number > 0
    ? Result.succeed(number)
    : fail(name, `must be a positive integer, got "${value}"`)
}

const oneOf = <const L extends string>(env: Env, name: string, literals: ReadonlyArray<L>): Parsed<L | undefined> => {
  const value = present(env, name)?.toLowerCase()
  if (value === undefined) return Result.succeed(undefined)
  const found = literals.find((literal) => literal === value)
  return found !== undefined ? Result.succeed(found) : fail(name, `must be one of ${literals.join(", ")}`)
}

const protocol = (env: Env, variable: string): Parsed<Telemetry.Protocol | undefined> => {
  const value = present(env, variable)?.toLowerCase()
  if (value === "grpc") {
    return fail(
      variable,
      "grpc is not supported: use http/protobuf (the default) or http/json, on the collector's HTTP port (4318)"
    )
  }
  return oneOf(env, variable, ["http/protobuf", "http/json"])
}

const millis = (value: number | undefined): Duration.Input | undefined =>
  value === undefined ? undefined : `${value} millis`

/**
 * The exporter settings one variable prefix gives: `OTEL_EXPORTER_OTLP` (every signal) or
 * `OTEL_EXPORTER_OTLP_TRACES` (and `_METRICS`, `_LOGS`), each `_HEADERS`, `_PROTOCOL`, `_COMPRESSION`,
 * `_TIMEOUT` parsed and checked alike, an error naming the variable it came from.
 */
const exportSettings = (
  env: Env,
  prefix: string
): Parsed<{
  readonly headers: Record<string, string> | undefined
  readonly protocol: Telemetry.Protocol | undefined
  readonly compression: "gzip" | "none" | undefined
  readonly exportTimeout: Duration.Input | undefined
}> =>
  Result.gen(function* () {
    return {
      headers: yield* headers(env, `${prefix}_HEADERS`),
      protocol: yield* protocol(env, `${prefix}_PROTOCOL`),
      compression: yield* oneOf(env, `${prefix}_COMPRESSION`, ["gzip", "none"]),
      exportTimeout: millis(yield* positiveInt(env, `${prefix}_TIMEOUT`))
    }
  })

// `Sampler.parse` messages start with the variable's name, which the error's message already shows.
const samplerError = <A>(result: Result.Result<A, string>, variable: string): Parsed<A> =>
  Result.mapError(
    result,
    (detail) =>
      new TelemetryEnvError({
        variable,
        detail: detail.startsWith(`${variable} `) ? detail.slice(variable.length + 1) : detail
      })
  )

// A signal is on when its exporter list allows OTLP and something asked for it.
const signal = (list: ReadonlyArray<string> | undefined, requested: boolean): boolean =>
  list === undefined ? requested : list.includes("otlp")

const defined = <A extends object>(value: A): { [K in keyof A]: Exclude<A[K], undefined> } =>
  Object.fromEntries(Object.entries(value).filter(([, entry]) => entry !== undefined)) as {
    [K in keyof A]: Exclude<A[K], undefined>
  }

// `value` without its undefined entries; `undefined` when none is left.
const nonEmpty = <A extends object>(value: A): { [K in keyof A]: Exclude<A[K], undefined> } | undefined => {
  const entries = defined(value)
  return Object.keys(entries).length > 0 ? entries : undefined
}

// A signal's own settings (`Telemetry.SignalOptions`): its endpoint, and, when it is on, its
// `OTEL_EXPORTER_OTLP_<SIGNAL>_*` variables (read and checked only then); `undefined` when none is set.
const signalOptions = (
  env: Env,
  signal: "TRACES" | "METRICS" | "LOGS",
  endpoint: string | undefined,
  on: boolean
): Parsed<Telemetry.SignalOptions | undefined> =>
  Result.gen(function* () {
    const own = on ? yield* exportSettings(env, `OTEL_EXPORTER_OTLP_${signal}`) : {}
    return nonEmpty({ endpoint, ...own })
  })

/**
 * Reads the telemetry options from environment variables; `undefined` when nothing is requested.
 *
 * **Details**
 *
 * | Variable | Meaning (default) |
 * | --- | --- |
 * | `OTEL_SDK_DISABLED` | `true` turns everything off |
 * | `OTEL_EXPORTER_OTLP_ENDPOINT` | base URL; traces and metrics go to `/v1/traces`, `/v1/metrics` (`http://localhost:4318`) |
 * | `OTEL_EXPORTER_OTLP_{TRACES,METRICS,LOGS}_ENDPOINT` | a signal's full URL, used as is |
 * | `OTEL_EXPORTER_OTLP_HEADERS` | `key=value,...` sent with every export, e.g. an API key (never logged; a name or value fetch would refuse is an error naming the header) |
 * | `OTEL_EXPORTER_OTLP_PROTOCOL` | `http/protobuf` or `http/json` (`http/protobuf`) |
 * | `OTEL_EXPORTER_OTLP_COMPRESSION` | `gzip` or `none` (`none`) |
 * | `OTEL_EXPORTER_OTLP_TIMEOUT` | ms per export request (10000) |
 * | `OTEL_EXPORTER_OTLP_{TRACES,METRICS,LOGS}_{HEADERS,PROTOCOL,COMPRESSION,TIMEOUT}` | one signal's setting, instead of the shared one (which applies when it is unset); checked alike |
 * | `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE` | `cumulative` or `delta` (`cumulative`) |
 * | `OTEL_SERVICE_NAME` | `service.name` (`roadcar`) |
 * | `OTEL_RESOURCE_ATTRIBUTES` | `key=value,...` resource attributes |
 * | `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` | see `Sampler.parse` (`parentbased_always_on`) |
 * | `OTEL_TRACES_EXPORTER`, `OTEL_METRICS_EXPORTER` | `otlp` or `none` (`otlp` once an endpoint is set) |
 * | `OTEL_LOGS_EXPORTER` | `otlp` exports Effect logs too (`none`) |
 * | `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` | span export interval ms (5000), batch size (512) |
 * | `OTEL_METRIC_EXPORT_INTERVAL` | metric export interval ms (10000) |
 *
 * Traces are requested by an endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT` or the traces one) or by
 * `OTEL_TRACES_EXPORTER=otlp` (then to `http://localhost:4318`); metrics likewise. A signal whose
 * exporter list does not name `otlp` (`none`, `console`, `prometheus`, ...) is not exported over OTLP.
 *
 * A signal's own `OTEL_EXPORTER_OTLP_<SIGNAL>_HEADERS` (`_PROTOCOL`, `_COMPRESSION`, `_TIMEOUT`) wins
 * over the shared variable, which applies to the signals without one (as in the OpenTelemetry spec;
 * headers are replaced, not merged). They become `signals.traces.headers`, `signals.metrics.protocol`,
 * ... and are read (and checked) only for the signals that are on; a signal's endpoint variable becomes
 * `signals.<signal>.endpoint`.
 *
 * @example
 * ```ts
 * import { Result } from "effect"
 * import { TelemetryEnv } from "@roadcar/opentelemetry"
 * TelemetryEnv.parse({}) // => Result.succeed(undefined)
 * const options = Result.getOrThrow(TelemetryEnv.parse({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://jaeger:4318" }))
 * options?.endpoint // => "http://jaeger:4318"
 * const perSignal = Result.getOrThrow(
 *   TelemetryEnv.parse({
 *     OTEL_EXPORTER_OTLP_ENDPOINT: "https://api.honeycomb.io",
 *     OTEL_EXPORTER_OTLP_HEADERS: "x-team=shared",
 *     OTEL_EXPORTER_OTLP_TRACES_HEADERS: "x-honeycomb-team=traces-key"
 *   })
 * )
 * perSignal?.signals?.traces?.headers // => { "x-honeycomb-team": "traces-key" } (metrics send `headers`)
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const parse = (env: Env): Result.Result<Telemetry.Options | undefined, TelemetryEnvError> =>
  Result.gen(function* () {
    if (present(env, "OTEL_SDK_DISABLED")?.toLowerCase() === "true") return undefined
    const endpoint = yield* url(env, "OTEL_EXPORTER_OTLP_ENDPOINT")
    const tracesEndpoint = yield* url(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    const metricsEndpoint = yield* url(env, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    const logsEndpoint = yield* url(env, "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")
    const tracesExporter = exporterList(present(env, "OTEL_TRACES_EXPORTER"))
    const metricsExporter = exporterList(present(env, "OTEL_METRICS_EXPORTER"))
    const logsExporter = exporterList(present(env, "OTEL_LOGS_EXPORTER"))
    const traces = signal(tracesExporter, endpoint !== undefined || tracesEndpoint !== undefined)
    const metrics = signal(metricsExporter, endpoint !== undefined || metricsEndpoint !== undefined)
    const logs = signal(logsExporter, false)
    if (!traces && !metrics && !logs) return undefined

    const samplerName = present(env, "OTEL_TRACES_SAMPLER")
    // The name first (alone it cannot fail on the argument), then the argument: each error names its variable.
    yield* samplerError(Sampler.parse(samplerName, undefined), "OTEL_TRACES_SAMPLER")
    const sampler = yield* samplerError(
      Sampler.parse(samplerName, present(env, "OTEL_TRACES_SAMPLER_ARG")),
      "OTEL_TRACES_SAMPLER_ARG"
    )
    const attributes = parseKeyValues(present(env, "OTEL_RESOURCE_ATTRIBUTES"))
    const serviceName = present(env, "OTEL_SERVICE_NAME") ?? attributes["service.name"]
    const serviceVersion = attributes["service.version"]
    delete attributes["service.name"]
    delete attributes["service.version"]
    const shared = yield* exportSettings(env, "OTEL_EXPORTER_OTLP")
    const signals = nonEmpty({
      traces: yield* signalOptions(env, "TRACES", tracesEndpoint, traces),
      metrics: yield* signalOptions(env, "METRICS", metricsEndpoint, metrics),
      logs: yield* signalOptions(env, "LOGS", logsEndpoint, logs)
    })
    const tracesExportInterval = yield* positiveInt(env, "OTEL_BSP_SCHEDULE_DELAY")
    const metricsExportInterval = yield* positiveInt(env, "OTEL_METRIC_EXPORT_INTERVAL")

    const options: Telemetry.Options = defined({
      traces,
      metrics,
      logs,
      endpoint,
      protocol: shared.protocol,
      compression: shared.compression,
      headers: shared.headers,
      signals,
      serviceName,
      serviceVersion,
      resourceAttributes: Object.keys(attributes).length > 0 ? attributes : undefined,
      sampler,
      exportTimeout: shared.exportTimeout,
      tracesExportInterval: millis(tracesExportInterval),
      metricsExportInterval: millis(metricsExportInterval),
      maxBatchSize: yield* positiveInt(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
      metricsTemporality: yield* oneOf(env, "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", [
        "cumulative",
        "delta"
      ])
    })
    return options
  })

/**
 * Collects {@link variables} through the current `ConfigProvider` (by default `process.env`; in
 * tests, `ConfigProvider.fromEnv({ env })`).
 *
 * @category constructors
 * @since 0.1.0
 */
export const read: Effect.Effect<Env, TelemetryEnvError> = Effect.gen(function* () {
  const env: Record<string, string> = {}
  for (const name of variables) {
    const value = yield* Config.option(Config.String(name)).pipe(
      Effect.mapError((error) => new TelemetryEnvError({ variable: name, detail: error.message }))
    )
    if (Option.isSome(value)) env[name] = value.value
  }
  return env
})
