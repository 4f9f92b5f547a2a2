// Helpers for the tests against a real Redis: a key prefix per test (removed afterwards), a
// redis-server child process the tests can stop, freeze and restart, and a scripted upstream.

import { type ChildProcess, spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import { createServer } from "node:net"
import { ChatCompletion, type Upstream, UpstreamError } from "@roadcar/core"
import { Effect, Stream } from "effect"
import { createClient } from "redis"

/** The Redis the tests use (`REDIS_URL`); the suites are skipped when it is unset. */
export const redisUrl = process.env["REDIS_URL"]

/** A fresh key prefix; its keys are deleted when the test's scope closes. */
export const testPrefix = Effect.gen(function* () {
  const prefix = `roadcar-test:${randomBytes(6).toString("hex")}:`
  yield* Effect.addFinalizer(() => Effect.promise(() => deleteKeys(prefix)).pipe(Effect.ignore))
  return prefix
})

/** The keys under a prefix. */
export const keysUnder = async (prefix: string): Promise<Array<string>> => {
  const client = createClient({ url: redisUrl ?? "redis://127.0.0.1:6379" })
  client.on("error", () => undefined)
  await client.connect()
  try {
    const keys: Array<string> = []
    for await (const batch of client.scanIterator({ MATCH: `${prefix}*`, COUNT: 1000 })) keys.push(...batch)
    return keys
  } finally {
    client.destroy()
  }
}

const deleteKeys = async (prefix: string): Promise<void> => {
  const keys = await keysUnder(prefix)
  if (keys.length === 0) return
  const client = createClient({ url: redisUrl ?? "redis://127.0.0.1:6379" })
  client.on("error", () => undefined)
  await client.connect()
  try {
    await client.del(keys)
  } finally {
    client.destroy()
  }
}

/** A TCP port nothing listens on right now (on 127.0.0.1). */
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

/** A redis-server child on a free port of 127.0.0.1 that a test can stop, freeze and restart. */
export interface OwnRedis {
  readonly url: string
  readonly start: Effect.Effect<void>
  readonly stop: Effect.Effect<void>
  /** SIGSTOP: the server keeps its connections but answers nothing. */
  readonly freeze: Effect.Effect<void>
  readonly thaw: Effect.Effect<void>
}

const ping = async (url: string): Promise<boolean> => {
  const client = createClient({ url, socket: { reconnectStrategy: false, connectTimeout: 200 } })
  client.on("error", () => undefined)
  try {
    await client.connect()
    await client.ping()
    return true
  } catch {
    return false
  } finally {
    if (client.isOpen) client.destroy()
  }
}

/** Starts a redis-server of the test's own (stopped when the test's scope closes). */
export const ownRedis = Effect.gen(function* () {
  const port = yield* Effect.promise(freePort)
  const url = `redis://127.0.0.1:${port}`
  let child: ChildProcess | undefined
  const waitFor = (up: boolean) =>
    Effect.promise(async () => {
      for (let i = 0; i < 100; i++) {
        if ((await ping(url)) === up) return
        await new Promise((resolve) => setTimeout(resolve, 20))
      }
      throw new Error(`redis-server on port ${port} did not ${up ? "start" : "stop"}`)
    })
  const start = Effect.suspend(() => {
    child = spawn(
      "redis-server",
      ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--loglevel", "warning"],
      { stdio: "ignore" }
    )
    return waitFor(true)
  })
  const stop = Effect.suspend(() => {
    const running = child
    child = undefined
    if (running === undefined || running.exitCode !== null) return Effect.void
    return Effect.promise(
      () =>
        new Promise<void>((resolve) => {
          running.once("exit", () => resolve())
          running.kill("SIGCONT")
          running.kill("SIGKILL")
        })
    )
  })
  const signal = (name: NodeJS.Signals) =>
    Effect.sync(() => {
      child?.kill(name)
    })
  yield* Effect.addFinalizer(() => stop)
  yield* start
  return { url, start, stop, freeze: signal("SIGSTOP"), thaw: signal("SIGCONT") } satisfies OwnRedis
})

/** An upstream whose calls follow a script (then answer), counted. */
export interface Scripted extends Upstream.Upstream {
  readonly calls: Array<number>
}

export const scripted = (
  name: string,
  script: ReadonlyArray<"ok" | "503" | "hang">,
  usage = ChatCompletion.usage(5, 3)
): Scripted => {
  const calls: Array<number> = []
  const next = Effect.suspend(() => {
    const outcome = script[calls.length] ?? "ok"
    calls.push(Date.now())
    if (outcome === "hang") return Effect.never
    if (outcome === "503") {
      return Effect.fail(UpstreamError.make(name, new UpstreamError.Unavailable({ status: 503 })))
    }
    return Effect.succeed<ChatCompletion.ChatResponse>({
      id: `chatcmpl-${name}-${calls.length}`,
      object: "chat.completion",
      created: 0,
      model: name,
      choices: [{ index: 0, message: { role: "assistant", content: `answer from ${name}` }, finish_reason: "stop" }],
      usage
    })
  })
  return {
    name,
    provider: "test",
    model: name,
    calls,
    complete: () => next,
    stream: () => Stream.unwrap(Effect.map(next, (r) => Stream.fromIterable(ChatCompletion.responseToChunks(r))))
  }
}

export const request = (
  content = "hello",
  extra: Partial<ChatCompletion.ChatRequest> = {}
): ChatCompletion.ChatRequest => ({
  model: "chat",
  messages: [{ role: "user", content }],
  ...extra
})

/** How long an effect took, in ms (live clock). */
export const timed = <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const start = performance.now()
    const value = yield* self
    return { value, ms: performance.now() - start }
  })
