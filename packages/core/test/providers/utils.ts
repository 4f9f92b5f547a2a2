/**
 * Test helpers for the provider tests: a tiny scripted `node:http` server on 127.0.0.1 for wire
 * details the fake upstream does not produce (HTTP-date `Retry-After`, rate limit reset headers,
 * exotic SSE framing, in-stream errors, echoed secrets), and small assertions on failures.
 */
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import { assert } from "@effect/vitest"
import { Effect, Exit, type Scope, Stream, Tracer } from "effect"
import type * as ChatCompletion from "../../src/ChatCompletion.ts"
import type * as UpstreamError from "../../src/UpstreamError.ts"

/** One request as the raw server received it. */
export interface Captured {
  readonly method: string
  readonly path: string
  readonly headers: Http.IncomingHttpHeaders
  readonly body: string
}

/** Answers one request; may write slowly and keep the socket open. */
export type Handler = (request: Captured, response: Http.ServerResponse) => void | Promise<void>

/** A running raw server: `url` is `http://127.0.0.1:<port>`, `requests` fills as requests arrive. */
export interface RawServer {
  readonly url: string
  readonly requests: ReadonlyArray<Captured>
}

/** Starts a raw server on 127.0.0.1 (free port), closed with the scope (open sockets destroyed). */
export const rawServer = (handler: Handler): Effect.Effect<RawServer, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.promise(
      () =>
        new Promise<{ server: Http.Server; url: string; requests: Array<Captured> }>((resolve) => {
          const requests: Array<Captured> = []
          const server = Http.createServer((req, res) => {
            const parts: Array<Buffer> = []
            req.on("data", (part: Buffer) => parts.push(part))
            req.on("end", () => {
              const captured: Captured = {
                method: req.method ?? "",
                path: req.url ?? "",
                headers: req.headers,
                body: Buffer.concat(parts).toString("utf8")
              }
              requests.push(captured)
              Promise.resolve(handler(captured, res)).catch(() => res.destroy())
            })
          })
          server.listen(0, "127.0.0.1", () => {
            const { port } = server.address() as AddressInfo
            resolve({ server, url: `http://127.0.0.1:${port}`, requests })
          })
        })
    ),
    ({ server }) =>
      Effect.promise(
        () =>
          new Promise<void>((resolve) => {
            server.closeAllConnections()
            server.close(() => resolve())
          })
      )
  ).pipe(Effect.map(({ url, requests }) => ({ url, requests })))

/** Answers with a status, headers and a JSON (or raw text) body. */
export const json =
  (status: number, body: unknown, headers: Record<string, string> = {}): Handler =>
  (_request, response) => {
    response.writeHead(status, { "content-type": "application/json", ...headers })
    response.end(typeof body === "string" ? body : JSON.stringify(body))
  }

/** Answers 200 with an SSE body written as the given pieces (each its own write); `end: false` keeps it open. */
export const sse =
  (pieces: ReadonlyArray<string>, options: { readonly end?: boolean } = {}): Handler =>
  async (_request, response) => {
    response.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" })
    for (const piece of pieces) {
      response.write(piece)
      await new Promise((resolve) => setTimeout(resolve, 2))
    }
    if (options.end !== false) response.end()
  }

/** An OpenAI `data:` frame. */
export const data = (value: unknown): string => `data: ${JSON.stringify(value)}\n\n`

/** An Anthropic `event:` + `data:` frame. */
export const event = (name: string, value: unknown): string => `event: ${name}\ndata: ${JSON.stringify(value)}\n\n`

/** A minimal chat request with the public model name `"public-model"`. */
export const chatRequest = (
  content = "hello there",
  extra: Partial<ChatCompletion.ChatRequest> = {}
): ChatCompletion.ChatRequest => ({
  model: "public-model",
  messages: [{ role: "user", content }],
  ...extra
})

/** Runs an effect that must fail and returns its `UpstreamError`. */
export const failure = <A>(
  effect: Effect.Effect<A, UpstreamError.UpstreamError>
): Effect.Effect<UpstreamError.UpstreamError> =>
  Effect.gen(function* () {
    const exit = yield* Effect.exit(effect)
    if (Exit.isSuccess(exit)) return assert.fail(`expected a failure, got ${JSON.stringify(exit.value)}`)
    const error = exit.cause.reasons.find((reason) => reason._tag === "Fail")
    if (error === undefined || error._tag !== "Fail") return assert.fail(`expected a typed failure: ${exit.cause}`)
    return error.error
  })

/** Collects a stream that must fail: the chunks it emitted before, and its `UpstreamError`. */
export const streamFailure = (
  stream: Stream.Stream<ChatCompletion.ChatChunk, UpstreamError.UpstreamError>
): Effect.Effect<{
  readonly chunks: ReadonlyArray<ChatCompletion.ChatChunk>
  readonly error: UpstreamError.UpstreamError
}> =>
  Effect.gen(function* () {
    const chunks: Array<ChatCompletion.ChatChunk> = []
    const error = yield* failure(Stream.runForEach(stream, (chunk) => Effect.sync(() => chunks.push(chunk))))
    return { chunks, error }
  })

/** The concatenated content of streamed chunks. */
export const streamedText = (chunks: ReadonlyArray<ChatCompletion.ChatChunk>): string =>
  chunks.map((chunk) => chunk.choices[0]?.delta.content ?? "").join("")

/** Asserts that a secret appears nowhere in an error: message, string form, JSON, reason detail. */
export const assertNoSecret = (error: UpstreamError.UpstreamError, secret: string): void => {
  const renderings = [
    error.message,
    String(error),
    JSON.stringify(error),
    JSON.stringify(error.reason),
    error.stack ?? ""
  ]
  for (const text of renderings) assert.notInclude(text, secret)
}

/** A tracer that records every span it starts. */
export const recordingTracer = (): { readonly tracer: Tracer.Tracer; readonly spans: Array<Tracer.NativeSpan> } => {
  const spans: Array<Tracer.NativeSpan> = []
  const tracer = Tracer.make({
    span(options) {
      const span = new Tracer.NativeSpan(options)
      spans.push(span)
      return span
    }
  })
  return { tracer, spans }
}

/** Everything a span exposes as text: name, attributes, events and its exit. */
export const spanTexts = (spans: ReadonlyArray<Tracer.NativeSpan>): Array<string> =>
  spans.flatMap((span) => [
    span.name,
    ...[...span.attributes].map(([key, value]) => `${key}=${String(value)}`),
    ...span.events.map(([name, , attributes]) => `${name} ${JSON.stringify(attributes)}`),
    span.status._tag === "Ended" ? `${String(span.status.exit)} ${JSON.stringify(span.status.exit)}` : ""
  ])
