/**
 * The gateway's HTTP server: routes, the server layer, and an in-process starter for tests.
 *
 * Routes: `POST /v1/chat/completions` (`ChatRoute`), `GET /v1/models` (the public models the caller's
 * key may use, OpenAI list shape), `GET /health` (alive), `GET /ready` (200 when every model has an
 * upstream whose circuit is not open, else 503 naming them), `GET /metrics` (Prometheus text), each
 * `GET` also as `HEAD`; any other path is a 404 and a known path with the wrong method a 405, both as
 * OpenAI error JSON.
 * `layer` serves them with `@effect/platform-node` on the resolved host and port and drains in-flight
 * requests (streams included) for up to `server.drainTimeout` when its scope closes (SIGTERM under
 * `NodeRuntime.runMain`). `start` builds the layer in the current scope and returns the URL: the
 * programmatic API for tests and embedding.
 *
 * @since 0.1.0
 */

import * as Http from "node:http"
import type { Duplex } from "node:stream"
import { NodeHttpClient, NodeHttpServer } from "@effect/platform-node"
import type { AlertSink, Roadcar, RoadcarConfig } from "@roadcar/core"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as HttpClient from "effect/http/HttpClient"
import * as HttpMiddleware from "effect/http/HttpMiddleware"
import * as HttpRouter from "effect/http/HttpRouter"
import * as HttpServer from "effect/http/HttpServer"
import * as HttpServerError from "effect/http/HttpServerError"
import * as HttpServerRequest from "effect/http/HttpServerRequest"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as PrometheusMetrics from "effect/observability/PrometheusMetrics"
import type * as Scope from "effect/Scope"
import * as ChatRoute from "./ChatRoute.ts"
import { authorize, Gateway, layer as gatewayLayer, readiness, type Service, usableModels } from "./Gateway.ts"
import * as GatewayConfig from "./GatewayConfig.ts"
import * as GatewayError from "./GatewayError.ts"

// =============================================================================
// Routes
// =============================================================================

/**
 * The routes and the methods each accepts (anything else: 405).
 *
 * @category routes
 * @since 0.1.0
 */
export const routes: Readonly<Record<string, ReadonlyArray<string>>> = {
  "/v1/chat/completions": ["POST"],
  "/v1/models": ["GET", "HEAD"],
  "/health": ["GET", "HEAD"],
  "/ready": ["GET", "HEAD"],
  "/metrics": ["GET", "HEAD"]
}

const pathOf = (url: string): string => {
  const end = url.search(/[?#]/)
  const path = end === -1 ? url : url.slice(0, end)
  return path.length > 1 && path.endsWith("/") ? path.slice(0, -1) : path
}

// A refusal outside the chat route: its request line and count, then its answer, both with the
// request's id.
const refuse = (
  request: HttpServerRequest.HttpServerRequest,
  error: GatewayError.GatewayError,
  started: number,
  route = `${request.method} ${pathOf(request.url).slice(0, 200)}`
) => {
  const requestId = ChatRoute.requestIdOf(request.headers["x-request-id"])
  return Effect.as(
    GatewayError.recordRefusal(error, started, { request_id: requestId, route }),
    GatewayError.toResponse(error, { "x-request-id": requestId })
  )
}

const modelsHandler = (gateway: Service) =>
  Effect.gen(function* () {
    const request = yield* HttpServerRequest.HttpServerRequest
    const started = yield* Clock.currentTimeMillis
    return yield* Effect.map(authorize(gateway.keys, request), (key) => {
      const data = usableModels(gateway, key).map((id) => ({
        id,
        object: "model" as const,
        created: 0,
        owned_by: "roadcar"
      }))
      return HttpServerResponse.jsonUnsafe({ object: "list", data })
    }).pipe(
      // A refused listing is logged and counted like any refused request.
      Effect.catch((error) => refuse(request, error, started, "GET /v1/models"))
    )
  })

const readyHandler = (gateway: Service) =>
  Effect.map(readiness(gateway), (state) => {
    const notReady = Object.entries(state.models)
      .filter(([, model]) => !model.ready)
      .map(([name]) => name)
    return HttpServerResponse.jsonUnsafe(
      state.ready
        ? { status: "ready", models: state.models }
        : {
            status: "not_ready",
            message: `No upstream with a closed circuit for: ${notReady.join(", ")}`,
            models: state.models
          },
      { status: state.ready ? 200 : 503 }
    )
  })

const metricsHandler = Effect.map(PrometheusMetrics.format(), (body) =>
  HttpServerResponse.text(body, { contentType: "text/plain; version=0.0.4; charset=utf-8" })
)

// Anything the routes do not take: a HEAD of a GET route is that route (Node sends no body for HEAD:
// some load balancers probe with it); anything else a 404 or 405, logged and counted.
const fallbackHandler = (
  gets: Readonly<
    Record<string, Effect.Effect<HttpServerResponse.HttpServerResponse, never, HttpServerRequest.HttpServerRequest>>
  >
) =>
  Effect.gen(function* () {
    const request = yield* HttpServerRequest.HttpServerRequest
    const started = yield* Clock.currentTimeMillis
    const path = pathOf(request.url)
    const get = request.method === "HEAD" && Object.hasOwn(gets, path) ? gets[path] : undefined
    if (get !== undefined) return yield* get
    const allowed = routes[path]
    const error =
      allowed === undefined
        ? GatewayError.routeNotFound(request.method, path)
        : GatewayError.methodNotAllowed(request.method, path, allowed)
    return yield* refuse(request, error, started)
  })

/**
 * The routes as a router layer (needs `Gateway`).
 *
 * @category layers
 * @since 0.1.0
 */
export const Routes: Layer.Layer<never, never, HttpRouter.HttpRouter | Gateway> = HttpRouter.use((router) =>
  Effect.gen(function* () {
    const gateway = yield* Gateway
    yield* router.add("POST", "/v1/chat/completions", ChatRoute.handler.pipe(Effect.provideService(Gateway, gateway)))
    const gets = {
      "/v1/models": modelsHandler(gateway),
      "/health": Effect.succeed(HttpServerResponse.jsonUnsafe({ status: "ok" })),
      "/ready": readyHandler(gateway),
      "/metrics": metricsHandler
    }
    for (const [path, handler] of Object.entries(gets)) yield* router.add("GET", path as `/${string}`, handler)
    yield* router.add("*", "*", fallbackHandler(gets))
  })
)

// Node answers malformed HTTP (a bad request line, headers too large, a client too slow) itself, with a
// bare status line; these answers carry OpenAI error JSON like every other error of the gateway.
const protocolError = (error: NodeJS.ErrnoException): GatewayError.GatewayError => {
  switch (error.code) {
    case "HPE_HEADER_OVERFLOW":
      return GatewayError.invalidHttp(431, "The request headers are too large.")
    case "ERR_HTTP_REQUEST_TIMEOUT":
      return GatewayError.invalidHttp(408, "The request was not received in time.")
    default:
      return GatewayError.invalidHttp(400, "The request is not valid HTTP.")
  }
}

// Sockets whose request was answered before its body was read (a 401 or 413 sent before the upload
// ended): a parse error in the rest of that body closes the connection instead of answering twice.
const answeredEarly = new WeakSet<Duplex>()

// Writes an error answer (with its request id) on a socket Node's parser gave up on, and closes it.
const answerOnSocket = (socket: Duplex, error: GatewayError.GatewayError, requestId: string): void => {
  const body = JSON.stringify(GatewayError.toBody(error))
  let head = `HTTP/1.1 ${error.status} ${Http.STATUS_CODES[error.status]}\r\ncontent-type: application/json\r\nx-request-id: ${requestId}\r\n`
  for (const [name, value] of Object.entries(error.headers)) head += `${name}: ${value}\r\n`
  socket.end(`${head}content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`)
}

// Node's defaults let a slow client hold a connection for 60 s sending its headers and 300 s sending
// its body, checked only every 30 s (a slow-loris socket lasted 90 s and 330 s in the drills); these
// cut it (408, answered by the `clientError` handler) after 10 s and 30 s, checked every second.
const headersTimeoutMs = 10_000
const requestTimeoutMs = 30_000

// A Node server that, once closing, closes each keep-alive connection as soon as its response is
// done: `server.close()` only closes the connections idle at that moment, and would otherwise wait for
// the clients' keep-alive timeouts before the drain completes.
// Its own answers (refusals outside the routes) are logged and counted like any refusal, with the
// logger and metrics of `context`.
const makeNodeServer = (context: Context.Context<never>): Http.Server => {
  const run = Effect.runForkWith(context)
  // Node does not say when a request it refused began: the line's latency is 0.
  const record = (error: GatewayError.GatewayError, fields: Readonly<Record<string, string | null>>) =>
    run(Effect.flatMap(Clock.currentTimeMillis, (now) => GatewayError.recordRefusal(error, now, fields)))
  const server = Http.createServer({
    headersTimeout: headersTimeoutMs,
    requestTimeout: requestTimeoutMs,
    connectionsCheckingInterval: 1_000,
    // Node answers an HTTP/1.1 request without `Host` itself with a bare 400; the gateway does not
    // use `Host`, so such a request is served (or refused) by the routes like any other.
    requireHostHeader: false
  })
  server.on("clientError", (error: NodeJS.ErrnoException, socket: Duplex) => {
    // As Node's own handler does, a response already under way is never followed by a second answer
    // (it would corrupt it); unlike Node's, neither is a response that already finished. A client
    // that reset its connection has nobody left to answer or to log for.
    const response = (socket as Duplex & { readonly _httpMessage?: Http.ServerResponse | null })._httpMessage
    if (
      error.code === "ECONNRESET" ||
      !socket.writable ||
      response?.headersSent === true ||
      answeredEarly.has(socket)
    ) {
      socket.destroy()
      return
    }
    const refusal = protocolError(error)
    const requestId = ChatRoute.requestIdOf(undefined)
    answerOnSocket(socket, refusal, requestId)
    record(refusal, { request_id: requestId, parser_error: error.code ?? null })
  })
  // Without a listener Node drops a CONNECT request's connection without an answer.
  server.on("connect", (request: Http.IncomingMessage, socket: Duplex) => {
    const refusal = GatewayError.methodNotAllowed("CONNECT", request.url ?? "", ["GET", "POST"])
    const header = request.headers["x-request-id"]
    const requestId = ChatRoute.requestIdOf(typeof header === "string" ? header : undefined)
    answerOnSocket(socket, refusal, requestId)
    record(refusal, {
      request_id: requestId,
      route: `CONNECT ${(request.url ?? "").slice(0, 200)}`
    })
  })
  server.on("request", (request: Http.IncomingMessage, response: Http.ServerResponse) => {
    response.once("finish", () => {
      if (!request.complete) answeredEarly.add(request.socket)
    })
    response.once("close", () => {
      if (!server.listening) setImmediate(() => server.closeIdleConnections())
    })
  })
  return server
}

// The Node server layer, its refusals logged and counted with the logger and metrics of the layer's
// context.
const nodeServerLayer = (settings: {
  readonly host: string
  readonly port: number
  readonly drainTimeout: Duration.Duration
}) =>
  Layer.unwrap(
    Effect.map(Effect.context<never>(), (context) =>
      NodeHttpServer.layer(() => makeNodeServer(context), {
        host: settings.host,
        port: settings.port,
        gracefulShutdownTimeout: settings.drainTimeout
      })
    )
  )

// Failures outside the routes (a path the router cannot decode, an unexpected defect) as OpenAI JSON.
const routerFailure = (cause: Cause.Cause<unknown>) =>
  Effect.gen(function* () {
    if (Cause.hasInterruptsOnly(cause)) return yield* Effect.failCause(cause)
    const request = yield* HttpServerRequest.HttpServerRequest
    const failure = cause.reasons.find((reason) => reason._tag === "Fail")?.error
    if (HttpServerError.isHttpServerError(failure)) {
      if (failure.reason._tag === "RouteNotFound") {
        return GatewayError.toResponse(GatewayError.routeNotFound(request.method, pathOf(request.url)))
      }
      if (failure.reason._tag === "RequestParseError") {
        const error = GatewayError.invalidRequest("The request could not be read.", null)
        return yield* refuse(request, error, yield* Clock.currentTimeMillis)
      }
    }
    const requestId = ChatRoute.requestIdOf(request.headers["x-request-id"])
    yield* Effect.logError("unexpected failure in the gateway", cause).pipe(
      Effect.annotateLogs({ request_id: requestId })
    )
    return GatewayError.toResponse(GatewayError.internal(requestId), { "x-request-id": requestId })
  })

// The server span's name: `{method} {route}` for the gateway's own routes (as OpenTelemetry's HTTP
// conventions name server spans), the method alone for any other path (a bounded set of names).
const namedRoutes: ReadonlySet<string> = new Set([
  "POST /v1/chat/completions",
  "GET /v1/models",
  "GET /health",
  "GET /ready",
  "GET /metrics"
])
const spanName = (request: HttpServerRequest.HttpServerRequest): string => {
  const query = request.url.indexOf("?")
  const name = `${request.method} ${query === -1 ? request.url : request.url.slice(0, query)}`
  return namedRoutes.has(name) ? name : request.method
}

// The routes on the `HttpServer` in context, every failure answered as OpenAI error JSON.
const serveRoutes = Layer.unwrap(
  Effect.map(HttpRouter.toHttpEffect(Routes), (handler) =>
    HttpServer.serve(handler.pipe(Effect.catchCause(routerFailure)))
  )
)

// =============================================================================
// Layer
// =============================================================================

/**
 * How to run a gateway.
 *
 * @category options
 * @since 0.1.0
 */
export interface Options {
  /** A validated config (`RoadcarConfig.decode`, `GatewayConfig.load`). */
  readonly config: RoadcarConfig.RoadcarConfig
  /** Overrides the host (else `HOST`, `server.host`, `127.0.0.1`). */
  readonly host?: string | undefined
  /** Overrides the port (else `PORT`, `server.port`, `8787`); `0` picks a free port. */
  readonly port?: number | undefined
  /** Where `HOST` and `PORT` are read (default `process.env`). */
  readonly env?: GatewayConfig.Env | undefined
  /** The HTTP client of the providers (default `NodeHttpClient.layerUndici`: a keep-alive undici pool, 2.4x the requests per second of `fetch` in the gateway benchmark). */
  readonly httpClient?: Layer.Layer<HttpClient.HttpClient> | undefined
  /** Where alerts go, instead of the config's `alerts` (default: what `alerts` says: the log, the webhook). */
  readonly alertSink?: Layer.Layer<AlertSink.AlertSink> | undefined
  /**
   * Give this gateway its own metric registry, so its `/metrics` shows its traffic only (default
   * `false`: the process-wide registry, which an OTLP exporter also reads). Useful in tests.
   */
  readonly isolatedMetrics?: boolean | undefined
}

const logStart = Layer.effectDiscard(
  Effect.gen(function* () {
    const server = yield* HttpServer.HttpServer
    const gateway = yield* Gateway
    const address = server.address
    yield* Effect.logInfo("roadcar gateway listening").pipe(
      Effect.annotateLogs({
        url: HttpServer.formatAddress(address),
        host: gateway.settings.host,
        port: address._tag === "UnixPathAddress" ? null : address.port,
        models: [...gateway.models.keys()],
        upstreams: [...gateway.upstreams.values()]
          .filter((upstream) => [...gateway.models.values()].some((pipeline) => pipeline.upstreams.includes(upstream)))
          .map((upstream) => `${upstream.name} (${upstream.provider})`),
        keys: gateway.keys.configured ? (gateway.config.keys ?? []).map((key) => key.name) : []
      })
    )
    yield* Effect.addFinalizer(() =>
      Effect.logInfo("roadcar gateway stopping: draining in-flight requests").pipe(
        Effect.annotateLogs({ drain_timeout_ms: Duration.toMillis(gateway.settings.drainTimeout) })
      )
    )
    if (!gateway.keys.configured) {
      yield* Effect.logWarning(
        "no API keys configured: serving loopback callers only (127.0.0.1, ::1); add keys with `roadcar hash-key` to serve other hosts"
      )
    }
  })
)

/**
 * The gateway server: `Gateway` (with its stages) behind the Node HTTP server, listening until the
 * layer's scope closes, then draining in-flight requests for up to `server.drainTimeout`.
 *
 * @example
 * ```ts
 * import { NodeRuntime } from "@effect/platform-node"
 * import { Layer } from "effect"
 * import { GatewayServer } from "@roadcar/gateway"
 *
 * Layer.launch(GatewayServer.layer({ config: {} })).pipe(NodeRuntime.runMain)
 * ```
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (
  options: Options
): Layer.Layer<
  HttpServer.HttpServer | Gateway,
  RoadcarConfig.ConfigError | Roadcar.StoreError | HttpServerError.ServeError
> =>
  Layer.unwrap(
    Effect.gen(function* () {
      const settings = yield* Effect.fromResult(
        GatewayConfig.serverSettings(options.config, options.env ?? process.env, {
          host: options.host,
          port: options.port
        })
      )
      const server = nodeServerLayer(settings)
      const app = serveRoutes.pipe(
        Layer.provideMerge(server),
        Layer.provideMerge(
          gatewayLayer({
            config: options.config,
            settings,
            httpClient: options.httpClient ?? NodeHttpClient.layerUndici,
            alertSink: options.alertSink
          })
        )
      )
      const withLog = Layer.provideMerge(logStart, app).pipe(
        Layer.provide(Layer.succeed(HttpMiddleware.SpanNameGenerator, spanName))
      )
      return options.isolatedMetrics !== true
        ? withLog
        : withLog.pipe(Layer.provide(Layer.succeed(Metric.MetricRegistry, new Map())))
    })
  ) as Layer.Layer<
    HttpServer.HttpServer | Gateway,
    RoadcarConfig.ConfigError | Roadcar.StoreError | HttpServerError.ServeError
  >

/**
 * A started gateway.
 *
 * @category models
 * @since 0.1.0
 */
export interface Started {
  /** `http://127.0.0.1:<port>`; OpenAI clients use `${url}/v1`. */
  readonly url: string
  readonly port: number
  readonly gateway: Service
}

/**
 * Starts a gateway in the current scope (closed, and drained, with it) and returns its URL.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { GatewayServer } from "@roadcar/gateway"
 *
 * const program = Effect.gen(function*() {
 *   const { url } = yield* GatewayServer.start({ config: {}, port: 0 })
 *   const response = yield* Effect.promise(() => fetch(`${url}/health`))
 *   return response.status
 * })
 * Effect.runPromise(Effect.scoped(program)) // => 200
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const start = (
  options: Options
): Effect.Effect<Started, RoadcarConfig.ConfigError | Roadcar.StoreError | HttpServerError.ServeError, Scope.Scope> =>
  Effect.gen(function* () {
    const context = yield* Layer.build(layer(options))
    const server = Context.get(context, HttpServer.HttpServer)
    const address = server.address
    return {
      url: HttpServer.formatAddress(address),
      port: address._tag === "UnixPathAddress" ? 0 : address.port,
      gateway: Context.get(context, Gateway)
    }
  })
