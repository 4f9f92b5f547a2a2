import { assert, describe, it } from "@effect/vitest"
import { Breaker, ChatCompletion, Metrics, Monitor, Pipeline, RateLimit, ResponseCache } from "@roadcar/core"
import type { Upstream } from "@roadcar/core/Upstream"
import { Context, Effect, Layer, Logger, Metric, Option, References, Stream, Tracer } from "effect"
import { request, response, scripted } from "./utils/Scripted.ts"

// The request path is written by hand for speed (spans opened in one context change, metrics
// labelled once, the log line built only when a logger will see it). These tests pin down what
// that must keep exactly as `Effect.withSpan`, `Effect.annotateLogs` and friends would do it.

const recordingTracer = () => {
  const spans: Array<Tracer.NativeSpan> = []
  const tracer = Tracer.make({
    span(options) {
      const span = new Tracer.NativeSpan(options)
      spans.push(span)
      return span
    }
  })
  return { spans, tracer }
}

const frameNames = (frame: References.StackFrame | undefined): Array<string> => {
  const names: Array<string> = []
  for (let current = frame; current !== undefined; current = current.parent) names.push(current.name)
  return names
}

// An upstream that records what its call sees: the current span and the stack frames.
const observing = () => {
  const seen: { span?: Tracer.AnySpan | undefined; frames?: Array<string> } = {}
  const upstream: Upstream = {
    name: "primary",
    provider: "test",
    model: "primary",
    complete: () =>
      Effect.withFiber((fiber) => {
        seen.span = Context.getOrUndefined(fiber.context, Tracer.ParentSpan)
        seen.frames = frameNames(fiber.getRef(References.CurrentStackFrame))
        return Effect.succeed(response("primary", "ok"))
      }),
    stream: () => Stream.fromIterable(ChatCompletion.responseToChunks(response("primary", "ok")))
  }
  return { seen, upstream }
}

const Stages = Layer.mergeAll(
  Breaker.layerMemory(),
  Monitor.layerNoop,
  ResponseCache.layer(),
  RateLimit.layerMemory({ rules: [{ by: "key", requests: { limit: 100, window: "1 minute" } }], onExceeded: "reject" })
)

describe("Pipeline hot path", () => {
  it.effect("the upstream call runs in its attempt span, under the stack frames of every span above it", () =>
    Effect.gen(function* () {
      const { spans, tracer } = recordingTracer()
      const { seen, upstream } = observing()
      const pipeline = yield* Pipeline.make({ steps: [{ upstream }] })
      yield* pipeline
        .complete(request("frames"), { key: "k" })
        .pipe(Effect.withSpan("caller"), Effect.withTracer(tracer))
      const attempt = spans.find((span) => span.name === "chat primary")!
      assert.strictEqual(seen.span, attempt)
      assert.deepStrictEqual(seen.frames, [
        "chat primary",
        "roadcar.step",
        "roadcar.cache",
        "roadcar.pipeline",
        "caller"
      ])
      const names = spans.map(
        (span) =>
          `${span.name} <- ${Option.getOrUndefined(span.parent)?.spanId === undefined ? "root" : (Option.getOrUndefined(span.parent) as Tracer.NativeSpan).name}`
      )
      assert.deepStrictEqual(names, [
        "caller <- root",
        "roadcar.pipeline <- caller",
        "roadcar.rate_limit <- roadcar.pipeline",
        "roadcar.cache <- roadcar.pipeline",
        "roadcar.step <- roadcar.cache",
        "chat primary <- roadcar.step"
      ])
      assert.isTrue(
        spans.every((span) => span.status._tag === "Ended"),
        "every span is ended"
      )
      assert.isTrue(
        spans.every((span) => span.traceId === spans[0]!.traceId),
        "one trace"
      )
      const pipelineSpan = spans[1]!
      assert.strictEqual(pipelineSpan.attributes.get("gen_ai.request.model"), "chat")
      assert.strictEqual(pipelineSpan.attributes.get("roadcar.outcome"), "success")
      assert.strictEqual(pipelineSpan.attributes.get("roadcar.attempts"), 1)
      assert.isString(pipelineSpan.attributes.get("roadcar.request_id"))
    }).pipe(Effect.scoped, Effect.provide(Stages))
  )

  it.effect(
    "no spans of its own when nobody would see them: no tracer installed, tracing off, or an unsampled parent",
    () =>
      Effect.gen(function* () {
        const { seen, upstream } = observing()
        const pipeline = yield* Pipeline.make({ steps: [{ upstream }] })
        const callerSpanSeen = (program: Effect.Effect<unknown, unknown>) =>
          Effect.gen(function* () {
            seen.span = undefined
            yield* program
            return seen.span === undefined ? undefined : (seen.span as Tracer.Span).name
          })
        let calls = 0
        const call = () => pipeline.complete(request(`untraced ${++calls}`), { key: "k" })
        // Effect's default in-memory tracer: the call runs in the caller's span.
        assert.strictEqual(yield* callerSpanSeen(call().pipe(Effect.withSpan("caller"))), "caller")
        const { spans, tracer } = recordingTracer()
        // A tracer installed but turned off (the caller's span is Effect's no-op span).
        assert.strictEqual(
          yield* callerSpanSeen(
            call().pipe(Effect.withSpan("caller"), Effect.withTracer(tracer), Effect.withTracerEnabled(false))
          ),
          "caller"
        )
        // A tracer installed, the caller's span not sampled.
        assert.strictEqual(
          yield* callerSpanSeen(call().pipe(Effect.withSpan("caller", { sampled: false }), Effect.withTracer(tracer))),
          "caller"
        )
        assert.deepStrictEqual(
          spans.map((span) => span.name),
          ["caller"]
        )
        // The same tracer, sampled: the attempt span.
        assert.strictEqual(
          yield* callerSpanSeen(call().pipe(Effect.withSpan("caller"), Effect.withTracer(tracer))),
          "chat primary"
        )
      }).pipe(Effect.scoped, Effect.provide(Stages))
  )

  it.effect("the request line carries the caller's own log annotations, and ours win on a clash", () =>
    Effect.gen(function* () {
      const lines: Array<Record<string, unknown>> = []
      const capture = Logger.make((options) => {
        if (options.message === "request" || (Array.isArray(options.message) && options.message[0] === "request")) {
          lines.push({ ...options.fiber.getRef(References.CurrentLogAnnotations) })
        }
      })
      const pipeline = yield* Pipeline.make({ steps: [{ upstream: scripted("primary", []) }] })
      yield* pipeline
        .complete(request("annotated"), { key: "k", requestId: "req-7" })
        .pipe(Effect.annotateLogs({ tenant: "acme", model: "from-caller" }), Effect.provide(Logger.layer([capture])))
      assert.strictEqual(lines.length, 1)
      assert.deepStrictEqual(Object.keys(lines[0]!).slice(0, 2), ["tenant", "model"])
      assert.strictEqual(lines[0]!["tenant"], "acme")
      assert.strictEqual(lines[0]!["model"], "chat")
      assert.strictEqual(lines[0]!["request_id"], "req-7")
    }).pipe(Effect.scoped, Effect.provide(Stages))
  )

  it.effect("a request below the minimum log level writes no line but still counts and reports", () =>
    Effect.gen(function* () {
      const lines: Array<unknown> = []
      const capture = Logger.make((options) => void lines.push(options.message))
      const pipeline = yield* Pipeline.make({ name: "quiet", steps: [{ upstream: scripted("primary", []) }] })
      yield* pipeline
        .complete(request("quiet"), { key: "k" })
        .pipe(Effect.provide(Logger.layer([capture])), Effect.provideService(References.MinimumLogLevel, "Warn"))
      assert.strictEqual(lines.length, 0)
      const requests = yield* Metric.value(
        Metric.withAttributes(Metrics.requests, { model: "quiet", outcome: "success" })
      )
      assert.strictEqual(requests.count, 1)
      const inFlight = yield* Metric.value(Metric.withAttributes(Metrics.inFlight, { model: "quiet" }))
      assert.strictEqual(inFlight.value, 0)
    }).pipe(Effect.scoped, Effect.provide(Stages), Effect.provideService(Metric.MetricRegistry, new Map()))
  )

  it.effect("Metrics.spanEvent adds to the current span, and is a no-op outside one", () =>
    Effect.gen(function* () {
      const { spans, tracer } = recordingTracer()
      yield* Metrics.spanEvent("outside", { a: 1 })
      yield* Metrics.spanEvent("inside", { a: 2 }).pipe(Effect.withSpan("s"), Effect.withTracer(tracer))
      assert.strictEqual(spans.length, 1)
      assert.deepStrictEqual(
        (spans[0]!.events as Array<[string, bigint, Record<string, unknown>]>).map(([name, , attributes]) => [
          name,
          attributes
        ]),
        [["inside", { a: 2 }]]
      )
    })
  )
})
