/**
 * Input that never reaches a route: malformed HTTP and bodies nested too deeply still get OpenAI
 * error JSON, never a bare status line or a 500.
 */
import * as Net from "node:net"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { captureLogs, post, quiet, startGateway } from "./utils.ts"

// Sends raw bytes and reads whatever comes back until the server closes (or 2 s pass).
const raw = (port: number, bytes: string) =>
  Effect.promise(
    () =>
      new Promise<string>((resolve) => {
        const socket = Net.connect(port, "127.0.0.1")
        let answer = ""
        const done = () => {
          socket.destroy()
          resolve(answer)
        }
        socket.setTimeout(2000, done)
        socket.on("data", (chunk) => {
          answer += chunk.toString("utf8")
        })
        socket.on("end", done)
        socket.on("error", done)
        socket.write(bytes)
      })
  )

const statusAndBody = (answer: string) => {
  const [head = "", body = ""] = answer.split("\r\n\r\n")
  return { status: Number(head.split(" ")[1]), head: head.toLowerCase(), body }
}

describe("protocol errors", () => {
  it.live(
    "malformed HTTP gets a JSON 400, oversized headers a JSON 431, CONNECT a 405; each logged and counted",
    () => {
      const logs = captureLogs()
      return Effect.gen(function* () {
        const { port, url } = yield* startGateway({})
        for (const bytes of [
          "(l@\r\n\r\n",
          "GET / HTTP/9.9.9\r\n\r\n",
          "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: x\r\n\r\n"
        ]) {
          const answer = statusAndBody(yield* raw(port, bytes))
          assert.strictEqual(answer.status, 400, JSON.stringify(bytes))
          assert.include(answer.head, "content-type: application/json")
          assert.strictEqual(JSON.parse(answer.body).error.code, "invalid_http")
          assert.match(answer.head, /x-request-id: req_[0-9a-z]+/)
        }
        const huge = statusAndBody(
          yield* raw(port, `GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(20_000)}\r\n\r\n`)
        )
        assert.strictEqual(huge.status, 431)
        assert.strictEqual(JSON.parse(huge.body).error.type, "invalid_request_error")
        const connect = statusAndBody(yield* raw(port, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n"))
        assert.strictEqual(connect.status, 405)
        assert.include(connect.head, "allow: get, post")
        assert.strictEqual(JSON.parse(connect.body).error.code, "method_not_allowed")

        // Answered outside the routes, yet each writes the same request line as any refusal, and counts.
        const metrics = yield* Effect.promise(() => fetch(`${url}/metrics`).then((response) => response.text()))
        const refusals = logs.lines
          .map((line) => JSON.parse(line) as { message: string; level: string; annotations: Record<string, unknown> })
          .filter((line) => line.message === "request")
        assert.deepStrictEqual(
          refusals.map((line) => [
            line.level,
            line.annotations["status"],
            line.annotations["http_status"],
            line.annotations["code"]
          ]),
          [
            ["WARN", "refused", 400, "invalid_http"],
            ["WARN", "refused", 400, "invalid_http"],
            ["WARN", "refused", 400, "invalid_http"],
            ["WARN", "refused", 431, "invalid_http"],
            ["WARN", "refused", 405, "method_not_allowed"]
          ]
        )
        assert.match(String(refusals[0]?.annotations["parser_error"]), /^HPE_/)
        assert.strictEqual(refusals[4]?.annotations["route"], "CONNECT example.com:443")
        for (const line of refusals) assert.match(String(line.annotations["request_id"]), /^req_/)
        assert.include(metrics, 'roadcar_requests_refused_total{code="invalid_http"} 4')
        assert.include(metrics, 'roadcar_requests_refused_total{code="method_not_allowed"} 1')
      }).pipe(Effect.scoped, Effect.provide(logs.layer))
    }
  )

  it.live("a body nested deeper than the limit is a 400 that says so, not a 500", () =>
    Effect.gen(function* () {
      const { url } = yield* startGateway({})
      const deep = `${"[".repeat(5000)}${"]".repeat(5000)}`
      for (const body of [
        `{"model":"chat","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f","parameters":${deep}}}]}`,
        `{"model":"chat","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_schema","json_schema":{"name":"s","schema":${deep}}}}`
      ]) {
        const response = yield* Effect.promise(() => post(url, body))
        assert.strictEqual(response.status, 400)
        const json = (yield* Effect.promise(() => response.json())) as { error: { message: string } }
        assert.match(json.error.message, /nested more than 128 levels/)
      }
      const shallow = `{"model":"chat","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_schema","json_schema":{"name":"s","schema":${"[".repeat(100)}${"]".repeat(100)}}}}`
      assert.strictEqual((yield* Effect.promise(() => post(url, shallow))).status, 200)
    }).pipe(Effect.scoped, quiet)
  )
})
