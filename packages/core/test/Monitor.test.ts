import { assert, describe, it } from "@effect/vitest"
import { Cause, Clock, Effect, Exit, Fiber, Layer, Logger, Schema, Stream } from "effect"
import { TestClock } from "effect/testing"
import * as AlertSink from "../src/AlertSink.ts"
import * as Monitor from "../src/Monitor.ts"

// =============================================================================
// Helpers
// =============================================================================

type Alert = AlertSink.Alert

/** Lets the delivery fiber hand queued alerts to the sink. */
const settle = Effect.gen(function* () {
  for (let i = 0; i < 5; i++) yield* Effect.yieldNow
})

/** A monitor whose alerts land in `received`, through the real queue and delivery fiber. */
const setup = (options: Monitor.Options = {}) =>
  Effect.gen(function* () {
    const received: Array<Alert> = []
    const monitor = yield* Monitor.make(options).pipe(
      Effect.provideService(
        AlertSink.AlertSink,
        AlertSink.fromCallback((alert) => {
          received.push(alert)
        })
      )
    )
    const seen = (rule?: AlertSink.Rule) =>
      settle.pipe(
        Effect.andThen(
          Effect.sync(() =>
            received.filter((a) => rule === undefined || a.rule === rule).map((a) => `${a._tag} ${a.subject}`)
          )
        )
      )
    return { monitor, received, seen }
  })

let counter = 0
const outcome = (overrides: Partial<Monitor.RequestOutcome> = {}): Monitor.RequestOutcome => ({
  requestId: `r${counter++}`,
  model: "gpt",
  upstream: "primary",
  outcome: "success",
  latencyMs: 100,
  upstreamRateLimited: 0,
  ...overrides
})

const finishMany = (monitor: Monitor.Monitor["Service"], n: number, overrides: Partial<Monitor.RequestOutcome> = {}) =>
  Effect.forEach(Array.from({ length: n }), () => monitor.requestFinished(outcome(overrides)), { discard: true })

const last = (alerts: ReadonlyArray<Alert>): Alert => {
  const alert = alerts[alerts.length - 1]
  assert.isDefined(alert)
  return alert!
}

/** Log lines written through a collecting logger: `level message`. */
const collectLogs = () => {
  const lines: Array<string> = []
  const logger = Logger.make((options) => {
    const message = Array.isArray(options.message) ? options.message[0] : options.message
    lines.push(`${options.logLevel} ${String(message)}`)
  })
  return { lines, layer: Logger.layer([logger]) }
}

// =============================================================================
// Rules
// =============================================================================

describe("Monitor", () => {
  describe("slow_request", () => {
    it.effect("raises once per cool-down and resolves once when the slow requests leave the window", () =>
      Effect.gen(function* () {
        const { monitor, received, seen } = yield* setup({ slowMs: 10_000 })
        yield* monitor.requestFinished(outcome({ latencyMs: 10_000 })) // not over the threshold
        assert.deepStrictEqual(yield* seen(), [])

        yield* monitor.requestFinished(outcome({ latencyMs: 15_000, traceId: "t-slow" }))
        yield* monitor.requestFinished(outcome({ latencyMs: 20_000 }))
        assert.deepStrictEqual(yield* seen(), ["Raised gpt"])
        const raised = last(received)
        assert.strictEqual(raised.rule, "slow_request")
        assert.deepStrictEqual(raised.figures, {
          slowRequests: 1,
          slowestMs: 15_000,
          thresholdMs: 10_000,
          windowMs: 60_000,
          latencyMs: 15_000
        })
        assert.deepStrictEqual(raised.exampleTraceIds, ["t-slow"])
        assert.strictEqual(raised.message, "Model gpt: 1 request slower than 10s in the last 60s (slowest 15s).")

        yield* TestClock.adjust("59 seconds")
        assert.deepStrictEqual(yield* seen(), ["Raised gpt"])
        yield* TestClock.adjust("1 second")
        yield* TestClock.adjust("1 minute")
        assert.deepStrictEqual(yield* seen(), ["Raised gpt", "Resolved gpt"])
        assert.strictEqual(last(received).message, "Model gpt: no request slower than 10s in the last 60s.")
      })
    )

    it.effect("suppresses a new raise within the cool-down after a resolve, and raises again after it", () =>
      Effect.gen(function* () {
        const { monitor, seen } = yield* setup({ slowMs: 1_000, coolDownMs: 300_000 })
        yield* monitor.requestFinished(outcome({ latencyMs: 2_000 }))
        yield* TestClock.adjust("100 seconds") // resolved at 60s
        yield* monitor.requestFinished(outcome({ latencyMs: 2_000 })) // t = 100s: within the cool-down
        yield* TestClock.adjust("100 seconds") // left the window again: nothing to resolve
        assert.deepStrictEqual(yield* seen(), ["Raised gpt", "Resolved gpt"])
        yield* TestClock.adjust("100 seconds") // t = 300s
        yield* monitor.requestFinished(outcome({ latencyMs: 2_000 }))
        assert.deepStrictEqual(yield* seen(), ["Raised gpt", "Resolved gpt", "Raised gpt"])
      })
    )

    it.effect("raises again after the cool-down while the condition still holds", () =>
      Effect.gen(function* () {
        const { monitor, seen } = yield* setup({ slowMs: 1_000, coolDownMs: 120_000 })
        // a slow request every 10s for 5 minutes: raised at 0, 120s and 240s
        for (let i = 0; i < 30; i++) {
          yield* monitor.requestFinished(outcome({ latencyMs: 5_000 }))
          yield* TestClock.adjust("10 seconds")
        }
        assert.deepStrictEqual(yield* seen(), ["Raised gpt", "Raised gpt", "Raised gpt"])
        const times = (yield* seen()).length
        assert.strictEqual(times, 3)
      })
    )
  })

  describe("error_rate", () => {
    it.effect("holds only with the minimum number of requests in the window", () =>
      Effect.gen(function* () {
        const { monitor, received, seen } = yield* setup({ errorRate: 0.2, minimumRequests: 20 })
        yield* finishMany(monitor, 15)
        yield* finishMany(monitor, 4, { outcome: "error", traceId: "t-err" }) // 4 of 19: above 20%, too few
        assert.deepStrictEqual(yield* seen("error_rate"), [])
        yield* monitor.requestFinished(outcome({ outcome: "error", traceId: "t-last" })) // 5 of 20 = 25%
        assert.deepStrictEqual(yield* seen("error_rate"), ["Raised gpt"])
        const raised = last(received)
        assert.deepStrictEqual(raised.figures, {
          requests: 20,
          errors: 5,
          errorRate: 0.25,
          threshold: 0.2,
          minimumRequests: 20,
          windowMs: 60_000
        })
        assert.deepStrictEqual(raised.exampleTraceIds, ["t-last", "t-err", "t-err"])
        assert.strictEqual(raised.message, "Model gpt: error rate 25% (5 of 20 requests) in the last 60s, above 20%.")

        yield* finishMany(monitor, 5) // 5 of 25 = 20%: not above
        assert.deepStrictEqual(yield* seen("error_rate"), ["Raised gpt", "Resolved gpt"])
        assert.strictEqual(
          last(received).message,
          "Model gpt: error rate 20% (5 of 25 requests) in the last 60s, not above 20%."
        )
        yield* finishMany(monitor, 5)
        assert.deepStrictEqual(yield* seen("error_rate"), ["Raised gpt", "Resolved gpt"])
      })
    )

    it.effect("slides: outcomes older than the window fall out", () =>
      Effect.gen(function* () {
        const { monitor, seen } = yield* setup({ errorRate: 0.2, minimumRequests: 20 })
        yield* finishMany(monitor, 20, { outcome: "error" })
        yield* TestClock.adjust("30 seconds")
        yield* finishMany(monitor, 20) // 20 of 40 errors
        yield* TestClock.adjust("29 seconds")
        assert.deepStrictEqual(yield* seen("error_rate"), ["Raised gpt"])
        yield* TestClock.adjust("1 second") // t = 60s: the errors left; 0 of 20
        assert.deepStrictEqual(yield* seen("error_rate"), ["Raised gpt", "Resolved gpt"])
        yield* finishMany(monitor, 4, { outcome: "error" }) // 4 of 24 = 16.7%: the old errors do not count
        assert.deepStrictEqual(yield* seen("error_rate"), ["Raised gpt", "Resolved gpt"])
      })
    )

    it.effect("counts each model on its own and ignores rejected requests", () =>
      Effect.gen(function* () {
        const { monitor, seen } = yield* setup({ errorRate: 0.5, minimumRequests: 4 })
        yield* finishMany(monitor, 3, { model: "a", outcome: "error" })
        yield* finishMany(monitor, 3, { model: "b", outcome: "success" })
        yield* finishMany(monitor, 50, { model: "a", outcome: "rejected" })
        assert.deepStrictEqual(yield* seen("error_rate"), [])
        yield* monitor.requestFinished(outcome({ model: "a", outcome: "error" }))
        assert.deepStrictEqual(yield* seen("error_rate"), ["Raised a"])
      })
    )

    it.effect("can be turned off", () =>
      Effect.gen(function* () {
        const { monitor, seen } = yield* setup({ errorRate: false, minimumRequests: 1 })
        yield* finishMany(monitor, 30, { outcome: "error", latencyMs: 20_000 })
        assert.deepStrictEqual(yield* seen("error_rate"), [])
        assert.deepStrictEqual(yield* seen("slow_request"), ["Raised gpt"]) // the other rules still run
      })
    )
  })

  describe("fallback_rate", () => {
    it.effect("counts fallback and static answers against the threshold", () =>
      Effect.gen(function* () {
        const { monitor, received, seen } = yield* setup({ fallbackRate: 0.3, minimumRequests: 20 })
        yield* finishMany(monitor, 14)
        yield* finishMany(monitor, 3, { outcome: "fallback" })
        yield* finishMany(monitor, 3, { outcome: "static" }) // 6 of 20 = 30%: not above
        yield* finishMany(monitor, 10, { outcome: "rejected" })
        assert.deepStrictEqual(yield* seen("fallback_rate"), [])
        yield* monitor.requestFinished(outcome({ outcome: "static" })) // 7 of 21
        assert.deepStrictEqual(yield* seen("fallback_rate"), ["Raised gpt"])
        assert.strictEqual(last(received).figures["fallbacks"], 7)
        assert.strictEqual(last(received).figures["requests"], 21)
        yield* finishMany(monitor, 3, { outcome: "fallback" }) // repeats suppressed
        assert.deepStrictEqual(yield* seen("fallback_rate"), ["Raised gpt"])
        yield* TestClock.adjust("1 minute")
        assert.deepStrictEqual(yield* seen("fallback_rate"), ["Raised gpt", "Resolved gpt"])
      })
    )
  })

  describe("upstream_rate_limited", () => {
    it.effect("raises when upstream 429s in the window are above the count", () =>
      Effect.gen(function* () {
        const { monitor, received, seen } = yield* setup({ upstreamRateLimited: 10 })
        yield* monitor.requestFinished(outcome({ upstreamRateLimited: 4 }))
        yield* TestClock.adjust("20 seconds")
        yield* monitor.requestFinished(outcome({ upstreamRateLimited: 6 })) // 10: not above
        assert.deepStrictEqual(yield* seen("upstream_rate_limited"), [])
        yield* monitor.requestFinished(outcome({ upstreamRateLimited: 1, traceId: "t-429" }))
        assert.deepStrictEqual(yield* seen("upstream_rate_limited"), ["Raised gpt"])
        assert.strictEqual(last(received).figures["upstreamRateLimited"], 11)
        assert.deepStrictEqual(last(received).exampleTraceIds, ["t-429"])
        yield* TestClock.adjust("40 seconds") // the first 4 left: 7
        assert.deepStrictEqual(yield* seen("upstream_rate_limited"), ["Raised gpt", "Resolved gpt"])
      })
    )
  })

  describe("breaker_open", () => {
    it.effect("raises on open, resolves once on close, and suppresses a flap within the cool-down", () =>
      Effect.gen(function* () {
        const { monitor, received, seen } = yield* setup({ coolDownMs: 300_000 })
        yield* monitor.breakerOpened("primary")
        yield* TestClock.adjust("1 second")
        yield* monitor.breakerOpened("primary")
        yield* TestClock.adjust("9 seconds")
        yield* monitor.breakerClosed("primary")
        yield* monitor.breakerClosed("primary")
        assert.deepStrictEqual(yield* seen("breaker_open"), ["Raised primary", "Resolved primary"])
        assert.strictEqual(last(received).figures["openForMs"], 10_000)
        assert.strictEqual(last(received).message, "Upstream primary: circuit breaker closed after 10s.")

        yield* TestClock.adjust("10 seconds")
        yield* monitor.breakerOpened("primary") // t = 20s: within the cool-down
        yield* TestClock.adjust("10 seconds")
        yield* monitor.breakerClosed("primary")
        assert.deepStrictEqual(yield* seen("breaker_open"), ["Raised primary", "Resolved primary"])

        yield* monitor.breakerOpened("primary") // t = 30s, stays open
        yield* TestClock.adjust("269 seconds")
        assert.deepStrictEqual(yield* seen("breaker_open"), ["Raised primary", "Resolved primary"])
        yield* TestClock.adjust("1 second") // t = 300s: the periodic check raises it again
        assert.deepStrictEqual(yield* seen("breaker_open"), ["Raised primary", "Resolved primary", "Raised primary"])
        assert.strictEqual(last(received).message, "Upstream primary: circuit breaker open for 4.5min.")
      })
    )

    it.effect("keeps each upstream apart", () =>
      Effect.gen(function* () {
        const { monitor, seen } = yield* setup()
        yield* monitor.breakerOpened("a")
        yield* monitor.breakerOpened("b")
        yield* monitor.breakerClosed("a")
        assert.deepStrictEqual(yield* seen("breaker_open"), ["Raised a", "Raised b", "Resolved a"])
      })
    )
  })

  describe("hanging_request", () => {
    it.effect("raises for a request in flight longer than hangingMs and resolves when it finishes", () =>
      Effect.gen(function* () {
        const { monitor, received, seen } = yield* setup({ hangingMs: 60_000 })
        yield* monitor.requestStarted("slowpoke", "gpt", "t-hang")
        yield* TestClock.adjust("30 seconds")
        yield* monitor.requestStarted("quick", "gpt")
        yield* TestClock.adjust("5 seconds")
        yield* monitor.requestFinished(outcome({ requestId: "quick" }))
        yield* TestClock.adjust("25 seconds") // t = 60s: exactly 60s, not longer
        assert.deepStrictEqual(yield* seen("hanging_request"), [])
        yield* TestClock.adjust("1 second")
        assert.deepStrictEqual(yield* seen("hanging_request"), ["Raised gpt"])
        const raised = last(received)
        assert.deepStrictEqual(raised.exampleTraceIds, ["t-hang"])
        assert.strictEqual(raised.figures["hangingRequests"], 1)
        assert.strictEqual(raised.figures["oldestMs"], 61_000)
        yield* TestClock.adjust("1 minute")
        assert.deepStrictEqual(yield* seen("hanging_request"), ["Raised gpt"])
        yield* monitor.requestFinished(outcome({ requestId: "slowpoke", latencyMs: 121_000 }))
        yield* TestClock.adjust("1 second")
        yield* TestClock.adjust("1 second")
        assert.deepStrictEqual(yield* seen("hanging_request"), ["Raised gpt", "Resolved gpt"])
      })
    )

    it.effect("never raises for requests that finish in time", () =>
      Effect.gen(function* () {
        const { monitor, seen } = yield* setup({ hangingMs: 5_000 })
        for (let i = 0; i < 20; i++) {
          yield* monitor.requestStarted(`r-${i}`, "gpt")
          yield* TestClock.adjust("4 seconds")
          yield* monitor.requestFinished(outcome({ requestId: `r-${i}` }))
        }
        assert.deepStrictEqual(yield* seen(), [])
      })
    )
  })

  // ===========================================================================
  // Delivery
  // ===========================================================================

  describe("delivery", () => {
    it.effect(
      "a failing sink does not fail requestFinished; the failure is logged and later alerts still go out",
      () => {
        const logs = collectLogs()
        return Effect.gen(function* () {
          let calls = 0
          const monitor = yield* Monitor.make({ slowMs: 1_000 }).pipe(
            Effect.provideService(
              AlertSink.AlertSink,
              AlertSink.fromCallback(() => {
                calls++
                throw new Error("sink down")
              })
            )
          )
          const exit = yield* Effect.exit(monitor.requestFinished(outcome({ latencyMs: 5_000 })))
          assert.isTrue(Exit.isSuccess(exit))
          yield* monitor.breakerOpened("primary")
          yield* settle
          assert.strictEqual(calls, 2)
          assert.deepStrictEqual(
            logs.lines.filter((line) => line.includes("alert sink failed")),
            [
              "Warn Monitor: the alert sink failed or timed out; the alert was not delivered",
              "Warn Monitor: the alert sink failed or timed out; the alert was not delivered"
            ]
          )
        }).pipe(Effect.provide(logs.layer))
      }
    )

    it.effect("a slow sink is abandoned after sinkTimeoutMs and never delays requests", () => {
      const logs = collectLogs()
      return Effect.gen(function* () {
        const delivered: Array<string> = []
        const monitor = yield* Monitor.make({ sinkTimeoutMs: 2_000 }).pipe(
          Effect.provideService(
            AlertSink.AlertSink,
            AlertSink.AlertSink.of({
              send: (alert) =>
                alert.subject === "stuck"
                  ? Effect.never
                  : Effect.sync(() => {
                      delivered.push(alert.subject)
                    })
            })
          )
        )
        const started = yield* Clock.currentTimeMillis
        yield* monitor.breakerOpened("stuck")
        yield* monitor.breakerOpened("next")
        yield* finishMany(monitor, 10)
        assert.strictEqual(yield* Clock.currentTimeMillis, started) // no time passed on the request path
        yield* settle
        assert.deepStrictEqual(delivered, [])
        yield* TestClock.adjust("2 seconds")
        yield* settle
        assert.deepStrictEqual(delivered, ["next"])
        assert.isTrue(logs.lines.some((line) => line.startsWith("Warn Monitor: the alert sink failed or timed out")))
      }).pipe(Effect.provide(logs.layer))
    })

    it.effect("streams every alert to subscribers of `alerts`", () =>
      Effect.gen(function* () {
        const { monitor } = yield* setup()
        const fiber = yield* monitor.alerts.pipe(
          Stream.take(2),
          Stream.runCollect,
          Effect.forkChild({ startImmediately: true })
        )
        yield* monitor.breakerOpened("primary")
        yield* TestClock.adjust("3 seconds")
        yield* monitor.breakerClosed("primary")
        const alerts = yield* Fiber.join(fiber)
        assert.deepStrictEqual(
          alerts.map((a) => [a._tag, a.rule, a.subject, a.at]),
          [
            ["Raised", "breaker_open", "primary", 0],
            ["Resolved", "breaker_open", "primary", 3_000]
          ]
        )
        // alerts are plain data that the Alert schema accepts (what a webhook sink will encode)
        for (const alert of alerts) assert.deepStrictEqual(Schema.decodeUnknownSync(AlertSink.Alert)(alert), alert)
      })
    )
  })

  // ===========================================================================
  // Bounds and options
  // ===========================================================================

  describe("bounds", () => {
    it.effect("models beyond maxSubjects share the subject (other); idle subjects are forgotten", () =>
      Effect.gen(function* () {
        const { monitor, seen } = yield* setup({
          maxSubjects: 2,
          minimumRequests: 2,
          errorRate: 0.5,
          coolDownMs: 10_000,
          windowMs: 10_000
        })
        yield* finishMany(monitor, 2, { model: "a" })
        yield* finishMany(monitor, 2, { model: "b" })
        yield* finishMany(monitor, 1, { model: "c", outcome: "error" })
        yield* finishMany(monitor, 1, { model: "d", outcome: "error" })
        assert.deepStrictEqual(yield* seen("error_rate"), [`Raised ${Monitor.overflowSubject}`])
        yield* TestClock.adjust("30 seconds") // windows empty and cool-downs over: all forgotten
        yield* finishMany(monitor, 2, { model: "e", outcome: "error" })
        assert.deepStrictEqual(yield* seen("error_rate"), [
          `Raised ${Monitor.overflowSubject}`,
          `Resolved ${Monitor.overflowSubject}`,
          "Raised e"
        ])
      })
    )

    it.effect("rejects invalid options with a RangeError", () =>
      Effect.gen(function* () {
        const exit = yield* Monitor.make({ errorRate: 1.5, windowMs: 0 }).pipe(
          Effect.provideService(AlertSink.AlertSink, AlertSink.many([])),
          Effect.exit
        )
        assert.isTrue(Exit.isFailure(exit))
        if (Exit.isFailure(exit)) {
          const defect = Cause.squash(exit.cause)
          assert.instanceOf(defect, RangeError)
          assert.include(String(defect), "windowMs must be a finite number above 0")
          assert.include(String(defect), "errorRate must be in [0, 1)")
        }
      })
    )

    it.effect("layerNoop records nothing and streams nothing", () =>
      Effect.gen(function* () {
        const monitor = yield* Monitor.Monitor
        yield* monitor.requestStarted("r", "gpt")
        yield* monitor.requestFinished(outcome({ outcome: "error", latencyMs: 1e9 }))
        yield* monitor.breakerOpened("primary")
        yield* monitor.breakerClosed("primary")
        assert.deepStrictEqual(yield* Stream.runCollect(monitor.alerts), [])
      }).pipe(Effect.provide(Monitor.layerNoop))
    )

    it.effect("layer sends alerts to the AlertSink layer", () =>
      Effect.gen(function* () {
        const received: Array<string> = []
        yield* Effect.gen(function* () {
          const monitor = yield* Monitor.Monitor
          yield* monitor.breakerOpened("primary")
          yield* settle
        }).pipe(
          Effect.provide(
            Monitor.layer().pipe(Layer.provide(AlertSink.layerCallback((alert) => void received.push(alert.message))))
          )
        )
        assert.deepStrictEqual(received, ["Upstream primary: circuit breaker open."])
      })
    )
  })

  // ===========================================================================
  // Property
  // ===========================================================================

  const Step = Schema.Struct({
    gapMs: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 2_500 })),
    kind: Schema.Literals(["success", "fallback", "static", "error", "rejected", "start", "open", "close"]),
    model: Schema.Literals(["a", "b"]),
    latencyMs: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 4_000 })),
    rateLimited: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 3 }))
  })

  const coolDownMs = 7_000

  it.effect.prop(
    "raises each rule and subject at most once per cool-down, and resolves only what was raised",
    [Schema.Array(Step).check(Schema.isMinLength(20), Schema.isMaxLength(60))],
    ([steps]) =>
      Effect.gen(function* () {
        const { monitor, received } = yield* setup({
          windowMs: 5_000,
          coolDownMs,
          slowMs: 2_000,
          hangingMs: 3_000,
          errorRate: 0.3,
          fallbackRate: 0.3,
          minimumRequests: 3,
          upstreamRateLimited: 2
        })
        const start = yield* Clock.currentTimeMillis
        const open: Record<string, Array<string>> = { a: [], b: [] }
        for (const [index, step] of steps.entries()) {
          yield* TestClock.adjust(step.gapMs)
          const pending = open[step.model]!
          switch (step.kind) {
            case "start":
              pending.push(`${step.model}-${index}`)
              yield* monitor.requestStarted(`${step.model}-${index}`, step.model, `trace-${index}`)
              break
            case "open":
              yield* monitor.breakerOpened(step.model)
              break
            case "close":
              yield* monitor.breakerClosed(step.model)
              break
            default:
              yield* monitor.requestFinished({
                requestId: pending.shift() ?? `${step.model}-${index}`,
                model: step.model,
                upstream: step.model,
                outcome: step.kind,
                latencyMs: step.latencyMs,
                upstreamRateLimited: step.rateLimited,
                traceId: `trace-${index}`
              })
          }
          yield* settle
        }
        yield* TestClock.adjust(10_000)
        yield* settle
        const elapsed = (yield* Clock.currentTimeMillis) - start

        const byKey = new Map<string, Array<Alert>>()
        for (const alert of received) {
          const key = `${alert.rule}/${alert.subject}`
          byKey.set(key, [...(byKey.get(key) ?? []), alert])
        }
        for (const [key, alerts] of byKey) {
          const raised = alerts.filter((a) => a._tag === "Raised")
          assert.isAtMost(raised.length, 1 + Math.floor(elapsed / coolDownMs), key)
          for (let i = 1; i < raised.length; i++) {
            assert.isAtLeast(raised[i]!.at - raised[i - 1]!.at, coolDownMs, key)
          }
          let firing = false
          for (const alert of alerts) {
            if (alert._tag === "Resolved") assert.isTrue(firing, `${key}: resolved without a raise`)
            firing = alert._tag === "Raised"
          }
        }
      }).pipe(Effect.scoped),
    { arbitrary: { runs: 40 } }
  )
})
