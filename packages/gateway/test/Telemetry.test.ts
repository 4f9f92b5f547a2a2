/**
 * The gateway's traces and metrics, end to end: a real OTLP receiver, the real exporter, real HTTP.
 */
import { assert, describe, it } from "@effect/vitest"
import { Telemetry } from "@roadcar/opentelemetry"
import { Behaviour, FakeUpstream, OtlpReceiver, Script } from "@roadcar/testing"
import { Effect, Layer } from "effect"
import { GatewayServer } from "../src/index.ts"
import { chatBody, decode, fakeConfig, post, quiet } from "./utils.ts"

const traceId = "0af7651916cd43dd8448eb211c80319c"
const parentId = "b7ad6b7169203331"

// Starts a gateway whose telemetry goes to `receiver`; the telemetry layer outlives the server, so
// closing the scope drains the gateway first and flushes the last spans after.
const startTraced = (input: unknown, receiverUrl: string) =>
  Effect.gen(function* () {
    const telemetry = yield* Layer.build(
      Telemetry.layer({
        endpoint: receiverUrl,
        protocol: "http/json",
        serviceName: "roadcar-test",
        tracesExportInterval: "1 minute",
        metricsExportInterval: "1 minute",
        metrics: false,
        shutdownTimeout: "500 millis"
      })
    )
    const config = yield* decode(input)
    return yield* Effect.orDie(GatewayServer.start({ config, port: 0, env: {}, isolatedMetrics: true })).pipe(
      Effect.provideContext(telemetry)
    )
  })

describe("telemetry", () => {
  it.live("exports the span tree of every kind of request, continuing an incoming traceparent, at shutdown", () =>
    Effect.gen(function* () {
      const receiver = yield* OtlpReceiver.make()
      const primary = yield* FakeUpstream.make({
        behaviour: Script.sequence([Behaviour.status(503), Behaviour.status(503), Behaviour.status(503)])
      })
      const backup = yield* FakeUpstream.make()
      yield* Effect.scoped(
        Effect.gen(function* () {
          const { url } = yield* startTraced(
            fakeConfig(
              { primary, backup },
              { chat: { upstream: "primary", fallbacks: [{ upstream: "backup" }] } },
              {
                cache: { enabled: true },
                rateLimit: { rules: [{ by: "global", requests: { limit: 4, window: "1 minute" } }] }
              }
            ),
            receiver.url
          )
          const traceparent = `00-${traceId}-${parentId}-01`
          // 1: retried three times, answered by the fallback; arrives with a traceparent.
          assert.strictEqual(
            (yield* Effect.promise(() => post(url, JSON.stringify(chatBody("a")), { traceparent }))).status,
            200
          )
          // 2: the same prompt again: a cache hit.
          yield* Effect.promise(() => post(url, JSON.stringify(chatBody("a"))).then((r) => r.text()))
          // 3: streamed.
          const streamed = yield* Effect.promise(() =>
            post(url, JSON.stringify({ ...chatBody("b"), stream: true })).then((r) => r.text())
          )
          assert.include(streamed, "[DONE]")
          // 4: plain success; 5: rate limited.
          yield* Effect.promise(() => post(url, JSON.stringify(chatBody("c"))).then((r) => r.text()))
          assert.strictEqual((yield* Effect.promise(() => post(url, JSON.stringify(chatBody("d"))))).status, 429)
          assert.strictEqual(
            (yield* receiver.spans).length,
            0,
            "nothing exported before shutdown (interval is a minute)"
          )
        })
      )
      // The scope closed: the gateway drained, then the telemetry flushed.
      const spans = yield* receiver.spans
      assert.isTrue(spans.length > 0, "spans were flushed at shutdown")
      assert.strictEqual(spans[0]?.resource["service.name"], "roadcar-test")

      const server = spans.find((span) => span.traceId === traceId && span.kind === "server")!
      assert.isDefined(server, "the server span continues the incoming trace")
      assert.strictEqual(server.parentSpanId, parentId)
      assert.strictEqual(server.name, "POST /v1/chat/completions", "the server span is named by its route")
      const inTrace = spans.filter((span) => span.traceId === traceId)
      const byId = new Map(inTrace.map((span) => [span.spanId, span]))
      const pipeline = inTrace.find((span) => span.name === "roadcar.pipeline")!
      assert.strictEqual(pipeline.parentSpanId, server.spanId)
      const attempts = inTrace.filter((span) => span.name === "chat fake-model")
      assert.strictEqual(attempts.length, 4, "three attempts on the primary, one on the fallback")
      for (const attempt of attempts) {
        assert.strictEqual(attempt.kind, "client")
        assert.strictEqual(byId.get(attempt.parentSpanId!)?.name, "roadcar.step")
        assert.strictEqual(attempt.attributes["gen_ai.operation.name"], "chat")
        assert.strictEqual(attempt.attributes["server.address"], "127.0.0.1")
      }
      assert.deepStrictEqual(
        attempts.map((a) => a.attributes["error.type"] ?? "none"),
        ["Unavailable", "Unavailable", "Unavailable", "none"]
      )
      const answered = attempts[3]!
      assert.strictEqual(answered.attributes["gen_ai.provider.name"], "openai-compatible")
      assert.strictEqual(answered.attributes["gen_ai.response.model"], "fake-model")
      assert.isTrue(Number(answered.attributes["gen_ai.usage.output_tokens"]) > 0)
      const events = inTrace.flatMap((span) => span.events.map((event) => event.name))
      assert.strictEqual(events.filter((name) => name === "roadcar.retry").length, 2)
      assert.include(events, "roadcar.fallback")

      const allEvents = spans.flatMap((span) => span.events.map((event) => event.name))
      assert.include(allEvents, "roadcar.cache.hit")
      assert.include(allEvents, "roadcar.rate_limited")
      const streamedAttempt = spans.find(
        (span) => span.name === "chat fake-model" && span.traceId !== traceId && span.attributes["gen_ai.response.id"]
      )
      assert.isDefined(streamedAttempt)
    }).pipe(quiet)
  )

  it.live("a collector that is down never fails or slows a request", () =>
    Effect.gen(function* () {
      const receiver = yield* OtlpReceiver.make()
      yield* receiver.setDown("hang")
      const upstream = yield* FakeUpstream.make()
      const { url } = yield* startTraced(fakeConfig({ upstream }, { chat: { upstream: "upstream" } }), receiver.url)
      const started = Date.now()
      for (let i = 0; i < 10; i++) {
        const response = yield* Effect.promise(() => post(url, JSON.stringify(chatBody(`q${i}`))))
        assert.strictEqual(response.status, 200)
        yield* Effect.promise(() => response.text())
      }
      assert.isBelow(Date.now() - started, 2000)
    }).pipe(Effect.scoped, quiet)
  )

  it.live("/metrics is Prometheus text whose counters move with the requests", () =>
    Effect.gen(function* () {
      const upstream = yield* FakeUpstream.make()
      const config = yield* decode(fakeConfig({ upstream }, { chat: { upstream: "upstream" } }))
      const { url } = yield* Effect.orDie(GatewayServer.start({ config, port: 0, env: {}, isolatedMetrics: true }))
      const scrape = () =>
        Effect.promise(() =>
          fetch(`${url}/metrics`).then(async (r) => ({ type: r.headers.get("content-type"), text: await r.text() }))
        )
      const value = (text: string, name: string, labels: string) => {
        const line = text.split("\n").find((l) => l.startsWith(`${name}{`) && l.includes(labels))
        return line === undefined ? 0 : Number(line.split(" ").at(-1))
      }
      for (let i = 0; i < 3; i++)
        yield* Effect.promise(() => post(url, JSON.stringify(chatBody(`m${i}`))).then((r) => r.text()))
      const { type, text } = yield* scrape()
      assert.match(type ?? "", /^text\/plain/)
      // Every non-comment line is `name{labels} value`.
      for (const line of text.split("\n").filter((l) => l.length > 0 && !l.startsWith("#"))) {
        assert.match(line, /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? -?[0-9.e+-]+|NaN|\+Inf$/, line)
      }
      assert.strictEqual(value(text, "roadcar_requests_total", 'outcome="success"'), 3)
      assert.isTrue(value(text, "gen_ai_client_operation_duration_count", "") >= 3)
      assert.isTrue(value(text, "roadcar_gateway_overhead_seconds_count", "") >= 3)
      yield* Effect.promise(() => post(url, JSON.stringify(chatBody("m0"))).then((r) => r.text()))
      assert.strictEqual(value((yield* scrape()).text, "roadcar_requests_total", 'outcome="success"'), 4)
    }).pipe(Effect.scoped, quiet)
  )
})
