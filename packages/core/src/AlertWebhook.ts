/**
 * An alert sink that POSTs every alert to a webhook as Slack-compatible JSON.
 *
 * `AlertWebhook.make` builds an `AlertSink` on the `HttpClient` in context. Each alert becomes one
 * POST of `{ "text": "[RAISED] rule subject: message", "blocks"?: [...], "alert": {...} }`: Slack
 * incoming webhooks show `text` and ignore `alert`, other receivers read `alert`. `send` only puts
 * the alert in a bounded queue (the oldest waiting alert is dropped, with a warning, when it is
 * full); a fiber in the sink's scope delivers them one at a time, in order, with a timeout per POST
 * and retries with exponential backoff and jitter on network errors, timeouts, 429 (honouring
 * `Retry-After`) and 5xx. A dead webhook therefore never slows the monitor, let alone a request.
 * The webhook URL and the `Redacted` headers are secrets: they are never logged and the HTTP client
 * records no span for them.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { constTrue } from "effect/Function"
import * as HttpClient from "effect/http/HttpClient"
import * as HttpClientError from "effect/http/HttpClientError"
import * as HttpClientRequest from "effect/http/HttpClientRequest"
import type * as HttpClientResponse from "effect/http/HttpClientResponse"
import * as Layer from "effect/Layer"
import * as Predicate from "effect/Predicate"
import * as Queue from "effect/Queue"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import { type Alert, AlertSink } from "./AlertSink.ts"
import * as RetryAfter from "./internal/http/RetryAfter.ts"

// =============================================================================
// Options
// =============================================================================

/**
 * Options of {@link make}. Only `url` is required.
 *
 * **Details**
 *
 * | field | default | meaning |
 * | --- | --- | --- |
 * | `url` | | the webhook URL (http or https), a secret: it is never logged |
 * | `headers` | none | extra request headers, e.g. an `authorization` for a non-Slack receiver |
 * | `timeout` | 5 seconds | time limit of one POST, answer included |
 * | `maxAttempts` | 5 | POSTs per alert, the first included |
 * | `initialDelay` | 1 second | delay before the first retry; it doubles for each further retry (±20% jitter) |
 * | `maxDelay` | 30 seconds | longest delay between two attempts, a `Retry-After` included |
 * | `capacity` | 100 | alerts waiting for delivery; when full the oldest is dropped |
 * | `blocks` | none | renders Slack Block Kit `blocks` for an alert; without it only `text` is sent |
 *
 * An alert is therefore given up after at most `maxAttempts × timeout + (maxAttempts − 1) × maxDelay`:
 * with the defaults, 25 s of POSTs plus a backoff of about 15 s (1 + 2 + 4 + 8 s, ±20%), or up to
 * 120 s when every answer carries a long `Retry-After`.
 *
 * @category options
 * @since 0.1.0
 */
export interface Options {
  readonly url: Redacted.Redacted<string>
  readonly headers?: Readonly<Record<string, string | Redacted.Redacted<string>>> | undefined
  readonly timeout?: Duration.Input | undefined
  readonly maxAttempts?: number | undefined
  readonly initialDelay?: Duration.Input | undefined
  readonly maxDelay?: Duration.Input | undefined
  readonly capacity?: number | undefined
  readonly blocks?: ((alert: Alert) => ReadonlyArray<unknown>) | undefined
}

/**
 * The JSON body of one webhook POST.
 *
 * @category models
 * @since 0.1.0
 */
export interface Payload {
  /** One line for people: `[RAISED] rule subject: message`, escaped for Slack. */
  readonly text: string
  /** Slack Block Kit blocks, when {@link Options.blocks} is set. */
  readonly blocks?: ReadonlyArray<unknown>
  /** The alert itself, for programs. */
  readonly alert: Alert
}

// =============================================================================
// Payload
// =============================================================================

/** Slack reads `&`, `<` and `>` as markup in `text`; these three must be escaped. */
const escapeSlack = (text: string): string => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")

/**
 * The one-line text of an alert: `[RAISED] rule subject: message` or `[RESOLVED] ...`.
 *
 * **Details**
 *
 * Line breaks become spaces and `&`, `<`, `>` are escaped as Slack asks (`&amp;`, `&lt;`, `&gt;`).
 *
 * **Example** (The text of a raised alert)
 *
 * ```ts
 * import { AlertWebhook } from "@roadcar/core"
 *
 * AlertWebhook.text({
 *   _tag: "Raised",
 *   rule: "breaker_open",
 *   subject: "primary",
 *   message: "Upstream primary: circuit breaker open.",
 *   figures: { openForMs: 0 },
 *   exampleTraceIds: [],
 *   at: 0
 * }) // => "[RAISED] breaker_open primary: Upstream primary: circuit breaker open."
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const text = (alert: Alert): string =>
  escapeSlack(
    `[${alert._tag.toUpperCase()}] ${alert.rule} ${alert.subject}: ${alert.message}`.replace(/\s*\n\s*/g, " ")
  )

/**
 * The JSON body posted for an alert (see {@link Payload}).
 *
 * @category constructors
 * @since 0.1.0
 */
export const payload = (alert: Alert, options: Pick<Options, "blocks"> = {}): Payload => {
  const copy: Alert = {
    _tag: alert._tag,
    rule: alert.rule,
    subject: alert.subject,
    message: alert.message,
    figures: alert.figures,
    exampleTraceIds: alert.exampleTraceIds,
    at: alert.at
  }
  return options.blocks === undefined
    ? { text: text(alert), alert: copy }
    : { text: text(alert), blocks: options.blocks(alert), alert: copy }
}

// =============================================================================
// Delivery
// =============================================================================

/** Why one POST did not deliver the alert. `description` never contains the URL. */
class AttemptFailed extends Data.TaggedError("AttemptFailed")<{
  readonly retryable: boolean
  readonly description: string
  readonly retryAfter: Duration.Duration | undefined
}> {}

/** The first `code` (`ECONNREFUSED`, ...) along an error's `cause` chain. */
const errorCode = (error: unknown): string | undefined => {
  let current = error
  for (let depth = 0; depth < 4 && Predicate.isObject(current); depth++) {
    if (
      Predicate.hasProperty(current, "code") &&
      Predicate.isString(current.code) &&
      /^[A-Z0-9_]+$/.test(current.code)
    ) {
      return current.code
    }
    current = Predicate.hasProperty(current, "cause") ? current.cause : undefined
  }
  return undefined
}

const fromClientError = (error: HttpClientError.HttpClientError): AttemptFailed => {
  const reason = error.reason
  const code = "cause" in reason ? errorCode(reason.cause) : undefined
  const retryable = reason._tag === "TransportError"
  const what = reason._tag === "TransportError" ? "network error" : reason._tag
  return new AttemptFailed({ retryable, description: code ? `${what} (${code})` : what, retryAfter: undefined })
}

const maxExcerpt = 200

const annotations = (alert: Alert): Record<string, unknown> => ({
  "alert.state": alert._tag,
  "alert.rule": alert.rule,
  "alert.subject": alert.subject
})

const isPositive = (value: Duration.Duration): boolean => Duration.toMillis(value) > 0

const decodeSafe = (text: string): string => {
  try {
    return decodeURIComponent(text.replace(/\+/g, " "))
  } catch {
    return text
  }
}

/**
 * What must never be logged: the URL, its path, its credentials and every query parameter value (as
 * written and decoded), and every redacted header value (whole, and its credential after a scheme
 * such as `Bearer`).
 */
const secretsOf = (url: string, redactedHeaders: ReadonlyArray<string>): ReadonlyArray<string> => {
  const parsed = new URL(url)
  const secrets = [url, parsed.pathname, parsed.username, parsed.password, decodeSafe(parsed.password)]
  for (const pair of parsed.search.replace(/^\?/, "").split("&")) {
    const at = pair.indexOf("=")
    if (at < 0) continue
    const raw = pair.slice(at + 1)
    secrets.push(raw, decodeSafe(raw))
  }
  for (const value of redactedHeaders) {
    secrets.push(value)
    const credential = /^[A-Za-z][\w.+-]*\s+(\S.*)$/.exec(value.trim())?.[1]
    if (credential !== undefined) secrets.push(credential)
  }
  return secrets.map((secret) => secret.trim())
}

/** `850ms`, `1.02s`, `30s`: short and readable in a log line (jittered delays are fractional). */
const formatDuration = (value: Duration.Duration): string => {
  const millis = Duration.toMillis(value)
  return millis < 1000 ? `${Math.round(millis)}ms` : `${Number((millis / 1000).toFixed(2))}s`
}

/**
 * Builds a sink that POSTs every alert to `options.url`; see the module comment and {@link Options}.
 *
 * **Details**
 *
 * - `send` returns at once: it only queues the alert. A fiber in the current scope takes alerts
 *   one at a time, in order, and POSTs each; closing the scope stops it (queued alerts are lost).
 * - A 2xx answer delivers the alert. Network errors, timeouts, 429 and 5xx are retried with
 *   exponential backoff and jitter; a `Retry-After` (or `retry-after-ms`) longer than the backoff
 *   is waited for, up to `maxDelay`. After `maxAttempts` the alert is dropped with one warning.
 * - Any other status (400, 403, 404, ...) is not retried: one warning names the status and the
 *   start of the answer (Slack answers `invalid_payload`, `no_service`, ...).
 * - No log line contains the URL (nor its path or query parameter values) or a `Redacted` header
 *   value, even when the receiver echoes them; the POSTs record no HTTP client span (its attributes would).
 * - Dies with a `RangeError` on invalid options (the URL is not quoted).
 *
 * **Example** (Alerts to Slack and to the log)
 *
 * ```ts
 * import { Layer, Redacted } from "effect"
 * import { FetchHttpClient } from "effect/http"
 * import { AlertSink, AlertWebhook, Monitor } from "@roadcar/core"
 *
 * const slack = AlertWebhook.layer({ url: Redacted.make(process.env.SLACK_WEBHOOK_URL!) })
 *
 * // Slack only
 * const MonitorSlack = Monitor.layer({ errorRate: 0.1 }).pipe(
 *   Layer.provide(slack),
 *   Layer.provide(FetchHttpClient.layer)
 * )
 *
 * // Slack and the log
 * const MonitorBoth = Monitor.layer({ errorRate: 0.1 }).pipe(
 *   Layer.provide(AlertSink.layerMany([AlertSink.layerLog, slack])),
 *   Layer.provide(FetchHttpClient.layer)
 * )
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const make: (
  options: Options
) => Effect.Effect<AlertSink["Service"], never, HttpClient.HttpClient | Scope.Scope> = Effect.fnUntraced(function* (
  options: Options
) {
  const url = Redacted.value(options.url)
  const timeout = Duration.fromInputUnsafe(options.timeout ?? "5 seconds")
  const initialDelay = Duration.fromInputUnsafe(options.initialDelay ?? "1 second")
  const maxDelay = Duration.fromInputUnsafe(options.maxDelay ?? "30 seconds")
  const maxAttempts = options.maxAttempts ?? 5
  const capacity = options.capacity ?? 100

  const invalid: Array<string> = []
  if (!/^https?:\/\/[^/\s]/i.test(url) || !URL.canParse(url)) invalid.push("url is not an http(s) URL")
  if (!isPositive(timeout)) invalid.push("timeout must be above 0")
  if (!Number.isInteger(maxAttempts) || maxAttempts < 1) invalid.push("maxAttempts must be an integer of at least 1")
  if (!Number.isInteger(capacity) || capacity < 1) invalid.push("capacity must be an integer of at least 1")
  if (Duration.toMillis(initialDelay) < 0) invalid.push("initialDelay must not be negative")
  if (Duration.toMillis(maxDelay) < Duration.toMillis(initialDelay)) {
    invalid.push("maxDelay must be at least initialDelay")
  }
  if (invalid.length > 0) return yield* Effect.die(new RangeError(`AlertWebhook.make: ${invalid.join("; ")}`))

  const client = yield* HttpClient.HttpClient
  const clock = yield* Clock.Clock
  const queue = yield* Queue.bounded<Alert>(capacity)
  yield* Effect.addFinalizer(() => Queue.shutdown(queue))

  const headers: Record<string, string> = {}
  const redactedHeaders: Array<string> = []
  for (const [name, value] of Object.entries(options.headers ?? {})) {
    if (Redacted.isRedacted(value)) {
      headers[name] = Redacted.value(value)
      redactedHeaders.push(headers[name])
    } else {
      headers[name] = value
    }
  }

  // Everything logged goes through `scrub`, in case a receiver echoes back its own URL, a part of it
  // (path, query parameter values, credentials) or a secret header (`invalid token: Bearer ...`).
  const secrets = [...new Set(secretsOf(url, redactedHeaders))]
    .filter((secret) => secret.length > 1)
    .sort((a, b) => b.length - a.length) // longest first, so a secret containing another goes whole
  const scrub = (value: string): string => secrets.reduce((acc, secret) => acc.split(secret).join("<redacted>"), value)
  const base = HttpClientRequest.post(url).pipe(HttpClientRequest.setHeaders(headers))

  // ---- one attempt -------------------------------------------------------------

  const excerpt = (response: HttpClientResponse.HttpClientResponse): Effect.Effect<string> =>
    response.text.pipe(
      Effect.map((body) => {
        const line = scrub(body.replace(/\s+/g, " ").trim())
        return line.length > maxExcerpt ? `${line.slice(0, maxExcerpt)}...` : line
      }),
      Effect.orElseSucceed(() => "")
    )

  const classify = (response: HttpClientResponse.HttpClientResponse): Effect.Effect<void, AttemptFailed> => {
    const status = response.status
    // The body is read either way, so the connection can be reused.
    if (status >= 200 && status < 300) return Effect.ignore(response.text)
    return Effect.flatMap(excerpt(response), (body) => {
      const retryable = status === 429 || status >= 500
      const retryAfter = retryable
        ? RetryAfter.fromRetryAfter(response.headers, clock.currentTimeMillisUnsafe())
        : undefined
      const description = body.length > 0 ? `HTTP ${status}: ${body}` : `HTTP ${status}`
      return Effect.fail(new AttemptFailed({ retryable, description, retryAfter }))
    })
  }

  const post = (request: HttpClientRequest.HttpClientRequest): Effect.Effect<void, AttemptFailed> =>
    client.execute(request).pipe(
      Effect.flatMap(classify),
      Effect.timeout(timeout),
      Effect.mapError((error) =>
        HttpClientError.isHttpClientError(error)
          ? fromClientError(error)
          : Cause.isTimeoutError(error)
            ? new AttemptFailed({
                retryable: true,
                description: `no answer within ${formatDuration(timeout)}`,
                retryAfter: undefined
              })
            : error
      ),
      // The client span would carry the URL (`url.full`, `url.path`): record none.
      Effect.provideService(HttpClient.TracerDisabledWhen, constTrue)
    )

  // ---- retries -----------------------------------------------------------------

  const policy = (alert: Alert, attempts: () => number) =>
    Schedule.exponential(initialDelay, 2).pipe(
      Schedule.jittered,
      Schedule.setInputType<AttemptFailed>(),
      Schedule.while(({ input }) => input.retryable),
      Schedule.modifyDelay(({ input, duration }) => {
        const wanted = input.retryAfter === undefined ? duration : Duration.max(duration, input.retryAfter)
        return Effect.succeed(Duration.min(wanted, maxDelay))
      }),
      Schedule.upTo({ times: maxAttempts - 1 }),
      // Outermost, so it runs only when a retry will really happen, right before its sleep.
      Schedule.modifyDelay(({ input, duration }) =>
        Effect.logDebug(
          `AlertWebhook: attempt ${attempts()} failed (${input.description}); retrying in ${formatDuration(duration)}`
        ).pipe(Effect.annotateLogs(annotations(alert)), Effect.as(duration))
      )
    )

  const deliver = (alert: Alert): Effect.Effect<void> =>
    Effect.suspend(() => {
      const request = HttpClientRequest.bodyJsonUnsafe(base, payload(alert, options))
      let attempts = 0
      return Effect.suspend(() => {
        attempts++
        return post(request)
      }).pipe(
        Effect.retry(policy(alert, () => attempts)),
        Effect.catch((failure) =>
          Effect.logWarning(
            failure.retryable
              ? `AlertWebhook: gave up delivering the alert after ${attempts} attempts (${failure.description})`
              : `AlertWebhook: the webhook refused the alert (${failure.description}); not retried`
          ).pipe(Effect.annotateLogs({ ...annotations(alert), "webhook.attempts": attempts }))
        )
      )
    })

  // A defect (a `blocks` function that throws, ...) is logged, scrubbed, and the next alert goes on.
  const worker = Queue.take(queue).pipe(
    Effect.flatMap((alert) =>
      deliver(alert).pipe(
        Effect.catchCause((cause) =>
          Cause.hasInterruptsOnly(cause)
            ? Effect.failCause(cause)
            : Effect.logError(`AlertWebhook: delivering an alert failed: ${scrub(Cause.pretty(cause))}`).pipe(
                Effect.annotateLogs(annotations(alert))
              )
        )
      )
    ),
    Effect.forever
  )
  yield* Effect.forkScoped(worker)

  // ---- send --------------------------------------------------------------------

  const send = (alert: Alert): Effect.Effect<void> =>
    Effect.suspend(() => {
      if (Queue.offerUnsafe(queue, alert)) return Effect.void
      // Not accepted: either the queue is full, or the sink's scope is closed (nothing to do).
      if (Queue.sizeUnsafe(queue) < capacity) return Effect.void
      const oldest = Queue.takeUnsafe(queue)
      Queue.offerUnsafe(queue, alert)
      const dropped = oldest !== undefined && oldest._tag === "Success" ? oldest.value : alert
      return Effect.logWarning(
        `AlertWebhook: ${capacity} alerts are waiting for the webhook; dropped the oldest (${dropped._tag.toLowerCase()} ${dropped.rule} ${dropped.subject})`
      ).pipe(Effect.annotateLogs(annotations(dropped)))
    })

  return AlertSink.of({ send })
})

// =============================================================================
// Layers
// =============================================================================

/**
 * Provides the webhook sink of {@link make}; its delivery fiber lives as long as the layer.
 *
 * **Example** (A monitor alerting to Slack)
 *
 * ```ts
 * import { Layer, Redacted } from "effect"
 * import { FetchHttpClient } from "effect/http"
 * import { AlertWebhook, Monitor } from "@roadcar/core"
 *
 * const MonitorLive = Monitor.layer({ breakerOpen: true }).pipe(
 *   Layer.provide(AlertWebhook.layer({ url: Redacted.make(process.env.SLACK_WEBHOOK_URL!) })),
 *   Layer.provide(FetchHttpClient.layer)
 * )
 * ```
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (options: Options): Layer.Layer<AlertSink, never, HttpClient.HttpClient> =>
  Layer.effect(AlertSink, make(options))
