/**
 * The same protection written directly with Effect's combinators, no Roadcar: `Effect.retry` +
 * `Effect.timeout` + a fallback with `Effect.catch`, and `Effect.timeout` alone, around an upstream
 * effect that succeeds at once (or fails twice, then succeeds).
 */
import * as Effect from "effect/Effect"
import { FailTwice, response, upstreamError } from "./fixtures.ts"
import type { Candidate, Path } from "./measure.ts"
import { rawEffectCandidate, runEffect, verifyAnswers } from "./raw.ts"

const upstreamCall = (path: Path) => {
  const script = new FailTwice()
  return {
    call:
      path === "success"
        ? Effect.succeed(response)
        : Effect.suspend(() => (script.next() ? Effect.fail(upstreamError) : Effect.succeed(response))),
    attempts: () => script.attempts
  }
}

const fallbackCall = Effect.succeed(response)

/** `upstream.pipe(Effect.timeout("30 seconds"), Effect.retry({ times: 2 }), Effect.catch(() => fallback))`. */
export const retryTimeoutFallback = (path: Path): Candidate => {
  const upstream = upstreamCall(path)
  const call = (_i: number) =>
    runEffect(
      upstream.call.pipe(
        Effect.timeout("30 seconds"),
        Effect.retry({ times: 2 }),
        Effect.catch(() => fallbackCall)
      )
    )
  return {
    id: path === "success" ? "effect-retry-timeout-fallback" : "effect-retry-timeout-fallback-fail-twice",
    label:
      path === "success"
        ? "bare Effect retry + timeout + fallback"
        : "bare Effect retry + timeout + fallback, fail twice then succeed",
    path,
    baseline: rawEffectCandidate,
    call,
    verify: async () => {
      const problem = await verifyAnswers(call)()
      if (problem !== undefined) return problem
      const before = upstream.attempts()
      await call(0)
      const expected = path === "success" ? 0 : 3
      return upstream.attempts() - before === expected ? undefined : `expected ${expected} scripted attempts`
    }
  }
}

/** `Effect.timeout("30 seconds")` alone. */
export const timeoutAlone: Candidate = (() => {
  const call = (_i: number) => runEffect(Effect.succeed(response).pipe(Effect.timeout("30 seconds")))
  return {
    id: "effect-timeout",
    label: "Effect.timeout alone",
    path: "success",
    baseline: rawEffectCandidate,
    call,
    verify: verifyAnswers(call)
  }
})()
