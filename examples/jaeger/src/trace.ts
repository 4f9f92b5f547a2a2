/**
 * Prints the span tree of a request that retried and fell back, as Jaeger would show it: the gateway
 * with this folder's config, exporting to a real OTLP receiver on 127.0.0.1 (no Docker needed).
 *
 * Run it with `node examples/jaeger/src/trace.ts`.
 */
import { readFileSync } from "node:fs"
import { RoadcarConfig } from "@roadcar/core"
import { GatewayServer } from "@roadcar/gateway"
import { Telemetry } from "@roadcar/opentelemetry"
import { OtlpReceiver } from "@roadcar/testing"
import { Effect, Layer, Logger } from "effect"

const configPath = new URL("../roadcar.config.json", import.meta.url)

const program = Effect.gen(function* () {
  const receiver = yield* OtlpReceiver.make()
  const config = yield* RoadcarConfig.decodeJson(
    readFileSync(configPath, "utf8"),
    "examples/jaeger/roadcar.config.json"
  )
  yield* Effect.scoped(
    Effect.gen(function* () {
      const telemetry = yield* Layer.build(
        Telemetry.layer({ endpoint: receiver.url, serviceName: "roadcar-gateway", metrics: false })
      )
      const { url } = yield* GatewayServer.start({ config, port: 0, env: {} }).pipe(Effect.provideContext(telemetry))
      // The seeded faults make the primary fail its first three calls: three attempts, then the backup.
      const response = yield* Effect.promise(() =>
        fetch(`${url}/v1/chat/completions`, {
          method: "POST",
          headers: { "content-type": "application/json", authorization: "Bearer sk-roadcar-demo" },
          body: JSON.stringify({ model: "chat", messages: [{ role: "user", content: "Why retry with jitter?" }] })
        })
      )
      yield* Effect.promise(() => response.text())
      console.log(
        `answered by ${response.headers.get("x-roadcar-upstream")} after ${response.headers.get("x-roadcar-attempts")} attempts` +
          (response.headers.get("x-roadcar-fallback")
            ? ` (fallback: ${response.headers.get("x-roadcar-fallback-reason")})`
            : "")
      )
    })
  )
  // The scope closed: the gateway drained, the last spans were flushed to the receiver.
  console.log(OtlpReceiver.formatTree(yield* receiver.spans, { events: (name) => name.startsWith("roadcar.") }))
})

Effect.runPromise(program.pipe(Effect.scoped, Effect.provide(Logger.layer([]))))
