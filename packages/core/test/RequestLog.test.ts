import { assert, describe, it, vi } from "@effect/vitest"
import { Breaker, Monitor, Pipeline, RequestLog, ResponseCache } from "@roadcar/core"
import { Context, Effect, Fiber, Layer, Logger, References, Schema, Tracer } from "effect"
import { TestClock, TestConsole } from "effect/testing"
import { request, scripted, unavailable } from "./utils/Scripted.ts"

const jsonLines = Effect.map(TestConsole.logLines, (lines) =>
  lines.map(
    (line) => JSON.parse(String(line)) as { message: unknown; level: string; annotations: Record<string, unknown> }
  )
)

const Stages = Layer.mergeAll(Breaker.layerMemory(), Monitor.layerNoop, ResponseCache.layer())

describe("RequestLog", () => {
  it.effect("writes one JSON line per request with everything that happened", () =>
    Effect.gen(function* () {
      const primary = scripted("primary", [unavailable, unavailable, unavailable])
      const fallback = scripted("fallback", [])
      const pipeline = yield* Pipeline.make({
        steps: [{ upstream: primary }, { upstream: fallback }],
        retry: { jitter: false, baseDelay: "100 millis" }
      })
      const fiber = yield* Effect.forkChild(pipeline.complete(request("hi"), { requestId: "req-1", key: "team-a" }))
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(fiber)
      yield* pipeline.complete(request("hi"), { requestId: "req-2", key: "team-a" })

      const lines = yield* jsonLines
      const requests = lines.filter((line) => line.message === "request")
      assert.strictEqual(requests.length, 2)
      const first = requests[0]!
      assert.strictEqual(first.level, "INFO")
      assert.deepStrictEqual(
        { ...first.annotations, latency_ms: typeof first.annotations["latency_ms"] },
        {
          request_id: "req-1",
          key: "team-a",
          model: "chat",
          upstream: "fallback",
          answered_model: "fallback",
          status: "fallback",
          latency_ms: "number",
          attempts: 4,
          cache_hit: false,
          fallback: true,
          fallback_reason: "upstream unavailable (503)",
          input_tokens: 5,
          output_tokens: 3,
          error: null
        }
      )
      assert.strictEqual(first.annotations["latency_ms"], 300, "100ms + 200ms of backoff, in virtual time")
      assert.strictEqual(requests[1]!.annotations["cache_hit"], true)
      assert.strictEqual(requests[1]!.annotations["attempts"], 0)

      const failed = lines.filter((line) => String(line.message).startsWith("attempt failed"))
      assert.strictEqual(failed.length, 3)
      assert.strictEqual(failed[0]!.annotations["reason"], "Unavailable")
      const retries = lines.map((line) => String(line.message)).filter((message) => message.startsWith("retry "))
      assert.deepStrictEqual(retries, [
        "retry 1/3 in 100ms: upstream unavailable (503)",
        "retry 2/3 in 200ms: upstream unavailable (503)"
      ])
      assert.isTrue(
        lines.some((line) => String(line.message).startsWith("fallback to fallback: primary: upstream unavailable"))
      )
    }).pipe(Effect.scoped, Effect.provide(Layer.merge(Stages, RequestLog.layerJson("Info"))))
  )

  it.effect("drops lines below the configured level", () =>
    Effect.gen(function* () {
      const pipeline = yield* Pipeline.make({ steps: [{ upstream: scripted("primary", []) }] })
      yield* pipeline.complete(request())
      assert.strictEqual((yield* jsonLines).length, 0)
      yield* Effect.logWarning("kept")
      assert.strictEqual((yield* jsonLines).length, 1)
    }).pipe(Effect.scoped, Effect.provide(Layer.merge(Stages, RequestLog.layerJson("Warn"))))
  )

  it.effect("every line written in a span carries its trace_id and span_id", () =>
    Effect.gen(function* () {
      const span = yield* Effect.logInfo("inside").pipe(Effect.andThen(Effect.currentSpan), Effect.withSpan("outer"))
      yield* Effect.logInfo("outside")
      const lines = (yield* TestConsole.logLines).map((line) => JSON.parse(String(line)) as Record<string, unknown>)
      assert.strictEqual(lines[0]!["trace_id"], span.traceId)
      assert.strictEqual(lines[0]!["span_id"], span.spanId)
      assert.isUndefined(lines[1]!["trace_id"])
    }).pipe(Effect.provide(RequestLog.layerJson("Info")))
  )

  // The reference: Effect's structured line as JSON, with the span's ids added.
  const reference = (options: Logger.Options<unknown>): string => {
    const line: Record<string, unknown> = Logger.formatStructured.log(options)
    const span = Context.getOrUndefined(options.fiber.context, Tracer.ParentSpan)
    if (span !== undefined) {
      line["trace_id"] = span.traceId
      line["span_id"] = span.spanId
    }
    return JSON.stringify(line)
  }
  const Scalar = Schema.Union([Schema.String, Schema.Number, Schema.Boolean, Schema.Null])
  const Field = Schema.Union([
    Scalar,
    Schema.Undefined,
    Schema.Array(Schema.Number),
    Schema.Struct({ a: Schema.String })
  ])

  it.effect.prop(
    "writes exactly the bytes of Effect's structured line, for any message, annotations, log spans and span",
    {
      message: Schema.Union([Schema.String, Schema.Number]),
      annotations: Schema.Record(Schema.String, Field),
      logSpan: Schema.UndefinedOr(Schema.String),
      inSpan: Schema.Boolean,
      level: Schema.Literals(["Info", "Warn", "Error", "Debug"])
    },
    ({ message, annotations, logSpan, inSpan, level }) =>
      Effect.gen(function* () {
        const pairs: Array<[string, string]> = []
        const capture = Logger.make(
          (options) => void pairs.push([RequestLog.formatJson.log(options), reference(options)])
        )
        let program: Effect.Effect<void> = Effect.logWithLevel(level)(message).pipe(Effect.annotateLogs(annotations))
        if (logSpan !== undefined) program = Effect.withLogSpan(program, logSpan)
        if (inSpan) program = Effect.withSpan(program, "outer")
        yield* program.pipe(
          Effect.provide(Logger.layer([capture])),
          Effect.provideService(References.MinimumLogLevel, "Debug")
        )
        assert.strictEqual(pairs.length, 1)
        assert.strictEqual(pairs[0]![0], pairs[0]![1])
      }),
    { arbitrary: { runs: 300 } }
  )

  it.effect("layerJsonStdout writes the lines of a window in one write, and the rest when it closes", () =>
    Effect.gen(function* () {
      const writes: Array<string> = []
      const write = vi.spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => {
        writes.push(String(chunk))
        return true
      })
      try {
        yield* Effect.scoped(
          Effect.gen(function* () {
            yield* Effect.logInfo("first").pipe(Effect.annotateLogs({ n: 1 }))
            yield* Effect.logInfo("second")
            yield* Effect.logDebug("below the level")
            assert.deepStrictEqual(writes, [], "nothing before the window ends")
            yield* TestClock.adjust("10 millis")
            assert.strictEqual(writes.length, 1, "one write for the window")
            yield* Effect.logWarning("third")
          }).pipe(Effect.provide(RequestLog.layerJsonStdout("Info")))
        )
      } finally {
        write.mockRestore()
      }
      assert.strictEqual(writes.length, 2, "the rest written when the layer closed")
      const lines = writes.join("").split("\n")
      assert.strictEqual(lines.pop(), "", "every line ends with a newline")
      assert.deepStrictEqual(
        lines
          .map((line) => JSON.parse(line) as { message: string; level: string })
          .map((line) => [line.message, line.level]),
        [
          ["first", "INFO"],
          ["second", "INFO"],
          ["third", "WARN"]
        ]
      )
    })
  )
})
