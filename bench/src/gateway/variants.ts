/**
 * What each optional stage costs the gateway: starts the fake upstream once, then the gateway with
 * each config variant in turn, loads it at a fixed number of connections and prints req/s and the
 * gateway's CPU time per request (process CPU, less disturbed by a shared machine than wall time).
 *
 *     node bench/src/gateway/variants.ts [seconds=4] [json|stream] [connections=50]
 */
import { spawnChild, spawnGateway } from "./children.ts"
import { gatewayConfig } from "./config.ts"
import { run } from "./load.ts"
import { readyUrl } from "./targets.ts"

const seconds = Number(process.argv[2] ?? "4")
const stream = process.argv[3] === "stream"
const connections = Number(process.argv[4] ?? "50")

const variants: ReadonlyArray<readonly [string, Record<string, unknown>]> = [
  ["every stage on", {}],
  ["log level None", { logLevel: "None" }],
  ["no budget", { budgets: { rules: [] } }],
  ["no rate limit", { rateLimit: { onExceeded: "reject", rules: [] } }],
  ["no cache", { cache: { enabled: false } }],
  ["no keys", { keys: [] }],
  [
    "all optional stages off",
    {
      logLevel: "None",
      budgets: { rules: [] },
      rateLimit: { onExceeded: "reject", rules: [] },
      cache: { enabled: false },
      keys: []
    }
  ]
]

const upstream = spawnChild({ name: "upstream", args: [new URL("./upstreamChild.ts", import.meta.url).pathname] })
const upstreamUrl = await upstream.receive(readyUrl)
try {
  for (const [name, overrides] of variants) {
    const gateway = await spawnGateway(gatewayConfig(upstreamUrl, overrides))
    try {
      await run({ url: gateway.url, connections, durationSeconds: 1, stream })
      const before = await gateway.probe()
      const result = await run({ url: gateway.url, connections, durationSeconds: seconds, stream })
      const after = await gateway.probe()
      const cpuUs = after.cpu.user + after.cpu.system - before.cpu.user - before.cpu.system
      process.stdout.write(
        `${name.padEnd(26)} ${result.rps.toFixed(0).padStart(6)} req/s  CPU ${(cpuUs / Math.max(1, result.responses)).toFixed(0).padStart(5)} µs/request  non-2xx ${result.non2xx} errors ${result.errors}\n`
      )
    } finally {
      await gateway.stop()
    }
  }
} finally {
  await upstream.stop()
}
