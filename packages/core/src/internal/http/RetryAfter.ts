/**
 * Reads how long an upstream asked us to wait, from its response headers.
 *
 * Understands `retry-after-ms`, `Retry-After` (seconds or an HTTP date), OpenAI's
 * `x-ratelimit-reset-requests` / `x-ratelimit-reset-tokens` (Go durations such as `"6m0s"`) and
 * Anthropic's `anthropic-ratelimit-*-reset` (RFC 3339 times). It only parses; whether a hint applies
 * (a 429, a 5xx) is decided by the caller through {@link retryHint}.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Headers from "effect/http/Headers"
import * as Option from "effect/Option"
import * as Result from "effect/Result"

const header = (headers: Headers.Headers, name: string): string | undefined => {
  const value = Option.getOrUndefined(Headers.get(headers, name))
  return value === undefined ? undefined : value.trim()
}

const decimal = /^\d+(?:\.\d+)?$/

/**
 * Parses a Go-style duration as OpenAI writes it in `x-ratelimit-reset-*`: `"1s"`, `"6m0s"`,
 * `"20ms"`, `"1h2m3.5s"`. A bare number is read as seconds.
 *
 * @category parsing
 * @since 0.1.0
 */
export const parseGoDuration = (input: string): Duration.Duration | undefined => {
  const text = input.trim()
  if (text.length === 0) return undefined
  if (decimal.test(text)) return Duration.millis(Number(text) * 1000)
  const unitMillis: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1, us: 0.001, µs: 0.001, ns: 1e-6 }
  const part = /(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)/y
  let millis = 0
  let position = 0
  while (position < text.length) {
    part.lastIndex = position
    const match = part.exec(text)
    if (match === null) return undefined
    const [, amount, unit] = match
    millis += Number(amount) * (unitMillis[unit ?? ""] ?? 0)
    position = part.lastIndex
  }
  return Duration.millis(millis)
}

/**
 * The delay asked for by `retry-after-ms` or `Retry-After` (delta seconds, fractional seconds, or an
 * HTTP date measured from `now`), if either is present and readable.
 *
 * @category parsing
 * @since 0.1.0
 */
export const fromRetryAfter = (headers: Headers.Headers, now: number): Duration.Duration | undefined => {
  const millis = header(headers, "retry-after-ms")
  if (millis !== undefined && decimal.test(millis)) return Duration.millis(Number(millis))
  const value = header(headers, "retry-after")
  if (value === undefined) return undefined
  if (decimal.test(value)) return Duration.millis(Number(value) * 1000)
  const parsed = Headers.parseRetryAfter(value)
  return Result.isSuccess(parsed) ? Headers.retryAfterDelay(parsed.success, now) : undefined
}

const openAiLimits = ["requests", "tokens"] as const
const anthropicLimits = ["requests", "tokens", "input-tokens", "output-tokens"] as const

/**
 * The delay until the exhausted rate limit window resets, from OpenAI's `x-ratelimit-reset-*` or
 * Anthropic's `anthropic-ratelimit-*-reset` headers.
 *
 * **Details**
 *
 * When a `*-remaining` header says which limit is at zero, only that limit's reset counts; otherwise
 * the longest reset wins (the request cannot pass before every window allows it).
 *
 * @category parsing
 * @since 0.1.0
 */
export const fromRateLimitReset = (headers: Headers.Headers, now: number): Duration.Duration | undefined => {
  const exhausted: Array<Duration.Duration> = []
  const all: Array<Duration.Duration> = []
  const add = (reset: Duration.Duration | undefined, remaining: string | undefined) => {
    if (reset === undefined) return
    all.push(reset)
    if (remaining !== undefined && Number(remaining) <= 0) exhausted.push(reset)
  }
  for (const limit of openAiLimits) {
    const reset = header(headers, `x-ratelimit-reset-${limit}`)
    add(reset === undefined ? undefined : parseGoDuration(reset), header(headers, `x-ratelimit-remaining-${limit}`))
  }
  for (const limit of anthropicLimits) {
    const reset = header(headers, `anthropic-ratelimit-${limit}-reset`)
    const at = reset === undefined ? Number.NaN : Date.parse(reset)
    add(
      Number.isNaN(at) ? undefined : Duration.millis(Math.max(0, at - now)),
      header(headers, `anthropic-ratelimit-${limit}-remaining`)
    )
  }
  const candidates = exhausted.length > 0 ? exhausted : all
  return candidates.length === 0 ? undefined : candidates.reduce((a, b) => Duration.max(a, b))
}

/**
 * The retry hint for an error status: for a 429, `Retry-After` (or `retry-after-ms`) and then the
 * rate limit reset headers; for a 5xx, only `Retry-After`; otherwise none.
 *
 * @category parsing
 * @since 0.1.0
 */
export const retryHint = (status: number, headers: Headers.Headers, now: number): Duration.Duration | undefined => {
  if (status === 429) return fromRetryAfter(headers, now) ?? fromRateLimitReset(headers, now)
  if (status >= 500) return fromRetryAfter(headers, now)
  return undefined
}
