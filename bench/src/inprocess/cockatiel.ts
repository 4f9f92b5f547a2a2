/**
 * cockatiel's four-policy wrap around the raw async call: `wrap(retry, circuitBreaker, timeout,
 * bulkhead)`: 3 attempts (no backoff: cockatiel's default `ConstantBackoff(0)`), a consecutive-failure
 * breaker, a 30 s aggressive timeout (the caller gets its answer at the deadline, as with Effect's
 * timeout), and a bulkhead; and the same with `abortOnReturn: false` on the timeout (no `abort()` of
 * the call's signal once it returned).
 */
import {
  bulkhead,
  ConsecutiveBreaker,
  circuitBreaker,
  handleAll,
  retry,
  TimeoutStrategy,
  timeout,
  wrap
} from "cockatiel"
import { FailTwice, response, thrownError } from "./fixtures.ts"
import type { Candidate, Path } from "./measure.ts"
import { rawAsync, rawAsyncCandidate, verifyAnswers } from "./raw.ts"

const policy = (abortOnReturn: boolean) =>
  wrap(
    retry(handleAll, { maxAttempts: 2 }),
    circuitBreaker(handleAll, { halfOpenAfter: 30_000, breaker: new ConsecutiveBreaker(5) }),
    timeout(30_000, { strategy: TimeoutStrategy.Aggressive, abortOnReturn }),
    bulkhead(1_000)
  )

/** One cockatiel candidate. */
export const wrapped = (options: { readonly abortOnReturn: boolean; readonly path: Path }): Candidate => {
  const protect = policy(options.abortOnReturn)
  const script = new FailTwice()
  const failTwice = async (_i: number) => {
    if (script.next()) throw thrownError
    return response
  }
  const inner = options.path === "success" ? rawAsync : failTwice
  const call = (i: number) => protect.execute(() => inner(i))
  const suffix = options.abortOnReturn ? "" : "-no-abort"
  return {
    id: options.path === "success" ? `cockatiel${suffix}` : `cockatiel${suffix}-fail-twice`,
    label: `cockatiel wrap(retry, circuitBreaker, timeout, bulkhead)${options.abortOnReturn ? "" : ", abortOnReturn: false"}${options.path === "success" ? "" : ", fail twice then succeed"}`,
    path: options.path,
    baseline: rawAsyncCandidate,
    call,
    verify: async () => {
      const problem = await verifyAnswers(call)()
      if (problem !== undefined) return problem
      const before = script.attempts
      await call(0)
      const expected = options.path === "success" ? 0 : 3
      return script.attempts - before === expected ? undefined : `expected ${expected} scripted attempts`
    }
  }
}
