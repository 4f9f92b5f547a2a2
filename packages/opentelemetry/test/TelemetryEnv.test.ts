import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Result } from "effect"
import { Sampler, Telemetry, TelemetryEnv } from "../src/index.ts"

const parsed = (env: TelemetryEnv.Env) => Result.getOrThrow(TelemetryEnv.parse(env))

const failure = (env: TelemetryEnv.Env) => {
  const result = TelemetryEnv.parse(env)
  if (Result.isSuccess(result)) assert.fail("expected a TelemetryEnvError")
  return result.failure
}

describe("TelemetryEnv", () => {
  describe("parse", () => {
    it("requests nothing when no variable asks for export", () => {
      assert.isUndefined(parsed({}))
      assert.isUndefined(parsed({ OTEL_SERVICE_NAME: "gateway", OTEL_TRACES_SAMPLER: "always_on" }))
      assert.isUndefined(parsed({ OTEL_SDK_DISABLED: "true", OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318" }))
      assert.isUndefined(parsed({ OTEL_EXPORTER_OTLP_ENDPOINT: "  " }))
      assert.isUndefined(
        parsed({
          OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318",
          OTEL_TRACES_EXPORTER: "none",
          OTEL_METRICS_EXPORTER: "prometheus"
        })
      )
    })

    it("turns traces and metrics on with the endpoint alone, as roadcar with parentbased_always_on", () => {
      assert.deepStrictEqual(parsed({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318" }), {
        traces: true,
        metrics: true,
        logs: false,
        endpoint: "http://collector:4318",
        sampler: Sampler.parentBased(Sampler.alwaysOn)
      })
    })

    it("turns a signal on by its exporter variable or its own endpoint", () => {
      const tracesOnly = parsed({ OTEL_TRACES_EXPORTER: "otlp" })
      assert.deepStrictEqual([tracesOnly?.traces, tracesOnly?.metrics, tracesOnly?.endpoint], [true, false, undefined])
      const metricsOnly = parsed({ OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: "https://metrics.example/v1/metrics" })
      assert.deepStrictEqual(
        [metricsOnly?.traces, metricsOnly?.metrics, metricsOnly?.metricsEndpoint],
        [false, true, "https://metrics.example/v1/metrics"]
      )
      const withLogs = parsed({
        OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318",
        OTEL_LOGS_EXPORTER: "otlp",
        OTEL_METRICS_EXPORTER: "none"
      })
      assert.deepStrictEqual([withLogs?.traces, withLogs?.metrics, withLogs?.logs], [true, false, true])
    })

    it("reads every supported variable", () => {
      assert.deepStrictEqual(
        parsed({
          OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318/",
          OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://traces:4318/custom",
          OTEL_EXPORTER_OTLP_LOGS_ENDPOINT: "http://logs:4318/v1/logs",
          OTEL_LOGS_EXPORTER: "otlp",
          OTEL_SERVICE_NAME: "gateway-eu",
          OTEL_RESOURCE_ATTRIBUTES:
            "service.name=ignored,service.version=1.4.0,deployment.environment=prod, team=llm%20ops,bad",
          OTEL_EXPORTER_OTLP_HEADERS: "x-honeycomb-team=abc%3D%3D,authorization=Bearer tok",
          OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
          OTEL_EXPORTER_OTLP_COMPRESSION: "gzip",
          OTEL_EXPORTER_OTLP_TIMEOUT: "2500",
          OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE: "delta",
          OTEL_TRACES_SAMPLER: "parentbased_traceidratio",
          OTEL_TRACES_SAMPLER_ARG: "0.25",
          OTEL_BSP_SCHEDULE_DELAY: "1000",
          OTEL_BSP_MAX_EXPORT_BATCH_SIZE: "128",
          OTEL_METRIC_EXPORT_INTERVAL: "15000"
        }),
        {
          traces: true,
          metrics: true,
          logs: true,
          endpoint: "http://collector:4318/",
          tracesEndpoint: "http://traces:4318/custom",
          logsEndpoint: "http://logs:4318/v1/logs",
          protocol: "http/json",
          compression: "gzip",
          headers: { "x-honeycomb-team": "abc==", authorization: "Bearer tok" },
          serviceName: "gateway-eu",
          serviceVersion: "1.4.0",
          resourceAttributes: { "deployment.environment": "prod", team: "llm ops" },
          sampler: Sampler.parentBased(Sampler.traceIdRatio(0.25)),
          exportTimeout: "2500 millis",
          tracesExportInterval: "1000 millis",
          metricsExportInterval: "15000 millis",
          maxBatchSize: 128,
          metricsTemporality: "delta"
        }
      )
    })

    it("takes service.name from OTEL_RESOURCE_ATTRIBUTES when OTEL_SERVICE_NAME is unset", () => {
      const options = parsed({ OTEL_TRACES_EXPORTER: "otlp", OTEL_RESOURCE_ATTRIBUTES: "service.name=from-attributes" })
      assert.strictEqual(options?.serviceName, "from-attributes")
      assert.isUndefined(options?.resourceAttributes)
    })

    it("names the variable with an unusable value", () => {
      const base = { OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318" }
      assert.strictEqual(
        failure({ OTEL_EXPORTER_OTLP_ENDPOINT: "collector:4318:x" }).variable,
        "OTEL_EXPORTER_OTLP_ENDPOINT"
      )
      assert.strictEqual(
        failure({ OTEL_EXPORTER_OTLP_ENDPOINT: "ftp://collector" }).variable,
        "OTEL_EXPORTER_OTLP_ENDPOINT"
      )
      assert.strictEqual(failure({ ...base, OTEL_TRACES_SAMPLER: "jaeger_remote" }).variable, "OTEL_TRACES_SAMPLER")
      assert.strictEqual(failure({ ...base, OTEL_EXPORTER_OTLP_TIMEOUT: "-1" }).variable, "OTEL_EXPORTER_OTLP_TIMEOUT")
      assert.strictEqual(
        failure({ ...base, OTEL_EXPORTER_OTLP_COMPRESSION: "zstd" }).variable,
        "OTEL_EXPORTER_OTLP_COMPRESSION"
      )
      const grpc = failure({ ...base, OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" })
      assert.strictEqual(grpc.variable, "OTEL_EXPORTER_OTLP_PROTOCOL")
      assert.include(grpc.message, "grpc is not supported")
    })

    it("never puts a header value in an error", () => {
      const error = failure({
        OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318",
        OTEL_EXPORTER_OTLP_HEADERS: "api-key=sk-very-secret",
        OTEL_EXPORTER_OTLP_PROTOCOL: "grpc"
      })
      assert.notInclude(`${error.message} ${JSON.stringify(error)}`, "sk-very-secret")
    })
  })

  describe("parseKeyValues", () => {
    it("trims, percent-decodes, skips malformed entries and keeps the last of a repeated key", () => {
      assert.deepStrictEqual(TelemetryEnv.parseKeyValues(" a = 1 ,b=%E2%9C%93,=x,c,a=2,d=,e=%zz"), {
        a: "2",
        b: "✓",
        d: "",
        e: "%zz"
      })
      assert.deepStrictEqual(TelemetryEnv.parseKeyValues(undefined), {})
    })
  })

  describe("read", () => {
    it.effect("collects the variables through the current ConfigProvider", () =>
      Effect.gen(function* () {
        const env = yield* TelemetryEnv.read.pipe(
          Effect.provide(
            ConfigProvider.layer(
              ConfigProvider.fromEnv({
                env: { OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318", OTEL_SERVICE_NAME: "svc", UNRELATED: "x" }
              })
            )
          )
        )
        assert.deepStrictEqual(env, { OTEL_SERVICE_NAME: "svc", OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318" })
      })
    )
  })

  describe("Telemetry.enabledByEnv", () => {
    it("is true when the variables ask for export, false when not or when one is unusable", () => {
      assert.isTrue(Telemetry.enabledByEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://localhost:4318" }))
      assert.isFalse(Telemetry.enabledByEnv({}))
      assert.isFalse(
        Telemetry.enabledByEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://localhost:4318", OTEL_TRACES_SAMPLER: "nope" })
      )
    })
  })
})
