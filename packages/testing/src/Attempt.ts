/**
 * The fake upstream's log entry for one request: what arrived and what the fake upstream did with it.
 *
 * Every request is logged, in arrival order, including unknown paths and malformed request bodies.
 * Secrets never reach the log: the `authorization`, `proxy-authorization`, `x-api-key`, `api-key`
 * and `cookie` headers are replaced by `"[redacted]"` (the body is logged as sent).
 *
 * @since 0.1.0
 */

/**
 * Which wire format a request spoke: `/v1/chat/completions` is OpenAI, `/v1/messages` is Anthropic;
 * other paths are Anthropic when the request carries an `anthropic-version` header, else OpenAI.
 *
 * @category models
 * @since 0.1.0
 */
export type Wire = "openai" | "anthropic"

/**
 * What the fake upstream did, as logged in `Attempt.fault`.
 *
 * **Details**
 *
 * - `"ok"`: a healthy answer (also when the chosen behaviour does not apply, e.g. `noDone` on JSON).
 * - `"429"`, `"500"`, `"503"`, ...: that HTTP error status (`rateLimited` and `status(n)`).
 * - `"reset"`, `"hang"`, `"slow_first_chunk"`, `"cut"`, `"stall"`, `"malformed_chunk"`, `"no_done"`,
 *   `"context_length_exceeded"`, `"content_filtered"`, `"malformed_json"`: that behaviour.
 * - `"not_found"`: unknown path or method (404, no script consulted).
 * - `"bad_request"`: the request body was not JSON or lacked `model` / `messages` (400, no script
 *   consulted).
 *
 * @category models
 * @since 0.1.0
 */
export type Fault =
  | "ok"
  | `${number}`
  | "reset"
  | "hang"
  | "slow_first_chunk"
  | "cut"
  | "stall"
  | "malformed_chunk"
  | "no_done"
  | "context_length_exceeded"
  | "content_filtered"
  | "malformed_json"
  | "not_found"
  | "bad_request"

/**
 * One request seen by the fake upstream.
 *
 * @category models
 * @since 0.1.0
 */
export interface Attempt {
  /** 0-based position in the log (restarts at 0 after `clearAttempts`). */
  readonly index: number
  /** When the request arrived, epoch ms (`Date.now()`). */
  readonly at: number
  readonly method: string
  /** The request path, query string included. */
  readonly path: string
  readonly wire: Wire
  /** The request body's `model`, or `""` (e.g. `GET /v1/models`). */
  readonly model: string
  /** Whether the request asked for a stream (`"stream": true`). */
  readonly stream: boolean
  readonly fault: Fault
  /** Request headers, lower-cased, with credentials replaced by `"[redacted]"`. */
  readonly headers: Readonly<Record<string, string>>
  /** The parsed JSON body; the raw text when it is not JSON; `undefined` when there is none. */
  readonly body: unknown
}
