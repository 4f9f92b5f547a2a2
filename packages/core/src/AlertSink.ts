/**
 * Where the monitor's alerts go: a log line, a program's callback, or several sinks at once.
 *
 * `AlertSink` is the service the `Monitor` hands every `Raised` and `Resolved` alert to. This module
 * holds the `Alert` model (a Schema, so a webhook sink can encode it as JSON), the service and its
 * layers: `layerLog` writes one structured log line per alert, `layerCallback` calls a function of
 * the program, `layerMany` fans out to several sinks. The monitor calls sinks off the request path,
 * with a timeout, and only logs a sink that fails; a sink never sees the requests themselves.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"

// =============================================================================
// Models
// =============================================================================

/**
 * The rules the monitor checks.
 *
 * - `slow_request`: a finished request took longer than the slow threshold (subject: model).
 * - `hanging_request`: a request is still in flight after the hanging threshold (subject: model).
 * - `error_rate`: share of failed requests over the window (subject: model).
 * - `fallback_rate`: share of requests answered by a fallback or a static answer (subject: model).
 * - `breaker_open`: an upstream's circuit breaker is open (subject: upstream).
 * - `upstream_rate_limited`: upstream 429 responses over the window (subject: model).
 * - `budget_threshold`: a key's budget reached a soft threshold in its window (subject: API key name).
 * - `store_unavailable`: a shared store (Redis) cannot answer; its fault policy applies (subject: store).
 *
 * @category models
 * @since 0.1.0
 */
export const Rule = Schema.Literals([
  "slow_request",
  "hanging_request",
  "error_rate",
  "fallback_rate",
  "breaker_open",
  "upstream_rate_limited",
  "budget_threshold",
  "store_unavailable"
])

/**
 * @category models
 * @since 0.1.0
 */
export type Rule = typeof Rule.Type

/**
 * One alert: a rule that started (`Raised`) or stopped (`Resolved`) holding for a subject.
 *
 * **Details**
 *
 * - `subject` is the public model name, or the upstream name for `breaker_open`.
 * - `message` is a sentence for people, with the window's figures in it.
 * - `figures` are the same numbers for programs (`requests`, `errors`, `errorRate`, `threshold`, ...).
 * - `exampleTraceIds` are a few trace ids of requests that made the rule hold (may be empty).
 * - `at` is the monitor's clock in epoch milliseconds.
 *
 * @category models
 * @since 0.1.0
 */
export const Alert = Schema.Struct({
  _tag: Schema.Literals(["Raised", "Resolved"]),
  rule: Rule,
  subject: Schema.String,
  message: Schema.String,
  figures: Schema.Record(Schema.String, Schema.Number),
  exampleTraceIds: Schema.Array(Schema.String),
  at: Schema.Number
})

/**
 * @category models
 * @since 0.1.0
 */
export type Alert = typeof Alert.Type

// =============================================================================
// Service
// =============================================================================

/**
 * Receives the monitor's alerts.
 *
 * **Details**
 *
 * `send` should not fail; if it dies or takes longer than the monitor's sink timeout, the monitor logs
 * it and goes on with the next alert. Alerts arrive one at a time, in the order they were raised.
 *
 * @category services
 * @since 0.1.0
 */
export class AlertSink extends Context.Service<
  AlertSink,
  {
    readonly send: (alert: Alert) => Effect.Effect<void>
  }
>()("@roadcar/core/AlertSink") {}

// =============================================================================
// Constructors
// =============================================================================

const logAnnotations = (alert: Alert): Record<string, unknown> => ({
  "alert.state": alert._tag,
  "alert.rule": alert.rule,
  "alert.subject": alert.subject,
  "alert.figures": alert.figures,
  "alert.trace_ids": alert.exampleTraceIds,
  "alert.at": new Date(alert.at).toISOString()
})

/**
 * A sink that writes one structured log line per alert: `Warning` for `Raised`, `Info` for `Resolved`.
 *
 * **Details**
 *
 * The line's message is the alert's sentence; the annotations are `alert.state`, `alert.rule`,
 * `alert.subject`, `alert.figures`, `alert.trace_ids` and `alert.at` (ISO 8601).
 *
 * @category constructors
 * @since 0.1.0
 */
export const log: AlertSink["Service"] = AlertSink.of({
  send: (alert) =>
    (alert._tag === "Raised" ? Effect.logWarning(alert.message) : Effect.logInfo(alert.message)).pipe(
      Effect.annotateLogs(logAnnotations(alert))
    )
})

/**
 * A sink that calls a function of the program for every alert.
 *
 * **Details**
 *
 * A returned promise is awaited. A callback that throws or rejects makes `send` die with that error,
 * which the monitor logs.
 *
 * **Example** (Collecting alerts)
 *
 * ```ts
 * import { Effect } from "effect"
 * import { AlertSink } from "@roadcar/core"
 *
 * const seen: Array<string> = []
 * const sink = AlertSink.fromCallback((alert) => {
 *   seen.push(`${alert._tag} ${alert.rule}`)
 * })
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const fromCallback = (callback: (alert: Alert) => void | PromiseLike<void>): AlertSink["Service"] =>
  AlertSink.of({
    send: (alert) =>
      Effect.suspend(() => {
        const result = callback(alert)
        return Predicate.isPromiseLike(result) ? Effect.promise(() => Promise.resolve(result)) : Effect.void
      })
  })

/**
 * A sink that hands every alert to each of `sinks`, concurrently.
 *
 * **Details**
 *
 * A sink that dies is logged and does not stop the others; `send` completes when every sink is done.
 * `many([])` drops every alert.
 *
 * @category constructors
 * @since 0.1.0
 */
export const many = (sinks: ReadonlyArray<AlertSink["Service"]>): AlertSink["Service"] =>
  AlertSink.of({
    send: (alert) =>
      Effect.forEach(
        sinks,
        (sink) =>
          sink
            .send(alert)
            .pipe(
              Effect.catchCause((cause) =>
                Effect.logWarning("AlertSink: a sink failed; the alert was not delivered to it", cause).pipe(
                  Effect.annotateLogs({ "alert.rule": alert.rule, "alert.subject": alert.subject })
                )
              )
            ),
        { concurrency: "unbounded", discard: true }
      )
  })

// =============================================================================
// Layers
// =============================================================================

/**
 * Provides the {@link log} sink.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerLog: Layer.Layer<AlertSink> = Layer.succeed(AlertSink, log)

/**
 * Provides a sink that calls `callback` for every alert (see {@link fromCallback}).
 *
 * @category layers
 * @since 0.1.0
 */
export const layerCallback = (callback: (alert: Alert) => void | PromiseLike<void>): Layer.Layer<AlertSink> =>
  Layer.succeed(AlertSink, fromCallback(callback))

/**
 * Provides one sink that fans out to the sinks of several layers (see {@link many}).
 *
 * **Details**
 *
 * Each layer is built once, in the scope of the combined layer, so a sink with resources (a webhook's
 * HTTP client) keeps them for the life of the combined sink.
 *
 * **Example** (Log and a callback)
 *
 * ```ts
 * import { AlertSink } from "@roadcar/core"
 *
 * const sinks = AlertSink.layerMany([AlertSink.layerLog, AlertSink.layerCallback((alert) => console.log(alert.message))])
 * ```
 *
 * @category layers
 * @since 0.1.0
 */
export const layerMany = <E, R>(layers: ReadonlyArray<Layer.Layer<AlertSink, E, R>>): Layer.Layer<AlertSink, E, R> =>
  Layer.effect(
    AlertSink,
    Effect.forEach(layers, (layer) => Layer.build(layer).pipe(Effect.map(Context.get(AlertSink)))).pipe(
      Effect.map(many)
    )
  )
