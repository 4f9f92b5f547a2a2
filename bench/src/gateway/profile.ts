/**
 * Profiles the gateway under load: starts the fake upstream and `roadcar serve` (with `--cpu-prof`)
 * as child processes, loads the gateway with autocannon for a few seconds, stops it (SIGTERM, so the
 * profile is written), and prints where the time went.
 *
 *     node bench/src/gateway/profile.ts [seconds=8] [json|stream] [connections=50] [config overrides as JSON]
 *
 * The profile goes to `bench/results/gateway.cpuprofile` (git-ignored: open it in Chrome DevTools or
 * VS Code for the call tree); the summary (top self time by function and by file) is printed. A
 * config override such as `'{"logLevel":"None"}'` shows what one stage costs.
 */
import { existsSync, readFileSync, rmSync } from "node:fs"
import { join } from "node:path"
import { summarise } from "../cpuprofile.ts"
import { resultsDir } from "../report.ts"
import { formatNumber } from "../stats.ts"
import { spawnChild, spawnGateway } from "./children.ts"
import { type GatewayConfig, gatewayConfig } from "./config.ts"
import { run } from "./load.ts"
import { readyUrl } from "./targets.ts"

const seconds = Number(process.argv[2] ?? "8")
const stream = process.argv[3] === "stream"
const connections = Number(process.argv[4] ?? "50")
const overrides = JSON.parse(process.argv[5] ?? "{}") as GatewayConfig
const file = "gateway.cpuprofile"
const path = join(resultsDir, file)

const upstream = spawnChild({ name: "upstream", args: [new URL("./upstreamChild.ts", import.meta.url).pathname] })
const upstreamUrl = await upstream.receive(readyUrl)
const gateway = await spawnGateway(gatewayConfig(upstreamUrl, overrides), {
  nodeFlags: ["--cpu-prof", "--cpu-prof-dir", resultsDir, "--cpu-prof-name", file]
})
try {
  if (existsSync(path)) rmSync(path)
  await run({ url: gateway.url, connections, durationSeconds: 1, stream })
  const before = await gateway.probe()
  const result = await run({ url: gateway.url, connections, durationSeconds: seconds, stream })
  const after = await gateway.probe()
  const cpuUs = after.cpu.user + after.cpu.system - before.cpu.user - before.cpu.system
  process.stdout.write(
    `${formatNumber(result.rps)} req/s, p50 ${formatNumber(result.latencyMs.p50)} ms, p99 ${formatNumber(result.latencyMs.p99)} ms, ` +
      `gateway CPU ${formatNumber(cpuUs / Math.max(1, result.responses))} µs/request, non-2xx ${result.non2xx}, errors ${result.errors}\n`
  )
} finally {
  await gateway.stop()
  await upstream.stop()
}
const summary = summarise(JSON.parse(readFileSync(path, "utf8")) as Parameters<typeof summarise>[0])
const rows = (title: string, list: ReadonlyArray<{ name: string; where: string; selfMs: number; share: number }>) =>
  [
    title,
    ...list
      .slice(0, 30)
      .map((row) => `${(row.share * 100).toFixed(1).padStart(5)}%  ${row.name.padEnd(40)} ${row.where}`)
  ].join("\n")
process.stdout.write(`${rows("self time by function", summary.functions)}\n\n${rows("by file", summary.files)}\n`)
process.stdout.write(`profile: ${path}\n`)
