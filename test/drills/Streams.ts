/**
 * Drill 2, second half: many concurrent slow streams held open, then released.
 *
 * An in-process gateway serves the simulated model with long gaps between chunks; a child process
 * (`holdStreams.ts`) opens the streams (10,000 in the full drill) and keeps them open until every one
 * has started, then disconnects them all. The gateway uses the simulated model, not the fake upstream
 * over HTTP, because each proxied stream would take two sockets in the gateway process and 10,000 of
 * them would pass its file descriptor limit. Figures: RSS and heap before, while held and after
 * release, and the open handles settling back.
 */
import { fork } from "node:child_process"
import { fileURLToPath } from "node:url"
import { check, type DrillResult, secondsSince } from "./Check.ts"
import * as Harness from "./Harness.ts"
import type { Report } from "./holdStreams.ts"

/** Options of {@link run}. */
export interface Options {
  readonly streams: number
  readonly onProgress?: ((message: string) => void) | undefined
}

/** One round: hold every stream, then release them all. */
export interface Round {
  readonly held: number
  readonly failed: number
  readonly errors: Record<string, number>
  readonly endedEarly: number
  readonly secondsToHoldAll: number
  /** RSS while every stream is open. */
  readonly rssHeldMiB: number
  /** Memory while every stream is open, after a GC. */
  readonly heldAfterGc: Harness.Memory
  readonly socketsWhileHeld: number
  /** Memory after the release, after a GC. */
  readonly after: Harness.Memory
  readonly settleSeconds: number
}

/** The held-streams figures. */
export interface Figures {
  readonly streams: number
  readonly before: Harness.Memory
  readonly rounds: ReadonlyArray<Round>
  readonly perStreamKiB: { readonly rss: number; readonly heap: number }
  readonly handlesBefore: Record<string, number>
  readonly handlesAfter: Record<string, number>
  readonly answeredAfter: boolean
}

/** The gateway for held streams: the simulated model, 8 s between chunks, generous timeouts. */
export const config = {
  logLevel: "Warn",
  upstreams: { slow: { provider: "simulated", latency: "10 millis", chunkLatency: "8 seconds" } },
  models: { chat: { upstream: "slow" } },
  timeouts: { attempt: "30 seconds", firstChunk: "30 seconds", chunkGap: "60 seconds", total: "10 minutes" },
  monitor: { hangingRequest: false, slowRequest: false },
  cache: { enabled: false },
  server: { drainTimeout: "1 second" }
}

const waitFor = <T extends Report["type"]>(
  child: ReturnType<typeof fork>,
  type: T,
  timeoutMs: number
): Promise<Extract<Report, { type: T }>> =>
  new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`no "${type}" from holdStreams.ts within ${timeoutMs} ms`)),
      timeoutMs
    )
    const onMessage = (message: Report) => {
      if (message.type !== type) return
      clearTimeout(timer)
      child.off("message", onMessage)
      resolve(message as Extract<Report, { type: T }>)
    }
    child.on("message", onMessage)
    child.once("exit", (code) => {
      clearTimeout(timer)
      reject(new Error(`holdStreams.ts exited (${code}) before "${type}"`))
    })
  })

const sockets = (handles: Record<string, number>): number => handles["TCPSocketWrap"] ?? 0

const holdScript = fileURLToPath(new URL("./holdStreams.ts", import.meta.url))

// Holds `streams` streams from a child process, measures, releases them, and waits for the handles.
const round = async (url: string, streams: number, handlesBefore: Record<string, number>): Promise<Round> => {
  const child = fork(holdScript, [url, String(streams)], { stdio: ["ignore", "inherit", "inherit", "ipc"] })
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
  try {
    const held = await waitFor(child, "held", 180_000)
    const rssHeldMiB = Harness.memory().rssMiB
    const socketsWhileHeld = sockets(Harness.activeResources())
    await Harness.collectGarbage()
    const heldAfterGc = Harness.memory()
    child.send({ type: "release" })
    await waitFor(child, "released", 30_000)
    await exited
    const settleSeconds = await Harness.settleHandles(handlesBefore, 30_000)
    await Harness.collectGarbage()
    return {
      held: held.held,
      failed: held.failed,
      errors: held.errors,
      endedEarly: held.endedEarly,
      secondsToHoldAll: held.seconds,
      rssHeldMiB,
      heldAfterGc,
      socketsWhileHeld,
      after: Harness.memory(),
      settleSeconds
    }
  } finally {
    if (child.exitCode === null) child.kill("SIGKILL")
  }
}

/**
 * Runs the drill: two rounds of holding and releasing, so that memory the allocator keeps after the
 * first round (RSS that is reused, not leaked) can be told from growth.
 */
export const run = async (options: Options): Promise<DrillResult<Figures>> => {
  const startedAt = performance.now()
  const gateway = await Harness.startInProcess(config)
  try {
    const answer = () =>
      fetch(`${gateway.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "chat", messages: [{ role: "user", content: "hello" }] })
      }).then(
        (response) => response.text().then(() => response.status === 200),
        () => false
      )
    for (let i = 0; i < 5; i++) await answer()
    await new Promise((resolve) => setTimeout(resolve, 5_500))
    await Harness.collectGarbage()
    const before = Harness.memory()
    const handlesBefore = await Harness.activeResourcesPeak()
    const rounds: Array<Round> = []
    for (let index = 0; index < 2; index++) {
      const result = await round(gateway.url, options.streams, handlesBefore)
      rounds.push(result)
      options.onProgress?.(
        `streams: round ${index + 1}: ${result.held} held after ${result.secondsToHoldAll} s, rss ${result.rssHeldMiB} MiB held, ${result.after.rssMiB} MiB after`
      )
    }
    const handlesAfter = Harness.activeResources()
    const answeredAfter = await answer()
    const grown = Harness.grownHandles(handlesBefore, handlesAfter)
    const first = rounds[0]!
    const last = rounds[rounds.length - 1]!
    const perStream = (mib: number) => Math.round((mib * 1024) / Math.max(1, first.held))
    const figures: Figures = {
      streams: options.streams,
      before,
      rounds,
      perStreamKiB: {
        rss: perStream(first.rssHeldMiB - before.rssMiB),
        heap: perStream(first.heldAfterGc.heapUsedMiB - before.heapUsedMiB)
      },
      handlesBefore,
      handlesAfter,
      answeredAfter
    }
    const describeRound = (item: Round, index: number) =>
      `round ${index + 1}: ${item.held}/${options.streams} held in ${item.secondsToHoldAll} s (${item.failed} failed${
        item.failed === 0 ? "" : ` ${JSON.stringify(item.errors)}`
      }, ${item.endedEarly} ended early), ${item.socketsWhileHeld} sockets in the gateway`
    return {
      id: "streams",
      title: "Concurrent slow streams held, then released",
      durationSeconds: secondsSince(startedAt),
      figures,
      checks: [
        check(
          "every stream open at once",
          rounds.every(
            (item) =>
              item.held === options.streams &&
              item.failed === 0 &&
              item.endedEarly === 0 &&
              item.socketsWhileHeld >= options.streams
          ),
          rounds.map(describeRound).join("; ")
        ),
        check(
          "handles settle back after each release",
          grown.length === 0,
          grown.length === 0
            ? `settled in ${rounds.map((item) => `${item.settleSeconds} s`).join(" and ")}`
            : `grew: ${grown.join(", ")}`
        ),
        check(
          "heap after GC within 32 MiB of the start",
          last.after.heapUsedMiB - before.heapUsedMiB <= 32,
          `heap used ${before.heapUsedMiB} -> ${first.heldAfterGc.heapUsedMiB} (held) -> ${rounds
            .map((item) => item.after.heapUsedMiB)
            .join(" / ")} MiB after each round`
        ),
        check(
          "RSS does not grow from round to round",
          last.after.rssMiB - first.after.rssMiB <= 32,
          `rss ${before.rssMiB} -> ${first.rssHeldMiB} (held) -> ${rounds.map((item) => item.after.rssMiB).join(" / ")} MiB after each round`
        ),
        check("a normal request is answered afterwards", answeredAfter, answeredAfter ? "200" : "not answered")
      ],
      notes: [
        "RSS after the first release stays above the start: the allocator keeps the memory of the closed sockets for reuse. The second round reuses it (no growth), which is what tells retention from a leak; the V8 heap returns to the start."
      ]
    }
  } finally {
    await gateway.close()
  }
}
