import { assert, describe, it } from "@effect/vitest"
import { Breaker, Monitor, Pipeline, RateLimit, ResponseCache, Simulated } from "@roadcar/core"
import { OtlpReceiver } from "@roadcar/testing"
import { Cause, ConfigProvider, Effect, Formatter, Layer, Logger, Metric, Redacted, Schedule, Tracer } from "effect"
import { Sampler, Telemetry } from "../src/index.ts"

// Real HTTP on loopback: the real exporters post to a real OTLP receiver. Spans reach the receiver
// when the telemetry layer's scope closes (every export interval here is a minute unless a test is
// about the interval), so the tests wait for no timer; the few that must watch the clock use short
// wall-clock bounds, as the exporter and the receiver are real I/O.

const Stages = Layer.mergeAll(
  Breaker.layerMemory(),
  Monitor.layerNoop,
  ResponseCache.layer(),
  RateLimit.layerMemory({ rules: [{ by: "key", requests: { limit: 100, window: "1 minute" } }], onExceeded: "reject" })
)

const unavailable = Simulated.SimulatedFault.Unavailable({ status: 503 })

/** A pipeline whose primary fails three times (so it retries twice, then falls back). */
const retriedPipeline = Effect.gen(function* () {
  const primary = yield* Simulated.make({
    name: "primary",
    model: "sim-primary",
    faults: Simulated.failFirst(3, unavailable)
  })
  const fallback = yield* Simulated.make({ name: "fallback", model: "sim-fallback" })
  return yield* Pipeline.make({
    name: "chat",
    steps: [{ upstream: primary }, { upstream: fallback }],
    retry: { jitter: false, baseDelay: "5 millis" }
  })
})

const healthyPipeline = Effect.gen(function* () {
  const upstream = yield* Simulated.make({ name: "primary", model: "sim-primary" })
  return yield* Pipeline.make({ name: "chat", steps: [{ upstream }] })
})

const request = (content = "hello") => ({
  model: "chat",
  messages: [{ role: "user" as const, content }],
  temperature: 0.2,
  max_tokens: 50
})

/**
 * Captures log lines (the exporter's warnings included) instead of printing them: each as Effect's
 * JSON line, plus the failures of its cause serialized whole (as a structured-logging backend would
 * ship the error object, its HTTP request included).
 */
const captureLogs = () => {
  const lines: Array<string> = []
  const capture = Logger.make((options) => {
    lines.push(Logger.formatJson.log(options))
    for (const reason of options.cause.reasons) {
      if (Cause.isFailReason(reason)) lines.push(Formatter.formatJson(reason.error))
    }
  })
  return { lines, layer: Logger.layer([capture, Logger.tracerLogger]) }
}

const fromEnv = (env: Record<string, string>) => ConfigProvider.layer(ConfigProvider.fromEnv({ env }))

const requestsOf = (points: ReadonlyArray<OtlpReceiver.MetricPoint>, outcome: string) =>
  points.filter((point) => point.name === "roadcar_requests_total" && point.attributes["outcome"] === outcome)

const byId = (spans: ReadonlyArray<OtlpReceiver.Span>) => new Map(spans.map((span) => [span.spanId, span]))

describe("Telemetry", () => {
  describe("traces", () => {
    it.live("exports a retried, fallen-back request's span tree, flushed when the layer closes", () =>
      Effect.gen(function* () {
        const receiver = yield* OtlpReceiver.make()
        const env = {
          OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
          OTEL_SERVICE_NAME: "roadcar-test",
          OTEL_RESOURCE_ATTRIBUTES: "deployment.environment=ci,service.version=9.9.9",
          OTEL_BSP_SCHEDULE_DELAY: "60000",
          OTEL_METRICS_EXPORTER: "none"
        }
        yield* Effect.gen(function* () {
          const pipeline = yield* retriedPipeline
          yield* pipeline.complete(request(), { key: "k" })
          // nothing is exported before the interval (a minute) or the layer's end
          assert.strictEqual((yield* receiver.requests).length, 0)
        }).pipe(Effect.scoped, Effect.provide(Telemetry.layerFromEnv()), Effect.provide(fromEnv(env)))

        const spans = yield* receiver.spans
        const index = byId(spans)
        const parentName = (span: OtlpReceiver.Span) =>
          span.parentSpanId === undefined ? "root" : (index.get(span.parentSpanId)?.name ?? "missing")
        assert.deepStrictEqual(spans.map((span) => `${span.name} <- ${parentName(span)}`).sort(), [
          "chat sim-fallback <- roadcar.step",
          "chat sim-primary <- roadcar.step",
          "chat sim-primary <- roadcar.step",
          "chat sim-primary <- roadcar.step",
          "roadcar.cache <- roadcar.pipeline",
          "roadcar.pipeline <- root",
          "roadcar.rate_limit <- roadcar.pipeline",
          "roadcar.step <- roadcar.cache",
          "roadcar.step <- roadcar.cache"
        ])
        assert.strictEqual(new Set(spans.map((span) => span.traceId)).size, 1)
        for (const span of spans) {
          assert.strictEqual(span.kind, span.name.startsWith("chat ") ? "client" : "internal")
          assert.strictEqual(span.resource["service.name"], "roadcar-test")
          assert.strictEqual(span.resource["service.version"], "9.9.9")
          assert.strictEqual(span.resource["deployment.environment"], "ci")
        }

        const root = spans.find((span) => span.name === "roadcar.pipeline")!
        assert.strictEqual(root.attributes["roadcar.outcome"], "fallback")
        assert.strictEqual(root.attributes["roadcar.attempts"], 4)

        const failed = spans.filter((span) => span.name === "chat sim-primary")
        assert.deepStrictEqual(failed.map((span) => span.attributes["roadcar.attempt"]).sort(), [1, 2, 3])
        for (const span of failed) {
          assert.strictEqual(span.status.code, "error")
          assert.strictEqual(span.attributes["error.type"], "Unavailable")
          assert.strictEqual(span.attributes["gen_ai.operation.name"], "chat")
          assert.strictEqual(span.attributes["gen_ai.provider.name"], "roadcar.simulated")
          assert.strictEqual(span.attributes["gen_ai.request.model"], "sim-primary")
          assert.strictEqual(span.attributes["gen_ai.request.temperature"], 0.2)
          assert.strictEqual(span.attributes["gen_ai.request.max_tokens"], 50)
        }
        const answered = spans.find((span) => span.name === "chat sim-fallback")!
        assert.strictEqual(answered.status.code, "unset")
        assert.strictEqual(answered.attributes["gen_ai.response.model"], "sim-fallback")
        assert.match(String(answered.attributes["gen_ai.response.id"]), /^chatcmpl-/)
        assert.deepStrictEqual(answered.attributes["gen_ai.response.finish_reasons"], ["stop"])
        assert.isAbove(Number(answered.attributes["gen_ai.usage.input_tokens"]), 0)
        assert.isAbove(Number(answered.attributes["gen_ai.usage.output_tokens"]), 0)
        assert.isUndefined(answered.attributes["gen_ai.input.messages"], "content is recorded only when opted in")

        const events = spans.flatMap((span) => span.events.map((event) => ({ span: span.name, ...event })))
        const retries = events.filter((event) => event.name === "roadcar.retry")
        assert.deepStrictEqual(
          retries.map((event) => [event.span, event.attributes["roadcar.retry"], event.attributes["error.type"]]),
          [
            ["roadcar.step", 1, "Unavailable"],
            ["roadcar.step", 2, "Unavailable"]
          ]
        )
        const fallback = events.find((event) => event.name === "roadcar.fallback")
        assert.strictEqual(fallback?.span, "roadcar.cache")
        assert.deepStrictEqual(fallback?.attributes, {
          "roadcar.fallback.to": "fallback",
          "roadcar.fallback.from": "primary",
          "error.type": "Unavailable",
          "roadcar.reason": "upstream unavailable (503)"
        })
        assert.isTrue(events.some((event) => event.name === "roadcar.cache.miss" && event.span === "roadcar.cache"))

        // one protobuf batch, posted at shutdown
        const posts = yield* receiver.requests
        assert.deepStrictEqual(
          posts.map((post) => [post.path, post.contentType, post.outcome]),
          [["/v1/traces", "application/x-protobuf", 200]]
        )
      }).pipe(Effect.scoped, Effect.provide(Stages), Effect.provide(captureLogs().layer))
    )

    it.live("marks a cache hit and a rate-limited request with events", () =>
      Effect.gen(function* () {
        const receiver = yield* OtlpReceiver.make()
        const limited = Layer.mergeAll(
          Breaker.layerMemory(),
          Monitor.layerNoop,
          ResponseCache.layer(),
          RateLimit.layerMemory({
            rules: [{ by: "key", requests: { limit: 2, window: "1 minute" } }],
            onExceeded: "reject"
          })
        )
        yield* Effect.gen(function* () {
          const pipeline = yield* healthyPipeline
          yield* pipeline.complete(request("same"), { key: "k" })
          yield* pipeline.complete(request("same"), { key: "k" })
          yield* Effect.flip(pipeline.complete(request("third"), { key: "k" }))
        }).pipe(
          Effect.scoped,
          Effect.provide(limited),
          Effect.provide(Telemetry.layer({ endpoint: receiver.url, metrics: false, tracesExportInterval: "1 minute" }))
        )
        const spans = yield* receiver.spans
        const roots = spans.filter((span) => span.name === "roadcar.pipeline")
        assert.deepStrictEqual(
          roots.map((span) => span.attributes["roadcar.outcome"]),
          ["success", "success", "rejected"]
        )
        const eventNames = spans.flatMap((span) => span.events.map((event) => event.name))
        assert.strictEqual(eventNames.filter((name) => name === "roadcar.cache.hit").length, 1)
        assert.strictEqual(eventNames.filter((name) => name === "roadcar.rate_limited").length, 1)
        assert.strictEqual(spans.filter((span) => span.name === "chat sim-primary").length, 1)
      }).pipe(Effect.scoped, Effect.provide(captureLogs().layer))
    )

    it.live("continues an incoming trace and follows its sampling decision", () =>
      Effect.gen(function* () {
        const receiver = yield* OtlpReceiver.make()
        const incoming = (sampled: boolean) =>
          Tracer.externalSpan({ traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7", sampled })
        yield* Effect.gen(function* () {
          const pipeline = yield* healthyPipeline
          yield* pipeline.complete(request("kept"), { key: "k" }).pipe(Effect.withParentSpan(incoming(true)))
          yield* pipeline.complete(request("dropped"), { key: "k" }).pipe(Effect.withParentSpan(incoming(false)))
        }).pipe(
          Effect.scoped,
          Effect.provide(Stages),
          Effect.provide(
            Telemetry.layer({
              endpoint: receiver.url,
              metrics: false,
              // new traces are never sampled: only the incoming decision can export anything
              sampler: Sampler.parentBased(Sampler.alwaysOff),
              tracesExportInterval: "1 minute"
            })
          )
        )
        const spans = yield* receiver.spans
        assert.strictEqual(spans.filter((span) => span.name === "roadcar.pipeline").length, 1)
        const root = spans.find((span) => span.name === "roadcar.pipeline")!
        assert.strictEqual(root.traceId, "4bf92f3577b34da6a3ce929d0e0e4736")
        assert.strictEqual(root.parentSpanId, "00f067aa0ba902b7")
        assert.isTrue(spans.every((span) => span.traceId === root.traceId))
      }).pipe(Effect.scoped, Effect.provide(captureLogs().layer))
    )

    it.live("exports nothing under the always_off sampler, while metrics still flow", () =>
      Effect.gen(function* () {
        const receiver = yield* OtlpReceiver.make()
        const env = {
          OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
          OTEL_TRACES_SAMPLER: "always_off",
          OTEL_METRIC_EXPORT_INTERVAL: "60000",
          OTEL_SERVICE_NAME: "from-env"
        }
        yield* Effect.gen(function* () {
          const pipeline = yield* retriedPipeline
          yield* pipeline.complete(request(), { key: "k" })
        }).pipe(
          Effect.scoped,
          Effect.provide(Stages),
          // an explicit env record; the defaults fill in what it does not set
          Effect.provide(
            Telemetry.layerFromEnv({ env, defaults: { serviceName: "from-code", serviceVersion: "1.0.0" } })
          )
        )
        assert.strictEqual((yield* receiver.spans).length, 0)
        const requests = (yield* receiver.metrics).find((point) => point.name === "roadcar_requests_total")
        assert.strictEqual(requests?.value, 1)
        assert.strictEqual(requests?.resource["service.name"], "from-env")
        assert.strictEqual(requests?.resource["service.version"], "1.0.0")
        assert.isFalse((yield* receiver.requests).some((post) => post.path === "/v1/traces"))
      }).pipe(
        Effect.scoped,
        Effect.provideService(Metric.MetricRegistry, new Map()),
        Effect.provide(captureLogs().layer)
      )
    )

    it.live("speaks OTLP/JSON with gzip and the configured headers", () =>
      Effect.gen(function* () {
        const receiver = yield* OtlpReceiver.make()
        yield* Effect.gen(function* () {
          const pipeline = yield* retriedPipeline
          yield* pipeline.complete(request(), { key: "k" })
        }).pipe(
          Effect.scoped,
          Effect.provide(Stages),
          Effect.provide(
            Telemetry.layer({
              endpoint: `${receiver.url}/`,
              protocol: "http/json",
              compression: "gzip",
              headers: Redacted.make({ "x-collector-token": "t0ken" }),
              metrics: false,
              tracesExportInterval: "1 minute"
            })
          )
        )
        assert.strictEqual((yield* receiver.spans).length, 9)
        const [post] = yield* receiver.requests
        assert.strictEqual(post?.path, "/v1/traces")
        assert.strictEqual(post?.contentType, "application/json")
        assert.strictEqual(post?.contentEncoding, "gzip")
        assert.strictEqual(post?.headers["x-collector-token"], "t0ken")
      }).pipe(Effect.scoped, Effect.provide(captureLogs().layer))
    )
  })

  describe("per-signal exporter settings", () => {
    it.live(
      "sends OTEL_EXPORTER_OTLP_TRACES_HEADERS with spans only; metrics keep the shared headers and their own encoding",
      () =>
        Effect.gen(function* () {
          const receiver = yield* OtlpReceiver.make()
          const env = {
            OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
            OTEL_EXPORTER_OTLP_HEADERS: "x-shared-token=shared",
            OTEL_EXPORTER_OTLP_TRACES_HEADERS: "x-honeycomb-team=trace-key",
            OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: "http/json",
            OTEL_EXPORTER_OTLP_METRICS_COMPRESSION: "gzip",
            OTEL_BSP_SCHEDULE_DELAY: "60000",
            OTEL_METRIC_EXPORT_INTERVAL: "60000"
          }
          yield* Effect.gen(function* () {
            const pipeline = yield* retriedPipeline
            yield* pipeline.complete(request(), { key: "k" })
          }).pipe(
            Effect.scoped,
            Effect.provide(Stages),
            Effect.provide(Telemetry.layerFromEnv()),
            Effect.provide(fromEnv(env))
          )
          assert.strictEqual((yield* receiver.spans).length, 9)
          assert.strictEqual(requestsOf(yield* receiver.metrics, "fallback")[0]?.value, 1)
          const posts = yield* receiver.requests
          const traces = posts.filter((post) => post.path === "/v1/traces")
          const metrics = posts.filter((post) => post.path === "/v1/metrics")
          assert.isNotEmpty(traces)
          assert.isNotEmpty(metrics)
          for (const post of traces) {
            assert.strictEqual(post.headers["x-honeycomb-team"], "trace-key")
            assert.isUndefined(post.headers["x-shared-token"], "a signal's headers replace the shared ones")
            assert.strictEqual(post.contentType, "application/x-protobuf")
            assert.isUndefined(post.contentEncoding)
          }
          for (const post of metrics) {
            assert.strictEqual(post.headers["x-shared-token"], "shared")
            assert.isUndefined(post.headers["x-honeycomb-team"])
            assert.strictEqual(post.contentType, "application/json")
            assert.strictEqual(post.contentEncoding, "gzip")
          }
        }).pipe(
          Effect.scoped,
          Effect.provideService(Metric.MetricRegistry, new Map()),
          Effect.provide(captureLogs().layer)
        )
    )

    it.live("merges a signal's settings from the environment into those of the defaults, setting by setting", () =>
      Effect.gen(function* () {
        const receiver = yield* OtlpReceiver.make()
        yield* Effect.void.pipe(
          Effect.withSpan("merged"),
          Effect.provide(
            Telemetry.layerFromEnv({
              env: {
                OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
                OTEL_METRICS_EXPORTER: "none",
                OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "http/json"
              },
              defaults: {
                signals: { traces: { headers: { "x-trace-token": "from-code" }, protocol: "http/protobuf" } }
              }
            })
          )
        )
        const [post] = yield* receiver.requests
        assert.strictEqual(post?.path, "/v1/traces")
        assert.strictEqual(post?.contentType, "application/json", "the environment wins")
        assert.strictEqual(post?.headers["x-trace-token"], "from-code", "the defaults' other settings stay")
      }).pipe(Effect.scoped, Effect.provide(captureLogs().layer))
    )

    it.live("keeps a signal's own headers out of the log when its export fails", () =>
      Effect.gen(function* () {
        const receiver = yield* OtlpReceiver.make()
        const logs = captureLogs()
        yield* Effect.void.pipe(
          Effect.withSpan("lost"),
          Effect.provide(
            Telemetry.layer({
              // a path the receiver does not serve: 404, which is not retried
              headers: { "x-shared": "not-for-traces" },
              signals: {
                traces: {
                  endpoint: `${receiver.url}/v1/nothing-here`,
                  headers: Redacted.make({ "x-trace-token": "hunter2-secret" })
                }
              },
              metrics: false,
              tracesExportInterval: "1 minute"
            })
          ),
          Effect.provide(logs.layer)
        )
        assert.isTrue(
          logs.lines.some((line) => line.includes('"request":')),
          logs.lines.join("\n")
        )
        assert.notInclude(logs.lines.join("\n"), "hunter2-secret")
        const [post] = yield* receiver.requests
        assert.strictEqual(post?.headers["x-trace-token"], "hunter2-secret")
        assert.isUndefined(post?.headers["x-shared"])
      }).pipe(Effect.scoped)
    )
  })

  describe("metrics", () => {
    it.live("exports the registry's metrics on the interval, with the GenAI histograms", () =>
      Effect.gen(function* () {
        const receiver = yield* OtlpReceiver.make()
        yield* Effect.gen(function* () {
          const pipeline = yield* retriedPipeline
          yield* pipeline.complete(request(), { key: "k" })
          // the layer is still open: this is the periodic export
          const points = yield* receiver.waitForMetrics(
            (points) => requestsOf(points, "fallback").length > 0,
            "3 seconds"
          )
          const [requests] = requestsOf(points, "fallback")
          assert.strictEqual(requests?.type, "sum")
          assert.strictEqual(requests?.value, 1)
          assert.strictEqual(requests?.monotonic, true)
          assert.strictEqual(requests?.temporality, "cumulative")
          assert.strictEqual(requests?.resource["service.name"], "metrics-test")
          const duration = points.find(
            (point) =>
              point.name === "gen_ai.client.operation.duration" &&
              point.attributes["gen_ai.request.model"] === "sim-primary"
          )
          assert.strictEqual(duration?.type, "histogram")
          assert.strictEqual(duration?.count, 3)
          assert.strictEqual(duration?.attributes["error.type"], "Unavailable")
          const tokens = points.find(
            (point) => point.name === "gen_ai.client.token.usage" && point.attributes["gen_ai.token.type"] === "output"
          )
          assert.isAbove(tokens?.sum ?? 0, 0)
        }).pipe(
          Effect.scoped,
          Effect.provide(Stages),
          Effect.provide(
            Telemetry.layer({
              endpoint: receiver.url,
              traces: false,
              metricsExportInterval: "50 millis",
              serviceName: "metrics-test"
            })
          )
        )
        assert.isFalse((yield* receiver.requests).some((post) => post.path === "/v1/traces"))
      }).pipe(
        Effect.scoped,
        Effect.provideService(Metric.MetricRegistry, new Map()),
        Effect.provide(captureLogs().layer)
      )
    )

    it.live("exports the latest values once more when the layer closes", () =>
      Effect.gen(function* () {
        const receiver = yield* OtlpReceiver.make()
        yield* Effect.gen(function* () {
          const pipeline = yield* healthyPipeline
          yield* pipeline.complete(request("one"), { key: "k" })
          yield* pipeline.complete(request("two"), { key: "k" })
          assert.strictEqual((yield* receiver.requests).length, 0)
        }).pipe(
          Effect.scoped,
          Effect.provide(Stages),
          Effect.provide(Telemetry.layer({ endpoint: receiver.url, traces: false, metricsExportInterval: "1 minute" }))
        )
        const points = yield* receiver.metrics
        assert.strictEqual(requestsOf(points, "success")[0]?.value, 2)
        assert.isTrue(points.some((point) => point.name === "gen_ai.client.operation.duration" && point.count === 2))
        assert.deepStrictEqual(
          (yield* receiver.requests).map((post) => post.path),
          ["/v1/metrics"]
        )
      }).pipe(
        Effect.scoped,
        Effect.provideService(Metric.MetricRegistry, new Map()),
        Effect.provide(captureLogs().layer)
      )
    )
  })

  describe("logs", () => {
    it.live("exports log lines when asked, tied to their span", () =>
      Effect.gen(function* () {
        const receiver = yield* OtlpReceiver.make()
        yield* Effect.gen(function* () {
          const pipeline = yield* retriedPipeline
          yield* pipeline.complete(request(), { key: "k" })
        }).pipe(
          Effect.scoped,
          Effect.provide(Stages),
          Effect.provide(
            Telemetry.layer({ endpoint: receiver.url, logs: true, metrics: false, logsExportInterval: "1 minute" })
          )
        )
        const logs = yield* receiver.logs
        const retry = logs.find((record) => String(record.body).startsWith("retry 1/3"))
        assert.isDefined(retry)
        const span = (yield* receiver.spans).find((candidate) => candidate.spanId === retry?.spanId)
        assert.strictEqual(span?.name, "roadcar.step")
        assert.strictEqual(span?.traceId, retry?.traceId)
      }).pipe(Effect.scoped, Effect.provide(captureLogs().layer))
    )
  })

  describe("a collector that is down", () => {
    for (const down of ["unavailable", "reset", "hang"] as const) {
      it.live(`(${down}) neither fails nor slows requests, and does not hold up shutdown`, () =>
        Effect.gen(function* () {
          const receiver = yield* OtlpReceiver.make()
          yield* receiver.setDown(down)
          const telemetry = Telemetry.layer({
            endpoint: receiver.url,
            tracesExportInterval: "10 millis",
            metricsExportInterval: "10 millis",
            exportTimeout: "2 seconds",
            shutdownTimeout: "100 millis"
          })
          const closed = yield* Effect.gen(function* () {
            const pipeline = yield* healthyPipeline
            yield* pipeline.complete(request("warm-up"), { key: "k" })
            // wait until exports are failing (or hanging) right now
            yield* Effect.repeat(receiver.requests, {
              schedule: Schedule.spaced("5 millis"),
              until: (posts) => posts.length >= 2
            })
            const started = Date.now()
            for (let index = 0; index < 20; index++) {
              const answer = yield* pipeline.complete(request(`question ${index}`), { key: "k" })
              assert.strictEqual(answer.meta.upstream, "primary")
            }
            const elapsed = Date.now() - started
            assert.isBelow(elapsed, 1000, `20 requests took ${elapsed}ms`)
            return Date.now()
          }).pipe(Effect.scoped, Effect.provide(Stages), Effect.provide(telemetry))
          const shutdown = Date.now() - closed
          assert.isBelow(shutdown, 1500, `shutdown took ${shutdown}ms`)
          assert.strictEqual((yield* receiver.spans).length, 0)
          assert.isTrue(
            (yield* receiver.requests).every((post) => post.outcome === (down === "unavailable" ? 503 : down))
          )
        }).pipe(Effect.scoped, Effect.provide(captureLogs().layer))
      )
    }

    it.live("holds at most maxConcurrentExports requests open per signal", () =>
      Effect.gen(function* () {
        const receiver = yield* OtlpReceiver.make()
        yield* receiver.setDown("hang")
        yield* Effect.gen(function* () {
          // 40 spans in batches of 4: ten full batches, each wanting an export at once
          for (let index = 0; index < 40; index++) yield* Effect.void.pipe(Effect.withSpan(`span-${index}`))
          yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 200)))
          const open = (yield* receiver.requests).filter((post) => post.outcome === "hang")
          assert.strictEqual(open.length, 1)
        }).pipe(
          Effect.provide(
            Telemetry.layer({
              endpoint: receiver.url,
              metrics: false,
              maxBatchSize: 4,
              maxConcurrentExports: 1,
              tracesExportInterval: "1 minute",
              exportTimeout: "5 seconds",
              shutdownTimeout: "50 millis"
            })
          )
        )
      }).pipe(Effect.scoped, Effect.provide(captureLogs().layer))
    )

    it.live("is reported in the log without the values of the configured headers", () =>
      Effect.gen(function* () {
        const receiver = yield* OtlpReceiver.make()
        const logs = captureLogs()
        // posted (and refused) by the final flush when the layer closes
        yield* Effect.void.pipe(
          Effect.withSpan("lost"),
          Effect.provide(
            Telemetry.layer({
              // a path the receiver does not serve: 404, which is not retried
              signals: { traces: { endpoint: `${receiver.url}/v1/nothing-here` } },
              headers: { "x-collector-token": "hunter2-secret", authorization: "Bearer also-secret" },
              metrics: false,
              tracesExportInterval: "1 minute"
            })
          ),
          Effect.provide(logs.layer)
        )
        const warning = logs.lines.find((line) => line.includes("Disabling exporter"))
        assert.isDefined(warning, logs.lines.join("\n"))
        assert.include(warning ?? "", "404")
        // the serialized error carries the request it failed
        assert.isTrue(
          logs.lines.some((line) => line.includes('"request":')),
          logs.lines.join("\n")
        )
        assert.notInclude(logs.lines.join("\n"), "hunter2-secret")
        assert.notInclude(logs.lines.join("\n"), "also-secret")
        assert.strictEqual((yield* receiver.requests)[0]?.headers["x-collector-token"], "hunter2-secret")
      }).pipe(Effect.scoped)
    )
  })

  describe("flush", () => {
    it.live("posts every signal's buffer at once, before the interval", () =>
      Effect.gen(function* () {
        const receiver = yield* OtlpReceiver.make()
        yield* Effect.gen(function* () {
          const pipeline = yield* healthyPipeline
          yield* pipeline.complete(request(), { key: "k" })
          assert.strictEqual((yield* receiver.requests).length, 0)
          yield* Telemetry.flush
          assert.strictEqual((yield* receiver.spans).filter((span) => span.name === "roadcar.pipeline").length, 1)
          assert.strictEqual(requestsOf(yield* receiver.metrics, "success")[0]?.value, 1)
        }).pipe(
          Effect.scoped,
          Effect.provide(Stages),
          Effect.provide(
            Telemetry.layer({
              endpoint: receiver.url,
              tracesExportInterval: "1 minute",
              metricsExportInterval: "1 minute"
            })
          )
        )
      }).pipe(
        Effect.scoped,
        Effect.provideService(Metric.MetricRegistry, new Map()),
        Effect.provide(captureLogs().layer)
      )
    )
  })

  describe("layerFromEnv", () => {
    it.live("installs nothing when no variable asks for export", () =>
      Effect.gen(function* () {
        const span = yield* Effect.currentSpan.pipe(
          Effect.withSpan("local"),
          Effect.provide(Telemetry.layerFromEnv()),
          Effect.provide(fromEnv({ OTEL_SERVICE_NAME: "ignored" }))
        )
        assert.instanceOf(span, Tracer.NativeSpan)
        const exported = yield* Effect.currentSpan.pipe(
          Effect.withSpan("exported"),
          Effect.provide(Telemetry.layerFromEnv({ defaults: { shutdownTimeout: "10 millis" } })),
          Effect.provide(
            fromEnv({
              OTEL_TRACES_EXPORTER: "otlp",
              OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://127.0.0.1:9/v1/traces"
            })
          )
        )
        assert.notInstanceOf(exported, Tracer.NativeSpan)
      }).pipe(Effect.provide(captureLogs().layer))
    )

    it.effect("fails with the variable that has an unusable value", () =>
      Effect.gen(function* () {
        const error = yield* Effect.flip(
          Effect.void.pipe(
            Effect.provide(Telemetry.layerFromEnv()),
            Effect.provide(
              fromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://localhost:4318", OTEL_TRACES_SAMPLER: "sometimes" })
            )
          )
        )
        assert.strictEqual(error._tag, "TelemetryEnvError")
        assert.strictEqual(error.variable, "OTEL_TRACES_SAMPLER")
      })
    )
    it.effect("fails at start on a header fetch would refuse, naming it, with the secret in no log", () => {
      const logs = captureLogs()
      return Effect.gen(function* () {
        const error = yield* Effect.flip(
          Effect.void.pipe(
            Effect.provide(Telemetry.layerFromEnv()),
            Effect.provide(
              fromEnv({
                OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:9",
                OTEL_EXPORTER_OTLP_HEADERS: "authorization=Bearer%0Asupersecret"
              })
            )
          )
        )
        assert.strictEqual(error._tag, "TelemetryEnvError")
        assert.strictEqual(error.variable, "OTEL_EXPORTER_OTLP_HEADERS")
        assert.include(error.message, '"authorization"')
        assert.notInclude([error.message, JSON.stringify(error), ...logs.lines].join("\n"), "supersecret")
      }).pipe(Effect.provide(logs.layer))
    })
  })

  describe("layer", () => {
    it("refuses invalid options, naming them", () => {
      assert.throws(() => Telemetry.layer({ endpoint: "not a url" }), RangeError, "endpoint")
      assert.throws(
        () => Telemetry.layer({ signals: { metrics: { endpoint: "ftp://x" } } }),
        RangeError,
        "signals.metrics.endpoint"
      )
      assert.throws(() => Telemetry.layer({ maxBatchSize: 0 }), RangeError, "maxBatchSize")
      assert.throws(() => Telemetry.layer({ exportTimeout: "0 millis" }), RangeError, "exportTimeout")
      assert.throws(
        () => Telemetry.layer({ signals: { traces: { exportTimeout: "0 millis" } } }),
        RangeError,
        "signals.traces.exportTimeout"
      )
      assert.doesNotThrow(() =>
        Telemetry.layer({ metrics: false, signals: { metrics: { exportTimeout: "0 millis" } } })
      )
      assert.doesNotThrow(() => Telemetry.layer({ traces: false, metrics: false }))
      // Headers fetch could not send: named, never shown (a redacted value stays unshown too).
      const secret = "Bearer\nsk-layer-secret"
      for (const options of [
        { headers: { authorization: secret } },
        { headers: Redacted.make({ authorization: secret }) },
        { signals: { traces: { headers: { authorization: secret } } } }
      ]) {
        try {
          Telemetry.layer(options)
          assert.fail("expected a RangeError")
        } catch (error) {
          assert.instanceOf(error, RangeError)
          assert.include((error as Error).message, '"authorization"')
          assert.include((error as Error).message, "line break")
          assert.notInclude((error as Error).message, "sk-layer-secret")
        }
      }
    })
  })
})
