import { afterEach, assert, beforeEach, describe, it, layer } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import { Behaviour, FakeUpstream, Script, Sse } from "../src/index.ts"

// Real HTTP on loopback; every delay here is <= 100ms.

type Wire = "openai" | "anthropic"

const prompt = "hello there general kenobi"
const echo = `echo: ${prompt}` // 5 words -> text chunks "echo: hello ", "there general ", "kenobi"

const requestBody = (wire: Wire, extra: Record<string, unknown> = {}) =>
  wire === "openai"
    ? {
        model: "gpt-test",
        messages: [
          { role: "system", content: "be brief" },
          { role: "user", content: "earlier question" },
          { role: "assistant", content: "earlier answer" },
          { role: "user", content: prompt }
        ],
        ...extra
      }
    : {
        model: "claude-test",
        max_tokens: 256,
        system: "be brief",
        messages: [{ role: "user", content: [{ type: "text", text: prompt }] }],
        ...extra
      }

const pathOf = (wire: Wire) => (wire === "openai" ? "/v1/chat/completions" : "/v1/messages")

const post = (
  url: string,
  wire: Wire,
  extra: Record<string, unknown> = {},
  init: { readonly signal?: AbortSignal; readonly headers?: Record<string, string> } = {}
) =>
  fetch(`${url}${pathOf(wire)}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...init.headers },
    body: JSON.stringify(requestBody(wire, extra)),
    ...(init.signal ? { signal: init.signal } : {})
  })

const streamed = { stream: true, stream_options: { include_usage: true } }

/** The text carried by the stream's data lines (OpenAI chunks or Anthropic text deltas). */
const streamText = (data: ReadonlyArray<string>): string => {
  let text = ""
  for (const line of data) {
    if (line === "[DONE]") continue
    const event = JSON.parse(line)
    if (event.object === "chat.completion.chunk") text += event.choices[0]?.delta.content ?? ""
    if (event.type === "content_block_delta") text += event.delta.text
  }
  return text
}

const parses = (line: string): boolean => {
  try {
    JSON.parse(line)
    return true
  } catch {
    return false
  }
}

const rejects = async (promise: Promise<unknown>): Promise<unknown> => {
  try {
    await promise
  } catch (error) {
    return error
  }
  assert.fail("expected a rejection")
}

const activeServers = () => process.getActiveResourcesInfo().filter((name) => name === "TCPServerWrap").length

describe("FakeUpstream", () => {
  let fake: FakeUpstream.Handle
  beforeEach(async () => {
    fake = await FakeUpstream.start()
  })
  afterEach(async () => {
    await fake.close()
  })

  describe("healthy answers", () => {
    it("answers OpenAI JSON with the echo, the requested model and plausible usage", async () => {
      const response = await post(fake.url, "openai")
      assert.strictEqual(response.status, 200)
      assert.match(response.headers.get("content-type") ?? "", /application\/json/)
      assert.match(response.headers.get("x-request-id") ?? "", /^req_fake_\d+$/)
      const body = await response.json()
      assert.strictEqual(body.object, "chat.completion")
      assert.strictEqual(body.model, "gpt-test")
      assert.deepStrictEqual(body.choices[0].message, { role: "assistant", content: echo, refusal: null })
      assert.strictEqual(body.choices[0].finish_reason, "stop")
      assert.isAbove(body.usage.prompt_tokens, 5)
      assert.strictEqual(body.usage.completion_tokens, Math.ceil(echo.length / 4))
      assert.strictEqual(body.usage.total_tokens, body.usage.prompt_tokens + body.usage.completion_tokens)
    })

    it("answers Anthropic JSON with the echo, the requested model and usage", async () => {
      const response = await post(fake.url, "anthropic")
      assert.strictEqual(response.status, 200)
      const body = await response.json()
      assert.strictEqual(body.type, "message")
      assert.strictEqual(body.model, "claude-test")
      assert.deepStrictEqual(body.content, [{ type: "text", text: echo }])
      assert.strictEqual(body.stop_reason, "end_turn")
      assert.strictEqual(body.usage.output_tokens, Math.ceil(echo.length / 4))
      assert.isAbove(body.usage.input_tokens, 0)
    })

    it("answers with the given text instead of the echo", async () => {
      fake.setBehaviour(Behaviour.ok({ text: "fixed answer" }))
      const body = await (await post(fake.url, "openai")).json()
      assert.strictEqual(body.choices[0].message.content, "fixed answer")
      // Streamed, the chunks join to the same text, leading and trailing space included.
      fake.setBehaviour(Behaviour.ok({ text: "\n  indented answer " }))
      const { data } = await Sse.read(await post(fake.url, "openai", streamed))
      const text = data
        .filter((line) => line !== "[DONE]")
        .map((line) => JSON.parse(line).choices[0]?.delta.content ?? "")
        .join("")
      assert.strictEqual(text, "\n  indented answer ")
    })

    it("streams OpenAI chunks, a usage chunk when include_usage is set, then [DONE]", async () => {
      const response = await post(fake.url, "openai", streamed)
      assert.match(response.headers.get("content-type") ?? "", /text\/event-stream/)
      const { data, error } = await Sse.read(response)
      assert.isUndefined(error)
      // role chunk, 3 text chunks, finish chunk, usage chunk, [DONE]
      assert.strictEqual(data.length, 7)
      assert.strictEqual(data[6], "[DONE]")
      const chunks = data.slice(0, 6).map((line) => JSON.parse(line))
      assert.deepStrictEqual(chunks[0].choices[0].delta, { role: "assistant", content: "" })
      assert.deepStrictEqual(
        chunks.slice(1, 4).map((chunk) => chunk.choices[0].delta.content),
        ["echo: hello ", "there general ", "kenobi"]
      )
      assert.strictEqual(chunks[4].choices[0].finish_reason, "stop")
      assert.deepStrictEqual(chunks[5].choices, [])
      assert.strictEqual(chunks[5].usage.completion_tokens, Math.ceil(echo.length / 4))
      for (const chunk of chunks) assert.strictEqual(chunk.model, "gpt-test")
      assert.strictEqual(streamText(data), echo)
    })

    it("streams OpenAI without a usage chunk when include_usage is not set", async () => {
      const { data } = await Sse.read(await post(fake.url, "openai", { stream: true }))
      assert.strictEqual(data.length, 6)
      assert.isTrue(data.slice(0, 5).every((line) => JSON.parse(line).usage === undefined))
      assert.strictEqual(data[5], "[DONE]")
    })

    it("streams Anthropic events in order with stop reason and output tokens", async () => {
      const response = await post(fake.url, "anthropic", { stream: true })
      const { events, error } = await Sse.read(response)
      assert.isUndefined(error)
      assert.deepStrictEqual(
        events.map((event) => event.event),
        [
          "message_start",
          "content_block_start",
          "content_block_delta",
          "content_block_delta",
          "content_block_delta",
          "content_block_stop",
          "message_delta",
          "message_stop"
        ]
      )
      const parsed = events.map((event) => JSON.parse(event.data))
      assert.strictEqual(parsed[0].message.model, "claude-test")
      assert.strictEqual(parsed[2].delta.type, "text_delta")
      assert.deepStrictEqual(parsed[6].delta, { stop_reason: "end_turn", stop_sequence: null })
      assert.strictEqual(parsed[6].usage.output_tokens, Math.ceil(echo.length / 4))
      assert.strictEqual(streamText(events.map((event) => event.data)), echo)
    })

    it("lists models in the OpenAI shape, or the Anthropic shape with anthropic-version", async () => {
      const openai = await (await fetch(`${fake.url}/v1/models`)).json()
      assert.deepStrictEqual(
        openai.data.map((model: { id: string; object: string }) => [model.id, model.object]),
        [["fake-model", "model"]]
      )
      const anthropic = await (
        await fetch(`${fake.url}/v1/models`, { headers: { "anthropic-version": "2023-06-01" } })
      ).json()
      assert.strictEqual(anthropic.data[0].type, "model")
      assert.strictEqual(anthropic.has_more, false)
      assert.deepStrictEqual(
        fake.attempts().map((attempt) => attempt.wire),
        ["openai", "anthropic"]
      )
    })

    it("waits latencyMs before answering and spaces chunks by chunkDelayMs", async () => {
      fake.setBehaviour(Behaviour.ok({ latencyMs: 60 }))
      let started = Date.now()
      assert.strictEqual((await post(fake.url, "openai")).status, 200)
      assert.isAtLeast(Date.now() - started, 55)

      fake.setBehaviour(Behaviour.ok({ chunkDelayMs: 25 }))
      started = Date.now()
      const { data } = await Sse.read(await post(fake.url, "anthropic", { stream: true }))
      assert.isAtLeast(Date.now() - started, 45) // two gaps between three text chunks
      assert.strictEqual(streamText(data), echo)
    })
  })

  describe("error statuses", () => {
    it("sends 429 with Retry-After seconds, without it, and with retry-after-ms", async () => {
      fake.setBehaviour(
        Script.sequence([
          Behaviour.rateLimited({ retryAfterSeconds: 3 }),
          Behaviour.rateLimited(),
          Behaviour.rateLimited({ retryAfterMs: 250 })
        ])
      )
      const withSeconds = await post(fake.url, "openai")
      assert.strictEqual(withSeconds.status, 429)
      assert.strictEqual(withSeconds.headers.get("retry-after"), "3")
      assert.strictEqual((await withSeconds.json()).error.code, "rate_limit_exceeded")

      const bare = await post(fake.url, "anthropic")
      assert.strictEqual(bare.status, 429)
      assert.isNull(bare.headers.get("retry-after"))
      assert.isNull(bare.headers.get("retry-after-ms"))
      assert.deepStrictEqual((await bare.json()).error.type, "rate_limit_error")

      const withMs = await post(fake.url, "openai")
      assert.strictEqual(withMs.status, 429)
      assert.strictEqual(withMs.headers.get("retry-after-ms"), "250")
      assert.isNull(withMs.headers.get("retry-after"))
      await withMs.body?.cancel()
      assert.deepStrictEqual(
        fake.attempts().map((attempt) => attempt.fault),
        ["429", "429", "429"]
      )
    })

    it("sends any status with the wire's error body, streamed or not", async () => {
      fake.setBehaviour(Behaviour.status(503, { retryAfterSeconds: 1 }))
      const openai = await post(fake.url, "openai", streamed)
      assert.strictEqual(openai.status, 503)
      assert.strictEqual(openai.headers.get("retry-after"), "1")
      assert.strictEqual((await openai.json()).error.type, "server_error")
      const anthropic = await post(fake.url, "anthropic", { stream: true })
      assert.strictEqual(anthropic.status, 503)
      const body = await anthropic.json()
      assert.strictEqual(body.type, "error")
      assert.strictEqual(body.error.type, "api_error")

      fake.setBehaviour(Behaviour.status(529, { message: "busy" }))
      assert.deepStrictEqual(await (await post(fake.url, "anthropic")).json(), {
        type: "error",
        error: { type: "overloaded_error", message: "busy" }
      })
      assert.deepStrictEqual(
        fake.attempts().map((attempt) => attempt.fault),
        ["503", "503", "529"]
      )
    })

    it("reports context length exceeded in both wires", async () => {
      fake.setBehaviour(Behaviour.contextLengthExceeded())
      const openai = await post(fake.url, "openai")
      assert.strictEqual(openai.status, 400)
      const error = (await openai.json()).error
      assert.strictEqual(error.code, "context_length_exceeded")
      assert.strictEqual(error.type, "invalid_request_error")
      assert.match(error.message, /maximum context length/)
      const anthropic = await post(fake.url, "anthropic", { stream: true })
      assert.strictEqual(anthropic.status, 400)
      const body = await anthropic.json()
      assert.strictEqual(body.error.type, "invalid_request_error")
      assert.match(body.error.message, /prompt is too long/)
      assert.strictEqual(fake.attempts()[1]?.fault, "context_length_exceeded")
    })

    it("reports content filtered in both wires", async () => {
      fake.setBehaviour(Behaviour.contentFiltered())
      const openai = await post(fake.url, "openai", streamed)
      assert.strictEqual(openai.status, 400)
      assert.strictEqual((await openai.json()).error.code, "content_policy_violation")
      const anthropic = await post(fake.url, "anthropic")
      assert.strictEqual(anthropic.status, 400)
      const body = await anthropic.json()
      assert.strictEqual(body.error.type, "invalid_request_error")
      assert.match(body.error.message, /content filtering/)
      assert.strictEqual(fake.attempts()[0]?.fault, "content_filtered")
    })

    it("answers malformed request bodies with 400 and unknown paths with 404, without consulting the script", async () => {
      fake.setBehaviour(Script.sequence([Behaviour.status(500)]))
      const invalid = await fetch(`${fake.url}/v1/chat/completions`, { method: "POST", body: "{not json" })
      assert.strictEqual(invalid.status, 400)
      assert.strictEqual((await invalid.json()).error.type, "invalid_request_error")
      const unknown = await fetch(`${fake.url}/v1/completions`, { method: "POST", body: "{}" })
      assert.strictEqual(unknown.status, 404)
      assert.strictEqual((await unknown.json()).error.code, "unknown_url")
      // the script's first step is still unused
      assert.strictEqual((await post(fake.url, "openai")).status, 500)
      const attempts = fake.attempts()
      assert.deepStrictEqual(
        attempts.map((attempt) => attempt.fault),
        ["bad_request", "not_found", "500"]
      )
      assert.strictEqual(attempts[0]?.body, "{not json")
    })
  })

  describe("connection faults", () => {
    it("resets the connection before any header", async () => {
      fake.setBehaviour(Behaviour.reset())
      for (const wire of ["openai", "anthropic"] as const) {
        const error = await rejects(post(fake.url, wire, streamed))
        assert.instanceOf(error, TypeError) // fetch failed
      }
      assert.deepStrictEqual(
        fake.attempts().map((attempt) => attempt.fault),
        ["reset", "reset"]
      )
    })

    it("hangs until the client gives up", async () => {
      fake.setBehaviour(Behaviour.hang())
      const started = Date.now()
      const error = await rejects(post(fake.url, "openai", {}, { signal: AbortSignal.timeout(60) }))
      assert.strictEqual((error as Error).name, "TimeoutError")
      assert.isAtLeast(Date.now() - started, 55)
      assert.strictEqual(fake.attempts()[0]?.fault, "hang")
    })

    it("sends headers at once and the first chunk (or JSON body) after slowFirstChunk ms", async () => {
      fake.setBehaviour(Behaviour.slowFirstChunk(100))
      for (const extra of [streamed, {}]) {
        const started = Date.now()
        const response = await post(fake.url, "openai", extra)
        assert.strictEqual(response.status, 200)
        assert.isBelow(Date.now() - started, 80)
        const text = await response.text()
        assert.isAtLeast(Date.now() - started, 95)
        assert.include(text, "echo: hello")
      }
      const { data } = await Sse.read(await post(fake.url, "anthropic", { stream: true }))
      assert.strictEqual(streamText(data), echo)
      assert.deepStrictEqual(
        fake.attempts().map((attempt) => attempt.fault),
        ["slow_first_chunk", "slow_first_chunk", "slow_first_chunk"]
      )
    })

    it("cuts a stream after N text chunks in both wires", async () => {
      fake.setBehaviour(Behaviour.cutAfter(1))
      const openai = await Sse.read(await post(fake.url, "openai", streamed))
      assert.isDefined(openai.error)
      assert.strictEqual(openai.data.length, 2) // role chunk + one text chunk, no finish, no [DONE]
      assert.strictEqual(streamText(openai.data), "echo: hello ")

      const anthropic = await Sse.read(await post(fake.url, "anthropic", { stream: true }))
      assert.isDefined(anthropic.error)
      assert.deepStrictEqual(
        anthropic.events.map((event) => event.event),
        ["message_start", "content_block_start", "content_block_delta"]
      )
      assert.strictEqual(fake.attempts()[0]?.fault, "cut")
    })

    it("cuts a JSON answer halfway through its body", async () => {
      fake.setBehaviour(Behaviour.cutAfter(0))
      const response = await post(fake.url, "anthropic")
      assert.strictEqual(response.status, 200)
      await rejects(response.text())
    })

    it("stalls a stream after N text chunks, keeping the socket open", async () => {
      fake.setBehaviour(Behaviour.stallAfter(2))
      const started = Date.now()
      const result = await Sse.read(await post(fake.url, "openai", streamed, { signal: AbortSignal.timeout(100) }))
      assert.isAtLeast(Date.now() - started, 95)
      assert.strictEqual((result.error as Error).name, "TimeoutError")
      assert.strictEqual(streamText(result.data), "echo: hello there general ")
      assert.notInclude(result.data, "[DONE]")

      const json = await post(fake.url, "anthropic", {}, { signal: AbortSignal.timeout(50) })
      assert.strictEqual(json.status, 200)
      assert.strictEqual(((await rejects(json.text())) as Error).name, "TimeoutError")
      assert.deepStrictEqual(
        fake.attempts().map((attempt) => attempt.fault),
        ["stall", "stall"]
      )
    })
  })

  describe("malformed output", () => {
    it("sends one malformed SSE data line and an otherwise complete stream", async () => {
      fake.setBehaviour(Behaviour.malformedChunk(1))
      const openai = await Sse.read(await post(fake.url, "openai", streamed))
      assert.isUndefined(openai.error)
      assert.deepStrictEqual(
        openai.data.map((line) => line === "[DONE]" || parses(line)),
        [true, true, false, true, true, true, true]
      )
      assert.strictEqual(openai.data[6], "[DONE]")

      const anthropic = await Sse.read(await post(fake.url, "anthropic", { stream: true }))
      assert.deepStrictEqual(
        anthropic.events.map((event) => parses(event.data)),
        [true, true, true, false, true, true, true, true]
      )
      assert.strictEqual(anthropic.events[3]?.event, "content_block_delta")
      assert.strictEqual(fake.attempts()[0]?.fault, "malformed_chunk")
    })

    it("sends a 200 JSON body that does not parse", async () => {
      fake.setBehaviour(Behaviour.malformedJson())
      for (const wire of ["openai", "anthropic"] as const) {
        const response = await post(fake.url, wire)
        assert.strictEqual(response.status, 200)
        assert.match(response.headers.get("content-type") ?? "", /application\/json/)
        assert.isFalse(parses(await response.text()))
      }
      // streamed, malformedJson breaks the first text chunk
      const { data } = await Sse.read(await post(fake.url, "openai", streamed))
      assert.isFalse(parses(data[1] ?? "{}"))
      assert.deepStrictEqual(
        fake.attempts().map((attempt) => attempt.fault),
        ["malformed_json", "malformed_json", "malformed_chunk"]
      )
    })

    it("ends a complete stream without its terminator", async () => {
      fake.setBehaviour(Behaviour.noDone())
      const openai = await Sse.read(await post(fake.url, "openai", streamed))
      assert.isUndefined(openai.error)
      assert.notInclude(openai.data, "[DONE]")
      const chunks = openai.data.map((line) => JSON.parse(line))
      assert.strictEqual(chunks.at(-2).choices[0].finish_reason, "stop")
      assert.isDefined(chunks.at(-1).usage)
      assert.strictEqual(streamText(openai.data), echo)

      const anthropic = await Sse.read(await post(fake.url, "anthropic", { stream: true }))
      assert.deepStrictEqual(anthropic.events.at(-1)?.event, "message_delta")

      // not applicable to JSON: a healthy answer, logged as ok
      assert.strictEqual((await post(fake.url, "openai")).status, 200)
      assert.deepStrictEqual(
        fake.attempts().map((attempt) => attempt.fault),
        ["no_done", "no_done", "ok"]
      )
    })

    it("delays any behaviour", async () => {
      fake.setBehaviour(Behaviour.delayed(50, Behaviour.rateLimited({ retryAfterSeconds: 1 })))
      const started = Date.now()
      const response = await post(fake.url, "openai")
      assert.strictEqual(response.status, 429)
      assert.isAtLeast(Date.now() - started, 45)
      assert.strictEqual(fake.attempts()[0]?.fault, "429")
    })
  })

  describe("attempts", () => {
    it("logs every request in order with time, wire, model, stream, redacted headers and body", async () => {
      const before = Date.now()
      await post(fake.url, "openai", streamed, {
        headers: { Authorization: "Bearer sk-secret", "Api-Key": "azure-secret", "X-Trace": "t1" }
      }).then(Sse.read)
      await post(
        fake.url,
        "anthropic",
        {},
        { headers: { "x-api-key": "sk-ant-secret", "anthropic-version": "2023-06-01" } }
      ).then((response) => response.json())
      const after = Date.now()
      const attempts = fake.attempts()
      assert.strictEqual(attempts.length, 2)
      const [first, second] = attempts
      assert.deepStrictEqual(
        attempts.map(({ index, path, wire, model, stream, fault, method }) => ({
          index,
          path,
          wire,
          model,
          stream,
          fault,
          method
        })),
        [
          {
            index: 0,
            path: "/v1/chat/completions",
            wire: "openai",
            model: "gpt-test",
            stream: true,
            fault: "ok",
            method: "POST"
          },
          {
            index: 1,
            path: "/v1/messages",
            wire: "anthropic",
            model: "claude-test",
            stream: false,
            fault: "ok",
            method: "POST"
          }
        ]
      )
      assert.isAtLeast(first?.at ?? 0, before)
      assert.isAtMost(second?.at ?? Infinity, after)
      assert.isAtMost(first?.at ?? Infinity, second?.at ?? 0)
      assert.strictEqual(first?.headers["authorization"], "[redacted]")
      assert.strictEqual(first?.headers["x-trace"], "t1")
      assert.strictEqual(first?.headers["api-key"], "[redacted]")
      assert.strictEqual(second?.headers["x-api-key"], "[redacted]")
      assert.strictEqual(second?.headers["anthropic-version"], "2023-06-01")
      assert.notInclude(JSON.stringify(attempts), "secret")
      assert.deepStrictEqual(first?.body, requestBody("openai", streamed))

      fake.clearAttempts()
      assert.deepStrictEqual(fake.attempts(), [])
      await (await fetch(`${fake.url}/v1/models`)).json()
      assert.deepStrictEqual(
        fake.attempts().map((attempt) => [attempt.index, attempt.path, attempt.model, attempt.body]),
        [[0, "/v1/models", "", undefined]]
      )
    })
  })

  describe("scripts", () => {
    it("gives the k-th attempt the k-th behaviour, then `afterwards` (healthy by default)", async () => {
      fake.setBehaviour(Script.sequence([Behaviour.status(500)]))
      assert.strictEqual((await post(fake.url, "openai")).status, 500)
      assert.strictEqual((await post(fake.url, "openai")).status, 200)
      assert.strictEqual((await post(fake.url, "openai")).status, 200)

      fake.setBehaviour(Script.sequence([Behaviour.rateLimited(), Behaviour.status(500)], Behaviour.status(503)))
      const statuses: Array<number> = []
      for (let i = 0; i < 4; i++) statuses.push((await post(fake.url, "anthropic")).status)
      assert.deepStrictEqual(statuses, [429, 500, 503, 503])
    })

    it("is down with 503 for a wall-clock window, then recovers", async () => {
      fake.setBehaviour(Script.downFor(80))
      const during = await post(fake.url, "openai")
      assert.strictEqual(during.status, 503)
      assert.strictEqual((await post(fake.url, "anthropic")).status, 503)
      await new Promise((resolve) => setTimeout(resolve, 90))
      assert.strictEqual((await post(fake.url, "openai")).status, 200)
      assert.deepStrictEqual(
        fake.attempts().map((attempt) => attempt.fault),
        ["503", "503", "ok"]
      )
    })

    it("runs phases from the moment the script is installed", () => {
      const choose = Script.compile(
        Script.phases([
          { forMs: 100, script: Behaviour.rateLimited() },
          { forMs: 100, script: Script.sequence([Behaviour.reset()], Behaviour.hang()) }
        ]),
        1_000
      )
      const at = (now: number) => choose({ model: "m", now })._tag
      assert.deepStrictEqual(
        [at(999), at(1_000), at(1_099), at(1_100), at(1_150), at(1_199), at(1_200)],
        ["Ok", "RateLimited", "RateLimited", "Reset", "Hang", "Hang", "Ok"]
      )
      const fromEpoch = Script.compile(Script.downFor(50, { from: 5_000, afterwards: Behaviour.noDone() }), 0)
      assert.deepStrictEqual(
        [4_999, 5_000, 5_049, 5_050].map((now) => fromEpoch({ model: "m", now })._tag),
        ["Ok", "Status", "Status", "NoDone"]
      )
    })

    it("chooses per model, each model's script counting its own attempts", async () => {
      fake.setBehaviour(
        Script.byModel(
          { "gpt-test": Script.sequence([Behaviour.status(500), Behaviour.status(502)]) },
          Behaviour.rateLimited()
        )
      )
      const statuses: Array<number> = []
      statuses.push((await post(fake.url, "openai")).status)
      statuses.push((await post(fake.url, "anthropic")).status)
      statuses.push((await post(fake.url, "openai")).status)
      statuses.push((await post(fake.url, "openai")).status)
      assert.deepStrictEqual(statuses, [500, 429, 502, 200])
    })

    it("draws seeded random faults deterministically", async () => {
      const script = Script.random({
        seed: 7,
        faults: [
          [0.2, Behaviour.rateLimited()],
          [0.1, Behaviour.status(503)]
        ]
      })
      const draw = (s: Script.Script, n: number) => {
        const choose = Script.compile(s, 0)
        return Array.from({ length: n }, () => choose({ model: "m", now: 0 })._tag)
      }
      const first = draw(script, 2_000)
      assert.deepStrictEqual(draw(script, 2_000), first)
      assert.notDeepEqual(draw(Script.random({ ...script, seed: 8 }), 2_000), first)
      const share = (tag: string) => first.filter((t) => t === tag).length / first.length
      assert.approximately(share("RateLimited"), 0.2, 0.04)
      assert.approximately(share("Status"), 0.1, 0.03)
      assert.approximately(share("Ok"), 0.7, 0.05)

      // relative weights (sum >= 1): never healthy
      assert.notInclude(
        draw(
          Script.random({
            seed: 1,
            faults: [
              [2, Behaviour.reset()],
              [2, Behaviour.hang()]
            ]
          }),
          200
        ),
        "Ok"
      )

      // through the server: a fresh install replays the same faults
      const faults = async () => {
        fake.setBehaviour(script)
        fake.clearAttempts()
        for (let i = 0; i < 12; i++) await (await post(fake.url, "openai")).arrayBuffer()
        return fake.attempts().map((attempt) => attempt.fault)
      }
      const run = await faults()
      assert.deepStrictEqual(await faults(), run)
      assert.deepStrictEqual(
        run,
        draw(script, 12).map((tag) => (tag === "Ok" ? "ok" : tag === "RateLimited" ? "429" : "503"))
      )
    })

    it("rejects invalid behaviours and scripts with a RangeError naming the function", () => {
      assert.throws(() => Behaviour.status(200), RangeError, "Behaviour.status")
      assert.throws(() => Behaviour.cutAfter(-1), RangeError, "Behaviour.cutAfter")
      assert.throws(() => Behaviour.ok({ latencyMs: Number.NaN }), RangeError, "Behaviour.ok")
      assert.throws(() => Script.downFor(-5), RangeError, "Script.phases")
      assert.throws(() => Script.random({ seed: 1, faults: [[-1, Behaviour.reset()]] }), RangeError, "Script.random")
    })
  })

  describe("close", () => {
    it("closes promptly with a hanging request and a stalled stream open, leaving no server handle", async () => {
      const servers = activeServers()
      const other = await FakeUpstream.start({
        behaviour: Script.sequence([Behaviour.hang(), Behaviour.stallAfter(0)])
      })
      assert.strictEqual(activeServers(), servers + 1)
      const hanging = post(other.url, "openai").catch((error: unknown) => error)
      const stalled = post(other.url, "openai", streamed).then(Sse.read)
      while (other.attempts().length < 2) await new Promise((resolve) => setTimeout(resolve, 5))
      const started = Date.now()
      await other.close()
      assert.isBelow(Date.now() - started, 500)
      assert.instanceOf(await hanging, TypeError)
      assert.isDefined((await stalled).error)
      assert.strictEqual(activeServers(), servers)
      assert.instanceOf(await rejects(fetch(`${other.url}/v1/models`)), TypeError)
      await other.close() // idempotent
    })
  })
})

describe("Sse", () => {
  it("parses events, multi-line data and comments, and drops an unterminated event", () => {
    assert.deepStrictEqual(Sse.parse(": comment\nevent: a\ndata: 1\ndata: 2\n\ndata:[DONE]\r\n\r\ndata: partial"), [
      { event: "a", data: "1\n2" },
      { data: "[DONE]" }
    ])
    assert.deepStrictEqual(Sse.dataLines('data: {"x":1}\n\ndata: [DONE]\n\n'), ['{"x":1}', "[DONE]"])
  })
})

describe("FakeUpstream (Effect API)", () => {
  it.effect("serves while the scope is open and is closed with it", () =>
    Effect.gen(function* () {
      const scope = yield* Scope.make()
      const fake = yield* FakeUpstream.make({ behaviour: Script.sequence([Behaviour.status(500)]) }).pipe(
        Scope.provide(scope)
      )
      assert.match(fake.url, /^http:\/\/127\.0\.0\.1:\d+$/)
      assert.strictEqual(fake.url, `http://127.0.0.1:${fake.port}`)
      const status = () => Effect.promise(() => post(fake.url, "openai").then((response) => response.status))
      assert.strictEqual(yield* status(), 500)
      assert.strictEqual(yield* status(), 200)
      yield* fake.setBehaviour(Behaviour.contentFiltered())
      assert.strictEqual(yield* status(), 400)
      assert.deepStrictEqual(
        (yield* fake.attempts).map((attempt) => attempt.fault),
        ["500", "ok", "content_filtered"]
      )
      yield* fake.clearAttempts
      assert.strictEqual((yield* fake.attempts).length, 0)

      yield* Scope.close(scope, Exit.void)
      const after = yield* Effect.promise(() =>
        fetch(`${fake.url}/v1/models`).then(
          () => "open",
          () => "closed"
        )
      )
      assert.strictEqual(after, "closed")
    })
  )
})

layer(FakeUpstream.layer({ models: ["a", "b"], behaviour: Behaviour.ok({ text: "one two three four five" }) }))(
  "FakeUpstream.layer",
  (it) => {
    it.effect("provides a shared fake upstream as a service", () =>
      Effect.gen(function* () {
        const fake = yield* FakeUpstream.FakeUpstream
        const models = yield* Effect.promise(() => fetch(`${fake.url}/v1/models`).then((r) => r.json()))
        assert.deepStrictEqual(
          models.data.map((model: { id: string }) => model.id),
          ["a", "b"]
        )
        const { data } = yield* Effect.promise(() => post(fake.url, "openai", streamed).then(Sse.read))
        assert.strictEqual(streamText(data), "one two three four five")
      })
    )
  }
)
