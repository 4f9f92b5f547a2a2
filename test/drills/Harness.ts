/**
 * Starting gateways for the drills: in-process (`GatewayServer.start`, logs captured line by line) or
 * as a child process (`node packages/gateway/src/bin.ts serve`), and small process helpers.
 *
 * Everything listens on 127.0.0.1. An in-process gateway logs through `RequestLog.formatJson`, the
 * formatter `roadcar serve` prints with, into a callback instead of stdout, so a drill can scan and
 * count every line without keeping them. A child gateway's stdout and stderr are handed over the
 * same way, line by line.
 */

import { type ChildProcess, spawn } from "node:child_process"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import { RequestLog, RoadcarConfig } from "@roadcar/core"
import { GatewayServer } from "@roadcar/gateway"
import { Telemetry } from "@roadcar/opentelemetry"
import { type Context, Effect, Exit, Layer, Logger, References, Scope } from "effect"

/** A running gateway. */
export interface Gateway {
  readonly url: string
  readonly port: number
  /** Closes the gateway (in-process: its scope, which drains; child: SIGTERM, then waits for the exit). */
  readonly close: () => Promise<void>
}

/** Options of {@link startInProcess}. */
export interface InProcessOptions {
  /** Receives every log line, formatted as `roadcar serve` prints it (default: dropped). */
  readonly onLogLine?: ((line: string) => void) | undefined
  /** Export the gateway's traces over OTLP to this endpoint (e.g. an `OtlpReceiver`). */
  readonly telemetryEndpoint?: string | undefined
}

/**
 * Starts a gateway in this process on 127.0.0.1 and a free port, with its own metric registry and
 * every log line (Trace and up) handed to `onLogLine`.
 */
export const startInProcess = async (input: unknown, options: InProcessOptions = {}): Promise<Gateway> => {
  const onLogLine = options.onLogLine ?? (() => {})
  const logs = Layer.mergeAll(
    Logger.layer([Logger.make((entry) => onLogLine(RequestLog.formatJson.log(entry)))]),
    Layer.succeed(References.MinimumLogLevel, "Trace")
  )
  const config = await Effect.runPromise(RoadcarConfig.decode(input, "drill config"))
  const scope = Scope.makeUnsafe()
  const telemetry = await Effect.runPromise(
    Layer.buildWithScope(
      options.telemetryEndpoint === undefined
        ? Layer.empty
        : Telemetry.layer({ endpoint: options.telemetryEndpoint, serviceName: "roadcar-drill", metrics: false }),
      scope
    )
  )
  const started = await Effect.runPromise(
    GatewayServer.start({ config, host: "127.0.0.1", port: 0, env: {}, isolatedMetrics: true }).pipe(
      Scope.provide(scope),
      Effect.provide(logs),
      Effect.provideContext(telemetry as Context.Context<never>)
    )
  )
  let closing: Promise<void> | undefined
  return {
    url: started.url,
    port: started.port,
    close: () => {
      closing ??= Effect.runPromise(Scope.close(scope, Exit.void).pipe(Effect.provide(logs)))
      return closing
    }
  }
}

/** The repository root (`test/drills/../..`). */
export const root = fileURLToPath(new URL("../../", import.meta.url))

const bin = Path.join(root, "packages/gateway/src/bin.ts")

/** A free TCP port on 127.0.0.1 (asked from the OS, then released). */
export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = Net.createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })

/** Polls `condition` every 10 ms until it holds; rejects after `timeoutMs`. */
export const waitUntil = async (condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> => {
  const deadline = performance.now() + timeoutMs
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

/** A gateway running as `roadcar serve` in a child process. */
export interface ChildGateway extends Gateway {
  readonly child: ChildProcess
  /** Resolves with the exit code (or the signal's name) when the process exits. */
  readonly exited: Promise<number | string>
  /** Sends a signal now. */
  readonly kill: (signal: NodeJS.Signals) => void
}

/** Options of {@link spawnGateway}. */
export interface SpawnOptions {
  /** Extra environment variables (e.g. the upstream key's variable). */
  readonly env?: Readonly<Record<string, string>> | undefined
  /** Receives every line the child prints, stdout and stderr. */
  readonly onLine?: ((line: string, stream: "stdout" | "stderr") => void) | undefined
}

const lines = (stream: NodeJS.ReadableStream, onLine: (line: string) => void): void => {
  let rest = ""
  stream.setEncoding("utf8")
  stream.on("data", (data: string) => {
    const parts = (rest + data).split("\n")
    rest = parts.pop() ?? ""
    for (const line of parts) if (line !== "") onLine(line)
  })
  stream.on("end", () => {
    if (rest !== "") onLine(rest)
  })
}

/**
 * Writes `config` to a temporary file and starts `roadcar serve --config <file>` on `port` (a port
 * picked by {@link freePort}); resolves once the gateway answers `GET /health`.
 */
export const spawnGateway = async (
  config: unknown,
  port: number,
  options: SpawnOptions = {}
): Promise<ChildGateway> => {
  const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "roadcar-drill-"))
  const file = Path.join(dir, "roadcar.config.json")
  Fs.writeFileSync(file, JSON.stringify(config, null, 2))
  const child = spawn(process.execPath, [bin, "serve", "--config", file], {
    cwd: root,
    env: { ...process.env, ...options.env, HOST: "127.0.0.1", PORT: String(port) },
    stdio: ["ignore", "pipe", "pipe"]
  })
  const exited = new Promise<number | string>((resolve) => {
    child.once("exit", (code, signal) => {
      Fs.rmSync(dir, { recursive: true, force: true })
      resolve(code ?? signal ?? "unknown")
    })
  })
  let stderr = ""
  if (child.stdout !== null) lines(child.stdout, (line) => options.onLine?.(line, "stdout"))
  if (child.stderr !== null) {
    lines(child.stderr, (line) => {
      if (stderr.length < 4_000) stderr += `${line}\n`
      options.onLine?.(line, "stderr")
    })
  }
  const url = `http://127.0.0.1:${port}`
  const deadline = performance.now() + 15_000
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`the gateway exited (${child.exitCode ?? child.signalCode}) before serving: ${stderr}`)
    }
    const healthy = await fetch(`${url}/health`).then(
      (response) => response.ok,
      () => false
    )
    if (healthy) break
    if (performance.now() > deadline) {
      child.kill("SIGKILL")
      throw new Error(`the gateway did not answer /health within 15 s: ${stderr}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  const kill = (signal: NodeJS.Signals) => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal)
  }
  return {
    url,
    port,
    child,
    exited,
    kill,
    close: async () => {
      kill("SIGTERM")
      const timer = setTimeout(() => kill("SIGKILL"), 20_000)
      await exited
      clearTimeout(timer)
    }
  }
}

/** Counts of `process.getActiveResourcesInfo()` by resource type. */
export const activeResources = (): Record<string, number> => {
  const counts: Record<string, number> = {}
  for (const name of process.getActiveResourcesInfo()) counts[name] = (counts[name] ?? 0) + 1
  return counts
}

/**
 * The most handles of each type seen in a few samples `everyMs` apart: a baseline that includes the
 * timers a running server re-arms periodically (the gateway's once-a-second tick is a `Timeout` or,
 * between two ticks, an `Immediate`).
 */
export const activeResourcesPeak = async (samples = 10, everyMs = 110): Promise<Record<string, number>> => {
  const peak: Record<string, number> = {}
  for (let sample = 0; sample < samples; sample++) {
    for (const [name, count] of Object.entries(activeResources())) peak[name] = Math.max(peak[name] ?? 0, count)
    await new Promise((resolve) => setTimeout(resolve, everyMs))
  }
  return peak
}

/** The number of handles in a count by type. */
export const handleTotal = (handles: Record<string, number>): number =>
  Object.values(handles).reduce((a, b) => a + b, 0)

/** Handle types whose count grew from `before` to `after`. */
export const grownHandles = (before: Record<string, number>, after: Record<string, number>): Array<string> =>
  Object.entries(after)
    .filter(([name, count]) => count > (before[name] ?? 0))
    .map(([name, count]) => `${name} ${before[name] ?? 0} -> ${count}`)

/** Waits until no handle type has more handles than `before` (idle keep-alive sockets close), up to `maxMs`. */
export const settleHandles = async (before: Record<string, number>, maxMs: number): Promise<number> => {
  const started = performance.now()
  while (grownHandles(before, activeResources()).length > 0 && performance.now() - started < maxMs) {
    await new Promise((resolve) => setTimeout(resolve, 250))
  }
  return Math.round((performance.now() - started) / 100) / 10
}

/**
 * Runs a full, memory-reducing garbage collection when node was started with `--expose-gc`.
 *
 * A plain `gc()` leaves V8's pooled heap pages resident, so RSS stays at its peak even when the heap
 * is small again; the `last-resort` flavour (what V8 runs before an out-of-memory) releases them, so
 * RSS can be compared before and after.
 */
export const collectGarbage = async (): Promise<boolean> => {
  const gc = (globalThis as { gc?: (options?: Record<string, string>) => void }).gc
  if (gc === undefined) return false
  gc({ type: "major", execution: "sync", flavor: "last-resort" })
  await new Promise((resolve) => setTimeout(resolve, 50))
  gc({ type: "major", execution: "sync", flavor: "last-resort" })
  return true
}

/** Memory in MiB, rounded to 0.1. */
export interface Memory {
  readonly rssMiB: number
  readonly heapUsedMiB: number
  readonly heapTotalMiB: number
  readonly externalMiB: number
}

const mib = (bytes: number): number => Math.round((bytes / 1024 / 1024) * 10) / 10

/** This process's memory now. */
export const memory = (): Memory => {
  const usage = process.memoryUsage()
  return {
    rssMiB: mib(usage.rss),
    heapUsedMiB: mib(usage.heapUsed),
    heapTotalMiB: mib(usage.heapTotal),
    externalMiB: mib(usage.external)
  }
}
