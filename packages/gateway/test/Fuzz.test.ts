/**
 * Bad input, generated: random bodies, headers, paths and methods never get a 5xx, and every error
 * is an OpenAI error JSON.
 */
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import * as fc from "fast-check"
import { ApiKeys } from "../src/index.ts"
import { captureLogs, startGateway } from "./utils.ts"

const key = "sk-fuzz-0123456789"
const runs = Number(process.env["FUZZ_RUNS"] ?? 100)

let url = ""
let scope: Scope.Closeable | undefined

beforeAll(async () => {
  const opened = Scope.makeUnsafe()
  scope = opened
  const started = await Effect.runPromise(
    startGateway({
      models: { chat: { upstream: "simulated" }, other: { upstream: "simulated" } },
      keys: [{ name: "fuzz", sha256: ApiKeys.hash(key), models: ["chat"] }],
      server: { bodyLimitBytes: 4096 }
    }).pipe(Scope.provide(opened), Effect.provide(captureLogs().layer))
  )
  url = started.url
})

afterAll(async () => {
  if (scope) await Effect.runPromise(Scope.close(scope, Exit.void))
})

const printable = fc
  .array(fc.integer({ min: 0x20, max: 0x7e }), { maxLength: 40 })
  .map((codes) => String.fromCharCode(...codes))

// Checks one response: never 5xx; a 4xx is OpenAI error JSON; a 2xx is a completion or a known route.
const check = async (response: Response, label: string): Promise<void> => {
  const text = await response.text()
  assert.isBelow(response.status, 500, `${label}: ${response.status} ${text}`)
  if (response.status >= 400) {
    assert.include(response.headers.get("content-type") ?? "", "application/json", label)
    const body = JSON.parse(text) as { error?: { message?: unknown; type?: unknown } }
    assert.isString(body.error?.message, label)
    assert.isString(body.error?.type, label)
  }
}

const validRequest = { model: "chat", messages: [{ role: "user", content: "hi" }] }

const bodies = fc.oneof(
  fc.string({ maxLength: 200 }),
  fc.json({ maxDepth: 3 }),
  // a valid request with one field replaced by anything
  fc
    .tuple(
      fc.constantFrom("model", "messages", "temperature", "stream", "max_tokens", "n", "stop", "tools", "extra"),
      fc.jsonValue({ maxDepth: 2 })
    )
    .map(([field, value]) => JSON.stringify({ ...validRequest, [field]: value })),
  // messages with random shapes
  fc
    .array(
      fc.dictionary(fc.constantFrom("role", "content", "name", "tool_calls", "x"), fc.jsonValue({ maxDepth: 2 })),
      {
        maxLength: 3
      }
    )
    .map((messages) => JSON.stringify({ model: "chat", messages })),
  // too large
  fc.integer({ min: 4097, max: 9000 }).map((size) => JSON.stringify({ ...validRequest, pad: "x".repeat(size) }))
)

describe("bad input (fast-check)", () => {
  it("random bodies: never a 5xx; errors are OpenAI JSON", async () => {
    await fc.assert(
      fc.asyncProperty(bodies, fc.boolean(), async (body, stream) => {
        const text = stream && body.startsWith("{") ? body.replace(/^\{/, '{"stream":true,') : body
        const response = await fetch(`${url}/v1/chat/completions`, {
          method: "POST",
          headers: { "content-type": "application/json", authorization: `Bearer ${key}` },
          body: text
        })
        await check(response, text.slice(0, 200))
      }),
      { numRuns: runs }
    )
  })

  it("random headers: never a 5xx; errors are OpenAI JSON", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.option(
          printable.map((value) => `application/${value}`),
          { nil: undefined }
        ),
        fc.option(
          fc.oneof(
            printable,
            printable.map((value) => `Bearer ${value}`),
            fc.constant(`Bearer ${key}`)
          ),
          {
            nil: undefined
          }
        ),
        fc.option(printable, { nil: undefined }),
        fc.option(fc.integer({ min: 0, max: 100_000 }), { nil: undefined }),
        async (contentType, authorization, requestId, model) => {
          const headers: Record<string, string> = {}
          if (contentType !== undefined) headers["content-type"] = contentType
          if (authorization !== undefined) headers["authorization"] = authorization
          if (requestId !== undefined) headers["x-request-id"] = requestId
          const body = JSON.stringify({ ...validRequest, model: model === undefined ? "chat" : `m${model}` })
          const response = await fetch(`${url}/v1/chat/completions`, { method: "POST", headers, body })
          await check(response, JSON.stringify(headers))
        }
      ),
      { numRuns: runs }
    )
  })

  it("random paths and methods: never a 5xx; unknown paths are 404 and wrong methods 405, as JSON", async () => {
    const segment = fc.oneof(
      fc.constantFrom("v1", "chat", "completions", "models", "health", "ready", "metrics", "..", ".", "", "%2e", "%00"),
      fc.stringMatching(/^[A-Za-z0-9._~%-]{1,12}$/)
    )
    await fc.assert(
      fc.asyncProperty(
        fc.array(segment, { minLength: 1, maxLength: 4 }),
        fc.constantFrom("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"),
        fc.option(printable.map(encodeURIComponent), { nil: undefined }),
        async (segments, method, query) => {
          const path = `/${segments.join("/")}${query === undefined ? "" : `?q=${query}`}`
          const response = await fetch(`${url}${path}`, {
            method,
            headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
            ...(method === "GET" ? {} : { body: "{}" })
          })
          await check(response, `${method} ${path}`)
          if (response.status === 200) {
            const pathname = new URL(`${url}${path}`).pathname.replace(/\/+/g, "/").replace(/(.)\/$/, "$1")
            assert.include(["/health", "/ready", "/metrics", "/v1/models"], pathname, `${method} ${path}`)
          }
        }
      ),
      { numRuns: runs }
    )
  })
})
