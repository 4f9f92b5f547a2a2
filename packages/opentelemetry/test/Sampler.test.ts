import { assert, describe, it } from "@effect/vitest"
import { Effect, Option, Result, Tracer } from "effect"
import { Sampler } from "../src/index.ts"

// A tracer that records the sampling decision of every span it creates.
const recording = () => {
  const spans: Array<Tracer.NativeSpan> = []
  const inner = Tracer.make({
    span(options) {
      const span = new Tracer.NativeSpan(options)
      spans.push(span)
      return span
    }
  })
  return { spans, inner }
}

const randomTraceId = () => Array.from({ length: 32 }, () => Math.floor(Math.random() * 16).toString(16)).join("")

describe("Sampler", () => {
  describe("traceIdWithin", () => {
    it("is a deterministic function of the trace id's lower 56 bits", () => {
      assert.isTrue(Sampler.traceIdWithin("ffffffffffffffffff00000000000000", 0.01))
      assert.isFalse(Sampler.traceIdWithin("00000000000000000fffffffffffffff", 0.5))
      assert.isTrue(Sampler.traceIdWithin("00000000000000000fffffffffffffff", 1))
      assert.isFalse(Sampler.traceIdWithin("00000000000000000000000000000000", 0))
      const id = randomTraceId()
      assert.strictEqual(Sampler.traceIdWithin(id, 0.3), Sampler.traceIdWithin(id, 0.3))
    })

    it("keeps about `ratio` of random trace ids", () => {
      const ids = Array.from({ length: 4000 }, randomTraceId)
      const kept = ids.filter((id) => Sampler.traceIdWithin(id, 0.25)).length / ids.length
      assert.closeTo(kept, 0.25, 0.05)
    })
  })

  describe("shouldSample", () => {
    const traceId = "0af7651916cd43dd8448eb211c80319c"
    it("follows a remote parent only when parent-based", () => {
      assert.isTrue(Sampler.shouldSample(Sampler.alwaysOn, { traceId, remoteParentSampled: false }))
      assert.isFalse(Sampler.shouldSample(Sampler.alwaysOff, { traceId, remoteParentSampled: true }))
      assert.isTrue(
        Sampler.shouldSample(Sampler.parentBased(Sampler.alwaysOff), { traceId, remoteParentSampled: true })
      )
      assert.isFalse(
        Sampler.shouldSample(Sampler.parentBased(Sampler.alwaysOn), { traceId, remoteParentSampled: false })
      )
      assert.isTrue(Sampler.shouldSample(Sampler.defaultSampler, { traceId }))
      assert.isFalse(Sampler.shouldSample(Sampler.parentBased(Sampler.traceIdRatio(0)), { traceId }))
    })

    it("refuses a ratio outside 0..1", () => {
      assert.throws(() => Sampler.traceIdRatio(1.5), RangeError, "Sampler.traceIdRatio")
      assert.throws(() => Sampler.traceIdRatio(Number.NaN), RangeError)
    })
  })

  describe("parse", () => {
    it("reads every OTEL_TRACES_SAMPLER name, with the ratio from OTEL_TRACES_SAMPLER_ARG", () => {
      const parsed = (name: string | undefined, argument?: string) => Result.getOrThrow(Sampler.parse(name, argument))
      assert.deepStrictEqual(parsed(undefined), Sampler.parentBased(Sampler.alwaysOn))
      assert.deepStrictEqual(parsed("always_on"), Sampler.alwaysOn)
      assert.deepStrictEqual(parsed("ALWAYS_OFF"), Sampler.alwaysOff)
      assert.deepStrictEqual(parsed("parentbased_always_on"), Sampler.parentBased(Sampler.alwaysOn))
      assert.deepStrictEqual(parsed("parentbased_always_off"), Sampler.parentBased(Sampler.alwaysOff))
      assert.deepStrictEqual(parsed("traceidratio", "0.1"), Sampler.traceIdRatio(0.1))
      assert.deepStrictEqual(parsed("traceidratio"), Sampler.traceIdRatio(1))
      assert.deepStrictEqual(
        parsed("parentbased_traceidratio", " 0.5 "),
        Sampler.parentBased(Sampler.traceIdRatio(0.5))
      )
    })

    it("names the problem with an unknown sampler or a bad ratio", () => {
      const failure = (name: string, argument?: string) => {
        const parsed = Sampler.parse(name, argument)
        return Result.isFailure(parsed) ? parsed.failure : "parsed"
      }
      assert.include(failure("jaeger_remote"), "not supported")
      assert.include(failure("traceidratio", "2"), "OTEL_TRACES_SAMPLER_ARG")
      assert.include(failure("traceidratio", "half"), "between 0 and 1")
    })
  })

  describe("tracer", () => {
    it.effect("decides at the root; children follow, so a trace is exported whole or not at all", () =>
      Effect.gen(function* () {
        for (const [sampler, expected] of [
          [Sampler.alwaysOff, false],
          [Sampler.parentBased(Sampler.alwaysOff), false],
          [Sampler.traceIdRatio(1), true],
          [Sampler.parentBased(Sampler.traceIdRatio(0)), false]
        ] as const) {
          const { spans, inner } = recording()
          yield* Effect.void.pipe(
            Effect.withSpan("child"),
            Effect.withSpan("root"),
            Effect.withTracer(Sampler.tracer(inner, sampler))
          )
          const created = spans.filter((span) => span.status._tag === "Ended")
          assert.deepStrictEqual(
            created.map((span) => [span.name, span.sampled]),
            [
              ["root", expected],
              ["child", expected]
            ]
          )
        }
      })
    )

    it.effect("samples by the root's own trace id, so children of a kept root keep its id", () =>
      Effect.gen(function* () {
        const { spans, inner } = recording()
        const tracer = Sampler.tracer(inner, Sampler.traceIdRatio(0.5))
        for (let index = 0; index < 40; index++) {
          yield* Effect.void.pipe(Effect.withSpan("child"), Effect.withSpan("root"), Effect.withTracer(tracer))
        }
        const ended = spans.filter((span) => span.status._tag === "Ended")
        const roots = ended.filter((span) => span.name === "root")
        const kept = roots.filter((root) => root.sampled)
        // a refused root is a candidate that is never ended, replaced by an unsampled span
        const refused = spans.filter((span) => span.status._tag !== "Ended")
        assert.strictEqual(roots.length, 40)
        assert.strictEqual(refused.length, roots.length - kept.length)
        for (const root of kept) assert.isTrue(Sampler.traceIdWithin(root.traceId, 0.5))
        for (const candidate of refused) assert.isFalse(Sampler.traceIdWithin(candidate.traceId, 0.5))
        for (const child of ended.filter((span) => span.name === "child")) {
          const parent = Option.getOrThrow(child.parent)
          assert.strictEqual(child.sampled, parent.sampled)
          assert.strictEqual(child.traceId, parent.traceId)
        }
        assert.isAbove(kept.length, 0)
        assert.isAbove(refused.length, 0)
      })
    )

    it.effect("under a remote parent, parent-based samplers follow its flag and others decide", () =>
      Effect.gen(function* () {
        const decide = (sampler: Sampler.Sampler, sampled: boolean) =>
          Effect.gen(function* () {
            const { spans, inner } = recording()
            const parent = Tracer.externalSpan({
              traceId: "0af7651916cd43dd8448eb211c80319c",
              spanId: "b7ad6b7169203331",
              sampled
            })
            yield* Effect.void.pipe(
              Effect.withSpan("server"),
              Effect.withParentSpan(parent),
              Effect.withTracer(Sampler.tracer(inner, sampler))
            )
            return spans[0]!.sampled
          })
        assert.isTrue(yield* decide(Sampler.parentBased(Sampler.alwaysOff), true))
        assert.isFalse(yield* decide(Sampler.parentBased(Sampler.alwaysOn), false))
        assert.isTrue(yield* decide(Sampler.alwaysOn, false))
        assert.isFalse(yield* decide(Sampler.alwaysOff, true))
      })
    )
  })
})
