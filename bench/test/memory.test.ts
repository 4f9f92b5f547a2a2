import * as Http from "node:http"
import { assert, describe, it } from "@effect/vitest"
import { openStreams } from "../src/memory/holder.ts"

// A server that answers each stream with one event and then holds it open (or fails every request).
const serve = async (status: number) => {
  let connections = 0
  let closed = 0
  const server = Http.createServer((request, response) => {
    request.resume()
    request.on("end", () => {
      if (status !== 200) return void response.writeHead(status).end()
      response.writeHead(200, { "content-type": "text/event-stream" })
      response.write('data: {"choices":[]}\n\n')
    })
  })
  server.on("connection", (socket) => {
    connections++
    socket.on("close", () => closed++)
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const address = server.address()
  const port = typeof address === "object" && address !== null ? address.port : 0
  return {
    url: `http://127.0.0.1:${port}`,
    connections: () => connections,
    closed: () => closed,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      })
  }
}

describe("holder", () => {
  it("opens every stream on its own connection, holds them, and closes them all", async () => {
    const server = await serve(200)
    try {
      const opened: Array<number> = []
      const held = await openStreams({
        url: server.url,
        count: 30,
        concurrency: 7,
        body: (i) => JSON.stringify({ i }),
        headers: { "content-type": "application/json" },
        onOpen: (open) => opened.push(open)
      })
      assert.strictEqual(held.open, 30)
      assert.strictEqual(held.failed, 0)
      assert.deepStrictEqual(
        opened,
        Array.from({ length: 30 }, (_, i) => i + 1)
      )
      assert.strictEqual(server.connections(), 30)
      assert.strictEqual(server.closed(), 0)
      await held.closeAll()
      for (let i = 0; i < 100 && server.closed() < 30; i++) await new Promise((resolve) => setTimeout(resolve, 10))
      assert.strictEqual(server.closed(), 30)
    } finally {
      await server.close()
    }
  })

  it("counts streams that fail to open, with the first reason", async () => {
    const server = await serve(500)
    try {
      const held = await openStreams({ url: server.url, count: 5, body: () => "{}", headers: {} })
      assert.strictEqual(held.open, 0)
      assert.strictEqual(held.failed, 5)
      assert.strictEqual(held.firstFailure, "status 500")
      await held.closeAll()
    } finally {
      await server.close()
    }
  })
})
