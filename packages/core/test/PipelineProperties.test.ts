import { assert, describe, it } from "@effect/vitest"
import { Breaker, Monitor, Pipeline, ResponseCache } from "@roadcar/core"
import { Cause, Effect, Exit, Fiber, Layer, Schema } from "effect"
import { TestClock } from "effect/testing"
import { badRequest, type Outcome, rateLimited, request, scripted, unavailable } from "./utils/Scripted.ts"

const Step = Schema.Literals(["ok", "503", "429", "429-hint", "400", "hang", "slow-ok"])
type Step = typeof Step.Type
const Script = Schema.Array(Step).check(Schema.isMaxLength(5))

const toOutcome = (step: Step): Outcome => {
  switch (step) {
    case "ok":
      return "ok"
    case "503":
      return unavailable
    case "429":
      return rateLimited()
    case "429-hint":
      return rateLimited("1500 millis")
    case "400":
      return badRequest
    case "hang":
      return "hang"
    case "slow-ok":
      return { delay: "1 second" }
  }
}

// What the primary step should do with a script: succeed, or fail with the reason that ends it.
const expectPrimary = (script: ReadonlyArray<Step>, attempts: number) => {
  for (let i = 0; i < attempts; i++) {
    const step = script[i] ?? "ok"
    if (step === "ok" || step === "slow-ok") return { calls: i + 1, succeeded: true, fallbackAllowed: false }
    if (step === "400") return { calls: i + 1, succeeded: false, fallbackAllowed: false }
    if (step === "hang") return { calls: i + 1, succeeded: false, fallbackAllowed: true }
  }
  return { calls: attempts, succeeded: false, fallbackAllowed: true }
}

const Stages = Layer.mergeAll(
  Breaker.layerMemory({ ...Breaker.defaults, consecutiveFailures: 10_000 }),
  Monitor.layerNoop
)

const runToEnd = <A, E>(effect: Effect.Effect<A, E>) =>
  Effect.gen(function* () {
    const fiber = yield* Effect.forkChild(effect)
    let elapsed = 0
    while (fiber.pollUnsafe() === undefined && elapsed < 120_000) {
      yield* TestClock.adjust("250 millis")
      elapsed += 250
    }
    return { exit: yield* Fiber.await(fiber), elapsed }
  })

describe("Pipeline properties", () => {
  it.effect.prop(
    "one answer per request, bounded attempts, fallback exactly when the primary is exhausted or not retryable",
    { primary: Script, fallback: Script, withStatic: Schema.Boolean },
    ({ primary: primaryScript, fallback: fallbackScript, withStatic }) =>
      Effect.gen(function* () {
        const primary = scripted("primary", primaryScript.map(toOutcome))
        const fallback = scripted("fallback", fallbackScript.map(toOutcome))
        const options = {
          steps: [{ upstream: primary }, { upstream: fallback }],
          retry: { baseDelay: "200 millis" },
          timeouts: { attempt: "5 seconds", total: "60 seconds" },
          ...(withStatic ? { staticAnswer: "static" } : {})
        } as const
        const pipeline = yield* Pipeline.make(options)
        const { exit, elapsed } = yield* runToEnd(pipeline.complete(request()))

        // Exactly one answer, within the deadline, and never a defect.
        assert.isTrue(elapsed <= 60_250, `answered after ${elapsed}ms`)
        if (Exit.isFailure(exit)) {
          assert.isFalse(Cause.hasDies(exit.cause), "no defect")
          assert.isFalse(withStatic, "with a static answer nothing fails")
        }
        // Never more than the configured attempts per upstream.
        assert.isTrue(primary.calls.length <= 3)
        assert.isTrue(fallback.calls.length <= 3)
        // The fallback is used if and only if the primary is exhausted or failed for good.
        const expected = expectPrimary(primaryScript, 3)
        assert.strictEqual(primary.calls.length, expected.calls)
        assert.strictEqual(fallback.calls.length > 0, !expected.succeeded && expected.fallbackAllowed)
        if (Exit.isSuccess(exit)) {
          const meta = exit.value.meta
          assert.strictEqual(meta.attempts, primary.calls.length + fallback.calls.length)
          assert.strictEqual(meta.upstream === "primary", expected.succeeded)
          assert.strictEqual(meta.fallback === undefined, expected.succeeded)
        }
      }).pipe(Effect.scoped, Effect.provide(Stages)),
    { arbitrary: { runs: 150 } }
  )

  it.effect.prop(
    "K concurrent identical requests make one upstream call",
    { k: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 40 })), content: Schema.String },
    ({ k, content }) =>
      Effect.gen(function* () {
        const primary = scripted("primary", [], { delay: "500 millis" })
        const pipeline = yield* Pipeline.make({ steps: [{ upstream: primary }] })
        const fiber = yield* Effect.forkChild(
          Effect.all(
            Array.from({ length: k }, () => pipeline.complete(request(`q ${content}`))),
            { concurrency: "unbounded" }
          )
        )
        yield* TestClock.adjust("500 millis")
        const answers = yield* Fiber.join(fiber)
        assert.strictEqual(answers.length, k)
        assert.strictEqual(primary.calls.length, 1)
        assert.strictEqual(answers.filter((answer) => answer.meta.cacheHit).length, k - 1)
      }).pipe(Effect.scoped, Effect.provide(Layer.merge(Stages, ResponseCache.layer()))),
    { arbitrary: { runs: 30 } }
  )
})
