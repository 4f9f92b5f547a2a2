/**
 * Which traces are exported: the OpenTelemetry samplers `always_on`, `always_off`, `traceidratio`
 * and their `parentbased_*` forms, as data, and a tracer wrapper that applies one.
 *
 * A sampler decides once per trace, at its root span (or at the first span under a remote parent
 * that arrived in a W3C `traceparent`); the spans below follow that decision, so a trace is exported
 * whole or not at all. `traceidratio` is a deterministic function of the trace id (its lower 56 bits,
 * as the OpenTelemetry specification recommends), so every service that samples by ratio keeps the
 * same traces. Unsampled spans still exist (they carry ids and propagate) but are never exported.
 *
 * @since 0.1.0
 */
import * as Option from "effect/Option"
import * as Result from "effect/Result"
import type * as Tracer from "effect/Tracer"

// =============================================================================
// Models
// =============================================================================

/**
 * A sampler, as data.
 *
 * - `AlwaysOn`: every trace.
 * - `AlwaysOff`: no trace.
 * - `TraceIdRatio`: a fraction `ratio` (0 to 1) of traces, chosen by trace id.
 * - `ParentBased`: follow a remote parent's decision (its `sampled` flag); use `root` for new traces.
 *
 * @category models
 * @since 0.1.0
 */
export type Sampler =
  | { readonly _tag: "AlwaysOn" }
  | { readonly _tag: "AlwaysOff" }
  | { readonly _tag: "TraceIdRatio"; readonly ratio: number }
  | { readonly _tag: "ParentBased"; readonly root: Sampler }

/**
 * Samples every trace.
 *
 * @category constructors
 * @since 0.1.0
 */
export const alwaysOn: Sampler = { _tag: "AlwaysOn" }

/**
 * Samples no trace: nothing is exported.
 *
 * @category constructors
 * @since 0.1.0
 */
export const alwaysOff: Sampler = { _tag: "AlwaysOff" }

/**
 * Samples a fraction of traces, chosen deterministically by trace id.
 *
 * **Gotchas**
 *
 * Throws a `RangeError` naming the function when `ratio` is not a number between 0 and 1.
 *
 * @example
 * ```ts
 * import { Sampler } from "@roadcar/opentelemetry"
 * Sampler.traceIdRatio(0.25) // => { _tag: "TraceIdRatio", ratio: 0.25 }
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const traceIdRatio = (ratio: number): Sampler => {
  if (!(ratio >= 0 && ratio <= 1)) {
    throw new RangeError(`Sampler.traceIdRatio: ratio must be between 0 and 1, got ${ratio}`)
  }
  return { _tag: "TraceIdRatio", ratio }
}

/**
 * Follows the sampling decision of a remote parent (an incoming `traceparent`), and uses `root`
 * for traces that start here.
 *
 * @category constructors
 * @since 0.1.0
 */
export const parentBased = (root: Sampler): Sampler => ({ _tag: "ParentBased", root })

/**
 * The default sampler: `parentbased_always_on`.
 *
 * @category constructors
 * @since 0.1.0
 */
export const defaultSampler: Sampler = parentBased(alwaysOn)

// =============================================================================
// Decisions
// =============================================================================

// 2^56: `traceidratio` compares the lower 56 bits of the trace id (14 hex digits) with ratio * 2^56.
const idSpace = 2 ** 56

/**
 * Whether a trace id falls within `ratio`: its lower 56 bits, read as a number, are below
 * `ratio * 2^56`. The same id always gets the same answer.
 *
 * @example
 * ```ts
 * import { Sampler } from "@roadcar/opentelemetry"
 * Sampler.traceIdWithin("0af7651916cd43dd8448eb211c80319c", 1) // => true
 * Sampler.traceIdWithin("0af7651916cd43dd8448eb211c80319c", 0) // => false
 * ```
 *
 * @category tracing
 * @since 0.1.0
 */
export const traceIdWithin = (traceId: string, ratio: number): boolean => {
  if (ratio >= 1) return true
  if (ratio <= 0) return false
  const low = Number.parseInt(traceId.slice(-14), 16)
  return Number.isFinite(low) && low < ratio * idSpace
}

/**
 * What the sampler is told about a span that starts a trace here, or continues a remote one.
 *
 * @category models
 * @since 0.1.0
 */
export interface Decision {
  /** The trace id the span will carry. */
  readonly traceId: string
  /** The remote parent's `sampled` flag, when the span continues an incoming trace. */
  readonly remoteParentSampled?: boolean | undefined
}

/**
 * Decides whether a trace is sampled.
 *
 * @example
 * ```ts
 * import { Sampler } from "@roadcar/opentelemetry"
 * const sampler = Sampler.parentBased(Sampler.alwaysOff)
 * Sampler.shouldSample(sampler, { traceId: "0af7651916cd43dd8448eb211c80319c" }) // => false
 * Sampler.shouldSample(sampler, { traceId: "0af7651916cd43dd8448eb211c80319c", remoteParentSampled: true }) // => true
 * ```
 *
 * @category tracing
 * @since 0.1.0
 */
export const shouldSample = (sampler: Sampler, decision: Decision): boolean => {
  switch (sampler._tag) {
    case "AlwaysOn":
      return true
    case "AlwaysOff":
      return false
    case "TraceIdRatio":
      return traceIdWithin(decision.traceId, sampler.ratio)
    case "ParentBased":
      return decision.remoteParentSampled ?? shouldSample(sampler.root, { traceId: decision.traceId })
  }
}

/**
 * Wraps a tracer so that its spans are sampled by `sampler`.
 *
 * **Details**
 *
 * A span under a local parent keeps Effect's own decision (the parent's), so a trace is decided
 * once. A root span is created first and sampled by its own trace id; when the sampler says no, an
 * unsampled span takes its place (the discarded one is never ended, so never exported). A span
 * under a remote parent (`Tracer.ExternalSpan`) is decided by the sampler with the parent's flag.
 * A span Effect already marked unsampled for its trace level stays unsampled.
 *
 * @category tracing
 * @since 0.1.0
 */
export const tracer = (inner: Tracer.Tracer, sampler: Sampler): Tracer.Tracer => {
  const wrapped: Tracer.Tracer = {
    span(options) {
      const parent = Option.getOrUndefined(options.parent)
      if (parent !== undefined && parent._tag === "Span") return inner.span(options)
      if (parent !== undefined) {
        // Effect marks a span under an unsampled parent unsampled; the sampler may overrule that.
        const sampled = shouldSample(sampler, { traceId: parent.traceId, remoteParentSampled: parent.sampled })
        const levelAllows = options.sampled || !parent.sampled
        return inner.span({ ...options, sampled: sampled && levelAllows })
      }
      if (!options.sampled || sampler._tag === "AlwaysOff") return inner.span({ ...options, sampled: false })
      const candidate = inner.span(options)
      return shouldSample(sampler, { traceId: candidate.traceId })
        ? candidate
        : inner.span({ ...options, sampled: false })
    }
  }
  return inner.context === undefined ? wrapped : { ...wrapped, context: inner.context }
}

// =============================================================================
// Parsing
// =============================================================================

/**
 * Reads `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`: `always_on`, `always_off`,
 * `traceidratio`, `parentbased_always_on`, `parentbased_always_off`, `parentbased_traceidratio`
 * (the ratio from the argument, default 1). A missing name gives {@link defaultSampler}; an unknown
 * name or a bad ratio is an error message.
 *
 * @example
 * ```ts
 * import { Result } from "effect"
 * import { Sampler } from "@roadcar/opentelemetry"
 * Result.getOrThrow(Sampler.parse("parentbased_traceidratio", "0.1"))
 * // => { _tag: "ParentBased", root: { _tag: "TraceIdRatio", ratio: 0.1 } }
 * Result.isFailure(Sampler.parse("jaeger_remote", undefined)) // => true
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const parse = (name: string | undefined, argument: string | undefined): Result.Result<Sampler, string> => {
  const ratio = (): Result.Result<number, string> => {
    if (argument === undefined || argument.trim() === "") return Result.succeed(1)
    const value = Number(argument.trim())
    return value >= 0 && value <= 1
      ? Result.succeed(value)
      : Result.fail(`OTEL_TRACES_SAMPLER_ARG must be a number between 0 and 1, got "${argument}"`)
  }
  switch ((name ?? "").trim().toLowerCase()) {
    case "":
    case "parentbased_always_on":
      return Result.succeed(defaultSampler)
    case "always_on":
      return Result.succeed(alwaysOn)
    case "always_off":
      return Result.succeed(alwaysOff)
    case "parentbased_always_off":
      return Result.succeed(parentBased(alwaysOff))
    case "traceidratio":
      return Result.map(ratio(), traceIdRatio)
    case "parentbased_traceidratio":
      return Result.map(ratio(), (value) => parentBased(traceIdRatio(value)))
    default:
      return Result.fail(
        `OTEL_TRACES_SAMPLER "${name}" is not supported (always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio)`
      )
  }
}
