/**
 * What an `openai` client sees for each fault of the upstream, and how many attempts the upstream saw.
 */
import { assert, describe, it } from "@effect/vitest"
import { Behaviour, FakeUpstream, Script } from "@roadcar/testing"
import { Effect } from "effect"
import {
  apiError,
  captureLogs,
  chatBody,
  client,
  collect,
  fakeConfig,
  quiet,
  rejection,
  startGateway
} from "./utils.ts"

const single = (fake: FakeUpstream.Service, overrides: Record<string, unknown> = {}) =>
  startGateway(fakeConfig({ primary: fake }, { chat: { upstream: "primary" } }, overrides))

const failJson = (url: string, content = "hello") =>
  Effect.map(
    rejection(() => client(url).chat.completions.create(chatBody(content))),
    apiError
  )

const streamOf = (url: string, content = "one two three four five six") =>
  Effect.promise(() =>
    client(url).chat.completions.create({ ...chatBody(content), stream: true, stream_options: { include_usage: true } })
  ).pipe(Effect.flatMap((stream) => Effect.promise(() => collect(stream))))

describe("upstream faults", () => {
  describe("429", () => {
    it.live("with Retry-After beyond the deadline: 503 with Retry-After, after one attempt", () =>
      Effect.gen(function* () {
        const fake = yield* FakeUpstream.make({ behaviour: Behaviour.rateLimited({ retryAfterSeconds: 2 }) })
        const { url } = yield* single(fake, {
          timeouts: { attempt: "400 millis", firstChunk: "400 millis", chunkGap: "200 millis", total: "1 second" }
        })
        const error = yield* failJson(url)
        assert.strictEqual(error.status, 503)
        assert.strictEqual(error.code, "upstream_rate_limited")
        assert.strictEqual(error.type, "upstream_error")
        assert.strictEqual(error.headers?.get("retry-after"), "2")
        assert.strictEqual((yield* fake.attempts).length, 1)
      }).pipe(quiet)
    )

    it.live("with a short retry-after-ms: waits that long, retries, and answers", () =>
      Effect.gen(function* () {
        const fake = yield* FakeUpstream.make({
          behaviour: Script.sequence([Behaviour.rateLimited({ retryAfterMs: 60 })])
        })
        const { url } = yield* single(fake)
        const { data, response } = yield* Effect.promise(() =>
          client(url).chat.completions.create(chatBody("patience")).withResponse()
        )
        assert.strictEqual(data.choices[0]?.message.content, "echo: patience")
        assert.strictEqual(response.headers.get("x-roadcar-attempts"), "2")
        const attempts = yield* fake.attempts
        assert.deepStrictEqual(
          attempts.map((attempt) => attempt.fault),
          ["429", "ok"]
        )
        assert.isAtLeast(attempts[1]!.at - attempts[0]!.at, 55)
      }).pipe(quiet)
    )

    it.live("without Retry-After, always: every attempt is made, then 503 without Retry-After", () =>
      Effect.gen(function* () {
        const fake = yield* FakeUpstream.make({ behaviour: Behaviour.rateLimited() })
        const { url } = yield* single(fake)
        const error = yield* failJson(url)
        assert.strictEqual(error.status, 503)
        assert.strictEqual(error.code, "upstream_rate_limited")
        assert.isNull(error.headers?.get("retry-after") ?? null)
        assert.strictEqual((yield* fake.attempts).length, 3)
      }).pipe(quiet)
    )
  })

  describe("5xx and connection failures", () => {
    it.live("500 once, then healthy: the retry answers", () =>
      Effect.gen(function* () {
        const fake = yield* FakeUpstream.make({ behaviour: Script.sequence([Behaviour.status(500)]) })
        const { url } = yield* single(fake)
        const { data, response } = yield* Effect.promise(() =>
          client(url).chat.completions.create(chatBody("again")).withResponse()
        )
        assert.strictEqual(data.choices[0]?.message.content, "echo: again")
        assert.strictEqual(response.headers.get("x-roadcar-attempts"), "2")
        assert.strictEqual(response.headers.get("x-roadcar-upstream"), "primary")
        assert.deepStrictEqual(
          (yield* fake.attempts).map((attempt) => attempt.fault),
          ["500", "ok"]
        )
      }).pipe(quiet)
    )

    it.live("503 always: 502 after every attempt, for JSON and for a stream (JSON error, not SSE)", () =>
      Effect.gen(function* () {
        const fake = yield* FakeUpstream.make({ behaviour: Behaviour.status(503) })
        const { url } = yield* single(fake)
        const error = yield* failJson(url)
        assert.strictEqual(error.status, 502)
        assert.strictEqual(error.code, "upstream_unavailable")
        assert.include(error.message, "primary: upstream unavailable (503)")
        assert.strictEqual((yield* fake.attempts).length, 3)
        const streamError = apiError(
          yield* rejection(() => client(url).chat.completions.create({ ...chatBody(), stream: true }))
        )
        assert.strictEqual(streamError.status, 502)
        assert.strictEqual(streamError.code, "upstream_unavailable")
        assert.strictEqual((yield* fake.attempts).length, 6)
      }).pipe(quiet)
    )

    it.live("connection reset: 502 upstream_connection_failed after every attempt", () =>
      Effect.gen(function* () {
        const fake = yield* FakeUpstream.make({ behaviour: Behaviour.reset() })
        const { url } = yield* single(fake)
        const error = yield* failJson(url)
        assert.strictEqual(error.status, 502)
        assert.strictEqual(error.code, "upstream_connection_failed")
        assert.strictEqual((yield* fake.attempts).length, 3)
      }).pipe(quiet)
    )

    it.live("malformed JSON answer: 502 upstream_malformed_output after every attempt", () =>
      Effect.gen(function* () {
        const fake = yield* FakeUpstream.make({ behaviour: Behaviour.malformedJson() })
        const { url } = yield* single(fake)
        const error = yield* failJson(url)
        assert.strictEqual(error.status, 502)
        assert.strictEqual(error.code, "upstream_malformed_output")
        assert.strictEqual((yield* fake.attempts).length, 3)
      }).pipe(quiet)
    )
  })

  describe("timeouts", () => {
    it.live("a hanging upstream: 504 after the attempt timeout, one attempt (timeouts move on, not retry)", () =>
      Effect.gen(function* () {
        const fake = yield* FakeUpstream.make({ behaviour: Behaviour.hang() })
        const { url } = yield* single(fake, {
          timeouts: { attempt: "150 millis", firstChunk: "150 millis", chunkGap: "150 millis", total: "2 seconds" }
        })
        const started = Date.now()
        const error = yield* failJson(url)
        assert.strictEqual(error.status, 504)
        assert.strictEqual(error.code, "upstream_timeout")
        assert.isBelow(Date.now() - started, 1500)
        assert.strictEqual((yield* fake.attempts).length, 1)
      }).pipe(quiet)
    )

    it.live("a hanging primary falls back to the backup", () =>
      Effect.gen(function* () {
        const primary = yield* FakeUpstream.make({ behaviour: Behaviour.hang() })
        const backup = yield* FakeUpstream.make()
        const { url } = yield* startGateway(
          fakeConfig(
            { primary, backup },
            { chat: { upstream: "primary", fallbacks: [{ upstream: "backup" }] } },
            {
              timeouts: { attempt: "150 millis", firstChunk: "150 millis", chunkGap: "150 millis", total: "2 seconds" }
            }
          )
        )
        const { data, response } = yield* Effect.promise(() =>
          client(url).chat.completions.create(chatBody("rescued")).withResponse()
        )
        assert.strictEqual(data.choices[0]?.message.content, "echo: rescued")
        assert.strictEqual(response.headers.get("x-roadcar-upstream"), "backup")
        assert.strictEqual(response.headers.get("x-roadcar-fallback"), "TimedOut")
        assert.strictEqual((yield* primary.attempts).length, 1)
      }).pipe(quiet)
    )

    it.live("a slow first chunk within the limit streams normally", () =>
      Effect.gen(function* () {
        const fake = yield* FakeUpstream.make({ behaviour: Behaviour.slowFirstChunk(100) })
        const { url } = yield* single(fake)
        const { text, error } = yield* streamOf(url, "slow start")
        assert.isUndefined(error)
        assert.strictEqual(text, "echo: slow start")
        assert.strictEqual((yield* fake.attempts).length, 1)
      }).pipe(quiet)
    )

    it.live("a first chunk later than the limit: 504 as JSON before any SSE, or the fallback answers", () =>
      Effect.gen(function* () {
        const primary = yield* FakeUpstream.make({ behaviour: Behaviour.slowFirstChunk(1_000) })
        const backup = yield* FakeUpstream.make()
        const timeouts = { attempt: "150 millis", firstChunk: "150 millis", chunkGap: "150 millis", total: "2 seconds" }
        const alone = yield* startGateway(fakeConfig({ primary }, { chat: { upstream: "primary" } }, { timeouts }))
        const error = apiError(
          yield* rejection(() => client(alone.url).chat.completions.create({ ...chatBody(), stream: true }))
        )
        assert.strictEqual(error.status, 504)
        assert.strictEqual(error.code, "upstream_timeout")
        const chained = yield* startGateway(
          fakeConfig(
            { primary, backup },
            { chat: { upstream: "primary", fallbacks: [{ upstream: "backup" }] } },
            { timeouts }
          )
        )
        const { data, response } = yield* Effect.promise(() =>
          client(chained.url)
            .chat.completions.create({ ...chatBody("plan b"), stream: true })
            .withResponse()
        )
        assert.strictEqual(response.headers.get("x-roadcar-upstream"), "backup")
        assert.strictEqual(response.headers.get("x-roadcar-fallback"), "TimedOut")
        const { text, error: streamError } = yield* Effect.promise(() => collect(data))
        assert.isUndefined(streamError)
        assert.strictEqual(text, "echo: plan b")
      }).pipe(quiet)
    )
  })

  describe("after the first chunk", () => {
    it.live("a stream cut mid-answer ends with an SSE error event and no [DONE]; the client sees an error", () =>
      Effect.gen(function* () {
        const fake = yield* FakeUpstream.make({ behaviour: Behaviour.cutAfter(2) })
        const { url } = yield* single(fake)
        const { text, error } = yield* streamOf(url, "one two three four five six seven eight")
        assert.strictEqual(text, "echo: one two three ")
        const failure = apiError(error)
        assert.strictEqual(failure.type, "upstream_error")
        assert.oneOf(failure.code, ["upstream_connection_failed", "upstream_malformed_output"])
        assert.strictEqual((yield* fake.attempts).length, 1)
        const raw = yield* Effect.promise(() =>
          fetch(`${url}/v1/chat/completions`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ ...chatBody("one two three four five six seven eight"), stream: true })
          }).then((response) => response.text())
        )
        const events = raw.split("\n\n").filter((event) => event !== "")
        assert.notInclude(raw, "[DONE]")
        const last = JSON.parse(events.at(-1)!.slice("data: ".length))
        assert.strictEqual(last.error.type, "upstream_error")
        assert.include(last.error.message, "incomplete")
      }).pipe(quiet)
    )

    it.live("a stalled stream ends with an upstream_timeout error event after the chunk gap, logged as failed", () => {
      const logs = captureLogs()
      return Effect.gen(function* () {
        const fake = yield* FakeUpstream.make({ behaviour: Behaviour.stallAfter(1) })
        const { url } = yield* single(fake)
        const started = Date.now()
        const { text, error } = yield* streamOf(url, "one two three four five six")
        assert.strictEqual(text, "echo: one ")
        assert.strictEqual(apiError(error).code, "upstream_timeout")
        assert.isBelow(Date.now() - started, 1500)
        assert.strictEqual((yield* fake.attempts).length, 1)
        const request = logs.lines.find((line) => line.includes('"message":"request"')) ?? ""
        assert.include(request, '"status":"error"')
        assert.include(request, "chunk-gap")
      }).pipe(Effect.provide(logs.layer))
    })

    it.live("a malformed chunk ends with an upstream_malformed_output error event", () =>
      Effect.gen(function* () {
        const fake = yield* FakeUpstream.make({ behaviour: Behaviour.malformedChunk(1) })
        const { url } = yield* single(fake)
        const { text, error } = yield* streamOf(url, "one two three four five six")
        assert.strictEqual(text, "echo: one ")
        assert.strictEqual(apiError(error).code, "upstream_malformed_output")
      }).pipe(quiet)
    )

    it.live("a complete stream without [DONE] is finished and gets its [DONE] from the gateway", () =>
      Effect.gen(function* () {
        const fake = yield* FakeUpstream.make({ behaviour: Behaviour.noDone() })
        const { url } = yield* single(fake)
        const { text, error, chunks } = yield* streamOf(url, "all of it")
        assert.isUndefined(error)
        assert.strictEqual(text, "echo: all of it")
        assert.isAbove(chunks.at(-1)?.usage?.total_tokens ?? 0, 0)
        assert.strictEqual((yield* fake.attempts)[0]?.fault, "no_done")
      }).pipe(quiet)
    )
  })

  describe("requests no upstream can serve", () => {
    it.live("context length exceeded: 400 context_length_exceeded, not retried", () =>
      Effect.gen(function* () {
        const fake = yield* FakeUpstream.make({ behaviour: Behaviour.contextLengthExceeded() })
        const { url } = yield* single(fake)
        const error = yield* failJson(url)
        assert.strictEqual(error.status, 400)
        assert.strictEqual(error.code, "context_length_exceeded")
        assert.strictEqual(error.type, "invalid_request_error")
        assert.strictEqual((yield* fake.attempts).length, 1)
      }).pipe(quiet)
    )

    it.live("content filtered: 400 content_filter, not retried, also for a stream", () =>
      Effect.gen(function* () {
        const fake = yield* FakeUpstream.make({ behaviour: Behaviour.contentFiltered() })
        const { url } = yield* single(fake)
        const error = yield* failJson(url)
        assert.strictEqual(error.status, 400)
        assert.strictEqual(error.code, "content_filter")
        const streamError = apiError(
          yield* rejection(() => client(url).chat.completions.create({ ...chatBody(), stream: true }))
        )
        assert.strictEqual(streamError.status, 400)
        assert.strictEqual(streamError.code, "content_filter")
        assert.strictEqual((yield* fake.attempts).length, 2)
      }).pipe(quiet)
    )
  })
})
