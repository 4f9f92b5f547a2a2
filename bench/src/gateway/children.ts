/**
 * The benchmark's child processes: the gateway (`roadcar serve`), the bare proxy and the fake
 * upstream each run in their own Node process, so the load generator never shares their event loop.
 *
 * `spawnChild` starts a script with the probe preloaded (`probe.ts`) and an IPC channel, and returns
 * a handle that asks the child for its CPU time and memory (`probe`), sends it messages, and stops it
 * (SIGTERM, then SIGKILL after a grace period). `spawnGateway` writes a config file and starts
 * `packages/gateway/src/bin.ts serve` on a free port, ready once `GET /health` answers. Everything
 * listens on 127.0.0.1.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import type { Sample } from "./probe.ts"

/** The probe preload, for `node --import`. */
export const probePath = fileURLToPath(new URL("./probe.ts", import.meta.url))

/** `packages/gateway/src/bin.ts`, the `roadcar` executable. */
export const gatewayBin = fileURLToPath(import.meta.resolve("@roadcar/gateway/bin"))

/** A free TCP port on 127.0.0.1 (asked from the OS, then released). */
export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })

/** A running child process. */
export interface Child {
  readonly name: string
  readonly pid: number
  readonly process: ChildProcess
  /** The child's CPU time, memory and active resources (after two full GCs when `gc` is set). */
  readonly probe: (options?: { readonly gc?: boolean | undefined }) => Promise<Sample>
  /** Sends a message over the IPC channel. */
  readonly send: (message: unknown) => void
  /** The first message for which `match` holds (within `timeoutMs`). */
  readonly receive: <A>(match: (message: unknown) => A | undefined, timeoutMs?: number) => Promise<A>
  /** The last few KB the child wrote to stderr. */
  readonly stderr: () => string
  /** SIGTERM, then SIGKILL after `graceMs`; resolves with the exit code or signal. */
  readonly stop: (graceMs?: number) => Promise<number | string>
  readonly exited: Promise<number | string>
}

/** How to start a child. */
export interface ChildOptions {
  readonly name: string
  /** The script and its arguments. */
  readonly args: ReadonlyArray<string>
  /** Node flags before the script (e.g. `--cpu-prof`). */
  readonly nodeFlags?: ReadonlyArray<string> | undefined
  readonly env?: Readonly<Record<string, string>> | undefined
  /** Where stdout goes: a file path (e.g. `/dev/null` for the gateway's JSON log), else inherited stderr. */
  readonly stdoutFile?: string | undefined
  readonly cwd?: string | undefined
}

/** Starts `node --import probe.ts <args>` with an IPC channel. */
export const spawnChild = (options: ChildOptions): Child => {
  const stdout = options.stdoutFile === undefined ? "ignore" : openSync(options.stdoutFile, "a")
  const child = spawn(process.execPath, [...(options.nodeFlags ?? []), "--import", probePath, ...options.args], {
    cwd: options.cwd,
    env: { ...process.env, ...options.env },
    stdio: ["ignore", stdout, "pipe", "ipc"]
  })
  if (child.pid === undefined) throw new Error(`${options.name}: the process did not start`)
  let stderr = ""
  child.stderr?.setEncoding("utf8")
  child.stderr?.on("data", (data: string) => {
    stderr = (stderr + data).slice(-4_000)
  })
  const exited = new Promise<number | string>((resolve) => {
    child.once("exit", (code, signal) => resolve(code ?? signal ?? "unknown"))
  })
  const receive = <A>(match: (message: unknown) => A | undefined, timeoutMs = 15_000): Promise<A> =>
    new Promise((resolve, reject) => {
      const onMessage = (message: unknown) => {
        const found = match(message)
        if (found === undefined) return
        done()
        resolve(found)
      }
      const onExit = () => {
        done()
        reject(new Error(`${options.name} exited before answering: ${stderr}`))
      }
      const timer = setTimeout(() => {
        done()
        reject(new Error(`${options.name} did not answer within ${timeoutMs} ms: ${stderr}`))
      }, timeoutMs)
      const done = () => {
        clearTimeout(timer)
        child.off("message", onMessage)
        child.off("exit", onExit)
      }
      child.on("message", onMessage)
      child.once("exit", onExit)
    })
  let nextId = 0
  const probe = (probeOptions: { readonly gc?: boolean | undefined } = {}) => {
    const id = nextId++
    const answer = receive((message) =>
      typeof message === "object" &&
      message !== null &&
      (message as { type?: unknown }).type === "probe" &&
      (message as { id?: unknown }).id === id
        ? (message as Sample)
        : undefined
    )
    child.send({ type: "probe", id, gc: probeOptions.gc === true })
    return answer
  }
  const running = () => child.exitCode === null && child.signalCode === null
  return {
    name: options.name,
    pid: child.pid,
    process: child,
    probe,
    send: (message) => {
      if (running()) child.send(message as Parameters<ChildProcess["send"]>[0])
    },
    receive,
    stderr: () => stderr,
    stop: async (graceMs = 15_000) => {
      if (running()) child.kill("SIGTERM")
      const timer = setTimeout(() => {
        if (running()) child.kill("SIGKILL")
      }, graceMs)
      const code = await exited
      clearTimeout(timer)
      return code
    },
    exited
  }
}

/** Polls `url` until it answers 2xx (or rejects after `timeoutMs`, or when `child` exits). */
export const waitForHttp = async (url: string, child: Child, timeoutMs = 20_000): Promise<void> => {
  const deadline = performance.now() + timeoutMs
  for (;;) {
    if (child.process.exitCode !== null || child.process.signalCode !== null) {
      throw new Error(`${child.name} exited before serving: ${child.stderr()}`)
    }
    const ok = await fetch(url).then(
      (response) => response.ok,
      () => false
    )
    if (ok) return
    if (performance.now() > deadline) throw new Error(`${child.name} did not answer ${url} in time: ${child.stderr()}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** A gateway child. */
export interface GatewayChild extends Child {
  readonly url: string
}

/**
 * Starts `roadcar serve --config <file>` with `config` on a free port (`HOST`/`PORT` in the
 * environment), its JSON log going to `logFile`; resolves once `GET /health` answers.
 */
export const spawnGateway = async (
  config: unknown,
  options: {
    readonly logFile?: string | undefined
    readonly nodeFlags?: ReadonlyArray<string> | undefined
    readonly env?: Readonly<Record<string, string>> | undefined
  } = {}
): Promise<GatewayChild> => {
  const dir = mkdtempSync(join(tmpdir(), "roadcar-bench-"))
  const file = join(dir, "roadcar.config.json")
  writeFileSync(file, JSON.stringify(config, null, 2))
  const port = await freePort()
  const child = spawnChild({
    name: "gateway",
    args: [gatewayBin, "serve", "--config", file],
    nodeFlags: options.nodeFlags,
    env: { ...options.env, HOST: "127.0.0.1", PORT: String(port) },
    stdoutFile: options.logFile ?? "/dev/null"
  })
  void child.exited.then(() => rmSync(dir, { recursive: true, force: true }))
  const url = `http://127.0.0.1:${port}`
  try {
    await waitForHttp(`${url}/health`, child)
  } catch (error) {
    await child.stop(1_000)
    throw error
  }
  return { ...child, url }
}

/** The soft limit on open files of a process (from `/proc/<pid>/limits`), if readable. */
export const openFileLimit = (pid: number | "self" = "self"): number | undefined => {
  try {
    const line = readFileSync(`/proc/${pid}/limits`, "utf8")
      .split("\n")
      .find((l) => l.startsWith("Max open files"))
    const soft = line?.split(/\s{2,}/)[1]
    return soft === undefined || soft === "unlimited" ? undefined : Number(soft)
  } catch {
    return undefined
  }
}
