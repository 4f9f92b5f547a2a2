/**
 * The one error every upstream fails with, and its reasons.
 *
 * `UpstreamError` names the upstream (deployment) that failed and carries a `reason` that knows whether
 * it is worth retrying and how long the upstream asked us to wait. Every provider maps its HTTP
 * statuses, error bodies and transport failures onto these reasons, so retry, breaker and fallback
 * decisions never look at vendor-specific details.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"

// =============================================================================
// Reasons
// =============================================================================

/**
 * The upstream said 429 (too many requests). Retryable; `retryAfter` is the upstream's hint.
 *
 * @category errors
 * @since 0.1.0
 */
export class RateLimited extends Schema.TaggedError<RateLimited>()("RateLimited", {
  retryAfter: Schema.optionalKey(Schema.Duration)
}) {
  get isRetryable(): boolean {
    return true
  }
  get description(): string {
    return this.retryAfter
      ? `rate limited (429, retry after ${Duration.format(this.retryAfter)})`
      : "rate limited (429)"
  }
}

/**
 * A timeout fired: per attempt, before the first chunk, between two chunks, or the request's total
 * deadline. Retryable, but by default a timed-out attempt moves on to the next fallback step instead
 * of waiting on the same silent upstream again.
 *
 * @category errors
 * @since 0.1.0
 */
export class TimedOut extends Schema.TaggedError<TimedOut>()("TimedOut", {
  phase: Schema.Literals(["attempt", "first-chunk", "chunk-gap", "deadline"]),
  after: Schema.Duration
}) {
  get isRetryable(): boolean {
    return this.phase !== "deadline"
  }
  get description(): string {
    return `timed out (${this.phase} after ${Duration.format(this.after)})`
  }
}

/**
 * The upstream answered with a 5xx status (or said it is overloaded). Retryable.
 *
 * @category errors
 * @since 0.1.0
 */
export class Unavailable extends Schema.TaggedError<Unavailable>()("Unavailable", {
  status: Schema.Int,
  retryAfter: Schema.optionalKey(Schema.Duration),
  detail: Schema.optionalKey(Schema.String)
}) {
  get isRetryable(): boolean {
    return true
  }
  get description(): string {
    return `upstream unavailable (${this.status})`
  }
}

/**
 * The connection failed, was refused or was reset, before or during the answer. Retryable.
 *
 * @category errors
 * @since 0.1.0
 */
export class ConnectionFailed extends Schema.TaggedError<ConnectionFailed>()("ConnectionFailed", {
  detail: Schema.String
}) {
  get isRetryable(): boolean {
    return true
  }
  get description(): string {
    return `connection failed (${this.detail})`
  }
}

/**
 * The upstream rejected the request as malformed (400, 404, 422, ...). Not retryable.
 *
 * @category errors
 * @since 0.1.0
 */
export class BadRequest extends Schema.TaggedError<BadRequest>()("BadRequest", {
  status: Schema.Int,
  detail: Schema.String
}) {
  get isRetryable(): boolean {
    return false
  }
  get description(): string {
    return `bad request (${this.status}: ${this.detail})`
  }
}

/**
 * The upstream refused our credentials (401, 403). Not retryable.
 *
 * @category errors
 * @since 0.1.0
 */
export class Authentication extends Schema.TaggedError<Authentication>()("Authentication", {
  status: Schema.Int
}) {
  get isRetryable(): boolean {
    return false
  }
  get description(): string {
    return `authentication failed (${this.status})`
  }
}

/**
 * The prompt does not fit the model's context window. Not retryable on the same model; a fallback
 * step with a larger context can take it.
 *
 * @category errors
 * @since 0.1.0
 */
export class ContextLengthExceeded extends Schema.TaggedError<ContextLengthExceeded>()("ContextLengthExceeded", {
  detail: Schema.String
}) {
  get isRetryable(): boolean {
    return false
  }
  get description(): string {
    return "context length exceeded"
  }
}

/**
 * The upstream's content policy refused the request or the answer. Not retried on the same model.
 *
 * @category errors
 * @since 0.1.0
 */
export class ContentFiltered extends Schema.TaggedError<ContentFiltered>()("ContentFiltered", {
  detail: Schema.String
}) {
  get isRetryable(): boolean {
    return false
  }
  get description(): string {
    return "content filtered"
  }
}

/**
 * The upstream answered, but not with something we could read (bad JSON, a malformed chunk, a stream
 * cut before it finished). Retryable: the next attempt usually answers properly.
 *
 * @category errors
 * @since 0.1.0
 */
export class MalformedOutput extends Schema.TaggedError<MalformedOutput>()("MalformedOutput", {
  detail: Schema.String
}) {
  get isRetryable(): boolean {
    return true
  }
  get description(): string {
    return `malformed upstream output (${this.detail})`
  }
}

/**
 * The upstream's circuit breaker is open: the call was not made. Not retried on the same upstream
 * (the breaker would refuse again); the fallback chain moves on at once.
 *
 * @category errors
 * @since 0.1.0
 */
export class CircuitOpen extends Schema.TaggedError<CircuitOpen>()("CircuitOpen", {
  retryAfter: Schema.optionalKey(Schema.Duration)
}) {
  get isRetryable(): boolean {
    return false
  }
  get description(): string {
    return "circuit open"
  }
}

/**
 * Every reason an upstream call can fail for.
 *
 * @category errors
 * @since 0.1.0
 */
export type Reason =
  | RateLimited
  | TimedOut
  | Unavailable
  | ConnectionFailed
  | BadRequest
  | Authentication
  | ContextLengthExceeded
  | ContentFiltered
  | MalformedOutput
  | CircuitOpen

/**
 * @category errors
 * @since 0.1.0
 */
export const Reason = Schema.Union([
  RateLimited,
  TimedOut,
  Unavailable,
  ConnectionFailed,
  BadRequest,
  Authentication,
  ContextLengthExceeded,
  ContentFiltered,
  MalformedOutput,
  CircuitOpen
])

/**
 * The tag of a reason, e.g. `"Unavailable"`: a bounded value, safe for metric labels.
 *
 * @category errors
 * @since 0.1.0
 */
export type ReasonTag = Reason["_tag"]

// =============================================================================
// Error
// =============================================================================

const TypeId = "~@roadcar/core/UpstreamError"

/**
 * An upstream call failed. `upstream` is the deployment's name; `reason` says why.
 *
 * @example
 * ```ts
 * import { UpstreamError } from "@roadcar/core"
 * const error = new UpstreamError.UpstreamError({ upstream: "openai", reason: new UpstreamError.Unavailable({ status: 503 }) })
 * error.isRetryable // => true
 * error.message // => "openai: upstream unavailable (503)"
 * ```
 *
 * @category errors
 * @since 0.1.0
 */
export class UpstreamError extends Schema.TaggedError<UpstreamError>()("UpstreamError", {
  upstream: Schema.String,
  reason: Reason
}) {
  readonly [TypeId] = TypeId

  get isRetryable(): boolean {
    return this.reason.isRetryable
  }

  get retryAfter(): Duration.Duration | undefined {
    const reason = this.reason
    return reason._tag === "RateLimited" || reason._tag === "Unavailable" || reason._tag === "CircuitOpen"
      ? reason.retryAfter
      : undefined
  }

  override get message(): string {
    return `${this.upstream}: ${this.reason.description}`
  }
}

/**
 * Whether a value is an `UpstreamError`.
 *
 * @category guards
 * @since 0.1.0
 */
export const isUpstreamError = (u: unknown): u is UpstreamError => Predicate.hasProperty(u, TypeId)

/**
 * Shorthand for `new UpstreamError({ upstream, reason })`.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = (upstream: string, reason: Reason): UpstreamError => new UpstreamError({ upstream, reason })

/**
 * Maps an HTTP error status (and the upstream's error text) onto a reason. Providers call this after
 * recognising vendor-specific codes such as `context_length_exceeded`. The text is read only for a
 * refusal of the request itself (a 4xx other than 401, 403, 408 and 429): a 503 or a 429 that
 * mentions a content filter or a context length is still unavailable or rate limited, and retried.
 *
 * @example
 * ```ts
 * import { UpstreamError } from "@roadcar/core"
 * UpstreamError.fromStatus(400, "This model's maximum context length is 8192 tokens")._tag // => "ContextLengthExceeded"
 * UpstreamError.fromStatus(503, "content_filter service unavailable")._tag // => "Unavailable"
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const fromStatus = (status: number, detail: string, retryAfter?: Duration.Duration): Reason => {
  const refusal = status >= 400 && status < 500 && status !== 401 && status !== 403 && status !== 408 && status !== 429
  const lower = refusal ? detail.toLowerCase() : ""
  if (lower.includes("context_length_exceeded") || lower.includes("maximum context length")) {
    return new ContextLengthExceeded({ detail })
  }
  if (lower.includes("content_policy_violation") || lower.includes("content_filter")) {
    return new ContentFiltered({ detail })
  }
  if (status === 429) return retryAfter ? new RateLimited({ retryAfter }) : new RateLimited({})
  if (status === 401 || status === 403) return new Authentication({ status })
  if (status === 408) return new TimedOut({ phase: "attempt", after: Duration.zero })
  if (status >= 500) {
    return retryAfter ? new Unavailable({ status, retryAfter, detail }) : new Unavailable({ status, detail })
  }
  return new BadRequest({ status, detail })
}
