// AlertWebhook against a real HTTP server on 127.0.0.1. Backoff and timeouts run on the TestClock;
// the POSTs are real I/O, so the tests wait (in real time, briefly) for what the server or the log
// shows before each `TestClock.adjust`: a retry logs its debug line right before it starts sleeping.

import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import { assert, describe, it } from "@effect/vitest"
import { Clock, Context, Effect, Exit, Layer, Logger, Redacted, References, type Scope } from "effect"
import { FetchHttpClient } from "effect/http"
import { TestClock } from "effect/testing"
import * as AlertSink from "../src/AlertSink.ts"
import * as AlertWebhook from "../src/AlertWebhook.ts"
import * as Monitor from "../src/Monitor.ts"

// =============================================================================
// Helpers
// =============================================================================

type Alert = AlertSink.Alert

/** The secret part of every webhook URL in these tests: it must never show up in a log line. */
const SECRET = "s3cr3t-webhook-token"
const PATH = `/services/T000/B000/${SECRET}`

const alert = (overrides: Partial<Alert> = {}): Alert => ({
  _tag: "Raised",
  rule: "error_rate",
  subject: "gpt",
  message: "Model gpt: error rate 25% (5 of 20 requests) in the last 60s, above 20%.",
  figures: { requests: 20, errors: 5, errorRate: 0.25 },
  exampleTraceIds: ["trace-1"],
  at: 0,
  ...overrides
})

/** What the server saw: one POST, with the TestClock time it arrived at. */
interface Received {
  readonly method: string
  readonly path: string
  readonly headers: Http.IncomingHttpHeaders
  readonly body: string
  readonly at: number
}

/**
 * How the server answers one request; `"hang"` never answers (until `release`); a function answers
 * from what the request carried (to echo it back).
 */
type Answer = { readonly status: number; readonly headers?: Record<string, string>; readonly body?: string } | "hang"
type Reply = Answer | ((received: Received) => Answer)

const ok: Answer = { status: 200, body: "ok" }

interface Server {
  readonly url: string
  readonly port: number
  readonly received: ReadonlyArray<Received>
  /** Answers 200 to every hanging request and to all later ones. */
  readonly release: () => void
}

/** A webhook receiver on 127.0.0.1: request n gets `script[n]`, later ones `otherwise`. */
const webhookServer = (
  script: ReadonlyArray<Reply>,
  options: { readonly otherwise?: Reply; readonly port?: number } = {}
): Effect.Effect<Server, never, Scope.Scope> =>
  Effect.gen(function* () {
    const clock = yield* Clock.Clock
    const received: Array<Received> = []
    const hanging: Array<Http.ServerResponse> = []
    let released = false
    const answer = (reply: Answer, response: Http.ServerResponse) => {
      if (reply === "hang" && !released) {
        hanging.push(response)
        return
      }
      const { status, headers, body } = reply === "hang" ? ok : reply
      response.writeHead(status, { "content-type": "text/plain", ...headers })
      response.end(body ?? "")
    }
    const server = Http.createServer((request, response) => {
      const parts: Array<Buffer> = []
      request.on("data", (part: Buffer) => parts.push(part))
      request.on("end", () => {
        received.push({
          method: request.method ?? "",
          path: request.url ?? "",
          headers: request.headers,
          body: Buffer.concat(parts).toString("utf8"),
          at: clock.currentTimeMillisUnsafe()
        })
        const reply = script[received.length - 1] ?? options.otherwise ?? ok
        answer(typeof reply === "function" ? reply(received[received.length - 1]!) : reply, response)
      })
    })
    const port = yield* Effect.acquireRelease(
      Effect.promise(
        () =>
          new Promise<number>((resolve, reject) => {
            server.once("error", reject)
            server.listen(options.port ?? 0, "127.0.0.1", () => resolve((server.address() as AddressInfo).port))
          })
      ),
      () =>
        Effect.promise(
          () =>
            new Promise<void>((resolve) => {
              server.closeAllConnections()
              server.close(() => resolve())
            })
        )
    )
    const release = () => {
      released = true
      for (const response of hanging.splice(0)) answer(ok, response)
    }
    return { url: `http://127.0.0.1:${port}${PATH}`, port, received, release }
  })

/** A port nothing listens on (it was free a moment ago). */
const closedPort: Effect.Effect<number> = Effect.promise(
  () =>
    new Promise<number>((resolve) => {
      const server = Http.createServer()
      server.listen(0, "127.0.0.1", () => {
        const { port } = server.address() as AddressInfo
        server.close(() => resolve(port))
      })
    })
)

interface LogLine {
  readonly level: string
  readonly text: string
}

/** Every log line in full (message, cause, annotations), down to Debug. */
const captureLogs = () => {
  const lines: Array<LogLine> = []
  const logger = Logger.make((options) => {
    lines.push({ level: options.logLevel, text: Logger.formatLogFmt.log(options) })
  })
  const provide = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
    effect.pipe(Effect.provide(Logger.layer([logger])), Effect.provideService(References.MinimumLogLevel, "Debug"))
  const matching = (level: string, text: string) =>
    lines.filter((line) => line.level === level && line.text.includes(text)).map((line) => line.text)
  const assertNoSecret = () => {
    for (const line of lines) assert.notInclude(line.text, SECRET)
  }
  return { lines, provide, matching, assertNoSecret }
}

/** A real wait, for real I/O to happen while the TestClock stands still. */
const realWait = (millis: number) => TestClock.withLive(Effect.sleep(millis))

/** Waits (in real time, at most 3 s) until `condition` holds, then a little more for the fiber to settle. */
const eventually = (label: string, condition: () => boolean): Effect.Effect<void> =>
  Effect.gen(function* () {
    for (let waited = 0; !condition(); waited += 2) {
      if (waited > 3_000) return assert.fail(`timed out waiting for: ${label}`)
      yield* realWait(2)
    }
    yield* realWait(5)
  })

const makeSink = (options: AlertWebhook.Options) =>
  AlertWebhook.make(options).pipe(Effect.provide(FetchHttpClient.layer))

const bodyOf = (received: Received | undefined): AlertWebhook.Payload => {
  assert.isDefined(received)
  return JSON.parse(received!.body) as AlertWebhook.Payload
}

// =============================================================================
// Tests
// =============================================================================

describe("AlertWebhook", () => {
  describe("text", () => {
    it("is one line with the state, rule, subject and message, escaped for Slack", () => {
      assert.strictEqual(
        AlertWebhook.text(alert({ _tag: "Resolved", subject: "a<b>&c", message: "line one\n  line two" })),
        "[RESOLVED] error_rate a&lt;b&gt;&amp;c: line one line two"
      )
      assert.strictEqual(
        AlertWebhook.text(alert({ rule: "breaker_open", subject: "primary", message: "Upstream primary: open." })),
        "[RAISED] breaker_open primary: Upstream primary: open."
      )
    })
  })

  describe("send", () => {
    it.effect("posts Slack-compatible JSON with the alert, the content type and the extra headers", () => {
      const logs = captureLogs()
      return Effect.gen(function* () {
        const server = yield* webhookServer([])
        const sink = yield* makeSink({
          url: Redacted.make(server.url),
          headers: { "x-plain": "1", authorization: Redacted.make("Bearer hook-key") }
        })
        const raised = alert()
        yield* sink.send(raised)
        yield* eventually("the POST", () => server.received.length === 1)

        const received = server.received[0]!
        assert.strictEqual(received.method, "POST")
        assert.strictEqual(received.path, PATH)
        assert.match(received.headers["content-type"] ?? "", /^application\/json/)
        assert.strictEqual(received.headers["x-plain"], "1")
        assert.strictEqual(received.headers["authorization"], "Bearer hook-key")
        assert.isUndefined(received.headers["traceparent"]) // no client span, so nothing propagated
        assert.deepStrictEqual(JSON.parse(received.body), {
          text: "[RAISED] error_rate gpt: Model gpt: error rate 25% (5 of 20 requests) in the last 60s, above 20%.",
          alert: raised
        })
        assert.deepStrictEqual(logs.lines, [])
      }).pipe(logs.provide)
    })

    it.effect("adds the blocks rendered by the blocks option", () =>
      Effect.gen(function* () {
        const server = yield* webhookServer([])
        const sink = yield* makeSink({
          url: Redacted.make(server.url),
          blocks: (a) => [{ type: "section", text: { type: "mrkdwn", text: `*${a.rule}* ${a.subject}` } }]
        })
        yield* sink.send(alert({ _tag: "Resolved" }))
        yield* eventually("the POST", () => server.received.length === 1)
        const body = bodyOf(server.received[0])
        assert.deepStrictEqual(body.blocks, [{ type: "section", text: { type: "mrkdwn", text: "*error_rate* gpt" } }])
        assert.strictEqual(body.alert._tag, "Resolved")
        assert.match(body.text, /^\[RESOLVED\] /)
      })
    )

    it.effect("delivers alerts one at a time, in the order they were sent", () =>
      Effect.gen(function* () {
        const server = yield* webhookServer([])
        const sink = yield* makeSink({ url: Redacted.make(server.url) })
        for (const subject of ["a", "b", "c"]) yield* sink.send(alert({ subject }))
        yield* eventually("three POSTs", () => server.received.length === 3)
        assert.deepStrictEqual(
          server.received.map((r) => bodyOf(r).alert.subject),
          ["a", "b", "c"]
        )
      })
    )
  })

  describe("retries", () => {
    it.effect("retries a 503 after a jittered backoff and delivers on the next 200", () => {
      const logs = captureLogs()
      return Effect.gen(function* () {
        const server = yield* webhookServer([{ status: 503, body: "busy" }])
        const sink = yield* makeSink({ url: Redacted.make(server.url) }) // initialDelay 1s
        yield* sink.send(alert())
        yield* eventually(
          "the retry log",
          () => logs.matching("Debug", "attempt 1 failed (HTTP 503: busy)").length === 1
        )
        assert.strictEqual(server.received.length, 1)

        yield* TestClock.adjust(799) // below the shortest jittered delay (800ms)
        yield* realWait(30)
        assert.strictEqual(server.received.length, 1)
        yield* TestClock.adjust(402) // past the longest one (1200ms)
        yield* eventually("the second POST", () => server.received.length === 2)
        const at = server.received[1]!.at
        assert.isTrue(at >= 800 && at <= 1201, `retried at ${at}ms`)
        assert.deepStrictEqual(bodyOf(server.received[1]).alert, alert())
        yield* realWait(20)
        assert.deepStrictEqual(logs.matching("Warn", "AlertWebhook"), [])
        logs.assertNoSecret()
      }).pipe(logs.provide)
    })

    it.effect("retries while the webhook is down and delivers once it is back", () => {
      const logs = captureLogs()
      return Effect.gen(function* () {
        const port = yield* closedPort
        const sink = yield* makeSink({ url: Redacted.make(`http://127.0.0.1:${port}${PATH}`) })
        yield* sink.send(alert({ subject: "down" }))
        yield* eventually(
          "the failed attempt",
          () => logs.matching("Debug", "attempt 1 failed (network error").length > 0
        )
        assert.include(logs.matching("Debug", "attempt 1 failed")[0]!, "ECONNREFUSED")

        const server = yield* webhookServer([], { port })
        yield* TestClock.adjust(1_200)
        yield* eventually("the delivery", () => server.received.length === 1)
        assert.strictEqual(bodyOf(server.received[0]).alert.subject, "down")
        assert.deepStrictEqual(logs.matching("Warn", "AlertWebhook"), [])
        logs.assertNoSecret()
      }).pipe(logs.provide)
    })

    it.effect("waits as long as a 429's Retry-After asks", () => {
      const logs = captureLogs()
      return Effect.gen(function* () {
        const server = yield* webhookServer([{ status: 429, headers: { "retry-after": "3" }, body: "rate_limited" }])
        const sink = yield* makeSink({ url: Redacted.make(server.url) })
        yield* sink.send(alert())
        yield* eventually("the retry log", () => logs.matching("Debug", "retrying in 3s").length === 1)
        yield* TestClock.adjust(2_999)
        yield* realWait(30)
        assert.strictEqual(server.received.length, 1)
        yield* TestClock.adjust(1)
        yield* eventually("the second POST", () => server.received.length === 2)
        assert.strictEqual(server.received[1]!.at, 3_000)
      }).pipe(logs.provide)
    })

    it.effect("times out a POST that gets no answer, then retries it", () => {
      const logs = captureLogs()
      return Effect.gen(function* () {
        const server = yield* webhookServer(["hang"])
        const sink = yield* makeSink({ url: Redacted.make(server.url), timeout: "2 seconds" })
        yield* sink.send(alert())
        yield* eventually("the first POST", () => server.received.length === 1)
        yield* TestClock.adjust(1_999)
        yield* realWait(30)
        assert.deepStrictEqual(logs.matching("Debug", "AlertWebhook"), [])
        yield* TestClock.adjust(1)
        yield* eventually(
          "the timeout",
          () => logs.matching("Debug", "attempt 1 failed (no answer within 2s)").length === 1
        )
        yield* TestClock.adjust(1_200)
        yield* eventually("the second POST", () => server.received.length === 2)
        assert.deepStrictEqual(bodyOf(server.received[1]).alert, alert())
      }).pipe(logs.provide)
    })

    it.effect("backs off exponentially and gives up after maxAttempts with one warning", () => {
      const logs = captureLogs()
      return Effect.gen(function* () {
        const server = yield* webhookServer([], { otherwise: { status: 502 } })
        const sink = yield* makeSink({ url: Redacted.make(server.url) }) // 5 attempts, 1s doubling
        yield* sink.send(alert())
        for (const [index, delay] of [1_000, 2_000, 4_000, 8_000].entries()) {
          const attempt = index + 1
          yield* eventually(
            `attempt ${attempt}`,
            () => logs.matching("Debug", `attempt ${attempt} failed`).length === 1
          )
          assert.strictEqual(server.received.length, attempt)
          yield* TestClock.adjust(delay * 0.8 - 1)
          yield* realWait(20)
          assert.strictEqual(server.received.length, attempt, `no retry before ${delay * 0.8}ms`)
          yield* TestClock.adjust(delay * 0.4 + 2)
          yield* eventually(`attempt ${attempt + 1}`, () => server.received.length === attempt + 1)
        }
        yield* eventually("the warning", () => logs.matching("Warn", "AlertWebhook").length > 0)
        assert.deepStrictEqual(logs.matching("Warn", "AlertWebhook").length, 1)
        assert.include(
          logs.matching("Warn", "AlertWebhook")[0]!,
          "gave up delivering the alert after 5 attempts (HTTP 502)"
        )
        assert.include(logs.matching("Warn", "AlertWebhook")[0]!, "alert.rule=error_rate")
        yield* TestClock.adjust("5 minutes")
        yield* realWait(20)
        assert.strictEqual(server.received.length, 5)
        logs.assertNoSecret()
      }).pipe(logs.provide)
    })

    it.effect("does not retry a 400 and logs it once, with the start of the answer", () => {
      const logs = captureLogs()
      return Effect.gen(function* () {
        const server = yield* webhookServer([{ status: 400, body: "invalid_payload" }])
        const sink = yield* makeSink({ url: Redacted.make(server.url) })
        yield* sink.send(alert())
        yield* eventually("the warning", () => logs.matching("Warn", "AlertWebhook").length > 0)
        assert.deepStrictEqual(logs.matching("Warn", "AlertWebhook").length, 1)
        assert.include(
          logs.matching("Warn", "AlertWebhook")[0]!,
          "the webhook refused the alert (HTTP 400: invalid_payload); not retried"
        )
        yield* TestClock.adjust("5 minutes")
        yield* realWait(20)
        assert.strictEqual(server.received.length, 1)
        assert.deepStrictEqual(logs.matching("Debug", "AlertWebhook"), [])
      }).pipe(logs.provide)
    })
  })

  describe("queue", () => {
    it.effect("returns at once while the webhook hangs, and drops the oldest waiting alert when full", () => {
      const logs = captureLogs()
      return Effect.gen(function* () {
        const server = yield* webhookServer(["hang"])
        const sink = yield* makeSink({ url: Redacted.make(server.url), capacity: 2 })
        yield* sink.send(alert({ subject: "a" }))
        yield* eventually("the first POST", () => server.received.length === 1) // a is in flight
        // The TestClock stands still and the webhook does not answer: every send still completes.
        for (const subject of ["b", "c", "d"]) yield* sink.send(alert({ subject }))
        const dropped = logs.matching("Warn", "AlertWebhook")
        assert.strictEqual(dropped.length, 1)
        assert.include(dropped[0]!, "2 alerts are waiting for the webhook; dropped the oldest (raised error_rate b)")

        server.release()
        yield* eventually("three deliveries", () => server.received.length === 3)
        assert.deepStrictEqual(
          server.received.map((r) => bodyOf(r).alert.subject),
          ["a", "c", "d"]
        )
        logs.assertNoSecret()
      }).pipe(logs.provide)
    })
  })

  describe("Monitor", () => {
    it.effect("a dead webhook neither slows requests nor trips the monitor's sink timeout", () => {
      const logs = captureLogs()
      return Effect.gen(function* () {
        const server = yield* webhookServer([], { otherwise: "hang" })
        const context = yield* Layer.build(
          Monitor.layer({ slowMs: 1_000, sinkTimeoutMs: 1_000 }).pipe(
            Layer.provide(AlertWebhook.layer({ url: Redacted.make(server.url) })),
            Layer.provide(FetchHttpClient.layer)
          )
        )
        const monitor = Context.get(context, Monitor.Monitor)
        // 200 slow requests over 20 models: 20 alerts, all while the clock stands still.
        for (let i = 0; i < 200; i++) {
          yield* monitor.requestFinished({
            requestId: `r${i}`,
            model: `model-${i % 20}`,
            upstream: "primary",
            outcome: "success",
            latencyMs: 5_000,
            upstreamRateLimited: 0
          })
        }
        yield* eventually("the first POST", () => server.received.length === 1)
        yield* TestClock.adjust("3 seconds") // well past the monitor's 1s sink timeout
        yield* realWait(20)
        assert.deepStrictEqual(logs.matching("Warn", "Monitor"), [])
        assert.strictEqual(server.received.length, 1) // still stuck on the first alert's first attempt
        logs.assertNoSecret()
      }).pipe(logs.provide)
    })

    it.effect("raises breaker_open once per cool-down and sends the resolve, also next to another sink", () => {
      const logs = captureLogs()
      return Effect.gen(function* () {
        const server = yield* webhookServer([])
        const seen: Array<string> = []
        const sinks = AlertSink.layerMany([
          AlertSink.layerCallback((a) => {
            seen.push(`${a._tag} ${a.rule}`)
          }),
          AlertWebhook.layer({ url: Redacted.make(server.url) })
        ])
        const context = yield* Layer.build(
          Monitor.layer({ coolDownMs: 60_000 }).pipe(Layer.provide(sinks), Layer.provide(FetchHttpClient.layer))
        )
        const monitor = Context.get(context, Monitor.Monitor)
        const texts = () => server.received.map((r) => bodyOf(r).text)

        yield* monitor.breakerOpened("primary")
        yield* monitor.breakerOpened("primary") // a repeat: nothing new
        yield* eventually("the raise", () => server.received.length === 1)
        assert.deepStrictEqual(texts(), ["[RAISED] breaker_open primary: Upstream primary: circuit breaker open."])
        const raised = bodyOf(server.received[0]).alert
        assert.deepStrictEqual(
          { _tag: raised._tag, rule: raised.rule, subject: raised.subject, figures: raised.figures, at: raised.at },
          { _tag: "Raised", rule: "breaker_open", subject: "primary", figures: { openForMs: 0 }, at: 0 }
        )

        yield* TestClock.adjust("10 seconds") // the monitor's periodic checks run: still within the cool-down
        yield* realWait(20)
        assert.strictEqual(server.received.length, 1)
        yield* monitor.breakerClosed("primary")
        yield* eventually("the resolve", () => server.received.length === 2)
        assert.strictEqual(
          texts()[1],
          "[RESOLVED] breaker_open primary: Upstream primary: circuit breaker closed after 10s."
        )
        assert.strictEqual(bodyOf(server.received[1]).alert.at, 10_000)

        yield* monitor.breakerOpened("primary") // t = 10s: open again within the cool-down
        yield* TestClock.adjust("49 seconds") // t = 59s
        yield* realWait(20)
        assert.strictEqual(server.received.length, 2)
        yield* TestClock.adjust("1 second") // t = 60s: the cool-down is over and the breaker is still open
        yield* eventually("the second raise", () => server.received.length === 3)
        assert.strictEqual(texts()[2], "[RAISED] breaker_open primary: Upstream primary: circuit breaker open for 50s.")
        assert.deepStrictEqual(seen, ["Raised breaker_open", "Resolved breaker_open", "Raised breaker_open"])
        logs.assertNoSecret()
      }).pipe(logs.provide)
    })
  })

  describe("secrets", () => {
    it.effect("never logs the webhook URL, even when the receiver or a blocks function echoes it", () => {
      const logs = captureLogs()
      return Effect.gen(function* () {
        const server = yield* webhookServer([{ status: 404, body: `no_service for ${PATH}` }])
        const sink = yield* makeSink({
          url: Redacted.make(server.url),
          blocks: (a) => {
            if (a.subject === "bad") throw new Error(`cannot render for ${server.url}`)
            return []
          }
        })
        yield* sink.send(alert({ subject: "refused" }))
        yield* sink.send(alert({ subject: "bad" }))
        yield* sink.send(alert({ subject: "fine" }))
        yield* eventually("two POSTs", () => server.received.length === 2)
        yield* eventually("two log lines", () => logs.lines.length === 2)

        const refused = logs.matching("Warn", "refused the alert (HTTP 404: no_service for <redacted>)")
        assert.strictEqual(refused.length, 1)
        const failed = logs.matching("Error", "AlertWebhook: delivering an alert failed")
        assert.strictEqual(failed.length, 1)
        assert.include(failed[0]!, "cannot render for <redacted>")
        assert.include(failed[0]!, "alert.subject=bad")
        assert.strictEqual(bodyOf(server.received[1]).alert.subject, "fine") // the worker went on
        logs.assertNoSecret()
      }).pipe(logs.provide)
    })

    it.effect("never logs a secret header or a query parameter of the URL, even when the receiver echoes them", () => {
      const logs = captureLogs()
      const token = "hdr-t0ken-value"
      const apiKey = "api-k3y-value"
      const query = "q-s3cret/value" // written percent-encoded in the URL
      const echo =
        (status: number): Reply =>
        (received) => ({
          status,
          body: `invalid token: ${received.headers["authorization"]} (token ${token}), key ${received.headers["x-api-key"]}, query ${decodeURIComponent(received.path)} ${received.path}`
        })
      return Effect.gen(function* () {
        const server = yield* webhookServer([echo(503), echo(401)])
        const sink = yield* makeSink({
          url: Redacted.make(`${server.url}?code=${encodeURIComponent(query)}&channel=x`),
          headers: {
            authorization: Redacted.make(`Bearer ${token}`),
            "x-api-key": Redacted.make(apiKey),
            "x-plain": "visible"
          }
        })
        yield* sink.send(alert())
        yield* eventually("the retry log", () => logs.matching("Debug", "attempt 1 failed (HTTP 503").length === 1)
        yield* TestClock.adjust("2 seconds")
        yield* eventually("the warning", () => logs.matching("Warn", "AlertWebhook").length === 1)

        // The receiver really got (and echoed) the secrets...
        assert.strictEqual(server.received.length, 2)
        assert.strictEqual(server.received[0]!.headers["authorization"], `Bearer ${token}`)
        assert.strictEqual(server.received[0]!.headers["x-api-key"], apiKey)
        assert.include(server.received[0]!.path, encodeURIComponent(query))
        // ...but no log line shows them.
        assert.include(
          logs.matching("Warn", "AlertWebhook")[0]!,
          "the webhook refused the alert (HTTP 401: invalid token: <redacted> (token <redacted>), key <redacted>, query <redacted>"
        )
        assert.include(logs.matching("Debug", "AlertWebhook")[0]!, "HTTP 503: invalid token: <redacted>")
        for (const line of logs.lines) {
          for (const secret of [token, apiKey, query, encodeURIComponent(query)]) assert.notInclude(line.text, secret)
        }
        logs.assertNoSecret()
      }).pipe(logs.provide)
    })

    it.effect("dies on invalid options without quoting the URL", () =>
      Effect.gen(function* () {
        const exit = yield* Effect.exit(makeSink({ url: Redacted.make(`ftp://example.com${PATH}`), maxAttempts: 0 }))
        assert.isTrue(Exit.isFailure(exit))
        const text = String(Exit.isFailure(exit) ? exit.cause : "")
        assert.include(
          text,
          "AlertWebhook.make: url is not an http(s) URL; maxAttempts must be an integer of at least 1"
        )
        assert.notInclude(text, SECRET)
      })
    )
  })
})
