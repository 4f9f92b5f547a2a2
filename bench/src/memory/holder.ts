/**
 * Opens many streamed chat completions and holds them open: the client side of the memory benchmark.
 *
 * Each stream is its own connection (`agent: false`) and counts as open once its first SSE event
 * arrives (the gateway has answered and the upstream stream is flowing). Opening is paced: at most
 * `concurrency` streams are being opened at a time, so the listen backlog never overflows. `closeAll`
 * destroys every connection (the client going away) and resolves once all of them are closed.
 */
import * as Http from "node:http"

/** How to open the streams. */
export interface Options {
  /** The gateway's base URL. */
  readonly url: string
  readonly count: number
  /** Streams being opened at once (default 200). */
  readonly concurrency?: number | undefined
  /** The body of stream `i` (a streaming chat request). */
  readonly body: (i: number) => string
  readonly headers: Readonly<Record<string, string>>
  /** Called after each stream opens, with the number open so far. */
  readonly onOpen?: ((open: number) => void) | undefined
  /** Give up on a stream that has not opened in this time (default 20 s). */
  readonly timeoutMs?: number | undefined
}

/** Streams held open. */
export interface Held {
  readonly open: number
  /** Streams that failed to open (status, error, timeout), with the first reason. */
  readonly failed: number
  readonly firstFailure: string | undefined
  readonly seconds: number
  /** Destroys every connection; resolves when all are closed. */
  readonly closeAll: () => Promise<void>
}

/** Opens `options.count` streams and resolves once each has opened or failed. */
export const openStreams = async (options: Options): Promise<Held> => {
  const started = performance.now()
  const requests: Array<Http.ClientRequest> = []
  let open = 0
  let failed = 0
  let firstFailure: string | undefined
  const endpoint = new URL("/v1/chat/completions", options.url)

  const openOne = (i: number): Promise<void> =>
    new Promise((resolve) => {
      let settled = false
      const settle = (problem?: string) => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        if (problem === undefined) {
          open++
          options.onOpen?.(open)
        } else {
          failed++
          firstFailure ??= problem
          request.destroy()
        }
        resolve()
      }
      const body = options.body(i)
      const request = Http.request(endpoint, {
        method: "POST",
        agent: false,
        headers: { ...options.headers, "content-length": String(Buffer.byteLength(body)) }
      })
      const timer = setTimeout(() => settle("timed out before the first event"), options.timeoutMs ?? 20_000)
      request.on("response", (response) => {
        if (response.statusCode !== 200) {
          response.resume()
          return settle(`status ${response.statusCode}`)
        }
        response.on("data", (data: Buffer) => {
          if (data.includes("data: ")) settle()
        })
        response.on("error", () => {})
        response.on("end", () => settle("the stream ended before it was held"))
      })
      request.on("error", (error) => settle(error.message))
      requests.push(request)
      request.end(body)
    })

  let next = 0
  const worker = async () => {
    while (next < options.count) await openOne(next++)
  }
  await Promise.all(Array.from({ length: Math.min(options.count, options.concurrency ?? 200) }, worker))
  return {
    open,
    failed,
    firstFailure,
    seconds: (performance.now() - started) / 1000,
    closeAll: () =>
      Promise.all(
        requests.map(
          (request) =>
            new Promise<void>((resolve) => {
              if (request.closed) return resolve()
              request.once("close", () => resolve())
              request.destroy()
            })
        )
      ).then(() => undefined)
  }
}
