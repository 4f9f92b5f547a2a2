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
        [metricsOnly?.traces, metricsOnly?.metrics, metricsOnly?.signals?.metrics?.endpoint],
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
          signals: {
            traces: { endpoint: "http://traces:4318/custom" },
            logs: { endpoint: "http://logs:4318/v1/logs" }
          },
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

  describe("OTEL_EXPORTER_OTLP_HEADERS", () => {
    const base = { OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318" }
    const headerFailure = (headers: string) => failure({ ...base, OTEL_EXPORTER_OTLP_HEADERS: headers })

    it("refuses a value fetch cannot send, naming the header but never the value", () => {
      for (const [headers, expected] of [
        ["authorization=Bearer%0Asupersecret", "U+000A (a line break)"],
        ["x-team=abc,authorization=Bearer\nsupersecret", "U+000A (a line break)"],
        ["authorization=Bearer%0D%0Asupersecret", "U+000D (a line break)"],
        ["authorization=supersecret%00", "U+0000"],
        ["authorization=supersecret%7F", "U+007F"],
        ["authorization=Bearer %E2%80%9Csupersecret%E2%80%9D", "above U+00FF"]
      ] as const) {
        const error = headerFailure(headers)
        assert.strictEqual(error.variable, "OTEL_EXPORTER_OTLP_HEADERS", headers)
        assert.include(error.message, 'OTEL_EXPORTER_OTLP_HEADERS: the value of header "authorization"', headers)
        assert.include(error.message, expected, headers)
        assert.notInclude(`${error.message} ${JSON.stringify(error)}`, "supersecret", headers)
        assert.notInclude(error.message, "Bearer", headers)
      }
    })

    it("refuses a name that is not an RFC 7230 token, showing only its valid start", () => {
      const colon = headerFailure("authorization: Bearer supersecret=x")
      assert.strictEqual(colon.variable, "OTEL_EXPORTER_OTLP_HEADERS")
      assert.include(colon.message, 'the header name beginning "authorization" contains ":"')
      assert.include(colon.message, "name=value")
      assert.notInclude(`${colon.message} ${JSON.stringify(colon)}`, "supersecret")
      assert.include(headerFailure("api key=supersecret").message, 'the header name beginning "api" contains a space')
      assert.include(headerFailure("%0Aapi-key=supersecret").message, "a header name contains the character U+000A")
      assert.include(headerFailure("clé=1").message, 'beginning "cl" contains the character U+00E9')
    })

    it("accepts every token character in names and tabs and Latin-1 in values", () => {
      assert.deepStrictEqual(
        parsed({ ...base, OTEL_EXPORTER_OTLP_HEADERS: "x-a!#$%25&'*+.^_`|~9=a%09b,x-latin=caf%C3%A9,x-empty=" })
          ?.headers,
        { "x-a!#$%&'*+.^_`|~9": "a\tb", "x-latin": "café", "x-empty": "" }
      )
    })

    it("is not checked when no export is requested", () => {
      assert.isUndefined(parsed({ OTEL_EXPORTER_OTLP_HEADERS: "authorization=Bearer%0Asupersecret" }))
    })
  })

  describe("OTEL_EXPORTER_OTLP_{TRACES,METRICS,LOGS}_{HEADERS,PROTOCOL,COMPRESSION,TIMEOUT}", () => {
    const base = { OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318", OTEL_LOGS_EXPORTER: "otlp" }

    it("reads a signal's own settings beside the shared ones, which the signals without one keep", () => {
      const options = parsed({
        ...base,
        OTEL_EXPORTER_OTLP_HEADERS: "x-shared=generic",
        OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
        OTEL_EXPORTER_OTLP_COMPRESSION: "gzip",
        OTEL_EXPORTER_OTLP_TIMEOUT: "2500",
        OTEL_EXPORTER_OTLP_TRACES_HEADERS: "x-honeycomb-team=trace%3Dkey,authorization=Bearer tok",
        OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "HTTP/Protobuf",
        OTEL_EXPORTER_OTLP_METRICS_COMPRESSION: "none",
        OTEL_EXPORTER_OTLP_METRICS_TIMEOUT: "750",
        OTEL_EXPORTER_OTLP_LOGS_HEADERS: "x-logs=1",
        OTEL_EXPORTER_OTLP_LOGS_PROTOCOL: "http/protobuf",
        OTEL_EXPORTER_OTLP_LOGS_COMPRESSION: "none",
        OTEL_EXPORTER_OTLP_LOGS_TIMEOUT: "9000"
      })
      assert.deepStrictEqual(
        {
          headers: options?.headers,
          protocol: options?.protocol,
          compression: options?.compression,
          exportTimeout: options?.exportTimeout
        },
        { headers: { "x-shared": "generic" }, protocol: "http/json", compression: "gzip", exportTimeout: "2500 millis" }
      )
      assert.deepStrictEqual(options?.signals, {
        traces: {
          headers: { "x-honeycomb-team": "trace=key", authorization: "Bearer tok" },
          protocol: "http/protobuf"
        },
        metrics: { compression: "none", exportTimeout: "750 millis" },
        logs: {
          headers: { "x-logs": "1" },
          protocol: "http/protobuf",
          compression: "none",
          exportTimeout: "9000 millis"
        }
      })
    })

    it("takes a signal's own variable without any shared one, and sets nothing when neither is set", () => {
      const options = parsed({
        ...base,
        OTEL_EXPORTER_OTLP_TRACES_HEADERS: "api-key=k",
        OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: " 300 "
      })
      assert.deepStrictEqual(options?.signals, { traces: { headers: { "api-key": "k" }, exportTimeout: "300 millis" } })
      for (const key of ["headers", "protocol", "compression", "exportTimeout"]) {
        assert.notProperty(options, key)
      }
      // a blank per-signal variable is unset: the shared one applies
      const blank = parsed({ ...base, OTEL_EXPORTER_OTLP_HEADERS: "a=1", OTEL_EXPORTER_OTLP_TRACES_HEADERS: "  " })
      assert.deepStrictEqual([blank?.headers, blank?.signals], [{ a: "1" }, undefined])
    })

    it("refuses a bad header in a signal's variable, naming that variable and the header, never the value", () => {
      for (const signal of ["TRACES", "METRICS", "LOGS"] as const) {
        const variable = `OTEL_EXPORTER_OTLP_${signal}_HEADERS`
        const value = failure({
          ...base,
          OTEL_EXPORTER_OTLP_HEADERS: "x-shared=fine",
          [variable]: "x-team=abc,authorization=Bearer%0Asupersecret"
        })
        assert.strictEqual(value.variable, variable)
        assert.include(value.message, `${variable}: the value of header "authorization" (not shown)`)
        assert.include(value.message, "U+000A (a line break)")
        assert.notInclude(`${value.message} ${JSON.stringify(value)}`, "supersecret")
        assert.notInclude(value.message, "Bearer")

        const name = failure({ ...base, [variable]: "authorization: Bearer supersecret=x" })
        assert.strictEqual(name.variable, variable)
        assert.include(name.message, 'the header name beginning "authorization" contains ":"')
        assert.notInclude(`${name.message} ${JSON.stringify(name)}`, "supersecret")

        const latin = failure({ ...base, [variable]: "authorization=Bearer %E2%80%9Csupersecret%E2%80%9D" })
        assert.strictEqual(latin.variable, variable)
        assert.include(latin.message, "above U+00FF")
      }
      // a valid per-signal variable does not hide a bad shared one (the other signals use it)
      const shared = failure({
        ...base,
        OTEL_EXPORTER_OTLP_HEADERS: "authorization=Bearer%0Asupersecret",
        OTEL_EXPORTER_OTLP_TRACES_HEADERS: "authorization=fine"
      })
      assert.strictEqual(shared.variable, "OTEL_EXPORTER_OTLP_HEADERS")
    })

    it("refuses a bad protocol, compression or timeout in a signal's variable, naming it", () => {
      const grpc = failure({ ...base, OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: "grpc" })
      assert.strictEqual(grpc.variable, "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")
      assert.include(grpc.message, "grpc is not supported")
      assert.strictEqual(
        failure({ ...base, OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "http/xml" }).variable,
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
      )
      assert.strictEqual(
        failure({ ...base, OTEL_EXPORTER_OTLP_LOGS_COMPRESSION: "zstd" }).variable,
        "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION"
      )
      assert.strictEqual(
        failure({ ...base, OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: "0" }).message,
        'OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: must be a positive integer, got "0"'
      )
    })

    it("is neither read nor checked for a signal that is off", () => {
      const options = parsed({
        OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318",
        OTEL_METRICS_EXPORTER: "none",
        OTEL_EXPORTER_OTLP_METRICS_HEADERS: "authorization=Bearer%0Asupersecret",
        OTEL_EXPORTER_OTLP_LOGS_PROTOCOL: "grpc"
      })
      assert.deepStrictEqual([options?.traces, options?.metrics, options?.logs], [true, false, false])
      assert.notProperty(options, "signals")
    })

    it.effect("are all collected by read", () =>
      Effect.gen(function* () {
        const given: Record<string, string> = {}
        for (const signal of ["TRACES", "METRICS", "LOGS"]) {
          for (const setting of ["HEADERS", "PROTOCOL", "COMPRESSION", "TIMEOUT"]) {
            given[`OTEL_EXPORTER_OTLP_${signal}_${setting}`] = `${signal}-${setting}`
          }
        }
        const env = yield* TelemetryEnv.read.pipe(
          Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env: given })))
        )
        assert.deepStrictEqual(env, given)
      })
    )
  })

  describe("OTEL_TRACES_SAMPLER", () => {
    const base = { OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318" }

    it("names OTEL_TRACES_SAMPLER_ARG for a bad ratio, and OTEL_TRACES_SAMPLER for a bad name, once", () => {
      const ratio = failure({ ...base, OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "2" })
      assert.strictEqual(ratio.variable, "OTEL_TRACES_SAMPLER_ARG")
      assert.strictEqual(ratio.message, 'OTEL_TRACES_SAMPLER_ARG: must be a number between 0 and 1, got "2"')
      const name = failure({ ...base, OTEL_TRACES_SAMPLER: "bogus", OTEL_TRACES_SAMPLER_ARG: "2" })
      assert.strictEqual(name.variable, "OTEL_TRACES_SAMPLER")
      assert.match(name.message, /^OTEL_TRACES_SAMPLER: "bogus" is not supported \(always_on, /)
      assert.deepStrictEqual(
        parsed({ ...base, OTEL_TRACES_SAMPLER: "always_on", OTEL_TRACES_SAMPLER_ARG: "not used" })?.sampler,
        Sampler.alwaysOn
      )
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
