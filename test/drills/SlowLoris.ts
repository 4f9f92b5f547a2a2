/**
 * Slow-loris sockets: raw connections that send a request a few bytes at a time and never finish.
 *
 * Half the sockets trickle their headers (an endless series of header lines), half send complete
 * headers declaring a body under the limit and then trickle the body. Each socket records when and how
 * the server ended it (an HTTP status such as 408, or a plain close); a socket still open when the
 * window ends is closed by us and counted as held to the end. Everything is bounded: `sockets`,
 * `maxMs`, a few bytes per tick.
 */
import { spawn } from "node:child_process"
import * as Net from "node:net"
import { fileURLToPath } from "node:url"
import { check, type DrillResult, secondsSince } from "./Check.ts"

/** Options of {@link start}. */
export interface Options {
  readonly sockets: number
  /** The window: sockets still open after this long are closed by us. */
  readonly maxMs: number
  /** Time between two sends (default 100 ms). */
  readonly tickMs?: number | undefined
  /** Bytes per send (default 3). */
  readonly bytesPerTick?: number | undefined
}

/** How one kind of slow-loris socket ended. */
export interface KindSummary {
  readonly sockets: number
  /** How the server ended them: `"408 JSON"`, `"408 (no body)"`, `"closed"` (no answer), ... */
  readonly endedBy: Record<string, number>
  readonly heldToTheEnd: number
  /** When the server ended them, ms after they connected (min and max). */
  readonly endedAfterMs: { readonly min: number; readonly max: number } | undefined
}

/** What the slow-loris sockets saw. */
export interface Summary {
  readonly windowMs: number
  readonly headers: KindSummary
  readonly body: KindSummary
  readonly heldToTheEnd: number
}

interface Slot {
  readonly kind: "headers" | "body"
  readonly connectedAt: number
  endedAt?: number
  endedBy?: string
  heldToTheEnd?: boolean
}

const headersPayload = function* (): Generator<string> {
  yield "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
  for (let i = 0; ; i++) yield `X-Slow-${i}: ${"a".repeat(20)}\r\n`
}

const bodyPayload = function* (): Generator<string> {
  yield "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n"
  yield '{"model":"chat","messages":[{"role":"user","content":"'
  for (;;) yield "a".repeat(64)
}

/** A running set of slow-loris sockets. */
export interface Running {
  /** Waits until every socket has ended or the window is over (then closes the rest) and summarises. */
  readonly stop: () => Promise<Summary>
}

/** Opens the sockets against `127.0.0.1:port` and starts trickling. */
export const start = (port: number, options: Options): Running => {
  const tickMs = options.tickMs ?? 100
  const bytesPerTick = options.bytesPerTick ?? 3
  const startedAt = performance.now()
  const slots: Array<Slot> = []
  const sockets: Array<Net.Socket> = []
  const timers: Array<NodeJS.Timeout> = []
  const open = new Set<number>()
  let resolveAll: (() => void) | undefined
  const allEnded = new Promise<void>((resolve) => {
    resolveAll = resolve
  })
  const ended = (index: number) => {
    open.delete(index)
    if (open.size === 0) resolveAll?.()
  }
  for (let index = 0; index < options.sockets; index++) {
    const kind = index % 2 === 0 ? "headers" : "body"
    const slot: Slot = { kind, connectedAt: performance.now() }
    slots.push(slot)
    open.add(index)
    const socket = Net.connect({ host: "127.0.0.1", port })
    sockets.push(socket)
    const payload = kind === "headers" ? headersPayload() : bodyPayload()
    let pending = ""
    let received = ""
    const timer = setInterval(() => {
      if (socket.destroyed || !socket.writable) return
      while (pending.length < bytesPerTick) pending += payload.next().value ?? ""
      socket.write(pending.slice(0, bytesPerTick))
      pending = pending.slice(bytesPerTick)
    }, tickMs)
    timers.push(timer)
    socket.on("data", (data: Buffer) => {
      received += data.toString("latin1")
    })
    const finish = () => {
      clearInterval(timer)
      if (slot.endedAt === undefined && slot.heldToTheEnd !== true) {
        slot.endedAt = performance.now()
        const status = /^HTTP\/1\.[01] (\d{3})/.exec(received)?.[1]
        const json = /\r\ncontent-type: *application\/json/i.test(received) && received.includes('"error"')
        slot.endedBy = status === undefined ? "closed" : `${status}${json ? " JSON" : " (no body)"}`
      }
      ended(index)
    }
    socket.on("close", finish)
    socket.on("error", () => {})
  }
  if (options.sockets === 0) resolveAll?.()
  const stop = async (): Promise<Summary> => {
    const left = options.maxMs - (performance.now() - startedAt)
    let windowTimer: NodeJS.Timeout | undefined
    await Promise.race([
      allEnded,
      new Promise<void>((resolve) => {
        windowTimer = setTimeout(resolve, Math.max(0, left))
      })
    ])
    if (windowTimer !== undefined) clearTimeout(windowTimer)
    for (const [index, socket] of sockets.entries()) {
      const slot = slots[index]
      if (slot !== undefined && slot.endedAt === undefined) slot.heldToTheEnd = true
      socket.destroy()
    }
    for (const timer of timers) clearInterval(timer)
    const summarize = (kind: Slot["kind"]): KindSummary => {
      const mine = slots.filter((slot) => slot.kind === kind)
      const endedBy: Record<string, number> = {}
      const after: Array<number> = []
      for (const slot of mine) {
        if (slot.heldToTheEnd === true || slot.endedAt === undefined) continue
        endedBy[slot.endedBy ?? "closed"] = (endedBy[slot.endedBy ?? "closed"] ?? 0) + 1
        after.push(Math.round(slot.endedAt - slot.connectedAt))
      }
      return {
        sockets: mine.length,
        endedBy,
        heldToTheEnd: mine.filter((slot) => slot.heldToTheEnd === true).length,
        endedAfterMs: after.length === 0 ? undefined : { min: Math.min(...after), max: Math.max(...after) }
      }
    }
    const headers = summarize("headers")
    const body = summarize("body")
    return {
      windowMs: Math.round(performance.now() - startedAt),
      headers,
      body,
      heldToTheEnd: headers.heldToTheEnd + body.heldToTheEnd
    }
  }
  return { stop }
}

/** One line about a summary. */
export const describe = (summary: Summary): string => {
  const kind = (name: string, item: KindSummary) =>
    `${name}: ${item.sockets} sockets, ended by the server ${JSON.stringify(item.endedBy)}${
      item.endedAfterMs === undefined ? "" : ` after ${item.endedAfterMs.min}-${item.endedAfterMs.max} ms`
    }, ${item.heldToTheEnd} still open at the end of the ${Math.round(summary.windowMs / 100) / 10} s window`
  return `${kind("slow headers", summary.headers)}; ${kind("slow body", summary.body)}`
}

// =============================================================================
// The long probe (full drill)
// =============================================================================

/** What `slowLorisProbe.ts` prints. */
export interface ProbeOutput extends Summary {
  readonly served: { readonly requests: number; readonly answered: number }
}

/**
 * Starts `slowLorisProbe.ts` in its own process (its own gateway, `sockets` slow-loris sockets, up to
 * `seconds`); the returned promise settles with the drill result when it is done. Start it early: it
 * runs beside the other drills.
 */
export const startProbe = (seconds: number, sockets = 4): Promise<DrillResult<ProbeOutput | Record<string, never>>> => {
  const startedAt = performance.now()
  const script = fileURLToPath(new URL("./slowLorisProbe.ts", import.meta.url))
  const child = spawn(process.execPath, [script, String(seconds), String(sockets)], {
    stdio: ["ignore", "pipe", "pipe"]
  })
  let stdout = ""
  let stderr = ""
  child.stdout.on("data", (data: Buffer) => {
    stdout += data.toString()
  })
  child.stderr.on("data", (data: Buffer) => {
    stderr += data.toString()
  })
  return new Promise((resolve) => {
    child.once("exit", (code) => {
      const title = `Slow-loris held as long as the gateway allows (up to ${seconds} s)`
      const line = stdout.trim().split("\n").pop() ?? ""
      let output: ProbeOutput | undefined
      try {
        output = JSON.parse(line) as ProbeOutput
      } catch {
        output = undefined
      }
      if (output === undefined) {
        resolve({
          id: "slowLoris",
          title,
          durationSeconds: secondsSince(startedAt),
          figures: {},
          checks: [check("the probe ran", false, `exit ${code}: ${stderr.slice(0, 500)}`)],
          notes: []
        })
        return
      }
      const cut = (item: KindSummary) =>
        item.endedAfterMs === undefined
          ? "not cut"
          : `cut after ${Math.round(item.endedAfterMs.min / 1000)}-${Math.round(item.endedAfterMs.max / 1000)} s (${Object.keys(item.endedBy).join(", ")})`
      const endings = [...Object.keys(output.headers.endedBy), ...Object.keys(output.body.endedBy)]
      resolve({
        id: "slowLoris",
        title,
        durationSeconds: secondsSince(startedAt),
        figures: output,
        checks: [
          check(
            "slow-loris sockets are cut, not held forever",
            output.heldToTheEnd === 0,
            `slow headers ${cut(output.headers)}; slow body ${cut(output.body)}; ${output.heldToTheEnd} still open after ${Math.round(output.windowMs / 1000)} s`
          ),
          check(
            "the timeout answer is an OpenAI error JSON",
            endings.length > 0 && endings.every((ending) => ending.endsWith(" JSON")),
            `ended by ${endings.join(", ") || "nothing"}`
          ),
          check(
            "normal requests are served meanwhile",
            output.served.requests > 0 && output.served.answered === output.served.requests,
            `${output.served.answered}/${output.served.requests} answered`
          )
        ],
        notes: [
          `${sockets} sockets (half trickling headers, half a declared 60,000-byte body), 3 bytes every 100 ms, against a \`roadcar serve\` of their own. For reference, Node's defaults when a server sets no timeouts: \`headersTimeout\` 60 s, \`requestTimeout\` 300 s, both checked every 30 s (\`connectionsCheckingInterval\`), then a 408 without a body. Until a socket is cut it holds a file descriptor.`
        ]
      })
    })
  })
}
