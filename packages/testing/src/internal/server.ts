/**
 * The fake upstream's HTTP server: plain `node:http` on 127.0.0.1, so it can misbehave at the socket
 * level (reset, hang, cut, stall). Each request is logged, given a behaviour by the installed script,
 * and answered in its wire format. `close` cancels every pending delay and destroys every connection,
 * so nothing it started keeps the process alive.
 */
import * as Http from "node:http"
import type { Attempt, Fault, Wire } from "../Attempt.ts"
import * as Behaviour from "../Behaviour.ts"
import * as Script from "../Script.ts"
import * as WireFormat from "./wire.ts"

/** Options of `start` (documented on the public `FakeUpstream.Options`). */
export interface ServerOptions {
  readonly behaviour?: Script.Input | undefined
  readonly port?: number | undefined
  readonly models?: ReadonlyArray<string> | undefined
  readonly wordsPerChunk?: number | undefined
}

/** A running fake upstream, Promise-style. */
export interface RunningServer {
  readonly url: string
  readonly port: number
  readonly setBehaviour: (input: Script.Input) => void
  readonly attempts: () => ReadonlyArray<Attempt>
  readonly clearAttempts: () => void
  readonly close: () => Promise<void>
}

const secretHeaders: ReadonlySet<string> = new Set([
  "authorization",
  "proxy-authorization",
  "x-api-key",
  "api-key",
  "cookie"
])

const redact = (headers: Http.IncomingHttpHeaders): Readonly<Record<string, string>> => {
  const out: Record<string, string> = {}
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue
    out[name] = secretHeaders.has(name) ? "[redacted]" : Array.isArray(value) ? value.join(", ") : value
  }
  return out
}

const parseBody = (raw: string): unknown => {
  if (raw === "") return undefined
  try {
    return JSON.parse(raw)
  } catch {
    return raw
  }
}

/** What the behaviour is applied to. */
interface Target {
  readonly res: Http.ServerResponse
  readonly wire: Wire
  readonly kind: "chat" | "models"
  readonly stream: boolean
  readonly requestId: string
  readonly promptTokens: number
  readonly answer: WireFormat.Answer
}

/** What a behaviour does to this target, for the attempt log. */
const faultOf = (behaviour: Behaviour.Behaviour, target: Pick<Target, "kind" | "stream">): Fault => {
  switch (behaviour._tag) {
    case "Ok":
      return "ok"
    case "RateLimited":
      return "429"
    case "Status":
      return `${behaviour.status}`
    case "Reset":
      return "reset"
    case "Hang":
      return "hang"
    case "SlowFirstChunk":
      return "slow_first_chunk"
    case "CutAfter":
      return "cut"
    case "StallAfter":
      return "stall"
    case "MalformedChunk":
    case "MalformedJson":
      return target.stream ? "malformed_chunk" : "malformed_json"
    case "NoDone":
      return target.stream ? "no_done" : "ok"
    case "ContextLengthExceeded":
      return target.kind === "models" ? "ok" : "context_length_exceeded"
    case "ContentFiltered":
      return target.kind === "models" ? "ok" : "content_filtered"
    case "Delayed":
      return faultOf(behaviour.behaviour, target)
  }
}

const alive = (res: Http.ServerResponse): boolean => !res.destroyed && res.socket !== null && !res.socket.destroyed

/** Starts a fake upstream on 127.0.0.1 (a free port unless `options.port` is given). */
export const start = (options: ServerOptions = {}): Promise<RunningServer> => {
  const wordsPerChunk = options.wordsPerChunk ?? 2
  if (!Number.isInteger(wordsPerChunk) || wordsPerChunk < 1) {
    return Promise.reject(new RangeError(`FakeUpstream: wordsPerChunk must be an integer >= 1, got ${wordsPerChunk}`))
  }
  const models = options.models ?? ["fake-model"]
  let choose = Script.compile(options.behaviour ?? Behaviour.ok(), Date.now())
  let log: Array<Attempt> = []
  let requests = 0
  let closing: Promise<void> | undefined
  const pendingWaits = new Set<() => void>()

  // ---------------------------------------------------------------------------
  // Low-level writing
  // ---------------------------------------------------------------------------

  /** Waits `ms`; resolves `false` (early) when the connection or the server closes. */
  const wait = (ms: number, res: Http.ServerResponse): Promise<boolean> =>
    new Promise((resolve) => {
      if (closing !== undefined || !alive(res)) return resolve(false)
      const finish = (completed: boolean) => {
        clearTimeout(timer)
        pendingWaits.delete(cancel)
        res.off("close", cancel)
        resolve(completed && closing === undefined && alive(res))
      }
      const cancel = () => finish(false)
      const timer = setTimeout(() => finish(true), ms)
      pendingWaits.add(cancel)
      res.once("close", cancel)
    })

  /** Writes one piece and waits until it is handed to the socket; `false` when the connection is gone. */
  const write = (res: Http.ServerResponse, data: string): Promise<boolean> =>
    new Promise((resolve) => {
      if (!alive(res)) return resolve(false)
      res.write(data, (error) => resolve(error === undefined || error === null))
    })

  const writeAll = async (res: Http.ServerResponse, frames: ReadonlyArray<string>, gapMs = 0): Promise<boolean> => {
    for (const [i, frame] of frames.entries()) {
      if (gapMs > 0 && i > 0 && !(await wait(gapMs, res))) return false
      if (!(await write(res, frame))) return false
    }
    return true
  }

  const baseHeaders = (target: Target): Record<string, string> =>
    target.wire === "openai" ? { "x-request-id": target.requestId } : { "request-id": target.requestId }

  const sendJson = (target: Target, status: number, body: string, extra: Record<string, string> = {}) => {
    if (!alive(target.res)) return
    target.res.writeHead(status, {
      ...baseHeaders(target),
      ...extra,
      "content-type": "application/json",
      "content-length": String(Buffer.byteLength(body))
    })
    target.res.end(body)
  }

  const sendError = (target: Target, kind: WireFormat.ErrorKind, extra: Record<string, string> = {}) => {
    const error = WireFormat.errorBody(target.wire, kind)
    sendJson(target, error.status, error.body, extra)
  }

  const openStream = (target: Target) => {
    target.res.writeHead(200, {
      ...baseHeaders(target),
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      connection: "keep-alive"
    })
    target.res.flushHeaders()
  }

  /** Headers of a JSON answer whose body comes later (or never completely). */
  const openJson = (target: Target) => {
    target.res.writeHead(200, {
      ...baseHeaders(target),
      "content-type": "application/json",
      "content-length": String(Buffer.byteLength(target.answer.json))
    })
    target.res.flushHeaders()
  }

  /** A whole stream: preamble, text chunks (optionally replaced / spaced), finish, optional terminator. */
  const streamAnswer = async (
    target: Target,
    options: { readonly gapMs?: number; readonly malformedAt?: number; readonly terminator: boolean }
  ) => {
    const { answer, res } = target
    const deltas =
      options.malformedAt === undefined
        ? answer.deltas
        : answer.deltas.map((frame, i, all) =>
            i === Math.min(options.malformedAt ?? 0, all.length - 1) ? answer.malformedDelta(i) : frame
          )
    if (!(await writeAll(res, answer.preamble))) return
    if (!(await writeAll(res, deltas, options.gapMs))) return
    if (!(await writeAll(res, answer.finish))) return
    if (options.terminator && !(await write(res, answer.terminator))) return
    res.end()
  }

  /** Preamble and the first `chunks` text chunks; then `true` when the connection is still there. */
  const streamPrefix = async (target: Target, chunks: number): Promise<boolean> => {
    openStream(target)
    return (
      (await writeAll(target.res, target.answer.preamble)) &&
      (await writeAll(target.res, target.answer.deltas.slice(0, chunks)))
    )
  }

  const healthy = async (target: Target, gapMs: number) => {
    if (!target.stream) return sendJson(target, 200, target.answer.json)
    openStream(target)
    await streamAnswer(target, { gapMs, terminator: true })
  }

  const malformedAnswer = async (target: Target, atChunk: number) => {
    if (!target.stream) return sendJson(target, 200, WireFormat.malformed(target.answer.json))
    openStream(target)
    await streamAnswer(target, { malformedAt: atChunk, terminator: true })
  }

  // ---------------------------------------------------------------------------
  // Behaviours
  // ---------------------------------------------------------------------------

  const perform = async (behaviour: Behaviour.Behaviour, target: Target): Promise<void> => {
    const { res } = target
    switch (behaviour._tag) {
      case "Delayed":
        if (await wait(behaviour.ms, res)) await perform(behaviour.behaviour, target)
        return
      case "Ok":
        if (behaviour.latencyMs !== undefined && !(await wait(behaviour.latencyMs, res))) return
        return healthy(target, behaviour.chunkDelayMs ?? 0)
      case "RateLimited": {
        const headers: Record<string, string> = {}
        if (behaviour.retryAfterSeconds !== undefined) headers["retry-after"] = String(behaviour.retryAfterSeconds)
        if (behaviour.retryAfterMs !== undefined) headers["retry-after-ms"] = String(behaviour.retryAfterMs)
        return sendError(target, { _tag: "RateLimited" }, headers)
      }
      case "Status": {
        const headers: Record<string, string> =
          behaviour.retryAfterSeconds !== undefined ? { "retry-after": String(behaviour.retryAfterSeconds) } : {}
        return sendError(target, { _tag: "Status", status: behaviour.status, message: behaviour.message }, headers)
      }
      case "Reset":
        res.socket?.resetAndDestroy()
        return
      case "Hang":
        return
      case "SlowFirstChunk":
        if (target.stream) {
          openStream(target)
          if (await wait(behaviour.ms, res)) await streamAnswer(target, { terminator: true })
        } else {
          openJson(target)
          if (await wait(behaviour.ms, res)) res.end(target.answer.json)
        }
        return
      case "CutAfter":
        if (target.stream) {
          if (await streamPrefix(target, behaviour.chunks)) res.destroy()
        } else {
          openJson(target)
          if (await write(res, WireFormat.malformed(target.answer.json))) res.destroy()
        }
        return
      case "StallAfter":
        if (target.stream) {
          await streamPrefix(target, behaviour.chunks)
        } else {
          openJson(target)
          await write(res, WireFormat.malformed(target.answer.json))
        }
        return
      case "MalformedChunk":
        return malformedAnswer(target, behaviour.atChunk)
      case "MalformedJson":
        return malformedAnswer(target, 0)
      case "NoDone":
        if (!target.stream) return healthy(target, 0)
        openStream(target)
        return streamAnswer(target, { terminator: false })
      case "ContextLengthExceeded":
        if (target.kind === "models") return healthy(target, 0)
        return sendError(target, { _tag: "ContextLengthExceeded", promptTokens: target.promptTokens })
      case "ContentFiltered":
        if (target.kind === "models") return healthy(target, 0)
        return sendError(target, { _tag: "ContentFiltered" })
    }
  }

  // ---------------------------------------------------------------------------
  // Routing
  // ---------------------------------------------------------------------------

  const handle = async (req: Http.IncomingMessage, res: Http.ServerResponse, at: number, raw: string) => {
    if (closing !== undefined) return
    const method = req.method ?? "GET"
    const path = req.url ?? "/"
    const pathname = path.split("?")[0] ?? path
    const headers = redact(req.headers)
    const body = parseBody(raw)
    const number = ++requests
    const record = (entry: Pick<Attempt, "wire" | "model" | "stream" | "fault">) =>
      log.push({ index: log.length, at, method, path, ...entry, headers, body })
    const chat = method === "POST" && (pathname === "/v1/chat/completions" || pathname === "/v1/messages")
    const wire: Wire =
      pathname === "/v1/messages" || (!chat && headers["anthropic-version"] !== undefined) ? "anthropic" : "openai"
    const requestId = `req_fake_${number}`
    const answerFor = (model: string, text: string, info?: WireFormat.ChatRequestInfo) =>
      WireFormat.answer({
        wire,
        id: wire === "openai" ? `chatcmpl-fake-${number}` : `msg_fake_${number}`,
        model,
        text,
        wordsPerChunk,
        promptTokens: info?.promptTokens ?? 1,
        includeUsage: info?.includeUsage ?? false
      })

    if (chat) {
      const info = WireFormat.readChatRequest(wire, body)
      const bare: Target = {
        res,
        wire,
        kind: "chat",
        stream: false,
        requestId,
        promptTokens: 1,
        answer: answerFor("", "")
      }
      if (info === undefined) {
        record({ wire, model: WireFormat.modelOf(body), stream: WireFormat.streamOf(body), fault: "bad_request" })
        return sendError(bare, { _tag: "BadRequest" })
      }
      const behaviour = choose({ model: info.model, now: at })
      const target: Target = {
        ...bare,
        stream: info.stream,
        promptTokens: info.promptTokens,
        answer: answerFor(info.model, behaviourText(behaviour) ?? `echo: ${info.lastUserText}`, info)
      }
      record({ wire, model: info.model, stream: info.stream, fault: faultOf(behaviour, target) })
      return perform(behaviour, target)
    }

    if (method === "GET" && pathname === "/v1/models") {
      const behaviour = choose({ model: "", now: at })
      const target: Target = {
        res,
        wire,
        kind: "models",
        stream: false,
        requestId,
        promptTokens: 1,
        answer: { ...answerFor("", ""), json: WireFormat.modelList(wire, models) }
      }
      record({ wire, model: "", stream: false, fault: faultOf(behaviour, target) })
      return perform(behaviour, target)
    }

    record({ wire, model: WireFormat.modelOf(body), stream: WireFormat.streamOf(body), fault: "not_found" })
    const target: Target = {
      res,
      wire,
      kind: "chat",
      stream: false,
      requestId,
      promptTokens: 1,
      answer: answerFor("", "")
    }
    return sendError(target, { _tag: "NotFound", method, path: pathname })
  }

  const server = Http.createServer((req, res) => {
    const at = Date.now()
    req.on("error", () => {})
    res.on("error", () => {})
    const parts: Array<Buffer> = []
    req.on("data", (part: Buffer) => parts.push(part))
    req.on("end", () => {
      handle(req, res, at, Buffer.concat(parts).toString("utf8")).catch(() => res.destroy())
    })
  })
  server.on("clientError", (_error, socket) => socket.destroy())

  const close = (): Promise<void> => {
    if (closing !== undefined) return closing
    closing = new Promise<void>((resolve) => {
      for (const cancel of [...pendingWaits]) cancel()
      // Node reports the server closed before libuv has released its handle: wait one more turn of the
      // event loop so that, once `close` resolves, no handle of this server is left.
      server.close(() => setTimeout(resolve, 0))
      server.closeAllConnections()
    })
    return closing
  }

  return new Promise((resolve, reject) => {
    server.once("error", reject)
    server.listen(options.port ?? 0, "127.0.0.1", () => {
      server.off("error", reject)
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      resolve({
        url: `http://127.0.0.1:${port}`,
        port,
        setBehaviour: (input) => {
          choose = Script.compile(input, Date.now())
        },
        attempts: () => [...log],
        clearAttempts: () => {
          log = []
        },
        close
      })
    })
  })
}

/** The text a behaviour asks for instead of the echo, if any (looks through `delayed`). */
const behaviourText = (behaviour: Behaviour.Behaviour): string | undefined => {
  if (behaviour._tag === "Ok") return behaviour.text
  if (behaviour._tag === "Delayed") return behaviourText(behaviour.behaviour)
  return undefined
}
