/**
 * The reliability drills runner: `pnpm drill` (full) or `pnpm drill --quick` (CI-sized).
 *
 * ```text
 * node test/drills/main.ts [--quick] [--requests N] [--rate N] [--concurrency N] [--streams N]
 *                          [--cases N] [--seed N] [--only soak,streams,process,badInput,slowLoris]
 *                          [--out <prefix> | --no-write]
 * ```
 *
 * Runs the chaos soak (with the memory-and-handles and security drills around it), the held streams,
 * the process faults (`process`: SIGTERM, SIGKILL, and Redis stopped and restarted, which needs
 * `redis-server` on the PATH) and the bad-input fuzzing, plus, in the full run, a long slow-loris probe
 * beside them. A full run writes `bench/results/drills.{md,json}` (a quick run writes only with
 * `--out`); the exit code is 1 when any check failed. Node must run with `--expose-gc` for the memory
 * checks: without it the runner starts itself again with the flag.
 */
import { spawn } from "node:child_process"
import * as Path from "node:path"
import * as BadInput from "./BadInput.ts"
import { allPassed, type DrillResult } from "./Check.ts"
import { root } from "./Harness.ts"
import * as ProcessFaults from "./ProcessFaults.ts"
import * as RedisOutage from "./RedisOutage.ts"
import * as Report from "./Report.ts"
import * as SlowLoris from "./SlowLoris.ts"
import * as Soak from "./Soak.ts"
import * as Streams from "./Streams.ts"

const args = process.argv.slice(2)

if ((globalThis as { gc?: unknown }).gc === undefined && !process.execArgv.includes("--expose-gc")) {
  const child = spawn(process.execPath, ["--expose-gc", ...process.execArgv, process.argv[1] ?? "", ...args], {
    stdio: "inherit"
  })
  child.once("exit", (code, signal) => process.exit(code ?? (signal === null ? 1 : 1)))
} else {
  await main()
}

function option(name: string): string | undefined {
  const index = args.indexOf(`--${name}`)
  return index === -1 ? undefined : args[index + 1]
}

function numberOption(name: string, fallback: number): number {
  const value = option(name)
  if (value === undefined) return fallback
  const parsed = Number(value)
  if (!Number.isFinite(parsed) || parsed <= 0) {
    process.stderr.write(`--${name} must be a positive number, got "${value}"\n`)
    process.exit(2)
  }
  return parsed
}

async function main(): Promise<void> {
  const quick = args.includes("--quick")
  const known = ["soak", "streams", "process", "badInput", "slowLoris"]
  const only = option("only")?.split(",") ?? known
  const unknown = only.filter((name) => !known.includes(name))
  if (unknown.length > 0) {
    process.stderr.write(`--only: unknown drill(s) ${unknown.join(", ")}; known: ${known.join(", ")}\n`)
    process.exit(2)
  }
  const settings = {
    requests: numberOption("requests", quick ? 2_000 : 100_000),
    rate: numberOption("rate", quick ? 1_000 : 1_500),
    concurrency: numberOption("concurrency", 50),
    streams: numberOption("streams", quick ? 1_000 : 10_000),
    cases: numberOption("cases", quick ? 300 : 2_000),
    seed: numberOption("seed", 20_261_203)
  }
  const command = ["pnpm drill", ...args].join(" ")
  const startedAt = new Date()
  const started = performance.now()
  const progress = (message: string) => process.stderr.write(`[drill] ${message}\n`)
  progress(`${quick ? "quick" : "full"} run: ${JSON.stringify(settings)}`)

  const results: Array<DrillResult<unknown>> = []
  const probe = !quick && only.includes("slowLoris") ? SlowLoris.startProbe(345) : undefined
  if (only.includes("soak")) {
    const run = await Soak.run({
      requests: settings.requests,
      ratePerSecond: settings.rate,
      concurrency: settings.concurrency,
      seed: settings.seed,
      measureMemory: true,
      onProgress: progress
    })
    results.push(run.soak)
    if (run.memory !== undefined) results.push(run.memory)
    results.push(run.security)
    progress(`soak done in ${run.soak.durationSeconds} s`)
  }
  if (only.includes("streams")) {
    results.push(await Streams.run({ streams: settings.streams, onProgress: progress }))
  }
  if (only.includes("process")) {
    const size = quick
      ? { requests: 300, ratePerSecond: 100, concurrency: 40 }
      : { requests: 1_000, ratePerSecond: 200, concurrency: 50 }
    results.push(await ProcessFaults.sigterm(size))
    results.push(await ProcessFaults.sigkill(size))
    // The Redis drill's load must outlast the outage (SIGTERM at 1 s, down 3 s, up to 2.5 s to
    // reconnect) with a phase after it: 8 s in the quick run, 9 s in the full one.
    results.push(
      await RedisOutage.run(
        quick
          ? { requests: 320, ratePerSecond: 40, concurrency: 40 }
          : { requests: 1_350, ratePerSecond: 150, concurrency: 50 }
      )
    )
    progress("process faults done")
  }
  if (only.includes("badInput")) {
    results.push(
      await BadInput.run({
        cases: settings.cases,
        seed: settings.seed,
        slowLoris: { sockets: quick ? 20 : 200, maxMs: quick ? 2_000 : 60_000 },
        onProgress: progress
      })
    )
  }
  if (probe !== undefined) {
    progress("waiting for the long slow-loris probe")
    results.push(await probe)
  }

  const info: Report.RunInfo = {
    command,
    mode: quick ? "quick" : "full",
    startedAt,
    seconds: Math.round((performance.now() - started) / 1000)
  }
  process.stdout.write(`${Report.summary(results)}\n`)
  const out = args.includes("--no-write") ? undefined : (option("out") ?? (quick ? undefined : "bench/results/drills"))
  if (out !== undefined) {
    const prefix = Path.resolve(root, out)
    Report.write(prefix, info, results)
    process.stdout.write(`wrote ${Path.relative(root, prefix)}.md and .json\n`)
  }
  const passed = allPassed(results)
  process.stdout.write(`${passed ? "every check passed" : "some checks FAILED"} (${info.seconds} s)\n`)
  process.exitCode = passed ? 0 : 1
}
