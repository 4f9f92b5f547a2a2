import * as Zlib from "node:zlib"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Metric } from "effect"
import { FetchHttpClient } from "effect/http"
import { OtlpLogger, OtlpMetrics, OtlpSerialization, OtlpTracer } from "effect/observability"
import { ProtobufWriter } from "effect/protobuf"
import { OtlpReceiver } from "../src/index.ts"

// Real HTTP on loopback, real Effect OTLP exporters; every export is flushed by closing the exporter's
// scope, so nothing here waits for an export interval.

const encodings = [
  { name: "JSON", serialization: OtlpSerialization.layerJson, contentType: "application/json" },
  { name: "protobuf", serialization: OtlpSerialization.layerProtobuf, contentType: "application/x-protobuf" }
] as const

type Encoding = (typeof encodings)[number]

const resource = {
  serviceName: "receiver-test",
  serviceVersion: "1.2.3",
  attributes: { "deployment.environment": "ci" }
}

const tracer = (url: string, encoding: Encoding) =>
  OtlpTracer.layer({ url: `${url}/v1/traces`, resource, exportInterval: "1 minute" }).pipe(
    Layer.provide([encoding.serialization, FetchHttpClient.layer])
  )

const post = (
  url: string,
  path: string,
  init: { contentType: string; body: string | Uint8Array<ArrayBuffer>; encoding?: string }
) =>
  fetch(`${url}${path}`, {
    method: "POST",
    headers: {
      "content-type": init.contentType,
      ...(init.encoding === undefined ? {} : { "content-encoding": init.encoding })
    },
    body: init.body
  })

describe("OtlpReceiver", () => {
  describe("traces", () => {
    for (const encoding of encodings) {
      it.live(`decodes the spans Effect's OTLP exporter sends as ${encoding.name}`, () =>
        Effect.gen(function* () {
          const receiver = yield* OtlpReceiver.make()
          yield* Effect.gen(function* () {
            yield* Effect.gen(function* () {
              const span = yield* Effect.currentSpan
              span.event("roadcar.retry", 1_700_000_000_000_000_000n, { "roadcar.retry": 1, reason: "503" })
              yield* Effect.fail("upstream unavailable")
            }).pipe(
              Effect.withSpan("chat gpt-test", {
                kind: "client",
                attributes: {
                  "gen_ai.request.model": "gpt-test",
                  "gen_ai.request.temperature": 0.5,
                  "gen_ai.usage.input_tokens": 12,
                  "gen_ai.response.finish_reasons": ["stop"],
                  streamed: false
                }
              }),
              Effect.ignore
            )
          }).pipe(Effect.withSpan("request", { kind: "server" }), Effect.provide(tracer(receiver.url, encoding)))

          const spans = yield* receiver.spans
          assert.deepStrictEqual(spans.map((span) => span.name).sort(), ["chat gpt-test", "request"])
          const root = spans.find((span) => span.name === "request")!
          const child = spans.find((span) => span.name === "chat gpt-test")!
          assert.match(root.traceId, /^[0-9a-f]{32}$/)
          assert.match(root.spanId, /^[0-9a-f]{16}$/)
          assert.isUndefined(root.parentSpanId)
          assert.strictEqual(root.kind, "server")
          assert.strictEqual(root.status.code, "unset")
          assert.strictEqual(child.parentSpanId, root.spanId)
          assert.strictEqual(child.traceId, root.traceId)
          assert.strictEqual(child.kind, "client")
          assert.strictEqual(child.status.code, "error")
          assert.include(child.status.message ?? "", "upstream unavailable")
          assert.deepStrictEqual(child.attributes, {
            "gen_ai.request.model": "gpt-test",
            "gen_ai.request.temperature": 0.5,
            "gen_ai.usage.input_tokens": 12,
            "gen_ai.response.finish_reasons": ["stop"],
            streamed: false
          })
          const retry = child.events.find((event) => event.name === "roadcar.retry")
          assert.deepStrictEqual(retry, {
            name: "roadcar.retry",
            timeUnixNano: "1700000000000000000",
            attributes: { "roadcar.retry": 1, reason: "503" }
          })
          assert.isTrue(child.events.some((event) => event.name === "exception"))
          assert.strictEqual(root.resource["service.name"], "receiver-test")
          assert.strictEqual(root.resource["service.version"], "1.2.3")
          assert.strictEqual(root.resource["deployment.environment"], "ci")
          assert.strictEqual(root.scope.name, "effect")
          assert.isTrue(BigInt(root.endTimeUnixNano) >= BigInt(root.startTimeUnixNano))

          const [request] = yield* receiver.requests
          assert.strictEqual(request?.path, "/v1/traces")
          assert.strictEqual(request?.contentType, encoding.contentType)
          assert.strictEqual(request?.outcome, 200)
        }).pipe(Effect.scoped)
      )
    }

    it.live("accepts gzip bodies and records the headers sent", () =>
      Effect.gen(function* () {
        const receiver = yield* OtlpReceiver.make()
        const exporter = OtlpTracer.layer({
          url: `${receiver.url}/v1/traces`,
          resource,
          exportInterval: "1 minute",
          compression: "gzip",
          headers: { "x-api-key": "secret" }
        }).pipe(Layer.provide([OtlpSerialization.layerProtobuf, FetchHttpClient.layer]))
        // enough spans for a body over the 1KB gzip threshold
        yield* Effect.forEach(
          Array.from({ length: 20 }, (_, index) => index),
          (index) => Effect.void.pipe(Effect.withSpan(`span-${index}`, { attributes: { index } }))
        ).pipe(Effect.provide(exporter))

        assert.strictEqual((yield* receiver.spans).length, 20)
        const [request] = yield* receiver.requests
        assert.strictEqual(request?.contentEncoding, "gzip")
        assert.strictEqual(request?.headers["x-api-key"], "secret")
      }).pipe(Effect.scoped)
    )

    it.live("decodes packed repeated fields, key-value lists and bytes, as the official exporter writes them", () =>
      Effect.gen(function* () {
        const receiver = yield* OtlpReceiver.make()
        const { Len, I64, Varint } = ProtobufWriter.WireType
        const traceId = Uint8Array.from({ length: 16 }, (_, index) => index + 1)
        const spanId = Uint8Array.from({ length: 8 }, (_, index) => 0xa0 + index)
        const w = ProtobufWriter.make()
        w.tag(1, Len).fork() // ResourceSpans
        w.tag(1, Len).fork().tag(1, Len).fork().tag(1, Len).string("service.name") // Resource.attributes
        w.tag(2, Len).fork().tag(1, Len).string("official").join().join().join()
        w.tag(2, Len).fork() // ScopeSpans
        w.tag(1, Len).fork().tag(1, Len).string("@opentelemetry/test").tag(2, Len).string("2.12.1").join()
        w.tag(2, Len).fork() // Span
        w.tag(1, Len).bytes(traceId).tag(2, Len).bytes(spanId).tag(5, Len).string("packed")
        w.tag(6, Varint).int32(3).tag(7, I64).fixed64(10n).tag(8, I64).fixed64(20n)
        w.tag(9, Len).fork().tag(1, Len).string("nested") // KeyValue with a kvlist value
        w.tag(2, Len).fork().tag(6, Len).fork()
        w.tag(1, Len).fork().tag(1, Len).string("inner").tag(2, Len).fork().tag(3, Varint).int64(7).join().join()
        w.join().join().join()
        w.tag(9, Len).fork().tag(1, Len).string("raw").tag(2, Len).fork().tag(7, Len).bytes(Uint8Array.of(1, 2)).join()
        w.join()
        w.tag(15, Len).fork().tag(2, Len).string("boom").tag(3, Varint).int32(2).join()
        w.join().join().join()
        const spans = w.finish()

        const m = ProtobufWriter.make()
        m.tag(1, Len).fork().tag(2, Len).fork() // ResourceMetrics > ScopeMetrics
        m.tag(2, Len).fork().tag(1, Len).string("latency").tag(3, Len).string("s") // Metric
        m.tag(9, Len).fork() // Histogram
        m.tag(1, Len).fork() // HistogramDataPoint with packed buckets and bounds
        m.tag(3, I64).fixed64(5n).tag(4, I64).fixed64(3n).tag(5, I64).double(1.5)
        m.tag(6, Len).fork().fixed64(1n).fixed64(2n).fixed64(0n).join()
        m.tag(7, Len).fork().double(0.5).double(1).join()
        m.tag(9, Len).fork().tag(1, Len).string("model").tag(2, Len).fork().tag(1, Len).string("m").join().join()
        m.join()
        m.tag(2, Varint).int32(2)
        m.join().join().join().join()

        const traced = yield* Effect.promise(() =>
          post(receiver.url, "/v1/traces", {
            contentType: "application/x-protobuf",
            body: Zlib.gzipSync(spans),
            encoding: "gzip"
          })
        )
        const measured = yield* Effect.promise(() =>
          post(receiver.url, "/v1/metrics", { contentType: "application/x-protobuf", body: m.finish() })
        )
        assert.strictEqual(traced.status, 200)
        assert.strictEqual(measured.status, 200)
        assert.strictEqual(traced.headers.get("content-type"), "application/x-protobuf")

        const [span] = yield* receiver.spans
        assert.strictEqual(span?.traceId, "0102030405060708090a0b0c0d0e0f10")
        assert.strictEqual(span?.spanId, "a0a1a2a3a4a5a6a7")
        assert.strictEqual(span?.kind, "client")
        assert.strictEqual(span?.startTimeUnixNano, "10")
        assert.deepStrictEqual(span?.attributes["nested"], { inner: 7 })
        assert.deepStrictEqual(span?.attributes["raw"], Uint8Array.of(1, 2))
        assert.deepStrictEqual(span?.status, { code: "error", message: "boom" })
        assert.deepStrictEqual(span?.resource, { "service.name": "official" })
        assert.deepStrictEqual(span?.scope, { name: "@opentelemetry/test", version: "2.12.1" })

        const [point] = yield* receiver.metrics
        assert.strictEqual(point?.name, "latency")
        assert.strictEqual(point?.unit, "s")
        assert.strictEqual(point?.type, "histogram")
        assert.strictEqual(point?.temporality, "cumulative")
        assert.strictEqual(point?.count, 3)
        assert.strictEqual(point?.sum, 1.5)
        assert.deepStrictEqual(point?.bucketCounts, [1, 2, 0])
        assert.deepStrictEqual(point?.explicitBounds, [0.5, 1])
        assert.deepStrictEqual(point?.attributes, { model: "m" })
      }).pipe(Effect.scoped)
    )
  })

  describe("metrics", () => {
    for (const encoding of encodings) {
      it.live(`decodes counters, gauges and histograms from Effect's OTLP exporter as ${encoding.name}`, () =>
        Effect.gen(function* () {
          const receiver = yield* OtlpReceiver.make()
          const requests = Metric.counter("requests_total", { description: "Requests", incremental: true })
          const inFlight = Metric.gauge("in_flight")
          const latency = Metric.histogram("latency_seconds", { boundaries: [0.1, 1] })
          const exporter = OtlpMetrics.layer({
            url: `${receiver.url}/v1/metrics`,
            resource,
            exportInterval: "1 minute"
          }).pipe(Layer.provide([encoding.serialization, FetchHttpClient.layer]))
          yield* Effect.gen(function* () {
            yield* Metric.update(Metric.withAttributes(requests, { outcome: "success" }), 1)
            yield* Metric.update(Metric.withAttributes(requests, { outcome: "success" }), 1)
            yield* Metric.update(Metric.withAttributes(requests, { outcome: "error" }), 1)
            yield* Metric.update(inFlight, 3)
            yield* Metric.update(latency, 0.05)
            yield* Metric.update(latency, 0.5)
            yield* Metric.update(latency, 2)
          }).pipe(Effect.provide(exporter))

          const metrics = yield* receiver.metrics
          const success = metrics.find(
            (point) => point.name === "requests_total" && point.attributes["outcome"] === "success"
          )
          assert.strictEqual(success?.type, "sum")
          assert.strictEqual(success?.value, 2)
          assert.strictEqual(success?.monotonic, true)
          assert.strictEqual(success?.description, "Requests")
          assert.strictEqual(success?.resource["service.name"], "receiver-test")
          const gauge = metrics.find((point) => point.name === "in_flight")
          assert.strictEqual(gauge?.type, "gauge")
          assert.strictEqual(gauge?.value, 3)
          const histogram = metrics.find((point) => point.name === "latency_seconds")
          assert.strictEqual(histogram?.type, "histogram")
          assert.strictEqual(histogram?.count, 3)
          assert.closeTo(histogram?.sum ?? 0, 2.55, 1e-9)
          assert.strictEqual(histogram?.min, 0.05)
          assert.strictEqual(histogram?.max, 2)
          assert.deepStrictEqual(histogram?.explicitBounds, [0.1, 1])
          assert.deepStrictEqual(histogram?.bucketCounts, [1, 1, 1])
        }).pipe(Effect.scoped, Effect.provideService(Metric.MetricRegistry, new Map()))
      )
    }
  })

  describe("logs", () => {
    for (const encoding of encodings) {
      it.live(`decodes log records, with their span, as ${encoding.name}`, () =>
        Effect.gen(function* () {
          const receiver = yield* OtlpReceiver.make()
          const exporter = OtlpLogger.layer({
            url: `${receiver.url}/v1/logs`,
            resource,
            exportInterval: "1 minute",
            mergeWithExisting: false
          }).pipe(Layer.provide([encoding.serialization, FetchHttpClient.layer]))
          const span = yield* Effect.gen(function* () {
            yield* Effect.logWarning("upstream slow").pipe(Effect.annotateLogs({ upstream: "primary" }))
            return yield* Effect.currentSpan
          }).pipe(Effect.withSpan("request"), Effect.provide(exporter))

          const [record] = yield* receiver.logs
          assert.strictEqual(record?.body, "upstream slow")
          assert.strictEqual(record?.severityText, "Warn")
          assert.strictEqual(record?.severityNumber, 13)
          assert.strictEqual(record?.attributes["upstream"], "primary")
          assert.strictEqual(record?.traceId, span.traceId)
          assert.strictEqual(record?.spanId, span.spanId)
          assert.strictEqual(record?.resource["service.name"], "receiver-test")
        }).pipe(Effect.scoped)
      )
    }
  })

  describe("requests it refuses", () => {
    it.live("answers 404, 405, 415 and 400 and stores nothing", () =>
      Effect.gen(function* () {
        const receiver = yield* OtlpReceiver.make()
        const json = "application/json"
        const statuses = yield* Effect.promise(() =>
          Promise.all([
            post(receiver.url, "/v1/profiles", { contentType: json, body: "{}" }),
            fetch(`${receiver.url}/v1/traces`),
            post(receiver.url, "/v1/traces", { contentType: "text/plain", body: "{}" }),
            post(receiver.url, "/v1/traces", { contentType: json, body: "{not json" }),
            post(receiver.url, "/v1/traces", {
              contentType: "application/x-protobuf",
              body: Uint8Array.of(0x0a, 0x7f)
            }),
            post(receiver.url, "/v1/traces", { contentType: json, body: "{}", encoding: "br" })
          ]).then((responses) => responses.map((response) => response.status))
        )
        assert.deepStrictEqual(statuses, [404, 405, 415, 400, 400, 415])
        assert.strictEqual((yield* receiver.spans).length, 0)
        assert.deepStrictEqual(
          (yield* receiver.requests).map((request) => request.outcome).sort(),
          [400, 400, 404, 405, 415, 415]
        )
      }).pipe(Effect.scoped)
    )
  })

  describe("setDown", () => {
    const body = JSON.stringify({
      resourceSpans: [{ resource: { attributes: [] }, scopeSpans: [{ scope: { name: "t" }, spans: [{ name: "s" }] }] }]
    })
    const send = (url: string) => post(url, "/v1/traces", { contentType: "application/json", body })

    it.live("answers 503 when down and stores nothing, then accepts again", () =>
      Effect.gen(function* () {
        const receiver = yield* OtlpReceiver.make()
        yield* receiver.setDown(true)
        assert.strictEqual((yield* Effect.promise(() => send(receiver.url))).status, 503)
        assert.strictEqual((yield* receiver.spans).length, 0)
        yield* receiver.setDown(false)
        assert.strictEqual((yield* Effect.promise(() => send(receiver.url))).status, 200)
        assert.deepStrictEqual(
          (yield* receiver.spans).map((span) => span.name),
          ["s"]
        )
        assert.deepStrictEqual(
          (yield* receiver.requests).map((request) => request.outcome),
          [503, 200]
        )
      }).pipe(Effect.scoped)
    )

    it.live("resets the connection, or hangs until it is closed", () =>
      Effect.gen(function* () {
        const receiver = yield* OtlpReceiver.make()
        yield* receiver.setDown("reset")
        const reset = yield* Effect.promise(() =>
          send(receiver.url).then(
            () => "answered",
            () => "failed"
          )
        )
        assert.strictEqual(reset, "failed")

        yield* receiver.setDown("hang")
        const hanging = AbortSignal.timeout(200)
        const hung = yield* Effect.promise(() =>
          fetch(`${receiver.url}/v1/traces`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body,
            signal: hanging
          }).then(
            () => "answered",
            () => "aborted"
          )
        )
        assert.strictEqual(hung, "aborted")
        assert.deepStrictEqual(
          (yield* receiver.requests).map((request) => request.outcome),
          ["reset", "hang"]
        )
        assert.strictEqual((yield* receiver.spans).length, 0)
      }).pipe(Effect.scoped)
    )
  })

  describe("waitForSpans", () => {
    it.live("resolves once the predicate holds, and fails with WaitTimeout otherwise", () =>
      Effect.gen(function* () {
        const receiver = yield* OtlpReceiver.make()
        const exporter = OtlpTracer.layer({
          url: `${receiver.url}/v1/traces`,
          resource,
          exportInterval: "20 millis"
        }).pipe(Layer.provide([OtlpSerialization.layerJson, FetchHttpClient.layer]))
        const spans = yield* Effect.gen(function* () {
          yield* Effect.void.pipe(Effect.withSpan("late"))
          // the exporter is still open: this is the interval's export, not the final flush
          return yield* receiver.waitForSpans((spans) => spans.some((span) => span.name === "late"), "2 seconds")
        }).pipe(Effect.provide(exporter))
        assert.deepStrictEqual(
          spans.map((span) => span.name),
          ["late"]
        )

        const timeout = yield* Effect.flip(receiver.waitForSpans((spans) => spans.length > 5, "50 millis"))
        assert.strictEqual(timeout._tag, "WaitTimeout")
        assert.strictEqual(timeout.signal, "spans")
        assert.strictEqual(timeout.received, 1)

        yield* receiver.clear
        assert.strictEqual((yield* receiver.spans).length, 0)
        assert.strictEqual((yield* receiver.requests).length, 0)
      }).pipe(Effect.scoped)
    )
  })

  describe("start", () => {
    it("is the Promise API and leaves no server behind once closed", async () => {
      const servers = () => process.getActiveResourcesInfo().filter((name) => name === "TCPServerWrap").length
      const before = servers()
      const receiver = await OtlpReceiver.start()
      assert.match(receiver.url, /^http:\/\/127\.0\.0\.1:\d+$/)
      const waiting = receiver.waitForSpans((spans) => spans.length === 1, 2000)
      const response = await post(receiver.url, "/v1/traces", {
        contentType: "application/json",
        body: JSON.stringify({
          resourceSpans: [
            {
              resource: { attributes: [{ key: "service.name", value: { stringValue: "promise" } }] },
              scopeSpans: [
                {
                  scope: { name: "manual" },
                  spans: [
                    {
                      traceId: "5B8EFFF798038103D269B633813FC60C",
                      spanId: "EEE19B7EC3C1B174",
                      parentSpanId: "",
                      name: "manual",
                      kind: 2,
                      startTimeUnixNano: "1",
                      endTimeUnixNano: 2,
                      attributes: [{ key: "big", value: { intValue: "9007199254740993" } }],
                      status: { code: 1 }
                    }
                  ]
                }
              ]
            }
          ]
        })
      })
      assert.strictEqual(response.status, 200)
      assert.deepStrictEqual(await response.json(), {})
      const [span] = await waiting
      await receiver.close()
      assert.strictEqual(span?.traceId, "5b8efff798038103d269b633813fc60c")
      assert.isUndefined(span?.parentSpanId)
      assert.strictEqual(span?.kind, "server")
      assert.strictEqual(span?.endTimeUnixNano, "2")
      assert.strictEqual(span?.attributes["big"], 9007199254740993n)
      assert.deepStrictEqual(span?.status, { code: "ok", message: undefined })
      assert.strictEqual(span?.resource["service.name"], "promise")
      assert.strictEqual(servers(), before)
    })
  })

  describe("formatTree", () => {
    const span = (spanId: string, parentSpanId: string | undefined, name: string, start: string) => ({
      traceId: "t",
      spanId,
      parentSpanId,
      name,
      kind: "internal" as const,
      startTimeUnixNano: start,
      endTimeUnixNano: start,
      attributes: {},
      events: [],
      links: [],
      status: { code: "unset" as const, message: undefined },
      resource: {},
      scope: { name: "s", version: undefined }
    })

    it("draws children under their parent in start order, with kinds, errors and events", () => {
      const spans: Array<OtlpReceiver.Span> = [
        { ...span("c", "a", "second", "3"), kind: "client", status: { code: "error", message: "x" } },
        span("a", undefined, "root", "1"),
        { ...span("b", "a", "first", "2"), events: [{ name: "cache.miss", timeUnixNano: "2", attributes: {} }] },
        span("d", "missing", "orphan", "4")
      ]
      assert.strictEqual(
        OtlpReceiver.formatTree(spans),
        ["root [internal]", "  first [internal] cache.miss", "  second [client] error", "orphan [internal]"].join("\n")
      )
      assert.strictEqual(
        OtlpReceiver.formatTree(spans, { events: (name) => name !== "cache.miss" }).split("\n")[1],
        "  first [internal]"
      )
    })
  })
})
