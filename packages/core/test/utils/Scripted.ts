// A scripted upstream for pipeline tests: each call takes the next outcome of its script and records
// the Clock time it started at.

import { ChatCompletion, type Upstream, UpstreamError } from "@roadcar/core"
import { Clock, Duration, Effect, Stream } from "effect"

export type Outcome =
  | "ok"
  | "hang"
  | { readonly fail: UpstreamError.Reason }
  | { readonly delay: Duration.Input; readonly after?: "ok" | { readonly fail: UpstreamError.Reason } }

export interface Scripted extends Upstream.Upstream {
  readonly calls: Array<number>
}

export const unavailable = { fail: new UpstreamError.Unavailable({ status: 503 }) } as const
export const badRequest = { fail: new UpstreamError.BadRequest({ status: 400, detail: "bad" }) } as const
export const rateLimited = (retryAfter?: Duration.Input) => ({
  fail: retryAfter
    ? new UpstreamError.RateLimited({ retryAfter: Duration.fromInputUnsafe(retryAfter) })
    : new UpstreamError.RateLimited({})
})

export const response = (model: string, text: string): ChatCompletion.ChatResponse => ({
  id: `chatcmpl-${model}`,
  object: "chat.completion",
  created: 0,
  model,
  choices: [{ index: 0, message: { role: "assistant", content: text }, finish_reason: "stop" }],
  usage: ChatCompletion.usage(5, 3)
})

export const scripted = (name: string, script: ReadonlyArray<Outcome>, otherwise: Outcome = "ok"): Scripted => {
  const calls: Array<number> = []
  const run = (outcome: Outcome): Effect.Effect<ChatCompletion.ChatResponse, UpstreamError.UpstreamError> => {
    if (outcome === "ok") return Effect.succeed(response(name, `answer from ${name}`))
    if (outcome === "hang") return Effect.never
    if ("fail" in outcome) return Effect.fail(UpstreamError.make(name, outcome.fail))
    return Effect.andThen(Effect.sleep(outcome.delay), run(outcome.after ?? "ok"))
  }
  const next = Effect.flatMap(Clock.currentTimeMillis, (now) => {
    const outcome = script[calls.length] ?? otherwise
    calls.push(now)
    return run(outcome)
  })
  return {
    name,
    provider: "test",
    model: name,
    calls,
    complete: () => next,
    stream: () => Stream.unwrap(Effect.map(next, (r) => Stream.fromIterable(ChatCompletion.responseToChunks(r))))
  }
}

export const request = (
  content = "hello",
  extra: Partial<ChatCompletion.ChatRequest> = {}
): ChatCompletion.ChatRequest => ({
  model: "chat",
  messages: [{ role: "user", content }],
  ...extra
})
