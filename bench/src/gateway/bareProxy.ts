/**
 * A minimal reverse proxy on bare `node:http`: the ceiling for any Node.js gateway.
 *
 * For each request it reads the body, parses it as JSON (a gateway must look at the request) and
 * serialises it again, forwards it to the upstream's `/v1/chat/completions` and pipes the status,
 * content type and body (JSON or SSE) back. A client that goes away cancels the upstream request.
 * Nothing else: no auth, no limits, no retries, no logs. The upstream call is made with
 * `http.request` over a keep-alive agent (`client: "http"`, the default and the faster), or with the
 * global `fetch` (undici, what Effect's `FetchHttpClient` and so the gateway use).
 */
import * as Http from "node:http"

/** A running bare proxy. */
export interface BareProxy {
  readonly url: string
  readonly port: number
  readonly close: () => Promise<void>
}

/** How the proxy calls the upstream. */
export type Client = "http" | "fetch"

/** Starts the proxy on 127.0.0.1 (`port` 0: a free port) in front of `upstreamUrl`. */
export const start = (upstreamUrl: string, port = 0, client: Client = "http"): Promise<BareProxy> => {
  const upstream = new URL(upstreamUrl)
  const endpoint = new URL("/v1/chat/completions", upstream).href
  const agent = new Http.Agent({ keepAlive: true, maxSockets: Number.POSITIVE_INFINITY })

  const forwardWithFetch = (payload: string, response: Http.ServerResponse) => {
    const controller = new AbortController()
    response.on("close", () => {
      if (!response.writableFinished) controller.abort()
    })
    fetch(endpoint, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: payload,
      signal: controller.signal
    })
      .then(async (answer) => {
        const headers: Http.OutgoingHttpHeaders = {
          "content-type": answer.headers.get("content-type") ?? "application/json"
        }
        const length = answer.headers.get("content-length")
        if (length !== null) headers["content-length"] = length
        response.writeHead(answer.status, headers)
        if (answer.body !== null) for await (const part of answer.body) response.write(part)
        response.end()
      })
      .catch(() => {
        if (response.headersSent) return void response.destroy()
        response.writeHead(502, { "content-type": "application/json" }).end()
      })
  }

  const forwardWithHttp = (payload: string, response: Http.ServerResponse) => {
    const forward = Http.request(
      {
        host: upstream.hostname,
        port: upstream.port,
        method: "POST",
        path: "/v1/chat/completions",
        agent,
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(payload) }
      },
      (answer) => {
        const headers: Http.OutgoingHttpHeaders = {
          "content-type": answer.headers["content-type"] ?? "application/json"
        }
        const length = answer.headers["content-length"]
        if (length !== undefined) headers["content-length"] = length
        response.writeHead(answer.statusCode ?? 502, headers)
        answer.pipe(response)
      }
    )
    forward.on("error", () => {
      if (!response.headersSent) response.writeHead(502, { "content-type": "application/json" })
      response.end()
    })
    response.on("close", () => {
      if (!response.writableFinished) forward.destroy()
    })
    forward.end(payload)
  }

  const server = Http.createServer((request, response) => {
    const parts: Array<Buffer> = []
    request.on("data", (part: Buffer) => parts.push(part))
    request.on("end", () => {
      let payload: string
      try {
        payload = JSON.stringify(JSON.parse(Buffer.concat(parts).toString("utf8")))
      } catch {
        response.writeHead(400, { "content-type": "application/json" }).end('{"error":"invalid json"}')
        return
      }
      if (client === "fetch") forwardWithFetch(payload, response)
      else forwardWithHttp(payload, response)
    })
  })
  return new Promise((resolve, reject) => {
    server.once("error", reject)
    server.listen(port, "127.0.0.1", () => {
      const address = server.address()
      const bound = typeof address === "object" && address !== null ? address.port : port
      resolve({
        url: `http://127.0.0.1:${bound}`,
        port: bound,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done())
            server.closeAllConnections()
            agent.destroy()
          })
      })
    })
  })
}
