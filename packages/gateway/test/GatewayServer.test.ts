import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { apiError, captureLogs, chatBody, client, post, quiet, rejection, startGateway } from "./utils.ts"

const json = (response: Response) => Effect.promise(() => response.json())
const call = (url: string, path: string, init?: RequestInit) => Effect.promise(() => fetch(`${url}${path}`, init))

const assertOpenAiError = (body: unknown, code: string) => {
  const error = (body as { error: Record<string, unknown> }).error
  assert.deepStrictEqual(Object.keys(error).sort(), ["code", "message", "param", "type"])
  assert.strictEqual(error["code"], code)
  assert.isString(error["message"])
}

describe("GatewayServer", () => {
  describe("routes", () => {
    it.live("GET /health, /ready, /v1/models and /metrics", () =>
      Effect.gen(function* () {
        const { url } = yield* startGateway({})
        const health = yield* call(url, "/health")
        assert.strictEqual(health.status, 200)
        assert.deepStrictEqual(yield* json(health), { status: "ok" })
        // Load balancers that probe with HEAD get the status without a body.
        for (const path of ["/health", "/ready"]) {
          const head = yield* call(url, path, { method: "HEAD" })
          assert.strictEqual(head.status, 200, path)
          assert.strictEqual(yield* Effect.promise(() => head.text()), "")
        }
        const ready = yield* call(url, "/ready")
        assert.strictEqual(ready.status, 200)
        assert.deepStrictEqual(yield* json(ready), {
          status: "ready",
          models: { chat: { ready: true, upstreams: { simulated: "Closed" } } }
        })
        const models = yield* Effect.promise(() => client(url).models.list())
        assert.deepStrictEqual(
          models.data.map((model) => [model.id, model.object]),
          [["chat", "model"]]
        )
        yield* Effect.promise(() => client(url).chat.completions.create(chatBody("count me")))
        const metrics = yield* call(url, "/metrics")
        assert.include(metrics.headers.get("content-type") ?? "", "text/plain")
        const text = yield* Effect.promise(() => metrics.text())
        assert.include(text, 'roadcar_requests_total{model="chat",outcome="success"} 1')
        assert.include(text, "# TYPE roadcar_request_duration_seconds histogram")
        assert.include(text, 'roadcar_request_duration_seconds_count{model="chat",outcome="success"} 1')
        assert.include(text, 'roadcar_gateway_overhead_seconds_count{model="chat"} 1')
      }).pipe(quiet)
    )

    it.live("404 for an unknown route, 405 with Allow for a wrong method, as OpenAI error JSON, each logged", () => {
      const logs = captureLogs()
      return Effect.gen(function* () {
        const { url } = yield* startGateway({})
        const missing = yield* call(url, "/v1/embeddings", { method: "POST", headers: { "x-request-id": "probe-1" } })
        assert.strictEqual(missing.status, 404)
        assert.strictEqual(missing.headers.get("x-request-id"), "probe-1")
        assertOpenAiError(yield* json(missing), "not_found")
        const wrong = yield* call(url, "/v1/chat/completions")
        assert.strictEqual(wrong.status, 405)
        assert.strictEqual(wrong.headers.get("allow"), "POST")
        assertOpenAiError(yield* json(wrong), "method_not_allowed")
        const deleteHealth = yield* call(url, "/health?x=1", { method: "DELETE" })
        assert.strictEqual(deleteHealth.status, 405)
        assert.strictEqual(deleteHealth.headers.get("allow"), "GET, HEAD")

        const refusals = logs.lines
          .filter((line) => line.includes('"message":"request"'))
          .map((line) => (JSON.parse(line) as { annotations: Record<string, unknown> }).annotations)
        assert.deepStrictEqual(
          refusals.map((line) => [line["route"], line["status"], line["http_status"], line["code"]]),
          [
            ["POST /v1/embeddings", "refused", 404, "not_found"],
            ["GET /v1/chat/completions", "refused", 405, "method_not_allowed"],
            ["DELETE /health", "refused", 405, "method_not_allowed"]
          ]
        )
        assert.strictEqual(refusals[0]?.["request_id"], "probe-1")
        const metrics = yield* Effect.promise(() => fetch(`${url}/metrics`).then((response) => response.text()))
        assert.include(metrics, 'roadcar_requests_refused_total{code="method_not_allowed"} 2')
      }).pipe(Effect.provide(logs.layer))
    })
  })

  describe("request errors", () => {
    it.live("404 for an unknown model, naming the available ones", () =>
      Effect.gen(function* () {
        const { url } = yield* startGateway({})
        const error = apiError(yield* rejection(() => client(url).chat.completions.create(chatBody("x", "gpt-9"))))
        assert.strictEqual(error.status, 404)
        assert.strictEqual(error.code, "model_not_found")
        assert.strictEqual(error.param, "model")
        assert.include(error.message, "chat")
      }).pipe(quiet)
    )

    it.live("400 for invalid JSON, and for schema errors naming the field path", () =>
      Effect.gen(function* () {
        const { url } = yield* startGateway({})
        const broken = yield* Effect.promise(() => post(url, '{"model": "chat", '))
        assert.strictEqual(broken.status, 400)
        assertOpenAiError(yield* json(broken), "invalid_json")

        const role = yield* Effect.promise(() =>
          post(url, JSON.stringify({ model: "chat", messages: [{ role: "bot", content: "x" }] }))
        )
        assert.strictEqual(role.status, 400)
        const roleBody = yield* json(role)
        assert.strictEqual(roleBody.error.param, "messages[0].role")
        assert.include(roleBody.error.message, "messages[0].role")

        const typo = yield* Effect.promise(() => post(url, JSON.stringify({ ...chatBody(), temprature: 0.2 })))
        const typoBody = yield* json(typo)
        assert.strictEqual(typo.status, 400)
        assert.strictEqual(typoBody.error.param, "temprature")
        assert.include(typoBody.error.message, 'did you mean "temperature"')

        const range = apiError(
          yield* rejection(() => client(url).chat.completions.create({ ...chatBody(), temperature: 7 }))
        )
        assert.strictEqual(range.status, 400)
        assert.strictEqual(range.param, "temperature")

        const empty = yield* Effect.promise(() => post(url, JSON.stringify({ model: "chat", messages: [] })))
        assert.strictEqual(empty.status, 400)
        assert.strictEqual((yield* json(empty)).error.param, "messages")

        const notObject = yield* Effect.promise(() => post(url, "[1,2,3]"))
        assert.strictEqual(notObject.status, 400)
        assert.isNull((yield* json(notObject)).error.param)

        // Counted by the code they were answered with.
        const metrics = yield* Effect.promise(() => fetch(`${url}/metrics`).then((response) => response.text()))
        assert.include(metrics, 'roadcar_requests_refused_total{code="invalid_json"} 1')
        assert.include(metrics, 'roadcar_requests_refused_total{code="invalid_request"} 5')
      }).pipe(quiet)
    )

    it.live("415 when the body is not declared as JSON", () =>
      Effect.gen(function* () {
        const { url } = yield* startGateway({})
        const form = yield* Effect.promise(() =>
          post(url, JSON.stringify(chatBody()), { "content-type": "application/x-www-form-urlencoded" })
        )
        assert.strictEqual(form.status, 415)
        assertOpenAiError(yield* json(form), "unsupported_media_type")
        const charset = yield* Effect.promise(() =>
          post(url, JSON.stringify(chatBody()), { "content-type": "application/json; charset=utf-8" })
        )
        assert.strictEqual(charset.status, 200)
      }).pipe(quiet)
    )

    it.live("413 over server.bodyLimitBytes: by Content-Length, and while reading an endless chunked body", () =>
      Effect.gen(function* () {
        const { url } = yield* startGateway({ server: { bodyLimitBytes: 2048 } })
        const big = JSON.stringify(chatBody("x".repeat(4096)))
        const declared = yield* Effect.promise(() => post(url, big))
        assert.strictEqual(declared.status, 413)
        assertOpenAiError(yield* json(declared), "payload_too_large")

        // An endless chunked body: refused once the limit is read, not buffered until it ends.
        const encoder = new TextEncoder()
        let sent = 0
        const endless = yield* Effect.promise(() =>
          fetch(`${url}/v1/chat/completions`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: new ReadableStream<Uint8Array>({
              pull(controller) {
                sent += 1000
                controller.enqueue(
                  encoder.encode(sent === 1000 ? `{"model":"chat","x":"${"y".repeat(980)}` : "y".repeat(1000))
                )
              }
            }),
            duplex: "half"
          } as RequestInit)
        )
        assert.strictEqual(endless.status, 413)
        assertOpenAiError(yield* json(endless), "payload_too_large")
        assert.isAbove(sent, 2048)

        const small = yield* Effect.promise(() => post(url, JSON.stringify(chatBody("small"))))
        assert.strictEqual(small.status, 200)
      }).pipe(quiet)
    )

    it.live("429 with Retry-After in whole seconds when Roadcar's own rate limit refuses", () =>
      Effect.gen(function* () {
        const { url } = yield* startGateway({
          rateLimit: { rules: [{ by: "global", requests: { limit: 1, window: "30 seconds" } }] }
        })
        yield* Effect.promise(() => client(url).chat.completions.create(chatBody()))
        const error = apiError(yield* rejection(() => client(url).chat.completions.create(chatBody())))
        assert.strictEqual(error.status, 429)
        assert.strictEqual(error.code, "rate_limit_exceeded")
        assert.strictEqual(error.type, "rate_limit_error")
        const retryAfter = Number(error.headers?.get("retry-after"))
        assert.isTrue(Number.isInteger(retryAfter) && retryAfter >= 29 && retryAfter <= 30, String(retryAfter))
      }).pipe(quiet)
    )
  })
})
