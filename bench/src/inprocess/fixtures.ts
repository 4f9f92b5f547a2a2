/**
 * The fixed data every in-process candidate works on: one ChatResponse, a ring of distinct requests
 * (so a response cache always misses), and prebuilt errors for the fail-twice-then-succeed path.
 *
 * Errors are built once and thrown or failed again and again: the benchmark measures what the
 * protection costs, not what building an error (and its stack trace) costs.
 */
import type { ChatCompletion } from "@roadcar/core"
import { Unavailable, UpstreamError } from "@roadcar/core/UpstreamError"

/** The answer every call returns. */
export const response: ChatCompletion.ChatResponse = {
  id: "chatcmpl-bench",
  object: "chat.completion",
  created: 1_700_000_000,
  model: "bench-model",
  choices: [{ index: 0, message: { role: "assistant", content: "ok" }, finish_reason: "stop" }],
  usage: { prompt_tokens: 8, completion_tokens: 1, total_tokens: 9 }
}

/** The text of `response`, which every candidate's result must carry. */
export const answerText = "ok"

/** Distinct requests, cycled through; a cache holding fewer entries than this never hits. */
export const requestRing = 8192

/** Request `i` of the ring: `{ model, messages: [{ role: "user", content: "question <i>" }] }`. */
export const requests: ReadonlyArray<ChatCompletion.ChatRequest> = Array.from({ length: requestRing }, (_, i) => ({
  model: "bench",
  messages: [{ role: "user", content: `question ${i}` }]
}))

/** The prompt of request `i`, for the candidates that take a string. */
export const prompts: ReadonlyArray<string> = requests.map((_, i) => `question ${i}`)

/** The error an Effect upstream fails with (retryable: 503). */
export const upstreamError: UpstreamError = new UpstreamError({
  upstream: "bench",
  reason: new Unavailable({ status: 503 })
})

/** The error a Promise-based call throws. */
export const thrownError: Error = new Error("upstream unavailable (503)")

/**
 * Counts attempts and fails the first two of every three: attempt 3n and 3n+1 fail, 3n+2 succeeds.
 * With 3 attempts allowed, every call succeeds on its third attempt.
 */
export class FailTwice {
  attempts = 0
  /** True when this attempt must fail. */
  next(): boolean {
    return this.attempts++ % 3 !== 2
  }
}
