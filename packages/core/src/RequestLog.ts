/**
 * Where Roadcar's log lines go: one JSON object per line, at the configured level, each carrying the
 * `trace_id` and `span_id` of the span it was written in.
 *
 * The pipeline writes one line per request (`"message":"request"`, with request id, key name, model
 * asked and model that answered, upstream, latency, status, attempts, cache hit, fallback and reason,
 * tokens), one per failed attempt with its cause, one per retry and fallback, and one per breaker
 * transition. This module only chooses the output: JSON lines through the `Console` (so a test's
 * `TestConsole` sees them), plus the tracer logger so log lines also become span events. No secret
 * is ever annotated: keys appear by their configured name, never their value.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import type * as LogLevel from "effect/LogLevel"
import * as References from "effect/References"
import * as Tracer from "effect/Tracer"

// A value `formatStructured` would write as it is (its `toJson` leaves these unchanged).
const isPlain = (value: unknown): boolean =>
  value === null || typeof value === "string" || typeof value === "boolean" || typeof value === "number"

// The structured line through Effect's own `formatStructured` (any annotation that is not a plain
// JSON scalar, or a cause), with the span's ids added.
const formatStructuredJson = (options: Logger.Options<unknown>): string => {
  // `formatStructured` returns a fresh object: the ids are added to it rather than to a copy.
  const line: Record<string, unknown> = Logger.formatStructured.log(options)
  const span = Context.getOrUndefined(options.fiber.context, Tracer.ParentSpan)
  if (span !== undefined) {
    line["trace_id"] = span.traceId
    line["span_id"] = span.spanId
  }
  return JSON.stringify(line)
}

/**
 * The structured line (`Logger.formatStructured` as JSON) with `trace_id` and `span_id` added when
 * the line was written inside a span.
 *
 * Lines whose message and annotations are plain JSON scalars (every line Roadcar writes on the
 * request path) are written straight into the string, the same bytes `formatStructured` would give
 * without building its intermediate object: the request line is the costliest thing a request does
 * after its upstream call.
 *
 * @category loggers
 * @since 0.1.0
 */
export const formatJson: Logger.Logger<unknown, string> = Logger.make((options) => {
  const message = options.message
  const text = Array.isArray(message) && message.length === 1 ? message[0] : message
  if (typeof text !== "string" || options.cause.reasons.length > 0) return formatStructuredJson(options)
  const annotations = options.fiber.getRef(References.CurrentLogAnnotations)
  for (const key in annotations) {
    if (!isPlain(annotations[key]) || key === "__proto__") return formatStructuredJson(options)
  }
  let spans = ""
  const logSpans = options.fiber.getRef(References.CurrentLogSpans)
  if (logSpans.length > 0) {
    const now = options.date.getTime()
    const record: Record<string, number> = {}
    for (const [label, timestamp] of logSpans) {
      if (label === "__proto__") return formatStructuredJson(options)
      record[label] = now - timestamp
    }
    spans = JSON.stringify(record)
  }
  const span = Context.getOrUndefined(options.fiber.context, Tracer.ParentSpan)
  return `{"message":${JSON.stringify(text)},"level":"${options.logLevel.toUpperCase()}","timestamp":"${options.date.toISOString()}","annotations":${JSON.stringify(annotations)},"spans":${spans === "" ? "{}" : spans},"fiberId":"#${options.fiber.id}"${span === undefined ? "" : `,"trace_id":${JSON.stringify(span.traceId)},"span_id":${JSON.stringify(span.spanId)}`}}`
})

/**
 * JSON lines at `level` and above (default `Info`), also recorded as span events.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { RequestLog } from "@roadcar/core"
 *
 * Effect.runPromise(Effect.logInfo("hello").pipe(Effect.provide(RequestLog.layerJson("Info"))))
 * // prints {"message":"hello","level":"INFO","timestamp":"...","annotations":{},"spans":{},"fiberId":"#1"}
 * ```
 *
 * @category layers
 * @since 0.1.0
 */
export const layerJson = (level: LogLevel.LogLevel = "Info"): Layer.Layer<never> =>
  Layer.mergeAll(
    Logger.layer([Logger.withConsoleLog(formatJson), Logger.tracerLogger]),
    Layer.succeed(References.MinimumLogLevel, level)
  )

/**
 * JSON lines at `level` and above (default `Info`) written to the process's stdout in batches: the
 * lines of one `window` (default 10 ms) go out in one write, and whatever is left is written when the
 * layer's scope closes (a graceful shutdown). Also records every line as a span event. What a server
 * uses: one write per request line is a system call per request.
 *
 * A process killed without a shutdown (SIGKILL, a crash) loses at most the last `window` of lines;
 * `layerJson` writes each line at once through the `Console`.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { RequestLog } from "@roadcar/core"
 *
 * Effect.runPromise(Effect.logInfo("hello").pipe(Effect.provide(RequestLog.layerJsonStdout("Info"))))
 * // prints {"message":"hello","level":"INFO",...} when the layer closes, or after 10 ms
 * ```
 *
 * @category layers
 * @since 0.1.0
 */
export const layerJsonStdout = (
  level: LogLevel.LogLevel = "Info",
  options?: { readonly window?: Duration.Input | undefined }
): Layer.Layer<never> =>
  Layer.mergeAll(
    Logger.layer([
      Logger.batched(formatJson, {
        window: options?.window ?? "10 millis",
        flush: (lines) =>
          Effect.sync(() => {
            if (lines.length > 0) process.stdout.write(`${lines.join("\n")}\n`)
          })
      }),
      Logger.tracerLogger
    ]),
    Layer.succeed(References.MinimumLogLevel, level)
  )
