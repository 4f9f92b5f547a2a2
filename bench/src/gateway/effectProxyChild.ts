/**
 * The thinnest proxy on Effect's HTTP stack, as a child process: the floor of any gateway built on
 * `@effect/platform-node`'s server and Effect's `HttpClient`, with none of Roadcar's stages.
 *
 *     node --import probe.ts effectProxyChild.ts <upstream url> [fetch|undici]
 *
 * `POST /v1/chat/completions` reads the body as JSON, posts it to the upstream with the `HttpClient`
 * (`NodeHttpClient.layerUndici`, the gateway's default, or `FetchHttpClient.layer`), and answers with
 * the upstream's status, content type and body: read whole for JSON, streamed through for SSE (as the
 * gateway does). `GET /health` answers 200.
 * It listens on 127.0.0.1 (`PORT`, default a free port) and tells the parent its URL over IPC
 * (`{ type: "ready", url }`); SIGTERM stops it.
 */
import * as Http from "node:http"
import { NodeHttpClient, NodeHttpServer } from "@effect/platform-node"
import * as Effect from "effect/Effect"
import * as FetchHttpClient from "effect/http/FetchHttpClient"
import * as HttpClient from "effect/http/HttpClient"
import * as HttpClientRequest from "effect/http/HttpClientRequest"
import * as HttpRouter from "effect/http/HttpRouter"
import * as HttpServer from "effect/http/HttpServer"
import * as HttpServerRequest from "effect/http/HttpServerRequest"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import * as Layer from "effect/Layer"

const upstreamUrl = process.argv[2]
if (upstreamUrl === undefined) throw new Error("usage: effectProxyChild.ts <upstream url> [fetch|undici]")
const endpoint = new URL("/v1/chat/completions", upstreamUrl).href
const clientLayer = process.argv[3] === "undici" ? NodeHttpClient.layerUndici : FetchHttpClient.layer

const proxy = Effect.gen(function* () {
  const client = yield* HttpClient.HttpClient
  const request = yield* HttpServerRequest.HttpServerRequest
  const body = yield* request.json
  const answer = yield* client.execute(HttpClientRequest.post(endpoint).pipe(HttpClientRequest.bodyJsonUnsafe(body)))
  const contentType = answer.headers["content-type"] ?? "application/json"
  // Like the gateway: a JSON answer is read whole, an event stream is passed on as it comes.
  if (!contentType.startsWith("text/event-stream")) {
    return HttpServerResponse.text(yield* answer.text, { status: answer.status, contentType })
  }
  return HttpServerResponse.stream(answer.stream, { status: answer.status, contentType })
}).pipe(
  Effect.catch(() => Effect.succeed(HttpServerResponse.text("upstream failed", { status: 502 }))),
  Effect.scoped
)

const Routes = HttpRouter.use((router) =>
  Effect.gen(function* () {
    const client = yield* HttpClient.HttpClient
    yield* router.add("POST", "/v1/chat/completions", proxy.pipe(Effect.provideService(HttpClient.HttpClient, client)))
    yield* router.add("GET", "/health", HttpServerResponse.text("ok"))
  })
)

const port = Number(process.env["PORT"] ?? "0")
const server = NodeHttpServer.layer(() => Http.createServer(), { host: "127.0.0.1", port })
const announce = Layer.effectDiscard(
  Effect.gen(function* () {
    const address = (yield* HttpServer.HttpServer).address
    process.send?.({ type: "ready", url: HttpServer.formatAddress(address) })
  })
)
const app = HttpRouter.serve(Routes).pipe(Layer.merge(announce), Layer.provide(server), Layer.provide(clientLayer))

process.on("SIGTERM", () => process.exit(0))
Effect.runFork(Layer.launch(app))
