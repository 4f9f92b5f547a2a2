import { assert, describe, it } from "@effect/vitest"
import { Duration, Redacted } from "effect"
import { Headers } from "effect/http"
import * as Endpoint from "../../src/internal/http/Endpoint.ts"
import * as Errors from "../../src/internal/http/Errors.ts"
import * as RetryAfter from "../../src/internal/http/RetryAfter.ts"

const now = Date.UTC(2026, 0, 1, 12, 0, 0)
const headers = (record: Record<string, string>) => Headers.fromInput(record)
const millis = (duration: Duration.Duration | undefined) =>
  duration === undefined ? undefined : Duration.toMillis(duration)
const noScrub: Errors.Scrub = (text) => text

describe("internal/http", () => {
  describe("RetryAfter.parseGoDuration", () => {
    it("reads OpenAI reset durations", () => {
      assert.strictEqual(millis(RetryAfter.parseGoDuration("1s")), 1000)
      assert.strictEqual(millis(RetryAfter.parseGoDuration("6m0s")), 360_000)
      assert.strictEqual(millis(RetryAfter.parseGoDuration("20ms")), 20)
      assert.strictEqual(millis(RetryAfter.parseGoDuration("1h2m3.5s")), 3_723_500)
      assert.strictEqual(millis(RetryAfter.parseGoDuration("7.66s")), 7660)
      assert.strictEqual(millis(RetryAfter.parseGoDuration("2")), 2000)
      assert.isUndefined(RetryAfter.parseGoDuration("soon"))
      assert.isUndefined(RetryAfter.parseGoDuration("5x"))
      assert.isUndefined(RetryAfter.parseGoDuration(""))
    })
  })

  describe("RetryAfter.fromRetryAfter", () => {
    it("reads seconds, fractional seconds, an HTTP date and retry-after-ms (which wins)", () => {
      assert.strictEqual(millis(RetryAfter.fromRetryAfter(headers({ "retry-after": "7" }), now)), 7000)
      assert.strictEqual(millis(RetryAfter.fromRetryAfter(headers({ "retry-after": "0.5" }), now)), 500)
      const date = new Date(now + 90_000).toUTCString()
      assert.strictEqual(millis(RetryAfter.fromRetryAfter(headers({ "retry-after": date }), now)), 90_000)
      const past = new Date(now - 90_000).toUTCString()
      assert.strictEqual(millis(RetryAfter.fromRetryAfter(headers({ "retry-after": past }), now)), 0)
      assert.strictEqual(
        millis(RetryAfter.fromRetryAfter(headers({ "retry-after": "7", "retry-after-ms": "250" }), now)),
        250
      )
      assert.isUndefined(RetryAfter.fromRetryAfter(headers({ "retry-after": "whenever" }), now))
      assert.isUndefined(RetryAfter.fromRetryAfter(headers({}), now))
    })
  })

  describe("RetryAfter.fromRateLimitReset", () => {
    it("prefers the exhausted limit, else the longest reset", () => {
      const openai = { "x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s" }
      assert.strictEqual(millis(RetryAfter.fromRateLimitReset(headers(openai), now)), 360_000)
      assert.strictEqual(
        millis(RetryAfter.fromRateLimitReset(headers({ ...openai, "x-ratelimit-remaining-requests": "0" }), now)),
        1000
      )
      const anthropic = {
        "anthropic-ratelimit-input-tokens-remaining": "0",
        "anthropic-ratelimit-input-tokens-reset": new Date(now + 12_000).toISOString(),
        "anthropic-ratelimit-requests-reset": new Date(now + 60_000).toISOString()
      }
      assert.strictEqual(millis(RetryAfter.fromRateLimitReset(headers(anthropic), now)), 12_000)
      assert.isUndefined(RetryAfter.fromRateLimitReset(headers({ "anthropic-ratelimit-tokens-reset": "nope" }), now))
    })
  })

  describe("RetryAfter.retryHint", () => {
    it("uses reset headers for 429 only, Retry-After for 429 and 5xx, nothing for other statuses", () => {
      const reset = headers({ "x-ratelimit-reset-tokens": "3s" })
      assert.strictEqual(millis(RetryAfter.retryHint(429, reset, now)), 3000)
      assert.isUndefined(RetryAfter.retryHint(503, reset, now))
      assert.strictEqual(millis(RetryAfter.retryHint(503, headers({ "retry-after": "2" }), now)), 2000)
      assert.isUndefined(RetryAfter.retryHint(400, headers({ "retry-after": "2" }), now))
    })
  })

  describe("Errors.reasonFromStatus", () => {
    it("recognises vendor codes before the status", () => {
      const reason = (status: number, body: string, retryAfter?: Duration.Duration) =>
        Errors.reasonFromStatus(status, Errors.parseErrorBody(body), retryAfter, noScrub)
      assert.strictEqual(
        reason(400, JSON.stringify({ error: { message: "too long", code: "context_length_exceeded" } }))._tag,
        "ContextLengthExceeded"
      )
      assert.strictEqual(
        reason(
          400,
          JSON.stringify({
            type: "error",
            error: { type: "invalid_request_error", message: "prompt is too long: 9 tokens > 8 maximum" }
          })
        )._tag,
        "ContextLengthExceeded"
      )
      assert.strictEqual(
        reason(400, JSON.stringify({ error: { message: "blocked", code: "content_filter" } }))._tag,
        "ContentFiltered"
      )
      const overloaded = reason(
        529,
        JSON.stringify({ type: "error", error: { type: "overloaded_error", message: "Overloaded" } })
      )
      assert.strictEqual(overloaded._tag, "Unavailable")
      const limited = reason(429, "plain text", Duration.seconds(1))
      assert.strictEqual(limited._tag, "RateLimited")
      assert.strictEqual(reason(401, "")._tag, "Authentication")
      const bad = reason(404, JSON.stringify({ error: "model not found" }))
      assert.strictEqual(bad._tag, "BadRequest")
      assert.include(bad._tag === "BadRequest" ? bad.detail : "", "model not found")
      // A rate limit that mentions tokens is still a rate limit.
      assert.strictEqual(
        reason(429, JSON.stringify({ error: { message: "too many input tokens per minute" } }))._tag,
        "RateLimited"
      )
      // The text is read only for a refusal of the request: an outage or a rate limit that mentions a
      // content filter or a context length stays retryable.
      assert.strictEqual(
        reason(503, JSON.stringify({ error: { message: "content_filter backend down" } }))._tag,
        "Unavailable"
      )
      assert.strictEqual(
        reason(429, JSON.stringify({ error: { message: "over the maximum context length budget per minute" } }))._tag,
        "RateLimited"
      )
      assert.strictEqual(
        reason(422, JSON.stringify({ error: { message: "maximum context length is 8k" } }))._tag,
        "ContextLengthExceeded"
      )
    })
  })

  describe("Errors.makeScrub", () => {
    it("replaces every occurrence of each secret", () => {
      const scrub = Errors.makeScrub([Redacted.make("sk-123"), undefined, Redacted.make("")])
      assert.strictEqual(scrub("a sk-123 b sk-123"), "a <redacted> b <redacted>")
      assert.strictEqual(scrub("nothing"), "nothing")
    })
  })

  describe("Endpoint.resolve", () => {
    it("joins paths and derives the server", () => {
      assert.deepStrictEqual(Endpoint.resolve("http://127.0.0.1:11434/v1/", "/chat/completions"), {
        url: "http://127.0.0.1:11434/v1/chat/completions",
        server: { address: "127.0.0.1", port: 11434 }
      })
      assert.deepStrictEqual(Endpoint.resolve("https://api.anthropic.com/v1", "/messages"), {
        url: "https://api.anthropic.com/v1/messages",
        server: { address: "api.anthropic.com", port: 443 }
      })
      assert.isUndefined(Endpoint.resolve("not a url", "/x"))
      assert.isUndefined(Endpoint.resolve("ftp://host/v1", "/x"))
    })
  })
})
