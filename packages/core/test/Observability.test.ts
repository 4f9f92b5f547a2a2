import { assert, describe, it } from "@effect/vitest"
import { Breaker, ChatCompletion, Metrics, Monitor, Pipeline, RateLimit, ResponseCache } from "@roadcar/core"
import type { Upstream } from "@roadcar/core/Upstream"
import { Effect, Fiber, Layer, Metric, Option, Stream, Tracer } from "effect"
import { TestClock } from "effect/testing"
import { MalformedOutput, make as upstreamError } from "../src/UpstreamError.ts"
import { request, response, scripted, unavailable } from "./utils/Scripted.ts"

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

const parentName = (span: Tracer.NativeSpan) =>
  Option.match(span.parent, { onNone: () => undefined, onSome: (parent) => (parent as Tracer.NativeSpan).name })

const Stages = Layer.mergeAll(
  Breaker.layerMemory(),
  Monitor.layerNoop,
  ResponseCache.layer(),
  RateLimit.layerMemory({ rules: [{ by: "key", requests: { limit: 3, window: "1 minute" } }], onExceeded: "reject" })
)

describe("Observability", () => {
  it.effect("an attempt interrupted in flight (the caller went away) is recorded as error.type interrupted", () =>
    Effect.gen(function* () {
      const { spans, tracer } = recordingTracer()
      const hanging: Upstream = { ...scripted("hanging", []), complete: () => Effect.never }
      const pipeline = yield* Pipeline.make({ name: "gone", steps: [{ upstream: hanging }] })
      const fiber = yield* Effect.forkChild(
        pipeline.complete(request("never answered"), { key: "k" }).pipe(Effect.withTracer(tracer))
      )
      yield* TestClock.adjust("1 second")
      yield* Fiber.interrupt(fiber)
      const attempt = spans.find((span) => span.name === "chat hanging")!
      assert.strictEqual(attempt.attributes.get("error.type"), "interrupted")
      assert.strictEqual(attempt.status._tag, "Ended")
      const duration = yield* Metric.value(
        Metric.withAttributes(Metrics.operationDuration, {
          "gen_ai.operation.name": "chat",
          "gen_ai.provider.name": hanging.provider,
          "gen_ai.request.model": hanging.model,
          "error.type": "interrupted"
        })
      )
      assert.strictEqual(duration.count, 1)
      assert.strictEqual(duration.sum, 1, "one second of virtual time")
    }).pipe(Effect.scoped, Effect.provide(Stages), Effect.provideService(Metric.MetricRegistry, new Map()))
  )

  it.effect("a retried request that fell back leaves a span tree with GenAI attributes and events", () =>
    Effect.gen(function* () {
      const { spans, tracer } = recordingTracer()
      const primary = scripted("primary", [unavailable, unavailable, unavailable])
      const fallback = scripted("fallback", [])
      const pipeline = yield* Pipeline.make({
        name: "chat",
        steps: [{ upstream: primary }, { upstream: fallback }],
        retry: { jitter: false, baseDelay: "100 millis" }
      })
      const fiber = yield* Effect.forkChild(
        pipeline
          .complete(request("hi", { temperature: 0.2, max_tokens: 50 }), { key: "k" })
          .pipe(Effect.withTracer(tracer))
      )
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(fiber)

      const names = spans.map((span) => `${span.name} <- ${parentName(span) ?? "root"}`)
      assert.deepStrictEqual(names, [
        "roadcar.pipeline <- root",
        "roadcar.rate_limit <- roadcar.pipeline",
        "roadcar.cache <- roadcar.pipeline",
        "roadcar.step <- roadcar.cache",
        "chat primary <- roadcar.step",
        "chat primary <- roadcar.step",
        "chat primary <- roadcar.step",
        "roadcar.step <- roadcar.cache",
        "chat fallback <- roadcar.step"
      ])
      const attempts = spans.filter((span) => span.name.startsWith("chat "))
      assert.isTrue(attempts.every((span) => span.kind === "client"))
      const failed = attempts[0]!.attributes
      assert.strictEqual(failed.get("gen_ai.operation.name"), "chat")
      assert.strictEqual(failed.get("gen_ai.provider.name"), "test")
      assert.strictEqual(failed.get("gen_ai.request.model"), "primary")
      assert.strictEqual(failed.get("gen_ai.request.temperature"), 0.2)
      assert.strictEqual(failed.get("gen_ai.request.max_tokens"), 50)
      assert.strictEqual(failed.get("error.type"), "Unavailable")
      const answered = attempts[3]!.attributes
      assert.strictEqual(answered.get("gen_ai.response.model"), "fallback")
      assert.strictEqual(answered.get("gen_ai.response.id"), "chatcmpl-fallback")
      assert.deepStrictEqual(answered.get("gen_ai.response.finish_reasons"), ["stop"])
      assert.strictEqual(answered.get("gen_ai.usage.input_tokens"), 5)
      assert.strictEqual(answered.get("gen_ai.usage.output_tokens"), 3)
      assert.isFalse(answered.has("gen_ai.input.messages"), "content is recorded only when opted in")

      const events = spans.flatMap((span) =>
        (span.events as Array<[string, bigint, Record<string, unknown>]>).map(([name, , attributes]) => ({
          span: span.name,
          name,
          attributes
        }))
      )
      const retries = events.filter((event) => event.name === "roadcar.retry")
      assert.deepStrictEqual(
        retries.map((event) => [
          event.attributes["roadcar.retry"],
          event.attributes["roadcar.retry.delay_ms"],
          event.attributes["error.type"]
        ]),
        [
          [1, 100, "Unavailable"],
          [2, 200, "Unavailable"]
        ]
      )
      const fallbackEvent = events.find((event) => event.name === "roadcar.fallback")
      assert.deepStrictEqual(fallbackEvent?.attributes, {
        "roadcar.fallback.to": "fallback",
        "roadcar.fallback.from": "primary",
        "error.type": "Unavailable",
        "roadcar.reason": "upstream unavailable (503)"
      })
      assert.isTrue(events.some((event) => event.name === "roadcar.cache.miss"))
      const root = spans[0]!
      assert.strictEqual(root.attributes.get("roadcar.outcome"), "fallback")
      assert.strictEqual(root.attributes.get("roadcar.attempts"), 4)
    }).pipe(Effect.scoped, Effect.provide(Stages))
  )

  it.effect("the request whose failure opened a breaker, and those it refuses, carry breaker events", () =>
    Effect.gen(function* () {
      const { spans, tracer } = recordingTracer()
      const primary = scripted("primary", [], unavailable)
      const fallback = scripted("fallback", [])
      const pipeline = yield* Pipeline.make({
        steps: [{ upstream: primary, retry: { attempts: 1 } }, { upstream: fallback }]
      })
      for (const content of ["a", "b", "c"]) yield* pipeline.complete(request(content)).pipe(Effect.withTracer(tracer))
      const events = spans.flatMap((span) =>
        (span.events as Array<[string, bigint, Record<string, unknown>]>).map(([name, , attributes]) => ({
          trace: span.traceId,
          name,
          attributes
        }))
      )
      const opened = events.filter((event) => event.name === "roadcar.breaker")
      assert.strictEqual(opened.length, 1)
      assert.deepStrictEqual(opened[0]?.attributes, {
        "roadcar.upstream": "primary",
        "roadcar.breaker.from": "Closed",
        "roadcar.breaker.to": "Open"
      })
      assert.strictEqual(events.filter((event) => event.name === "roadcar.breaker.rejected").length, 1)
    }).pipe(
      Effect.scoped,
      Effect.provide(
        Layer.mergeAll(
          Breaker.layerMemory({ consecutiveFailures: 2, openDuration: "1 minute", maxOpenDuration: "1 minute" }),
          Monitor.layerNoop
        )
      )
    )
  )

  it.effect("records prompts and completions only when opted in", () =>
    Effect.gen(function* () {
      const { spans, tracer } = recordingTracer()
      const pipeline = yield* Pipeline.make({ steps: [{ upstream: scripted("primary", []) }], recordContent: true })
      yield* pipeline.complete(request("secret plan")).pipe(Effect.withTracer(tracer))
      const attempt = spans.find((span) => span.name === "chat primary")!
      assert.include(String(attempt.attributes.get("gen_ai.input.messages")), "secret plan")
      assert.include(String(attempt.attributes.get("gen_ai.output.messages")), "answer from primary")
    }).pipe(Effect.scoped, Effect.provide(Layer.mergeAll(Breaker.layerMemory(), Monitor.layerNoop)))
  )

  it.effect("counts requests, retries, fallbacks, cache lookups, rate limits and tokens", () =>
    Effect.gen(function* () {
      const primary = scripted("primary", [unavailable, unavailable, unavailable])
      const fallback = scripted("fallback", [])
      const pipeline = yield* Pipeline.make({
        name: "chat",
        steps: [{ upstream: primary }, { upstream: fallback }],
        retry: { jitter: false, baseDelay: "100 millis" }
      })
      const fiber = yield* Effect.forkChild(pipeline.complete(request("a"), { key: "k" }))
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(fiber)
      yield* pipeline.complete(request("a"), { key: "k" }) // cache hit
      yield* pipeline.complete(request("b"), { key: "k" }) // primary answers
      yield* Effect.flip(pipeline.complete(request("c"), { key: "k" })) // rate limited

      const count = (metric: Metric.Counter<number>, attributes: Record<string, string>) =>
        Effect.map(Metric.value(Metric.withAttributes(metric, attributes)), (state) => state.count)
      assert.strictEqual(yield* count(Metrics.requests, { model: "chat", outcome: "fallback" }), 1)
      assert.strictEqual(yield* count(Metrics.requests, { model: "chat", outcome: "success" }), 2)
      assert.strictEqual(yield* count(Metrics.requests, { model: "chat", outcome: "rejected" }), 1)
      assert.strictEqual(yield* count(Metrics.retries, { upstream: "primary", reason: "Unavailable" }), 2)
      assert.strictEqual(
        yield* count(Metrics.fallbacks, { model: "chat", upstream: "fallback", reason: "Unavailable" }),
        1
      )
      assert.strictEqual(yield* count(Metrics.cacheLookups, { model: "chat", result: "hit" }), 1)
      assert.strictEqual(yield* count(Metrics.cacheLookups, { model: "chat", result: "miss" }), 2)
      assert.strictEqual(yield* count(Metrics.rateLimited, { model: "chat", limit: "requests per key" }), 1)
      const inFlight = yield* Metric.value(Metric.withAttributes(Metrics.inFlight, { model: "chat" }))
      assert.strictEqual(inFlight.value, 0)
      const tokens = yield* Metric.value(
        Metric.withAttributes(Metrics.tokenUsage, {
          "gen_ai.operation.name": "chat",
          "gen_ai.provider.name": "test",
          "gen_ai.request.model": "fallback",
          "gen_ai.response.model": "fallback",
          "gen_ai.token.type": "input"
        })
      )
      assert.strictEqual(tokens.count, 1)
      assert.strictEqual(tokens.sum, 5)
    }).pipe(Effect.scoped, Effect.provide(Stages), Effect.provideService(Metric.MetricRegistry, new Map()))
  )

  it.effect("a streamed answer records its GenAI duration and tokens when its chunks end; a cut one its failure", () =>
    Effect.gen(function* () {
      const answer = response("primary", "streamed answer")
      const chunks = ChatCompletion.responseToChunks(answer)
      const streaming = (cut: boolean): Upstream => ({
        name: "primary",
        provider: "test",
        model: "primary",
        complete: () => Effect.succeed(answer),
        stream: () =>
          cut
            ? Stream.concat(
                Stream.fromIterable(chunks.slice(0, 2)),
                Stream.fail(upstreamError("primary", new MalformedOutput({ detail: "cut" })))
              )
            : Stream.fromIterable(chunks)
      })
      const attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "test",
        "gen_ai.request.model": "primary"
      }
      const whole = yield* Pipeline.make({ steps: [{ upstream: streaming(false) }] })
      yield* Stream.runDrain((yield* whole.stream(request("s"))).chunks)
      const finished = { ...attributes, "gen_ai.response.model": "primary" }
      const input = yield* Metric.value(
        Metric.withAttributes(Metrics.tokenUsage, { ...finished, "gen_ai.token.type": "input" })
      )
      const output = yield* Metric.value(
        Metric.withAttributes(Metrics.tokenUsage, { ...finished, "gen_ai.token.type": "output" })
      )
      assert.deepStrictEqual([input.count, input.sum, output.sum], [1, 5, 3])
      assert.strictEqual((yield* Metric.value(Metric.withAttributes(Metrics.operationDuration, finished))).count, 1)

      const cut = yield* Pipeline.make({ steps: [{ upstream: streaming(true), retry: { attempts: 1 } }] })
      yield* Effect.exit(Stream.runDrain((yield* cut.stream(request("t"))).chunks))
      const failed = yield* Metric.value(
        Metric.withAttributes(Metrics.operationDuration, { ...attributes, "error.type": "MalformedOutput" })
      )
      assert.strictEqual(failed.count, 1)
    }).pipe(Effect.scoped, Effect.provide(Stages), Effect.provideService(Metric.MetricRegistry, new Map()))
  )
})
