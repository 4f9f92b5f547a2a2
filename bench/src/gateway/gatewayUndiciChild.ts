/**
 * The gateway with its upstream calls on undici's `request` API instead of `fetch`, as a child
 * process: what `roadcar serve` would cost with `NodeHttpClient.layerUndici` (a proposal this
 * benchmark measures, not a shipped mode).
 *
 *     node --import probe.ts gatewayUndiciChild.ts <config file>
 *
 * Does what `Cli.serve` does (load the config, JSON request log at the configured level,
 * `GatewayServer.layer`) through the public API, with `httpClient: NodeHttpClient.layerUndici`; OpenTelemetry
 * export is left out (the benchmark sets no `OTEL_*` variable, so `serve` exports nothing either). Listens
 * on `HOST`/`PORT`; SIGTERM drains and exits.
 */
import { NodeHttpClient, NodeRuntime } from "@effect/platform-node"
import { RequestLog } from "@roadcar/core"
import { GatewayConfig, GatewayServer } from "@roadcar/gateway"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"

const flag = process.argv[2]
if (flag === undefined) throw new Error("usage: gatewayUndiciChild.ts <config file>")

const program = Effect.gen(function* () {
  const { config } = yield* GatewayConfig.load({ flag, env: process.env, cwd: process.cwd() })
  const server = GatewayServer.layer({ config, env: process.env, httpClient: NodeHttpClient.layerUndici })
  return yield* Layer.launch(server).pipe(Effect.provide(RequestLog.layerJson(config.logLevel ?? "Info")))
})

NodeRuntime.runMain(program)
