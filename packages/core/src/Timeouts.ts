/**
 * Time limits for upstream calls: per attempt, time to first chunk, gap between chunks, and the
 * request's total deadline.
 *
 * Each limit fails with `UpstreamError` reason `TimedOut` naming its phase, so retry and fallback can
 * tell a silent upstream from a broken one. The stream limits apply while chunks flow: the first chunk
 * must come within `firstChunk`, each next one within `chunkGap` of the previous.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { TimedOut, UpstreamError } from "./UpstreamError.ts"

/**
 * The time limits.
 *
 * @category options
 * @since 0.1.0
 */
export interface Options {
  /** One upstream attempt, JSON answers (default 30s). */
  readonly attempt: Duration.Input
  /** From the request to the first streamed chunk (default 15s). */
  readonly firstChunk: Duration.Input
  /** Between two streamed chunks (default 10s). */
  readonly chunkGap: Duration.Input
  /** The whole request, every retry and fallback included (default 60s). */
  readonly total: Duration.Input
}

/**
 * @category options
 * @since 0.1.0
 */
export const defaults: Options = {
  attempt: "30 seconds",
  firstChunk: "15 seconds",
  chunkGap: "10 seconds",
  total: "60 seconds"
}

const timedOut = (upstream: string, phase: TimedOut["phase"], after: Duration.Duration) =>
  new UpstreamError({ upstream, reason: new TimedOut({ phase, after }) })

/**
 * Fails an effect with `TimedOut` after `after` (the effect is interrupted).
 *
 * @category combinators
 * @since 0.1.0
 */
export const limit = <A, R>(
  self: Effect.Effect<A, UpstreamError, R>,
  upstream: string,
  phase: TimedOut["phase"],
  after: Duration.Duration
): Effect.Effect<A, UpstreamError, R> =>
  Duration.isFinite(after)
    ? Effect.timeoutOrElse(self, { duration: after, orElse: () => Effect.fail(timedOut(upstream, phase, after)) })
    : self
