/**
 * The client side of the held-streams drill, run as a child process (`fork`) so that its sockets do
 * not count against the gateway process's file descriptors and handles.
 *
 * `node test/drills/holdStreams.ts <url> <count>` opens `<count>` streamed chat requests in batches,
 * waits until every one has received its first event, reports `{ type: "held" }` to the parent, and on
 * `{ type: "release" }` closes them all (a client disconnect), reports `{ type: "released" }` and exits.
 */
import * as Http from "node:http"

const url = new URL("/v1/chat/completions", process.argv[2] ?? "http://127.0.0.1:8787")
const count = Number(process.argv[3] ?? 1_000)
const batch = 500
const body = JSON.stringify({
  model: "chat",
  stream: true,
  messages: [{ role: "user", content: "hold this stream open for a while please" }]
})

/** Messages this process sends to its parent. */
export type Report =
  | {
      readonly type: "held"
      readonly held: number
      readonly failed: number
      readonly errors: Record<string, number>
      readonly endedEarly: number
      readonly seconds: number
    }
  | { readonly type: "released"; readonly closed: number }

const send = (report: Report) => process.send?.(report)
const agent = new Http.Agent({ keepAlive: false, maxSockets: Number.POSITIVE_INFINITY })
const requests: Array<Http.ClientRequest> = []
let held = 0
let failed = 0
let endedEarly = 0
const errors: Record<string, number> = {}
let released = false
const started = performance.now()

const open = () => {
  const request = Http.request(url, {
    method: "POST",
    agent,
    headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) }
  })
  let first = true
  request.on("response", (response) => {
    if (response.statusCode !== 200) {
      failed++
      errors[String(response.statusCode)] = (errors[String(response.statusCode)] ?? 0) + 1
    }
    response.on("data", () => {
      if (first) {
        first = false
        held++
      }
    })
    response.on("end", () => {
      if (!released) endedEarly++
    })
    response.on("error", () => {})
  })
  request.on("error", (error: NodeJS.ErrnoException) => {
    if (released || !first) return
    failed++
    errors[error.code ?? error.message] = (errors[error.code ?? error.message] ?? 0) + 1
  })
  request.end(body)
  requests.push(request)
}

for (let opened = 0; opened < count; opened += batch) {
  for (let i = opened; i < Math.min(count, opened + batch); i++) open()
  await new Promise((resolve) => setTimeout(resolve, 250))
}
const deadline = performance.now() + 120_000
while (held + failed < count && performance.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100))
send({ type: "held", held, failed, errors, endedEarly, seconds: Math.round((performance.now() - started) / 100) / 10 })

process.on("message", (message: { readonly type?: string }) => {
  if (message.type !== "release") return
  released = true
  for (const request of requests) request.destroy()
  send({ type: "released", closed: requests.length })
  setTimeout(() => process.exit(0), 100)
})
