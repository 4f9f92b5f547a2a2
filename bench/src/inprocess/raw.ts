/**
 * The raw calls every candidate is compared with: an async function that resolves at once with the
 * fixed response, and an Effect that succeeds at once with it, run on a prebuilt context.
 */
import * as Effect from "effect/Effect"
import { answerText, response } from "./fixtures.ts"
import type { Candidate } from "./measure.ts"

/** The raw async call: what a Promise-based library wraps. */
export const rawAsync = async (_i: number): Promise<typeof response> => response

/** Checks that a result carries the fixed answer (a ChatResponse, a Roadcar answer, a string, a message). */
export const carriesAnswer = (result: unknown): boolean => {
  if (result === answerText) return true
  if (typeof result !== "object" || result === null) return false
  const record = result as Record<string, unknown>
  if (record["text"] === answerText || record["content"] === answerText) return true
  const inner = record["response"] ?? record
  const choices = (inner as { choices?: ReadonlyArray<{ message?: { content?: unknown } }> }).choices
  return choices?.[0]?.message?.content === answerText
}

/** A verify step: `count` calls that must each carry the answer. */
export const verifyAnswers =
  (call: (i: number) => Promise<unknown>, count = 5) =>
  async (): Promise<string | undefined> => {
    for (let i = 0; i < count; i++) {
      const result = await call(i)
      if (!carriesAnswer(result)) return `call ${i} returned ${JSON.stringify(result)?.slice(0, 200)}`
    }
    return undefined
  }

/** The raw async baseline. */
export const rawAsyncCandidate: Candidate = {
  id: "raw-async",
  label: "raw async function",
  path: "success",
  baseline: undefined,
  call: rawAsync,
  verify: verifyAnswers(rawAsync)
}

/** Runs effects that need nothing, the way the Effect candidates run theirs. */
export const runEffect: <A, E>(effect: Effect.Effect<A, E>) => Promise<A> = Effect.runPromise

const rawEffectCall = (_i: number) => runEffect(Effect.succeed(response))

/** The raw Effect baseline: `Effect.runPromise(Effect.succeed(response))`. */
export const rawEffectCandidate: Candidate = {
  id: "raw-effect",
  label: "raw Effect (runPromise of Effect.succeed)",
  path: "success",
  baseline: undefined,
  call: rawEffectCall,
  verify: verifyAnswers(rawEffectCall)
}
