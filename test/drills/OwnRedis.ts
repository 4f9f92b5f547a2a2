/**
 * A `redis-server` of a drill's own: a child process on a free port of 127.0.0.1 that the drill can
 * stop (SIGTERM, as an orchestrator stops it) and start again on the same port, without persistence,
 * so a restarted server starts empty, and optionally with a password (`--requirepass`), so a drill can
 * check that the password in the URL never shows in what the gateway prints. `command` sends one
 * command over a fresh connection with a small RESP client (no Redis library needed), to look inside
 * the server from outside the gateways.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import * as Net from "node:net"
import { freePort } from "./Harness.ts"

/** A RESP reply: a simple or bulk string, an integer, `null`, an array, or a server error. */
export type Reply = string | number | null | Error | ReadonlyArray<Reply>

/** A redis-server child process that can be stopped and started again on its port. */
export interface OwnRedis {
  readonly port: number
  /** `redis://[:<password>@]127.0.0.1:<port>`. */
  readonly url: string
  /** Starts the server; resolves once it answers `PING`. */
  readonly start: () => Promise<void>
  /** Sends `signal` (default SIGTERM); resolves with the exit code (or signal name) once it has exited. */
  readonly stop: (signal?: NodeJS.Signals) => Promise<number | string>
  /** Whether the server process is running. */
  readonly running: () => boolean
  /** Sends one command over a new connection and resolves with the reply (rejects after `timeoutMs`). */
  readonly command: (args: ReadonlyArray<string>, timeoutMs?: number) => Promise<Reply>
  /** Kills the server if it runs. */
  readonly close: () => Promise<void>
}

/** Whether `redis-server` can be started on this machine (it is on the PATH). */
export const installed = (): boolean => spawnSync("redis-server", ["--version"], { stdio: "ignore" }).status === 0

const encode = (args: ReadonlyArray<string>): string =>
  `*${args.length}\r\n${args.map((arg) => `$${Buffer.byteLength(arg)}\r\n${arg}\r\n`).join("")}`

/** Parses one reply at `at`; `undefined` when the buffer holds only part of it. */
const parse = (buffer: Buffer, at: number): { readonly value: Reply; readonly next: number } | undefined => {
  const end = buffer.indexOf("\r\n", at)
  if (end === -1) return undefined
  const line = buffer.toString("utf8", at + 1, end)
  const next = end + 2
  switch (String.fromCharCode(buffer[at] ?? 0)) {
    case "+":
      return { value: line, next }
    case "-":
      return { value: new Error(line), next }
    case ":":
      return { value: Number(line), next }
    case "$": {
      const length = Number(line)
      if (length < 0) return { value: null, next }
      if (buffer.length < next + length + 2) return undefined
      return { value: buffer.toString("utf8", next, next + length), next: next + length + 2 }
    }
    case "*": {
      const count = Number(line)
      if (count < 0) return { value: null, next }
      const items: Array<Reply> = []
      let offset = next
      for (let index = 0; index < count; index++) {
        const item = parse(buffer, offset)
        if (item === undefined) return undefined
        items.push(item.value)
        offset = item.next
      }
      return { value: items, next: offset }
    }
    default:
      throw new Error(`unexpected RESP reply: ${JSON.stringify(buffer.toString("utf8", at, at + 40))}`)
  }
}

/**
 * Sends one command to `port` on 127.0.0.1 over a new connection (after `AUTH` when a password is
 * given) and resolves with its reply; a refused `AUTH` rejects.
 */
export const command = (
  port: number,
  args: ReadonlyArray<string>,
  options: { readonly timeoutMs?: number | undefined; readonly password?: string | undefined } = {}
): Promise<Reply> =>
  new Promise((resolve, reject) => {
    const timeoutMs = options.timeoutMs ?? 1_000
    const commands = options.password === undefined ? [args] : [["AUTH", options.password], args]
    let received = Buffer.alloc(0)
    const socket = Net.connect({ host: "127.0.0.1", port })
    const fail = (error: Error) => {
      socket.destroy()
      reject(error)
    }
    socket.setTimeout(timeoutMs, () => fail(new Error(`no reply to ${args[0]} within ${timeoutMs} ms`)))
    socket.once("error", fail)
    socket.once("connect", () => socket.write(commands.map(encode).join("")))
    socket.on("data", (data: Buffer) => {
      received = Buffer.concat([received, data])
      try {
        const replies: Array<Reply> = []
        let offset = 0
        while (replies.length < commands.length) {
          const reply = parse(received, offset)
          if (reply === undefined) return
          replies.push(reply.value)
          offset = reply.next
        }
        socket.destroy()
        const auth = replies.length > 1 ? replies[0] : undefined
        if (auth instanceof Error) reject(new Error(`AUTH refused: ${auth.message}`))
        else resolve(replies[replies.length - 1] ?? null)
      } catch (error) {
        fail(error instanceof Error ? error : new Error(String(error)))
      }
    })
  })

/** Every key matching `pattern`, by `SCAN` (never `KEYS`, which blocks the server). */
export const scanKeys = async (redis: OwnRedis, pattern: string): Promise<Array<string>> => {
  const keys: Array<string> = []
  let cursor = "0"
  do {
    const reply = await redis.command(["SCAN", cursor, "MATCH", pattern, "COUNT", "1000"])
    if (!Array.isArray(reply) || typeof reply[0] !== "string" || !Array.isArray(reply[1])) {
      throw new Error(`unexpected SCAN reply: ${JSON.stringify(reply)}`)
    }
    cursor = reply[0]
    for (const key of reply[1] as ReadonlyArray<Reply>) if (typeof key === "string") keys.push(key)
  } while (cursor !== "0")
  return keys
}

/**
 * Prepares a redis-server on a free port (not started: call `start`). Started without persistence
 * (`--save "" --appendonly no`), bound to 127.0.0.1, with `--requirepass` when `password` is given.
 */
export const make = async (options: { readonly password?: string | undefined } = {}): Promise<OwnRedis> => {
  const port = await freePort()
  const password = options.password
  const auth = password === undefined ? [] : ["--requirepass", password]
  let child: ChildProcess | undefined
  let exited: Promise<number | string> = Promise.resolve("not started")
  const running = () => child !== undefined && child.exitCode === null && child.signalCode === null
  const ping = () =>
    command(port, ["PING"], { timeoutMs: 200, password }).then(
      (reply) => reply === "PONG",
      () => false
    )
  const start = async (): Promise<void> => {
    if (running()) throw new Error(`redis-server on port ${port} already runs`)
    let output = ""
    const started = spawn(
      "redis-server",
      [
        ...["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--loglevel", "warning"],
        ...auth
      ],
      { stdio: ["ignore", "pipe", "pipe"] }
    )
    child = started
    exited = new Promise((resolve) => {
      started.once("exit", (code, signal) => resolve(code ?? signal ?? "unknown"))
      started.once("error", (error) => resolve(`spawn failed: ${error.message}`))
    })
    for (const stream of [started.stdout, started.stderr]) {
      stream?.setEncoding("utf8")
      stream?.on("data", (data: string) => {
        if (output.length < 4_000) output += data
      })
    }
    const deadline = performance.now() + 5_000
    while (!(await ping())) {
      if (!running()) throw new Error(`redis-server on port ${port} exited (${await exited}): ${output}`)
      if (performance.now() > deadline) {
        started.kill("SIGKILL")
        throw new Error(`redis-server on port ${port} did not answer PING within 5 s: ${output}`)
      }
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
  }
  const stop = async (signal: NodeJS.Signals = "SIGTERM"): Promise<number | string> => {
    if (running()) child?.kill(signal)
    return exited
  }
  return {
    port,
    url: password === undefined ? `redis://127.0.0.1:${port}` : `redis://:${password}@127.0.0.1:${port}`,
    start,
    stop,
    running,
    command: (args, timeoutMs) => command(port, args, { timeoutMs, password }),
    close: async () => {
      if (running()) await stop("SIGKILL")
    }
  }
}
