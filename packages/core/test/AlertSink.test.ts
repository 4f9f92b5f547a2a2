import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, Exit, Layer, Logger, References, Schema } from "effect"
import * as AlertSink from "../src/AlertSink.ts"

const raised: AlertSink.Alert = {
  _tag: "Raised",
  rule: "error_rate",
  subject: "gpt",
  message: "Model gpt: error rate 25% (5 of 20 requests) in the last 60s, above 20%.",
  figures: { requests: 20, errors: 5, errorRate: 0.25 },
  exampleTraceIds: ["t1", "t2"],
  at: 0
}
const resolved: AlertSink.Alert = {
  ...raised,
  _tag: "Resolved",
  message: "Model gpt: error rate back down.",
  at: 60_000
}

interface Line {
  readonly level: string
  readonly message: unknown
  readonly annotations: Readonly<Record<string, unknown>>
}

/** A logger that keeps every entry; `Logger.make` receives `message` as an array of the logged values. */
const collectLogs = () => {
  const lines: Array<Line> = []
  const logger = Logger.make((options) => {
    lines.push({
      level: options.logLevel,
      message: options.message,
      annotations: { ...options.fiber.getRef(References.CurrentLogAnnotations) }
    })
  })
  return { lines, layer: Logger.layer([logger]) }
}

const send = (alert: AlertSink.Alert) => AlertSink.AlertSink.use((sink) => sink.send(alert))

describe("AlertSink", () => {
  describe("layerLog", () => {
    it.effect("writes Raised at Warning and Resolved at Info, with the alert as annotations", () => {
      const logs = collectLogs()
      return Effect.gen(function* () {
        yield* send(raised)
        yield* send(resolved)
        assert.deepStrictEqual(
          logs.lines.map((line) => [line.level, line.message]),
          [
            ["Warn", [raised.message]],
            ["Info", [resolved.message]]
          ]
        )
        assert.deepStrictEqual(logs.lines[0]?.annotations, {
          "alert.state": "Raised",
          "alert.rule": "error_rate",
          "alert.subject": "gpt",
          "alert.figures": { requests: 20, errors: 5, errorRate: 0.25 },
          "alert.trace_ids": ["t1", "t2"],
          "alert.at": "1970-01-01T00:00:00.000Z"
        })
      }).pipe(Effect.provide(Layer.merge(AlertSink.layerLog, logs.layer)))
    })
  })

  describe("layerCallback", () => {
    it.effect("calls the callback with each alert and awaits a returned promise", () =>
      Effect.gen(function* () {
        const seen: Array<string> = []
        yield* send(raised).pipe(
          Effect.provide(
            AlertSink.layerCallback((alert) =>
              Promise.resolve().then(() => {
                seen.push(alert._tag)
              })
            )
          )
        )
        assert.deepStrictEqual(seen, ["Raised"])
      })
    )

    it.effect("dies when the callback throws or rejects", () =>
      Effect.gen(function* () {
        const thrown = yield* AlertSink.fromCallback(() => {
          throw new Error("sync boom")
        })
          .send(raised)
          .pipe(Effect.exit)
        const rejected = yield* AlertSink.fromCallback(() => Promise.reject(new Error("async boom")))
          .send(raised)
          .pipe(Effect.exit)
        for (const [exit, message] of [
          [thrown, "sync boom"],
          [rejected, "async boom"]
        ] as const) {
          assert.isTrue(Exit.isFailure(exit))
          if (Exit.isFailure(exit)) {
            assert.isTrue(Cause.hasDies(exit.cause))
            assert.include(String(Cause.squash(exit.cause)), message)
          }
        }
      })
    )
  })

  describe("many", () => {
    it.effect("sends to every sink; a failing sink is logged and does not stop the others", () => {
      const logs = collectLogs()
      return Effect.gen(function* () {
        const first: Array<string> = []
        const last: Array<string> = []
        const sink = AlertSink.many([
          AlertSink.fromCallback((alert) => void first.push(alert.subject)),
          AlertSink.fromCallback(() => {
            throw new Error("down")
          }),
          AlertSink.fromCallback((alert) => void last.push(alert.subject))
        ])
        const exit = yield* Effect.exit(sink.send(raised))
        assert.isTrue(Exit.isSuccess(exit))
        assert.deepStrictEqual([first, last], [["gpt"], ["gpt"]])
        assert.deepStrictEqual(
          logs.lines.map((line) => [line.level, line.annotations["alert.rule"]]),
          [["Warn", "error_rate"]]
        )
      }).pipe(Effect.provide(logs.layer))
    })

    it.effect("many([]) drops alerts", () =>
      Effect.gen(function* () {
        assert.isTrue(Exit.isSuccess(yield* Effect.exit(AlertSink.many([]).send(raised))))
      })
    )
  })

  describe("layerMany", () => {
    it.effect("builds each layer once, keeps its resources for the life of the combined sink, and fans out", () =>
      Effect.gen(function* () {
        const events: Array<string> = []
        const withResource = Layer.effect(
          AlertSink.AlertSink,
          Effect.acquireRelease(
            Effect.sync(() => {
              events.push("acquire")
              return AlertSink.fromCallback((alert) => void events.push(`resource:${alert._tag}`))
            }),
            () => Effect.sync(() => events.push("release"))
          )
        )
        const plain = AlertSink.layerCallback((alert) => void events.push(`plain:${alert._tag}`))
        yield* Effect.gen(function* () {
          yield* send(raised)
          yield* send(resolved)
          assert.deepStrictEqual(events, [
            "acquire",
            "resource:Raised",
            "plain:Raised",
            "resource:Resolved",
            "plain:Resolved"
          ])
        }).pipe(Effect.provide(AlertSink.layerMany([withResource, plain])))
        assert.deepStrictEqual(events.slice(-1), ["release"])
      })
    )
  })

  describe("Alert", () => {
    it.effect("is a schema that round-trips through JSON", () =>
      Effect.gen(function* () {
        const json = Schema.encodeSync(Schema.fromJsonString(AlertSink.Alert))(raised)
        assert.deepStrictEqual(Schema.decodeUnknownSync(Schema.fromJsonString(AlertSink.Alert))(json), raised)
        assert.isTrue(Exit.isFailure(Schema.decodeUnknownExit(AlertSink.Alert)({ ...raised, rule: "unknown" })))
      })
    )
  })
})
