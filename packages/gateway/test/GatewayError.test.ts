import { assert, describe, it } from "@effect/vitest"
import { RateLimit, UpstreamError } from "@roadcar/core"
import { Duration, Effect, Stream } from "effect"
import { GatewayError, RequestBody, Sse } from "../src/index.ts"

const upstream = (reason: UpstreamError.Reason) => UpstreamError.make("primary", reason)

describe("GatewayError", () => {
  it("maps every upstream reason to its documented status, code and Retry-After", () => {
    const cases: ReadonlyArray<readonly [UpstreamError.Reason, number, string, string | undefined]> = [
      [new UpstreamError.RateLimited({ retryAfter: Duration.millis(1_200) }), 503, "upstream_rate_limited", "2"],
      [new UpstreamError.RateLimited({}), 503, "upstream_rate_limited", undefined],
      [new UpstreamError.CircuitOpen({ retryAfter: Duration.seconds(30) }), 503, "circuit_open", "30"],
      [
        new UpstreamError.TimedOut({ phase: "attempt", after: Duration.seconds(1) }),
        504,
        "upstream_timeout",
        undefined
      ],
      [
        new UpstreamError.Unavailable({ status: 503, retryAfter: Duration.seconds(5) }),
        502,
        "upstream_unavailable",
        undefined
      ],
      [new UpstreamError.ConnectionFailed({ detail: "reset" }), 502, "upstream_connection_failed", undefined],
      [new UpstreamError.MalformedOutput({ detail: "x" }), 502, "upstream_malformed_output", undefined],
      [new UpstreamError.BadRequest({ status: 422, detail: "x" }), 502, "upstream_bad_request", undefined],
      [new UpstreamError.Authentication({ status: 401 }), 502, "upstream_authentication_failed", undefined],
      [new UpstreamError.ContextLengthExceeded({ detail: "x" }), 400, "context_length_exceeded", undefined],
      [new UpstreamError.ContentFiltered({ detail: "x" }), 400, "content_filter", undefined]
    ]
    for (const [reason, status, code, retryAfter] of cases) {
      const error = GatewayError.fromUpstream(upstream(reason), "chat")
      assert.strictEqual(error.status, status, reason._tag)
      assert.strictEqual(error.code, code, reason._tag)
      assert.strictEqual(error.headers["retry-after"], retryAfter, reason._tag)
      assert.include(error.message, "chat")
    }
  })

  it("answers Roadcar's own rate limit with 429 and Retry-After rounded up to whole seconds", () => {
    const error = GatewayError.fromRateLimit(
      new RateLimit.RateLimitRejected({
        limit: "requests per key",
        subject: "key team-a",
        retryAfter: Duration.millis(9_999.999)
      })
    )
    assert.strictEqual(error.status, 429)
    assert.strictEqual(error.headers["retry-after"], "10")
    assert.deepStrictEqual(GatewayError.toBody(error), {
      error: {
        message: "Rate limit exceeded: requests per key for key team-a.",
        type: "rate_limit_error",
        param: null,
        code: "rate_limit_exceeded"
      }
    })
    assert.strictEqual(GatewayError.retryAfterSeconds(Duration.millis(1)), "1")
  })
})

describe("RequestBody", () => {
  it("accepts JSON content types only", () => {
    assert.isTrue(RequestBody.isJsonContentType("application/json"))
    assert.isTrue(RequestBody.isJsonContentType("Application/JSON; charset=utf-8"))
    assert.isTrue(RequestBody.isJsonContentType("application/vnd.api+json"))
    assert.isFalse(RequestBody.isJsonContentType("text/plain"))
    assert.isFalse(RequestBody.isJsonContentType("application/jsonx"))
    assert.isFalse(RequestBody.isJsonContentType(undefined))
  })

  it.effect("names the path of the first problem, and suggests a field for a typo", () =>
    Effect.gen(function* () {
      const role = yield* Effect.flip(RequestBody.decodeChatRequest({ model: "chat", messages: [{ role: "bot" }] }))
      assert.strictEqual(role.param, "messages[0].role")
      const nested = yield* Effect.flip(
        RequestBody.decodeChatRequest({ model: "chat", messages: [{ role: "user", contnet: "x" }] })
      )
      assert.strictEqual(nested.param, "messages[0].contnet")
      assert.include(nested.message, 'did you mean "content"')
      const missing = yield* Effect.flip(RequestBody.decodeChatRequest({ messages: [{ role: "user" }] }))
      assert.strictEqual(missing.param, "model")
      const ok = yield* RequestBody.decodeChatRequest({ model: "chat", messages: [{ role: "user", content: "hi" }] })
      assert.strictEqual(ok.model, "chat")
    })
  )
})

describe("Sse", () => {
  const base = { id: "c1", object: "chat.completion.chunk" as const, created: 1, model: "m" }
  const finish = {
    ...base,
    choices: [{ index: 0, delta: {}, finish_reason: "stop" as const }],
    usage: { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 }
  }

  it("splits usage into its own last chunk when asked, drops it otherwise", () => {
    const { usage, ...withoutUsage } = finish
    assert.deepStrictEqual(Sse.shape(true)(finish), [withoutUsage, { ...withoutUsage, choices: [], usage }])
    assert.deepStrictEqual(Sse.shape(false)(finish), [withoutUsage])
    assert.deepStrictEqual(Sse.shape(false)({ ...base, choices: [], usage }), [])
    assert.deepStrictEqual(Sse.shape(true)({ ...base, choices: [], usage }), [{ ...base, choices: [], usage }])
  })

  it.effect("ends a complete stream with [DONE], a failed one with an error event and no [DONE]", () =>
    Effect.gen(function* () {
      const onFailure = () =>
        Effect.succeed({ error: { message: "cut", type: "upstream_error" as const, param: null, code: "x" } })
      const complete = yield* Stream.runCollect(Sse.encode(Stream.make(finish), { includeUsage: false, onFailure }))
      assert.deepStrictEqual(complete.at(-1), Sse.done)
      const failed = yield* Stream.runCollect(
        Sse.encode(Stream.concat(Stream.make(finish), Stream.fail("boom")), { includeUsage: false, onFailure })
      )
      assert.strictEqual(failed.length, 2)
      assert.strictEqual(
        failed[1],
        'data: {"error":{"message":"cut","type":"upstream_error","param":null,"code":"x"}}\n\n'
      )
      assert.notInclude(failed.join(""), "[DONE]")
    })
  )
})
