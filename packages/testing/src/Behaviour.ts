/**
 * What the fake upstream does with one request: answer healthily, or misbehave in one precise way.
 *
 * A `Behaviour` is plain tagged data (`_tag` plus options), so it can be stored, compared and printed.
 * The same behaviour works for both wire formats (OpenAI chat completions and Anthropic Messages); each
 * constructor's JSDoc says what the client sees. Behaviours that only make sense for a stream (or only
 * for a JSON answer) answer healthily when they do not apply, and the attempt log then says `"ok"`.
 * Choosing a behaviour per attempt is the job of `Script`.
 *
 * @since 0.1.0
 */

// =============================================================================
// Models
// =============================================================================

/**
 * A healthy answer: `"echo: <last user message>"`, streamed in chunks of a few words when asked to.
 *
 * @category models
 * @since 0.1.0
 */
export interface Ok {
  readonly _tag: "Ok"
  /** Delay before anything is sent (status line included). */
  readonly latencyMs?: number | undefined
  /** Delay between two streamed text chunks. */
  readonly chunkDelayMs?: number | undefined
  /** Answer with this text instead of the echo. */
  readonly text?: string | undefined
}

/**
 * HTTP 429 with the wire format's rate-limit error body.
 *
 * @category models
 * @since 0.1.0
 */
export interface RateLimited {
  readonly _tag: "RateLimited"
  /** Sent as `retry-after: <seconds>`. */
  readonly retryAfterSeconds?: number | undefined
  /** Sent as `retry-after-ms: <ms>`. */
  readonly retryAfterMs?: number | undefined
}

/**
 * Any HTTP error status with the wire format's error body.
 *
 * @category models
 * @since 0.1.0
 */
export interface Status {
  readonly _tag: "Status"
  readonly status: number
  /** Sent as `retry-after: <seconds>`. */
  readonly retryAfterSeconds?: number | undefined
  /** The error message in the body (a generic one by default). */
  readonly message?: string | undefined
}

/**
 * The connection is reset before any response byte is sent.
 *
 * @category models
 * @since 0.1.0
 */
export interface Reset {
  readonly _tag: "Reset"
}

/**
 * No response at all: the request is read and then never answered.
 *
 * @category models
 * @since 0.1.0
 */
export interface Hang {
  readonly _tag: "Hang"
}

/**
 * The status line and headers come at once; the first stream chunk (or the JSON body) comes after `ms`.
 *
 * @category models
 * @since 0.1.0
 */
export interface SlowFirstChunk {
  readonly _tag: "SlowFirstChunk"
  readonly ms: number
}

/**
 * The socket is destroyed after `chunks` text chunks (mid-answer).
 *
 * @category models
 * @since 0.1.0
 */
export interface CutAfter {
  readonly _tag: "CutAfter"
  readonly chunks: number
}

/**
 * Nothing more is sent after `chunks` text chunks, and the socket stays open.
 *
 * @category models
 * @since 0.1.0
 */
export interface StallAfter {
  readonly _tag: "StallAfter"
  readonly chunks: number
}

/**
 * The text chunk at index `atChunk` (0-based) is sent as invalid JSON; the rest of the stream is healthy.
 *
 * @category models
 * @since 0.1.0
 */
export interface MalformedChunk {
  readonly _tag: "MalformedChunk"
  readonly atChunk: number
}

/**
 * A complete stream without its terminator (`data: [DONE]` for OpenAI, `message_stop` for Anthropic).
 *
 * @category models
 * @since 0.1.0
 */
export interface NoDone {
  readonly _tag: "NoDone"
}

/**
 * HTTP 400: the prompt is longer than the model's context window.
 *
 * @category models
 * @since 0.1.0
 */
export interface ContextLengthExceeded {
  readonly _tag: "ContextLengthExceeded"
}

/**
 * HTTP 400: the request was refused by the provider's content filter.
 *
 * @category models
 * @since 0.1.0
 */
export interface ContentFiltered {
  readonly _tag: "ContentFiltered"
}

/**
 * HTTP 200 with `content-type: application/json` and a body that is not valid JSON.
 *
 * @category models
 * @since 0.1.0
 */
export interface MalformedJson {
  readonly _tag: "MalformedJson"
}

/**
 * Waits `ms`, then does `behaviour`.
 *
 * @category models
 * @since 0.1.0
 */
export interface Delayed {
  readonly _tag: "Delayed"
  readonly ms: number
  readonly behaviour: Behaviour
}

/**
 * Everything the fake upstream can do with one request.
 *
 * @category models
 * @since 0.1.0
 */
export type Behaviour =
  | Ok
  | RateLimited
  | Status
  | Reset
  | Hang
  | SlowFirstChunk
  | CutAfter
  | StallAfter
  | MalformedChunk
  | NoDone
  | ContextLengthExceeded
  | ContentFiltered
  | MalformedJson
  | Delayed

const tags: ReadonlySet<string> = new Set<Behaviour["_tag"]>([
  "Ok",
  "RateLimited",
  "Status",
  "Reset",
  "Hang",
  "SlowFirstChunk",
  "CutAfter",
  "StallAfter",
  "MalformedChunk",
  "NoDone",
  "ContextLengthExceeded",
  "ContentFiltered",
  "MalformedJson",
  "Delayed"
])

/**
 * Whether a value is a `Behaviour` (as opposed to a `Script`).
 *
 * @category guards
 * @since 0.1.0
 */
export const isBehaviour = (u: unknown): u is Behaviour =>
  typeof u === "object" && u !== null && "_tag" in u && typeof u._tag === "string" && tags.has(u._tag)

// =============================================================================
// Constructors
// =============================================================================

const nonNegative = (name: string, n: number): number => {
  if (!Number.isFinite(n) || n < 0) throw new RangeError(`Behaviour.${name}: expected a number >= 0, got ${n}`)
  return n
}

const chunkIndex = (name: string, n: number): number => {
  if (!Number.isInteger(n) || n < 0) throw new RangeError(`Behaviour.${name}: expected an integer >= 0, got ${n}`)
  return n
}

/**
 * A healthy answer.
 *
 * **Details**
 *
 * The answer is `"echo: <text of the last user message>"` (or `options.text`), with `model` echoing the
 * requested model and token usage of about four characters a token. Streamed, it is split into chunks of
 * two words (the fake upstream's `wordsPerChunk` option). `latencyMs` delays the whole response; `chunkDelayMs` spaces the streamed text chunks.
 *
 * @example
 * ```ts
 * import { Behaviour } from "@roadcar/testing"
 * Behaviour.ok({ latencyMs: 50 }) // => { _tag: "Ok", latencyMs: 50 }
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const ok = (
  options: {
    readonly latencyMs?: number | undefined
    readonly chunkDelayMs?: number | undefined
    readonly text?: string | undefined
  } = {}
): Ok => {
  if (options.latencyMs !== undefined) nonNegative("ok", options.latencyMs)
  if (options.chunkDelayMs !== undefined) nonNegative("ok", options.chunkDelayMs)
  return { _tag: "Ok", ...options }
}

/**
 * HTTP 429. The client sees the wire format's rate-limit error (`rate_limit_exceeded` /
 * `rate_limit_error`) and, when given, `retry-after` (whole seconds) and/or `retry-after-ms` headers.
 *
 * @category constructors
 * @since 0.1.0
 */
export const rateLimited = (
  options: { readonly retryAfterSeconds?: number | undefined; readonly retryAfterMs?: number | undefined } = {}
): RateLimited => {
  if (options.retryAfterSeconds !== undefined) nonNegative("rateLimited", options.retryAfterSeconds)
  if (options.retryAfterMs !== undefined) nonNegative("rateLimited", options.retryAfterMs)
  return { _tag: "RateLimited", ...options }
}

/**
 * An HTTP error status (400..599) with the wire format's error body (for example 500, 503, or
 * Anthropic's 529 `overloaded_error`).
 *
 * @example
 * ```ts
 * import { Behaviour } from "@roadcar/testing"
 * Behaviour.status(503, { retryAfterSeconds: 2 }) // => { _tag: "Status", status: 503, retryAfterSeconds: 2 }
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const status = (
  code: number,
  options: { readonly retryAfterSeconds?: number | undefined; readonly message?: string | undefined } = {}
): Status => {
  if (!Number.isInteger(code) || code < 400 || code > 599) {
    throw new RangeError(`Behaviour.status: expected an error status 400..599, got ${code}`)
  }
  if (options.retryAfterSeconds !== undefined) nonNegative("status", options.retryAfterSeconds)
  return { _tag: "Status", status: code, ...options }
}

/**
 * Resets the connection (TCP RST) after reading the request, before any response byte. The client
 * sees a network error (`ECONNRESET`, "fetch failed").
 *
 * @category constructors
 * @since 0.1.0
 */
export const reset = (): Reset => ({ _tag: "Reset" })

/**
 * Never answers. The client waits until its own timeout; closing the fake upstream destroys the
 * connection, so a hanging request never keeps the process alive.
 *
 * @category constructors
 * @since 0.1.0
 */
export const hang = (): Hang => ({ _tag: "Hang" })

/**
 * Sends the status line and headers at once, then waits `ms` before the first stream event (or before
 * the JSON body). Tests first-byte / first-token timeouts.
 *
 * @category constructors
 * @since 0.1.0
 */
export const slowFirstChunk = (ms: number): SlowFirstChunk => ({
  _tag: "SlowFirstChunk",
  ms: nonNegative("slowFirstChunk", ms)
})

/**
 * Streams the preamble and `chunks` text chunks, then destroys the socket: no finish reason, no usage,
 * no terminator. A JSON answer is cut halfway through its body instead.
 *
 * @category constructors
 * @since 0.1.0
 */
export const cutAfter = (chunks: number): CutAfter => ({ _tag: "CutAfter", chunks: chunkIndex("cutAfter", chunks) })

/**
 * Streams the preamble and `chunks` text chunks, then sends nothing more and keeps the socket open
 * (until the client gives up or the fake upstream closes). A JSON answer stalls halfway through its body.
 *
 * @category constructors
 * @since 0.1.0
 */
export const stallAfter = (chunks: number): StallAfter => ({
  _tag: "StallAfter",
  chunks: chunkIndex("stallAfter", chunks)
})

/**
 * Replaces the text chunk at index `atChunk` (0-based: `atChunk` good text chunks come first) with a data
 * line that is not valid JSON; the rest of the stream, terminator included, is healthy. A JSON answer
 * gets a malformed body, as with {@link malformedJson}.
 *
 * @category constructors
 * @since 0.1.0
 */
export const malformedChunk = (atChunk: number): MalformedChunk => ({
  _tag: "MalformedChunk",
  atChunk: chunkIndex("malformedChunk", atChunk)
})

/**
 * Streams a complete answer (finish reason and usage included) but ends the response without
 * `data: [DONE]` (OpenAI) or the `message_stop` event (Anthropic). A JSON answer is healthy.
 *
 * @category constructors
 * @since 0.1.0
 */
export const noDone = (): NoDone => ({ _tag: "NoDone" })

/**
 * HTTP 400. OpenAI: `{"error":{"code":"context_length_exceeded","type":"invalid_request_error",...}}`;
 * Anthropic: `invalid_request_error` with message `"prompt is too long: ..."`.
 *
 * @category constructors
 * @since 0.1.0
 */
export const contextLengthExceeded = (): ContextLengthExceeded => ({ _tag: "ContextLengthExceeded" })

/**
 * HTTP 400. OpenAI: `{"error":{"code":"content_policy_violation",...}}`; Anthropic:
 * `invalid_request_error` with message `"Output blocked by content filtering policy"`.
 *
 * @category constructors
 * @since 0.1.0
 */
export const contentFiltered = (): ContentFiltered => ({ _tag: "ContentFiltered" })

/**
 * HTTP 200, `content-type: application/json`, and a truncated body that does not parse. A streamed
 * request gets its first text chunk malformed instead, as with `malformedChunk(0)`.
 *
 * @category constructors
 * @since 0.1.0
 */
export const malformedJson = (): MalformedJson => ({ _tag: "MalformedJson" })

/**
 * Waits `ms` before doing `behaviour` (default: a healthy answer), e.g. a slow 429.
 *
 * @example
 * ```ts
 * import { Behaviour } from "@roadcar/testing"
 * Behaviour.delayed(80, Behaviour.rateLimited()) // 429 after 80ms
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const delayed = (ms: number, behaviour: Behaviour = ok()): Delayed => ({
  _tag: "Delayed",
  ms: nonNegative("delayed", ms),
  behaviour
})
