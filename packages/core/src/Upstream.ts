/**
 * An upstream: one model deployment that can answer chat requests (a provider endpoint, the simulated
 * model, or any `effect/ai` `LanguageModel`).
 *
 * Upstreams are plain values: the pipeline wraps each one in its own breaker, retry and timeouts, and
 * chains them into fallbacks. An upstream fails only with `UpstreamError`, whatever went wrong, and it
 * answers in the model contract's shapes whatever wire format it speaks.
 *
 * @since 0.1.0
 */
import type * as Effect from "effect/Effect"
import type * as Stream from "effect/Stream"
import type { ChatChunk, ChatRequest, ChatResponse } from "./ChatCompletion.ts"
import type { UpstreamError } from "./UpstreamError.ts"

/**
 * One model deployment.
 *
 * **Details**
 *
 * - `name` is unique among the configured upstreams; breakers, logs and metrics use it.
 * - `provider` is the `gen_ai.provider.name` (`"openai"`, `"anthropic"`, `"roadcar.simulated"`, ...).
 * - `model` is the model name the upstream is asked for; `complete` and `stream` send it in place of
 *   the request's public model name.
 * - `stream` emits chunks as they arrive; the last chunk carries usage. A stream that ends before its
 *   finish reason fails with `MalformedOutput`, so a cut answer is never mistaken for a complete one.
 *
 * @category models
 * @since 0.1.0
 */
export interface Upstream {
  readonly name: string
  readonly provider: string
  readonly model: string
  readonly server?: { readonly address: string; readonly port: number } | undefined
  readonly complete: (request: ChatRequest) => Effect.Effect<ChatResponse, UpstreamError>
  readonly stream: (request: ChatRequest) => Stream.Stream<ChatChunk, UpstreamError>
}
