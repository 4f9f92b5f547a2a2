/**
 * Whether a span opened now would be seen by anyone, for the request path's own spans.
 *
 * A span nobody exports costs as much as one that is exported, so Roadcar's stages open theirs only
 * when a tracer other than Effect's in-memory default is installed (the check `Tracer.nativeTracer`
 * documents for this), tracing is enabled, and the parent span, if any, is sampled.
 *
 * @internal
 */
import type * as Fiber from "effect/Fiber"
import * as Tracer from "effect/Tracer"

/** Whether spans opened in `fiber` now would be recorded by a tracer that exports them. */
export const tracing = (fiber: Fiber.Fiber<unknown, unknown>): boolean => {
  const cache = fiber.cache
  if (!cache.tracerEnabled || cache.tracer === undefined || cache.tracer === Tracer.nativeTracer) return false
  return cache.span === undefined || cache.span.sampled
}
