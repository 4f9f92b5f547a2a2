/**
 * Drill 4, bad input: a fast-check fuzzing run against a `roadcar serve` child process.
 *
 * Generated cases: bodies (random text, random JSON, valid requests with one field replaced, random
 * message shapes, truncated JSON), raw bytes and invalid UTF-8, deeply nested JSON (as the whole body
 * and inside the pass-through fields), bodies over the limit (declared and chunked), random headers,
 * random paths and methods, and malformed HTTP sent over a raw socket. Every answer must be below 500,
 * every 4xx an OpenAI error JSON; afterwards the process must still run, `/health` answer 200 and a
 * normal request be answered. Slow-loris sockets (`SlowLoris`) trickle bytes meanwhile, and normal
 * requests must keep being served.
 */
import * as Net from "node:net"
import { Behaviour, FakeUpstream } from "@roadcar/testing"
import * as fc from "fast-check"
import { type Check, check, type DrillResult, secondsSince } from "./Check.ts"
import { errorBodyOf } from "./Classify.ts"
import * as Harness from "./Harness.ts"
import * as SecretScan from "./SecretScan.ts"
import * as Security from "./Security.ts"
import * as SlowLoris from "./SlowLoris.ts"
import { Tally } from "./Stats.ts"

/** The body limit of the fuzzed gateway. */
export const bodyLimitBytes = 65_536

/** The fuzzed gateway's config: one model on a healthy fake upstream, keys, a 64 KiB body limit. */
export const config = (upstreamUrl: string, secrets: Security.Secrets) => ({
  upstreams: {
    fake: {
      provider: "openai-compatible",
      model: "fake-model",
      baseUrl: `${upstreamUrl}/v1`,
      apiKey: { env: secrets.upstreamKeyEnv }
    }
  },
  models: { [Security.models.allowed]: { upstream: "fake" }, [Security.models.other]: { upstream: "fake" } },
  server: { bodyLimitBytes },
  timeouts: { attempt: "2 seconds", firstChunk: "2 seconds", chunkGap: "2 seconds", total: "5 seconds" },
  keys: Security.keysConfig(secrets)
})

// =============================================================================
// Cases
// =============================================================================

/** One generated request. */
export type Case =
  | {
      readonly _tag: "Fetch"
      readonly family: string
      readonly method: string
      readonly path: string
      readonly headers: Readonly<Record<string, string>>
      readonly body?: string | Uint8Array<ArrayBuffer> | undefined
    }
  | { readonly _tag: "Raw"; readonly family: string; readonly text: string }

const valid = { model: Security.models.allowed, messages: [{ role: "user", content: "hi" }] }

const printable = (maxLength: number) =>
  fc.array(fc.integer({ min: 0x20, max: 0x7e }), { maxLength }).map((codes) => String.fromCharCode(...codes))

const deep = (depth: number, shape: "array" | "object"): string =>
  shape === "array" ? `${"[".repeat(depth)}${"]".repeat(depth)}` : `${'{"a":'.repeat(depth)}1${"}".repeat(depth)}`

const deepIn = (where: string, nested: string): string => {
  const messages = JSON.stringify(valid.messages)
  switch (where) {
    case "whole":
      return nested
    case "metadata":
      return `{"model":"chat","messages":${messages},"metadata":${nested}}`
    case "tools":
      return `{"model":"chat","messages":${messages},"tools":[{"type":"function","function":{"name":"f","parameters":${nested}}}]}`
    case "response_format":
      return `{"model":"chat","messages":${messages},"response_format":{"type":"json_schema","json_schema":{"name":"s","schema":${nested}}}}`
    case "content":
      return `{"model":"chat","messages":[{"role":"user","content":[{"type":"text","text":"hi","extra":${nested}}]}]}`
    default:
      return `{"model":"chat","messages":${nested}}`
  }
}

const utf8 = (text: string): Uint8Array<ArrayBuffer> => new TextEncoder().encode(text)

const concat = (...parts: ReadonlyArray<Uint8Array>): Uint8Array<ArrayBuffer> => {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0))
  let at = 0
  for (const part of parts) {
    out.set(part, at)
    at += part.length
  }
  return out
}

const invalidUtf8 = fc.constantFrom(
  [0xff],
  [0xc3],
  [0xc0, 0xaf],
  [0xe0, 0x80, 0xaf],
  [0xed, 0xa0, 0x80],
  [0xf4, 0x90, 0x80, 0x80],
  [0x80, 0x80],
  [0xfe, 0xfe, 0xff, 0xff]
)

/** The authorization header of a fuzz case that should reach the body checks. */
const auth = (secrets: Security.Secrets) => `Bearer ${secrets.gatewayKey}`

/** Every family of generated cases, with its share of the run. */
export const families = (secrets: Security.Secrets) => {
  const chat = (
    family: string,
    body: string | Uint8Array<ArrayBuffer>,
    headers: Record<string, string> = {}
  ): Case => ({
    _tag: "Fetch",
    family,
    method: "POST",
    path: "/v1/chat/completions",
    headers: { "content-type": "application/json", authorization: auth(secrets), ...headers },
    body
  })
  const bodies = fc
    .oneof(
      fc.string({ maxLength: 300, unit: "binary" }),
      fc.json({ maxDepth: 4 }),
      fc
        .tuple(
          fc.constantFrom(
            "model",
            "messages",
            "temperature",
            "stream",
            "stream_options",
            "max_tokens",
            "n",
            "stop",
            "tools",
            "tool_choice",
            "response_format",
            "logit_bias",
            "metadata",
            "seed",
            "user",
            "temprature",
            "__proto__",
            "constructor"
          ),
          fc.jsonValue({ maxDepth: 3 })
        )
        .map(
          ([field, value]) =>
            `{${JSON.stringify(valid).slice(1, -1)},${JSON.stringify(field)}:${JSON.stringify(value)}}`
        ),
      fc
        .array(
          fc.dictionary(
            fc.constantFrom("role", "content", "name", "tool_calls", "tool_call_id", "x"),
            fc.oneof(fc.constantFrom("user", "assistant", "system", "tool", "bot"), fc.jsonValue({ maxDepth: 2 }))
          ),
          { maxLength: 4 }
        )
        .map((messages) => JSON.stringify({ model: "chat", messages })),
      fc
        .tuple(fc.string({ maxLength: 200, unit: "binary" }), fc.boolean())
        .map(([content, stream]) => JSON.stringify({ ...valid, stream, messages: [{ role: "user", content }] })),
      fc.integer({ min: 0, max: JSON.stringify(valid).length - 1 }).map((cut) => JSON.stringify(valid).slice(0, cut))
    )
    .map((body) => chat("bodies", body))
  const bytes = fc
    .oneof(
      fc.uint8Array({ maxLength: 400 }),
      fc
        .tuple(invalidUtf8, fc.string({ maxLength: 20 }))
        .map(([bad, text]) =>
          concat(
            utf8(`{"model":"chat","messages":[{"role":"user","content":"${text}`),
            Uint8Array.from(bad),
            utf8(`"}]}`)
          )
        ),
      fc.tuple(invalidUtf8).map(([bad]) => concat(Uint8Array.from([0xef, 0xbb, 0xbf]), Uint8Array.from(bad)))
    )
    .map((body) => chat("invalid UTF-8 and raw bytes", body))
  const nested = fc
    .tuple(
      fc.oneof(fc.integer({ min: 2, max: 100 }), fc.integer({ min: 100, max: 30_000 })),
      fc.constantFrom("array" as const, "object" as const),
      fc.constantFrom("whole", "metadata", "tools", "response_format", "content", "messages")
    )
    .map(([depth, shape, where]) => {
      const body = deepIn(where, deep(depth, shape))
      return chat("deeply nested JSON", body.length > bodyLimitBytes ? deepIn(where, deep(2_000, shape)) : body)
    })
  // Over the limit: declared (`Content-Length`, through fetch) and chunked (through a raw socket: the
  // gateway answers 413 before the upload ends and then closes, which `fetch` reports as "other side
  // closed" instead of the answer; a raw socket reads the answer).
  const huge = fc
    .tuple(fc.integer({ min: bodyLimitBytes + 1, max: bodyLimitBytes * 8 }), fc.boolean())
    .map(([size, chunked]): Case => {
      if (!chunked)
        return chat("over the body limit", JSON.stringify({ ...valid, metadata: { pad: "x".repeat(size) } }))
      const piece = "x".repeat(8_192)
      const chunks = `${(piece.length).toString(16)}\r\n${piece}\r\n`.repeat(Math.ceil(size / piece.length))
      return {
        _tag: "Raw",
        family: "over the body limit",
        text: `POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAuthorization: ${auth(secrets)}\r\nTransfer-Encoding: chunked\r\n\r\n${chunks}0\r\n\r\n`
      }
    })
  const headers = fc
    .tuple(
      fc.option(
        fc.oneof(
          fc.constantFrom(
            "application/json",
            "application/json; charset=latin1",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/vnd.api+json",
            "APPLICATION/JSON"
          ),
          printable(60)
        ),
        { nil: undefined }
      ),
      fc.option(
        fc.oneof(
          printable(80),
          printable(80).map((value) => `Bearer ${value}`),
          fc.constant(auth(secrets)),
          fc.constant(`Bearer ${secrets.limitedKey}`),
          fc.constant(`bearer ${secrets.gatewayKey}`),
          fc.constant(`Bearer  ${secrets.gatewayKey} `)
        ),
        { nil: undefined }
      ),
      fc.option(printable(300), { nil: undefined }),
      fc.dictionary(fc.stringMatching(/^x-[a-z0-9-]{1,20}$/), printable(200), { maxKeys: 5 }),
      fc.constantFrom("chat", "other", "missing", "")
    )
    .map(([contentType, authorization, requestId, extra, model]): Case => {
      const all: Record<string, string> = { ...extra }
      if (contentType !== undefined) all["content-type"] = contentType
      if (authorization !== undefined) all["authorization"] = authorization
      if (requestId !== undefined) all["x-request-id"] = requestId
      return {
        _tag: "Fetch",
        family: "headers",
        method: "POST",
        path: "/v1/chat/completions",
        headers: all,
        body: JSON.stringify({ ...valid, model })
      }
    })
  const segment = fc.oneof(
    fc.constantFrom("v1", "chat", "completions", "models", "health", "ready", "metrics", "..", ".", "", "%2e%2e"),
    fc.constantFrom("%00", "%ff", "%c0%af", "%", "%zz", "%2F", "\u00e9", "a".repeat(2_000)),
    fc.stringMatching(/^[A-Za-z0-9._~%-]{1,12}$/)
  )
  const paths = fc
    .tuple(
      fc.array(segment, { minLength: 1, maxLength: 5 }),
      fc.constantFrom("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"),
      fc.option(printable(40).map(encodeURIComponent), { nil: undefined })
    )
    .map(([segments, method, query]): Case => {
      const path = `/${segments.join("/")}${query === undefined ? "" : `?q=${query}`}`
      return {
        _tag: "Fetch",
        family: "paths and methods",
        method,
        path,
        headers: { authorization: auth(secrets), "content-type": "application/json" },
        body: method === "GET" || method === "HEAD" ? undefined : JSON.stringify(valid)
      }
    })
  const malformed: ReadonlyArray<string> = [
    "GARBAGE\r\n\r\n",
    "GET\r\n\r\n",
    "GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "GET /health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    "GET /health HTTP/1.1\r\nHost: x\r\nX: a\u0000b\r\n\r\n",
    `GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(20_000)}\r\n\r\n`,
    `GET /${"a".repeat(20_000)} HTTP/1.1\r\nHost: x\r\n\r\n`,
    "TRACE /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n",
    "CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: x\r\n\r\n",
    "BREW /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /health HTTP/1.0\r\n\r\n",
    "GET /health HTTP/1.1\r\n\r\n"
  ]
  const rawCase = (text: string): Case => ({ _tag: "Raw", family: "malformed HTTP (raw socket)", text })
  const raw = fc
    .oneof(
      fc.constantFrom(...malformed),
      printable(200).map((text) => `${text}\r\n\r\n`)
    )
    .map(rawCase)
  return [
    { share: 0.3, arbitrary: bodies },
    { share: 0.1, arbitrary: bytes },
    { share: 0.1, arbitrary: nested },
    { share: 0.05, arbitrary: huge },
    { share: 0.15, arbitrary: headers },
    { share: 0.2, arbitrary: paths },
    // Every hand-written malformed request runs once, then random ones.
    { share: 0.1, arbitrary: raw, examples: malformed.map((text) => rawCase(text)) }
  ] as const
}

// =============================================================================
// Running a case
// =============================================================================

/** What the gateway did with one case. */
export interface Verdict {
  /** `2xx`, `json 4xx`, `5xx`, `non-JSON 4xx`, `bare protocol error`, `connection error`, `no answer`. */
  readonly category: string
  readonly status: number
  readonly detail: string
}

const judgeResponse = (status: number, contentType: string, text: string, head: boolean): Verdict => {
  if (status >= 500) return { category: "5xx", status, detail: text.slice(0, 200) }
  if (status < 400) return { category: `${Math.floor(status / 100)}xx`, status, detail: "" }
  if (head) return { category: "json 4xx", status, detail: "HEAD: no body" }
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch {
    parsed = undefined
  }
  return errorBodyOf(parsed) !== undefined && contentType.includes("application/json")
    ? { category: "json 4xx", status, detail: `${errorBodyOf(parsed)?.code}` }
    : { category: "non-JSON 4xx", status, detail: text.slice(0, 200) }
}

const runFetch = async (url: string, item: Extract<Case, { _tag: "Fetch" }>, scanner: SecretScan.Scanner) => {
  try {
    const init: RequestInit = { method: item.method, headers: item.headers, signal: AbortSignal.timeout(10_000) }
    if (item.body !== undefined) init.body = item.body
    const response = await fetch(`${url}${item.path}`, init)
    const text = await response.text()
    scanner.scan(text, "fuzz response body")
    return judgeResponse(response.status, response.headers.get("content-type") ?? "", text, item.method === "HEAD")
  } catch (error) {
    const cause = error instanceof Error && error.cause instanceof Error ? ` (${error.cause.message})` : ""
    const name = error instanceof Error ? error.name : ""
    return {
      category: name === "TimeoutError" ? "no answer" : "connection error",
      status: 0,
      detail: `${String(error)}${cause}`
    }
  }
}

/**
 * Sends raw bytes and reads the answer: until the server closes, or 1 s without an answer, or 200 ms
 * after a whole answer (so that a second, unsolicited answer on the same connection is seen).
 */
export const runRaw = (port: number, text: string, waitMs = 1_000): Promise<Verdict> =>
  new Promise((resolve) => {
    const socket = Net.connect({ host: "127.0.0.1", port })
    const chunks: Array<Buffer> = []
    let settled = false
    let grace: NodeJS.Timeout | undefined
    const finish = (ended: boolean) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      if (grace !== undefined) clearTimeout(grace)
      socket.destroy()
      const received = Buffer.concat(chunks).toString("latin1")
      const match = /^HTTP\/1\.[01] (\d{3})/.exec(received)
      if (match === null) {
        resolve({
          category: received === "" ? (ended ? "closed without an answer" : "no answer") : "garbled answer",
          status: 0,
          detail: received.slice(0, 120)
        })
        return
      }
      const status = Number(match[1])
      const length = answerLength(received)
      if (length !== undefined && length < received.length) {
        resolve({
          category: "second answer",
          status,
          detail: `${received.slice(0, received.indexOf("\r\n"))}, then ${received.slice(length).split("\r\n")[0] ?? ""}`
        })
        return
      }
      const split = received.indexOf("\r\n\r\n")
      const head = split === -1 ? received : received.slice(0, split)
      const body = split === -1 ? "" : received.slice(split + 4)
      const contentType = /\r\ncontent-type: *([^\r\n]*)/i.exec(head)?.[1] ?? ""
      const chunked = /\r\ntransfer-encoding: *chunked/i.test(head)
      const verdict = judgeResponse(status, contentType, chunked ? dechunk(body) : body, false)
      resolve(
        verdict.category === "non-JSON 4xx" && body === ""
          ? { category: "bare protocol error", status, detail: head.split("\r\n")[0] ?? "" }
          : verdict
      )
    }
    const timer = setTimeout(() => finish(false), waitMs)
    socket.on("data", (data: Buffer) => {
      chunks.push(data)
      if (grace === undefined && answerLength(Buffer.concat(chunks).toString("latin1")) !== undefined) {
        grace = setTimeout(() => finish(true), 200)
      }
    })
    socket.on("end", () => finish(true))
    socket.on("close", () => finish(true))
    socket.on("error", () => finish(true))
    socket.write(Buffer.from(text, "utf8"))
  })

// The length of the first whole answer in `received`, if it is all there (the server may keep the
// connection open after it).
const answerLength = (received: string): number | undefined => {
  const split = received.indexOf("\r\n\r\n")
  if (split === -1) return undefined
  const head = received.slice(0, split)
  const bodyStart = split + 4
  if (/\r\ntransfer-encoding: *chunked/i.test(head)) {
    const end = received.indexOf("\r\n0\r\n\r\n", bodyStart - 2)
    return end === -1 ? undefined : end + 7
  }
  const length = /\r\ncontent-length: *(\d+)/i.exec(head)?.[1]
  if (length === undefined) return undefined
  const total = bodyStart + Number(length)
  return Buffer.byteLength(received, "latin1") >= total ? total : undefined
}

const dechunk = (body: string): string => {
  let out = ""
  let rest = body
  for (;;) {
    const line = rest.indexOf("\r\n")
    if (line === -1) return out
    const size = Number.parseInt(rest.slice(0, line), 16)
    if (!Number.isFinite(size) || size === 0) return out
    out += rest.slice(line + 2, line + 2 + size)
    rest = rest.slice(line + 2 + size + 2)
  }
}

// =============================================================================
// Drill
// =============================================================================

/** Options of {@link run}. */
export interface Options {
  readonly cases: number
  readonly seed?: number | undefined
  /** Slow-loris sockets kept trickling during the run, and how long each may trickle. */
  readonly slowLoris: { readonly sockets: number; readonly maxMs: number }
  readonly onProgress?: ((message: string) => void) | undefined
}

/** The figures of the bad-input drill. */
export interface Figures {
  readonly cases: number
  readonly seed: number
  readonly byFamily: Record<string, Record<string, number>>
  readonly byStatus: Record<string, number>
  readonly failures: ReadonlyArray<string>
  readonly slowLoris: SlowLoris.Summary
  readonly servedDuringSlowLoris: { readonly requests: number; readonly answered: number; readonly maxMs: number }
  readonly afterwards: { readonly alive: boolean; readonly health: number; readonly chat: number }
  readonly unexpectedFailureLogLines: number
  readonly logLines: number
}

/** Runs the fuzzing drill against a fresh `roadcar serve` child process. */
export const run = async (options: Options): Promise<DrillResult<Figures>> => {
  const startedAt = performance.now()
  const seed = options.seed ?? 7
  const secrets = Security.makeSecrets()
  const scanner = SecretScan.make(Security.labelled(secrets))
  const fake = await FakeUpstream.start({ behaviour: Behaviour.ok() })
  let logLines = 0
  let unexpected = 0
  const unexpectedExamples: Array<string> = []
  const gateway = await Harness.spawnGateway(config(fake.url, secrets), await Harness.freePort(), {
    env: { [secrets.upstreamKeyEnv]: secrets.upstreamKey },
    onLine: (line) => {
      logLines++
      scanner.scan(line, "fuzz gateway output")
      if (line.includes("unexpected failure in the gateway")) {
        unexpected++
        if (unexpectedExamples.length < 3) unexpectedExamples.push(line.slice(0, 300))
      }
    }
  })
  try {
    // Slow-loris sockets trickle while the fuzzing runs; normal requests must keep being served.
    const loris = SlowLoris.start(gateway.port, { sockets: options.slowLoris.sockets, maxMs: options.slowLoris.maxMs })
    const served = { requests: 0, answered: 0, maxMs: 0 }
    let serving = true
    const probe = (async () => {
      while (serving) {
        const started = performance.now()
        served.requests++
        const ok = await fetch(`${gateway.url}/v1/chat/completions`, {
          method: "POST",
          headers: { "content-type": "application/json", authorization: auth(secrets) },
          body: JSON.stringify(valid),
          signal: AbortSignal.timeout(5_000)
        }).then(
          (response) => response.text().then(() => response.status === 200),
          () => false
        )
        if (ok) served.answered++
        served.maxMs = Math.max(served.maxMs, Math.round(performance.now() - started))
        await new Promise((resolve) => setTimeout(resolve, 250))
      }
    })()

    const byFamily: Record<string, Tally> = {}
    const byStatus = new Tally()
    const failures: Array<string> = []
    const failureKinds = new Map<string, number>()
    let done = 0
    const record = (item: Case, verdict: Verdict) => {
      done++
      const tally = byFamily[item.family] ?? new Tally()
      byFamily[item.family] = tally
      tally.add(verdict.category)
      byStatus.add(String(verdict.status))
      const acceptable =
        verdict.category === "2xx" ||
        verdict.category === "json 4xx" ||
        (item._tag === "Raw" && verdict.category === "no answer")
      // Up to two examples of each kind of failure (family and category).
      const kind = `${item.family}/${verdict.category}/${verdict.status}`
      const seenOfKind = failureKinds.get(kind) ?? 0
      if (!acceptable) failureKinds.set(kind, seenOfKind + 1)
      if (!acceptable && seenOfKind < 2 && failures.length < 20) {
        const shown =
          item._tag === "Raw"
            ? `${JSON.stringify(item.text.slice(0, 160))}${item.text.length > 160 ? ` (${item.text.length} bytes)` : ""}`
            : `${item.method} ${item.path} ${describeBody(item)}`
        failures.push(
          `[${item.family}] ${verdict.category} ${verdict.status} ${verdict.detail} <- ${shown.slice(0, 200)}`
        )
      }
      if (done % 250 === 0) options.onProgress?.(`bad input: ${done}/${options.cases} cases`)
    }
    let familySeed = seed
    for (const family of families(secrets)) {
      const numRuns = Math.max(1, Math.round(options.cases * family.share))
      await fc.check(
        fc.asyncProperty(family.arbitrary, async (item: Case) => {
          const verdict =
            item._tag === "Raw" ? await runRaw(gateway.port, item.text) : await runFetch(gateway.url, item, scanner)
          record(item, verdict)
          return true
        }),
        {
          numRuns,
          seed: familySeed++,
          examples: ("examples" in family ? family.examples : []).map((item): [Case] => [item])
        }
      )
    }
    serving = false
    await probe
    const slowLoris = await loris.stop()

    const alive = gateway.child.exitCode === null && gateway.child.signalCode === null
    const health = await fetch(`${gateway.url}/health`).then(
      (response) => response.status,
      () => 0
    )
    const chat = await fetch(`${gateway.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: auth(secrets) },
      body: JSON.stringify(valid)
    }).then(
      async (response) => {
        const body = (await response.json()) as { choices?: ReadonlyArray<{ message?: { content?: string } }> }
        return response.status === 200 && body.choices?.[0]?.message?.content === "echo: hi" ? 200 : response.status
      },
      () => 0
    )
    const families_ = Object.fromEntries(Object.entries(byFamily).map(([name, tally]) => [name, tally.toJSON()]))
    const malformed = "malformed HTTP (raw socket)"
    const count = (categories: ReadonlyArray<string>, which: "http" | "malformed" | "all") =>
      Object.entries(byFamily)
        .filter(([name]) => which === "all" || (which === "malformed") === (name === malformed))
        .reduce((sum, [, tally]) => sum + categories.reduce((inner, category) => inner + tally.get(category), 0), 0)
    const bad = [
      "non-JSON 4xx",
      "bare protocol error",
      "garbled answer",
      "closed without an answer",
      "connection error"
    ]
    const figures: Figures = {
      cases: done,
      seed,
      byFamily: families_,
      byStatus: byStatus.toJSON(),
      failures: [...failures, ...unexpectedExamples],
      slowLoris,
      servedDuringSlowLoris: served,
      afterwards: { alive, health, chat },
      unexpectedFailureLogLines: unexpected,
      logLines
    }
    const checks: Array<Check> = [
      check("never a 5xx", count(["5xx"], "all") === 0, `${count(["5xx"], "all")} of ${done} cases answered 5xx`),
      check(
        "every rejected request gets an OpenAI error JSON",
        count([...bad, "no answer"], "http") === 0,
        `${count(["json 4xx"], "http")} JSON 4xx and ${count(["2xx"], "http")} 2xx; ${count(["non-JSON 4xx", "bare protocol error"], "http")} non-JSON 4xx, ${count(["connection error", "closed without an answer", "garbled answer"], "http")} dropped, ${count(["no answer"], "http")} unanswered`
      ),
      check(
        "malformed HTTP gets an OpenAI error JSON too",
        count(bad, "malformed") === 0,
        `raw socket cases: ${JSON.stringify(families_[malformed] ?? {})}`
      ),
      check(
        "no unexpected failure logged (no defect behind an answer)",
        unexpected === 0,
        `${unexpected} "unexpected failure in the gateway" lines in ${logLines}`
      ),
      check(
        "the gateway keeps serving during slow-loris and bad input",
        served.requests > 0 && served.answered === served.requests,
        `${served.answered}/${served.requests} normal requests answered while ${options.slowLoris.sockets} slow-loris sockets trickled (slowest ${served.maxMs} ms)`
      ),
      check(
        "healthy afterwards: process alive, /health 200, a normal request answered",
        alive && health === 200 && chat === 200,
        `alive ${alive}, /health ${health}, chat ${chat}`
      )
    ]
    return {
      id: "badInput",
      title: "Bad input (fast-check) and slow-loris",
      durationSeconds: secondsSince(startedAt),
      figures,
      checks,
      notes: [
        `Slow-loris during the run: ${SlowLoris.describe(slowLoris)}. How long the gateway holds them is measured by the long probe of the full run.`,
        "Bodies over the limit get `413 payload_too_large` JSON, declared or chunked. With a chunked upload the gateway answers before the upload ends and closes the connection, which `fetch` reports as `other side closed` instead of the answer; those cases are sent over a raw socket, which reads the 413.",
        "A raw-socket case that gets no answer within 1 s is a request the server is still waiting on (e.g. only blank lines): accepted, not a failure.",
        ...figures.failures
          .slice(0, 8)
          .map((failure) => `Failure: ${failure.length > 400 ? `${failure.slice(0, 400)}...` : failure}`)
      ]
    }
  } finally {
    await gateway.close()
    await fake.close()
  }
}

const describeBody = (item: Extract<Case, { _tag: "Fetch" }>): string => {
  if (item.body === undefined) return ""
  if (typeof item.body === "string")
    return item.body.length > 160 ? `${item.body.slice(0, 160)}... (${item.body.length} chars)` : item.body
  return `<${item.body.length} bytes: ${Buffer.from(item.body.slice(0, 40)).toString("hex")}>`
}
