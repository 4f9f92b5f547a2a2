import { assert, describe, it } from "@effect/vitest"
import { Behaviour, FakeUpstream } from "@roadcar/testing"
import { Effect } from "effect"
import { captureLogs, chatBody, client, collect, fakeConfig, quiet, startGateway } from "./utils.ts"

describe("ChatRoute", () => {
  describe("JSON answers", () => {
    it.live("answers through the pipeline with the upstream's model, usage and the x-roadcar headers", () =>
      Effect.gen(function* () {
        const fake = yield* FakeUpstream.make()
        const { url } = yield* startGateway(fakeConfig({ primary: fake }, { chat: { upstream: "primary" } }))
        const { data, response } = yield* Effect.promise(() =>
          client(url).chat.completions.create(chatBody("hello there")).withResponse()
        )
        assert.strictEqual(data.choices[0]?.message.content, "echo: hello there")
        assert.strictEqual(data.choices[0]?.finish_reason, "stop")
        assert.strictEqual(data.model, "fake-model")
        assert.isAbove(data.usage?.total_tokens ?? 0, 0)
        assert.match(response.headers.get("x-request-id") ?? "", /^req_[0-9a-f]{12}[0-9a-z]+$/)
        assert.strictEqual(response.headers.get("x-roadcar-attempts"), "1")
        assert.strictEqual(response.headers.get("x-roadcar-cache"), "miss")
        assert.strictEqual(response.headers.get("x-roadcar-model"), "chat")
        assert.strictEqual(response.headers.get("x-roadcar-upstream"), "primary")
        assert.isNull(response.headers.get("x-roadcar-fallback"))
        assert.match(response.headers.get("x-roadcar-overhead-ms") ?? "", /^\d+$/)
        const attempts = yield* fake.attempts
        assert.strictEqual(attempts.length, 1)
        assert.strictEqual(attempts[0]?.model, "fake-model")
      }).pipe(quiet)
    )

    it.live("continues a conversation whose previous answer is sent back as it came (refusal: null included)", () =>
      Effect.gen(function* () {
        const fake = yield* FakeUpstream.make()
        const { url } = yield* startGateway(fakeConfig({ primary: fake }, { chat: { upstream: "primary" } }))
        const first = yield* Effect.promise(() => client(url).chat.completions.create(chatBody("first")))
        const previous = first.choices[0]!.message
        assert.isTrue("refusal" in previous, "the answer's message carries refusal, as OpenAI's do")
        const second = yield* Effect.promise(() =>
          client(url).chat.completions.create({
            model: "chat",
            messages: [{ role: "user", content: "first" }, previous, { role: "user", content: "second" }]
          })
        )
        assert.strictEqual(second.choices[0]?.message.content, "echo: second")
      }).pipe(quiet)
    )

    it.live("model and upstream names that are not printable ASCII reach the headers percent-encoded", () =>
      Effect.gen(function* () {
        const fake = yield* FakeUpstream.make()
        const { url } = yield* startGateway(fakeConfig({ 上游: fake }, { 聊天: { upstream: "上游" } }))
        const { data, response } = yield* Effect.promise(() =>
          client(url).chat.completions.create(chatBody("hi", "聊天")).withResponse()
        )
        assert.strictEqual(data.choices[0]?.message.content, "echo: hi")
        assert.strictEqual(decodeURIComponent(response.headers.get("x-roadcar-model") ?? ""), "聊天")
        assert.strictEqual(decodeURIComponent(response.headers.get("x-roadcar-upstream") ?? ""), "上游")
        const streamed = yield* Effect.promise(() =>
          fetch(`${url}/v1/chat/completions`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ ...chatBody("hi", "聊天"), stream: true })
          })
        )
        assert.strictEqual(streamed.status, 200)
        assert.include(yield* Effect.promise(() => streamed.text()), "data: [DONE]")
      }).pipe(quiet)
    )

    it.live("honours a sane x-request-id and replaces one that is not", () =>
      Effect.gen(function* () {
        const { url } = yield* startGateway({})
        const sane = yield* Effect.promise(() =>
          client(url)
            .chat.completions.create(chatBody(), { headers: { "x-request-id": "trace-42.a_b:c" } })
            .withResponse()
        )
        assert.strictEqual(sane.response.headers.get("x-request-id"), "trace-42.a_b:c")
        const insane = yield* Effect.promise(() =>
          client(url)
            .chat.completions.create(chatBody(), { headers: { "x-request-id": "bad id with spaces" } })
            .withResponse()
        )
        assert.match(insane.response.headers.get("x-request-id") ?? "", /^req_[0-9a-f]{12}[0-9a-z]+$/)
      }).pipe(quiet)
    )

    it.live("serves the simulated model with the empty config", () =>
      Effect.gen(function* () {
        const { url } = yield* startGateway({})
        const { data, response } = yield* Effect.promise(() =>
          client(url).chat.completions.create(chatBody("hi")).withResponse()
        )
        assert.include(data.choices[0]?.message.content ?? "", "hi")
        assert.strictEqual(response.headers.get("x-roadcar-upstream"), "simulated")
      }).pipe(quiet)
    )

    it.live("marks a cache hit and reports zero attempts", () =>
      Effect.gen(function* () {
        const fake = yield* FakeUpstream.make()
        const { url } = yield* startGateway(
          fakeConfig({ primary: fake }, { chat: { upstream: "primary" } }, { cache: { enabled: true } })
        )
        const first = yield* Effect.promise(() =>
          client(url)
            .chat.completions.create({ ...chatBody("cache me"), temperature: 0 })
            .withResponse()
        )
        const second = yield* Effect.promise(() =>
          client(url)
            .chat.completions.create({ ...chatBody("cache me"), temperature: 0 })
            .withResponse()
        )
        assert.strictEqual(first.response.headers.get("x-roadcar-cache"), "miss")
        assert.strictEqual(second.response.headers.get("x-roadcar-cache"), "hit")
        assert.strictEqual(second.response.headers.get("x-roadcar-attempts"), "0")
        assert.strictEqual(second.data.choices[0]?.message.content, first.data.choices[0]?.message.content)
        assert.strictEqual((yield* fake.attempts).length, 1)
      }).pipe(quiet)
    )
  })

  describe("streams", () => {
    it.live("streams SSE chunks that the openai client assembles, with usage when asked and [DONE]", () =>
      Effect.gen(function* () {
        const fake = yield* FakeUpstream.make()
        const { url } = yield* startGateway(fakeConfig({ primary: fake }, { chat: { upstream: "primary" } }))
        const { data, response } = yield* Effect.promise(() =>
          client(url)
            .chat.completions.create({
              ...chatBody("one two three four five"),
              stream: true,
              stream_options: { include_usage: true }
            })
            .withResponse()
        )
        assert.strictEqual(response.headers.get("content-type"), "text/event-stream")
        assert.strictEqual(response.headers.get("x-roadcar-upstream"), "primary")
        assert.strictEqual(response.headers.get("x-roadcar-attempts"), "1")
        const { chunks, text, error } = yield* Effect.promise(() => collect(data))
        assert.isUndefined(error)
        assert.strictEqual(text, "echo: one two three four five")
        assert.strictEqual(chunks[0]?.model, "fake-model")
        const last = chunks.at(-1)
        assert.deepStrictEqual(last?.choices, [])
        assert.isAbove(last?.usage?.completion_tokens ?? 0, 0)
        assert.isTrue(chunks.some((chunk) => chunk.choices[0]?.finish_reason === "stop"))
      }).pipe(quiet)
    )

    it.live("leaves usage out when the client did not ask for it, and ends with data: [DONE]", () =>
      Effect.gen(function* () {
        const fake = yield* FakeUpstream.make()
        const { url } = yield* startGateway(fakeConfig({ primary: fake }, { chat: { upstream: "primary" } }))
        const response = yield* Effect.promise(() =>
          fetch(`${url}/v1/chat/completions`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ ...chatBody("alpha beta"), stream: true })
          })
        )
        const text = yield* Effect.promise(() => response.text())
        const events = text.split("\n\n").filter((event) => event !== "")
        assert.strictEqual(events.at(-1), "data: [DONE]")
        const payloads = events.slice(0, -1).map((event) => JSON.parse(event.slice("data: ".length)))
        assert.isTrue(payloads.every((payload) => payload.usage === undefined))
        assert.isTrue(payloads.every((payload) => payload.choices.length > 0))
      }).pipe(quiet)
    )

    it.live("a client that disconnects mid-stream interrupts the upstream stream", () => {
      const logs = captureLogs()
      return Effect.gen(function* () {
        // 20 text chunks, 100 ms apart: about two seconds if nobody stops it.
        const fake = yield* FakeUpstream.make({ behaviour: Behaviour.ok({ chunkDelayMs: 100 }) })
        const { url } = yield* startGateway(fakeConfig({ primary: fake }, { chat: { upstream: "primary" } }))
        const abort = new AbortController()
        const response = yield* Effect.promise(() =>
          fetch(`${url}/v1/chat/completions`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ ...chatBody("word ".repeat(40)), stream: true }),
            signal: abort.signal
          })
        )
        const reader = response.body!.getReader()
        yield* Effect.promise(() => reader.read())
        const started = Date.now()
        abort.abort()
        const finished = () => logs.lines.find((line) => line.includes('"message":"request"'))
        while (finished() === undefined && Date.now() - started < 1_500) yield* Effect.sleep("10 millis")
        assert.isBelow(Date.now() - started, 600)
        assert.include(finished() ?? "", '"status":"error"')
      }).pipe(Effect.provide(logs.layer))
    })

    it.live("streams from an Anthropic upstream in OpenAI's shape", () =>
      Effect.gen(function* () {
        const fake = yield* FakeUpstream.make()
        const { url } = yield* startGateway(
          fakeConfig({ claude: { url: fake.url, provider: "anthropic" } }, { chat: { upstream: "claude" } })
        )
        const stream = yield* Effect.promise(() =>
          client(url).chat.completions.create({
            ...chatBody("from anthropic"),
            stream: true,
            stream_options: { include_usage: true }
          })
        )
        const { text, chunks, error } = yield* Effect.promise(() => collect(stream))
        assert.isUndefined(error)
        assert.strictEqual(text, "echo: from anthropic")
        assert.isAbove(chunks.at(-1)?.usage?.prompt_tokens ?? 0, 0)
        const json = yield* Effect.promise(() => client(url).chat.completions.create(chatBody("json please")))
        assert.strictEqual(json.choices[0]?.message.content, "echo: json please")
        const attempts = yield* fake.attempts
        assert.deepStrictEqual(
          attempts.map((attempt) => [attempt.wire, attempt.stream]),
          [
            ["anthropic", true],
            ["anthropic", false]
          ]
        )
        assert.strictEqual(attempts[0]?.headers["x-api-key"], "[redacted]")
      }).pipe(quiet)
    )
  })

  describe("fallback headers", () => {
    it.live("names the fallback and its reason when the primary fails", () =>
      Effect.gen(function* () {
        const primary = yield* FakeUpstream.make({ behaviour: Behaviour.status(503) })
        const backup = yield* FakeUpstream.make()
        const { url } = yield* startGateway(
          fakeConfig(
            { primary, backup },
            { chat: { upstream: "primary", fallbacks: [{ upstream: "backup" }] } },
            { retry: { attempts: 2, baseDelay: "5 millis", jitter: false } }
          )
        )
        const { data, response } = yield* Effect.promise(() =>
          client(url).chat.completions.create(chatBody("fall back")).withResponse()
        )
        assert.strictEqual(data.choices[0]?.message.content, "echo: fall back")
        assert.strictEqual(response.headers.get("x-roadcar-upstream"), "backup")
        assert.strictEqual(response.headers.get("x-roadcar-fallback"), "Unavailable")
        assert.strictEqual(response.headers.get("x-roadcar-fallback-reason"), "upstream unavailable (503)")
        assert.strictEqual(response.headers.get("x-roadcar-attempts"), "3")
        assert.strictEqual((yield* primary.attempts).length, 2)
        assert.strictEqual((yield* backup.attempts).length, 1)
      }).pipe(quiet)
    )

    it.live("serves the static answer when every upstream failed", () =>
      Effect.gen(function* () {
        const primary = yield* FakeUpstream.make({ behaviour: Behaviour.status(500) })
        const { url } = yield* startGateway(
          fakeConfig(
            { primary },
            { chat: { upstream: "primary", staticAnswer: "We are busy, try again soon." } },
            { retry: { attempts: 1 } }
          )
        )
        const { data, response } = yield* Effect.promise(() =>
          client(url).chat.completions.create(chatBody()).withResponse()
        )
        assert.strictEqual(data.choices[0]?.message.content, "We are busy, try again soon.")
        assert.strictEqual(response.headers.get("x-roadcar-upstream"), "static")
        assert.strictEqual(response.headers.get("x-roadcar-fallback"), "Unavailable")
      }).pipe(quiet)
    )
  })
})
