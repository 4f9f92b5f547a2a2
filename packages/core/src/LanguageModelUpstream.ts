/**
 * Any `effect/ai` `LanguageModel` as an upstream.
 *
 * `fromLanguageModel` turns the `LanguageModel` in context (any provider built with
 * `LanguageModel.make`, a decorated model, a test fake) into an `Upstream`: chat messages become an
 * `effect/ai` `Prompt`, `generateText` / `streamText` answer, and the result comes back as a
 * `ChatResponse` or `ChatChunk`s with the model's finish reason and token usage. Every `AiError` reason
 * is mapped onto an `UpstreamError` reason (`reasonFromAiError`), so retries, breakers and fallbacks
 * treat it like any other upstream. It does not pass tools to the model, and the generic `LanguageModel`
 * API has no sampling options: see `Options.requestContext` for temperature and token limits.
 *
 * @since 0.1.0
 */

import * as AiError from "effect/ai/AiError"
import * as LanguageModel from "effect/ai/LanguageModel"
import * as Model from "effect/ai/Model"
import type * as Prompt from "effect/ai/Prompt"
import type * as Response from "effect/ai/Response"
import * as Clock from "effect/Clock"
import type * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import * as ChatCompletion from "./ChatCompletion.ts"
import type { Upstream } from "./Upstream.ts"
import * as UpstreamError from "./UpstreamError.ts"

// =============================================================================
// Options
// =============================================================================

/**
 * Options for {@link fromLanguageModel} and {@link fromService}.
 *
 * @category options
 * @since 0.1.0
 */
export interface Options {
  /** The upstream's name, unique among the configured upstreams. */
  readonly name: string
  /**
   * The `gen_ai.provider.name` (default: the `Model.ProviderName` in context, else `"effect-ai"`).
   */
  readonly provider?: string | undefined
  /**
   * The model name reported in responses when the model does not report one (default: the
   * `Model.ModelName` in context, else `name`).
   */
  readonly model?: string | undefined
  /**
   * Extra services for each call, built from the request.
   *
   * **When to use**
   *
   * The generic `LanguageModel` API takes a prompt only: temperature, `max_tokens` and similar are
   * provider configuration. Return the provider's per-request configuration here (for example a
   * provider `Config` service carrying `temperature` and `max_output_tokens`) and it is provided to
   * that call only.
   */
  readonly requestContext?: ((request: ChatCompletion.ChatRequest) => Context.Context<never>) | undefined
}

/**
 * The provider name used when neither the options nor the context name one.
 *
 * @category constants
 * @since 0.1.0
 */
export const defaultProvider = "effect-ai"

// =============================================================================
// Constructors
// =============================================================================

/**
 * The `LanguageModel` in context as an upstream.
 *
 * **Details**
 *
 * Reads `Model.ProviderName` and `Model.ModelName` when present (a layer built with `Model.make`
 * provides them) to default `provider` and `model`. The returned upstream no longer needs the
 * `LanguageModel` in context: it captured the service.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { LanguageModelUpstream } from "@roadcar/core"
 *
 * // `MyModel` is any Layer providing LanguageModel.LanguageModel (e.g. built with LanguageModel.make)
 * const program = Effect.gen(function*() {
 *   const upstream = yield* LanguageModelUpstream.fromLanguageModel({ name: "primary" })
 *   const response = yield* upstream.complete({ model: "chat", messages: [{ role: "user", content: "hi" }] })
 *   return response.choices[0]?.message.content
 * }).pipe(Effect.provide(MyModel))
 * ```
 *
 * @see {@link fromService} to pass the service value yourself
 *
 * @category constructors
 * @since 0.1.0
 */
export const fromLanguageModel = (options: Options): Effect.Effect<Upstream, never, LanguageModel.LanguageModel> =>
  Effect.gen(function* () {
    const languageModel = yield* LanguageModel.LanguageModel
    const providerName = yield* Effect.serviceOption(Model.ProviderName)
    const modelName = yield* Effect.serviceOption(Model.ModelName)
    return fromService(languageModel, {
      ...options,
      provider: options.provider ?? Option.getOrUndefined(providerName),
      model: options.model ?? Option.getOrUndefined(modelName)
    })
  })

/**
 * A `LanguageModel` service value as an upstream.
 *
 * **Details**
 *
 * - Messages: `system` and `developer` become system messages; `user` text becomes a user message;
 *   `assistant` text and `tool_calls` become text and tool-call parts; `tool` messages become tool
 *   results (named after the matching earlier tool call). Non-text content parts (images, audio) are
 *   dropped.
 * - Finish reasons map to OpenAI's (`"tool-calls"` → `"tool_calls"`, `"content-filter"` →
 *   `"content_filter"`, anything else but `"error"` → `"stop"`); a model that finishes with `"error"`
 *   fails with `MalformedOutput`.
 * - Usage is the model's input and output token totals; a count the model does not report is
 *   estimated (prompt: `ChatCompletion.estimatePromptTokens`, answer: about four characters a token).
 * - A stream emits its role chunk with the first content (so nothing is emitted before the model
 *   answers) and fails with `MalformedOutput` when it ends without a finish part.
 *
 * @category constructors
 * @since 0.1.0
 */
export const fromService = (languageModel: LanguageModel.LanguageModel, options: Options): Upstream => {
  const name = options.name
  const provider = options.provider ?? defaultProvider
  const model = options.model ?? name
  let counter = 0
  const nextId = Effect.sync(() => `chatcmpl-${name}-${++counter}`)
  const created = Effect.map(Clock.currentTimeMillis, (millis) => Math.floor(millis / 1000))
  const toError = (error: AiError.AiError) => toUpstreamError(name, error)
  const provideRequest =
    (request: ChatCompletion.ChatRequest) =>
    <A, E>(effect: Effect.Effect<A, E>): Effect.Effect<A, E> =>
      options.requestContext ? Effect.provideContext(effect, options.requestContext(request)) : effect

  const complete = (
    request: ChatCompletion.ChatRequest
  ): Effect.Effect<ChatCompletion.ChatResponse, UpstreamError.UpstreamError> =>
    Effect.gen(function* () {
      const response = yield* languageModel
        .generateText({ prompt: toPrompt(request.messages) })
        .pipe(provideRequest(request), Effect.mapError(toError))
      const finishReason = response.finishReason
      if (finishReason === "error") {
        return yield* Effect.fail(
          UpstreamError.make(name, new UpstreamError.MalformedOutput({ detail: "the model finished with an error" }))
        )
      }
      const metadata = response.content.find((part) => part.type === "response-metadata")
      const text = response.text
      return {
        id: metadata?.id ?? (yield* nextId),
        object: "chat.completion",
        created: yield* created,
        model: metadata?.modelId ?? model,
        choices: [
          {
            index: 0,
            message: { role: "assistant", content: text },
            finish_reason: toFinishReason(finishReason)
          }
        ],
        usage: toUsage(request, response.usage, text)
      } satisfies ChatCompletion.ChatResponse
    })

  const stream = (
    request: ChatCompletion.ChatRequest
  ): Stream.Stream<ChatCompletion.ChatChunk, UpstreamError.UpstreamError> =>
    Stream.unwrap(
      Effect.gen(function* () {
        const fallbackId = yield* nextId
        const createdAt = yield* created
        // per-run state: the stream value may be run again (a retry), each run starts fresh
        let id = fallbackId
        let modelId = model
        let started = false
        let finished = false
        let text = ""
        const chunk = (
          delta: ChatCompletion.ChatChunk["choices"][number]["delta"],
          finishReason: ChatCompletion.FinishReason | null = null
        ): ChatCompletion.ChatChunk => ({
          id,
          object: "chat.completion.chunk",
          created: createdAt,
          model: modelId,
          choices: [{ index: 0, delta, finish_reason: finishReason }]
        })
        const withRole = (chunks: Array<ChatCompletion.ChatChunk>): Array<ChatCompletion.ChatChunk> => {
          if (started) return chunks
          started = true
          return [chunk({ role: "assistant", content: "" }), ...chunks]
        }
        const onPart = (
          part: Response.StreamPart<{}>
        ): Effect.Effect<Array<ChatCompletion.ChatChunk>, UpstreamError.UpstreamError> => {
          if (finished) return Effect.succeed([])
          switch (part.type) {
            case "response-metadata": {
              if (!started) {
                if (part.id !== undefined) id = part.id
                if (part.modelId !== undefined) modelId = part.modelId
              }
              return Effect.succeed([])
            }
            case "text-delta": {
              if (part.delta.length === 0) return Effect.succeed(withRole([]))
              text += part.delta
              return Effect.succeed(withRole([chunk({ content: part.delta })]))
            }
            case "error":
              return Effect.fail(fromUnknown(name, part.error))
            case "finish": {
              finished = true
              if (part.reason === "error") {
                return Effect.fail(
                  UpstreamError.make(
                    name,
                    new UpstreamError.MalformedOutput({ detail: "the model finished with an error" })
                  )
                )
              }
              return Effect.succeed(
                withRole([{ ...chunk({}, toFinishReason(part.reason)), usage: toUsage(request, part.usage, text) }])
              )
            }
            default:
              return Effect.succeed([])
          }
        }
        const parts = languageModel.streamText({ prompt: toPrompt(request.messages) })
        const provided = options.requestContext ? Stream.provideContext(parts, options.requestContext(request)) : parts
        return provided.pipe(
          Stream.mapError(toError),
          Stream.mapEffect(onPart),
          Stream.flattenIterable,
          Stream.concat(
            Stream.suspend(() =>
              finished
                ? Stream.empty
                : Stream.fail(
                    UpstreamError.make(
                      name,
                      new UpstreamError.MalformedOutput({ detail: "stream ended before its finish reason" })
                    )
                  )
            )
          )
        )
      })
    )

  return { name, provider, model, complete, stream }
}

// =============================================================================
// Conversions
// =============================================================================

/**
 * Converts chat messages into an `effect/ai` prompt (encoded messages, as `LanguageModel` accepts).
 *
 * @see {@link fromService} for the rules
 *
 * @category conversions
 * @since 0.1.0
 */
export const toPrompt = (messages: ReadonlyArray<ChatCompletion.ChatMessage>): Array<Prompt.MessageEncoded> => {
  const toolNames = new Map<string, string>()
  const prompt: Array<Prompt.MessageEncoded> = []
  for (const message of messages) {
    const text = ChatCompletion.contentText(message.content)
    switch (message.role) {
      case "system":
      case "developer":
        prompt.push({ role: "system", content: text })
        break
      case "user":
        prompt.push({ role: "user", content: text })
        break
      case "assistant": {
        const parts: Array<Prompt.AssistantMessagePartEncoded> = []
        if (text.length > 0) parts.push({ type: "text", text })
        for (const call of message.tool_calls ?? []) {
          const id = call.id ?? `call_${toolNames.size}`
          const toolName = call.function?.name ?? "unknown"
          toolNames.set(id, toolName)
          parts.push({ type: "tool-call", id, name: toolName, params: parseArguments(call.function?.arguments) })
        }
        prompt.push({ role: "assistant", content: parts.length > 0 ? parts : "" })
        break
      }
      case "tool": {
        const id = message.tool_call_id ?? ""
        prompt.push({
          role: "tool",
          content: [
            {
              type: "tool-result",
              id,
              name: toolNames.get(id) ?? message.name ?? "unknown",
              isFailure: false,
              result: text
            }
          ]
        })
        break
      }
    }
  }
  return prompt
}

const parseArguments = (text: string | undefined): unknown => {
  if (text === undefined || text.length === 0) return {}
  try {
    return JSON.parse(text)
  } catch {
    return text
  }
}

/**
 * An `effect/ai` finish reason in OpenAI's words (`"error"` has no equivalent and maps to `"stop"`;
 * the upstream fails on it before this is used).
 *
 * @category conversions
 * @since 0.1.0
 */
export const toFinishReason = (reason: Response.FinishReason): ChatCompletion.FinishReason => {
  switch (reason) {
    case "length":
      return "length"
    case "content-filter":
      return "content_filter"
    case "tool-calls":
      return "tool_calls"
    default:
      return "stop"
  }
}

const sumDefined = (...values: ReadonlyArray<number | undefined>): number | undefined => {
  let total: number | undefined
  for (const value of values) if (value !== undefined) total = (total ?? 0) + value
  return total
}

/**
 * An `effect/ai` usage as OpenAI usage; missing counts are estimated from the request and the text.
 *
 * @category conversions
 * @since 0.1.0
 */
export const toUsage = (
  request: ChatCompletion.ChatRequest,
  usage: Response.Usage,
  text: string
): ChatCompletion.Usage =>
  ChatCompletion.usage(
    usage.inputTokens.total ??
      sumDefined(usage.inputTokens.uncached, usage.inputTokens.cacheRead, usage.inputTokens.cacheWrite) ??
      ChatCompletion.estimatePromptTokens(request),
    usage.outputTokens.total ??
      sumDefined(usage.outputTokens.text, usage.outputTokens.reasoning) ??
      Math.ceil(text.length / 4)
  )

// =============================================================================
// Errors
// =============================================================================

const contextLengthPattern =
  /context[_ ]length|context window|maximum context|too many (input )?tokens|prompt is too long/i
const timeoutPattern = /timed? ?out|timeout/i

const httpStatus = (reason: AiError.AiErrorReason): number | undefined =>
  "http" in reason ? reason.http?.response?.status : undefined

const timedOut = () => new UpstreamError.TimedOut({ phase: "attempt", after: Duration.zero })

/**
 * Maps an `effect/ai` error reason onto an upstream error reason.
 *
 * **Details**
 *
 * | `AiError` reason | `UpstreamError` reason |
 * | --- | --- |
 * | `RateLimitError` | `RateLimited` (keeps `retryAfter`) |
 * | `QuotaExhaustedError` | `BadRequest` (status 429 unless the response says otherwise; not retryable) |
 * | `AuthenticationError` | `Authentication` (the response status, else 403 for `InsufficientPermissions`, else 401) |
 * | `ContentPolicyError` | `ContentFiltered` |
 * | `InvalidRequestError` | `ContextLengthExceeded` when its text says so, else `BadRequest` (status or 400) |
 * | `InternalProviderError` | `Unavailable` (the 5xx status, else 500) |
 * | `NetworkError` `TransportError` | `TimedOut` when its text mentions a timeout, else `ConnectionFailed` |
 * | `NetworkError` `EncodeError`, `InvalidUrlError` | `BadRequest` (400) |
 * | `InvalidResponseError`, `InvalidOutputError`, `StructuredOutputError` | `MalformedOutput` |
 * | `UnknownError` | `TimedOut` on timeout text, else by its HTTP status (`UpstreamError.fromStatus`), else `Unavailable` (500) |
 * | `UnsupportedSchemaError`, tool and user-input errors | `BadRequest` (400) |
 *
 * @category error handling
 * @since 0.1.0
 */
export const reasonFromAiError = (reason: AiError.AiErrorReason): UpstreamError.Reason => {
  const status = httpStatus(reason)
  switch (reason._tag) {
    case "RateLimitError":
      return reason.retryAfter === undefined
        ? new UpstreamError.RateLimited({})
        : new UpstreamError.RateLimited({ retryAfter: reason.retryAfter })
    case "QuotaExhaustedError":
      return new UpstreamError.BadRequest({ status: status ?? 429, detail: reason.message })
    case "AuthenticationError":
      return new UpstreamError.Authentication({
        status: status ?? (reason.kind === "InsufficientPermissions" ? 403 : 401)
      })
    case "ContentPolicyError":
      return new UpstreamError.ContentFiltered({ detail: reason.description })
    case "InvalidRequestError": {
      const detail = reason.message
      if (contextLengthPattern.test(`${detail} ${reason.http?.body ?? ""}`)) {
        return new UpstreamError.ContextLengthExceeded({ detail })
      }
      return new UpstreamError.BadRequest({ status: status ?? 400, detail })
    }
    case "InternalProviderError":
      return new UpstreamError.Unavailable({
        status: status !== undefined && status >= 500 ? status : 500,
        detail: reason.description
      })
    case "NetworkError":
      if (reason.reason === "TransportError") {
        return timeoutPattern.test(reason.description ?? "")
          ? timedOut()
          : new UpstreamError.ConnectionFailed({ detail: reason.description ?? "transport error" })
      }
      return new UpstreamError.BadRequest({ status: 400, detail: reason.message })
    case "InvalidResponseError":
    case "InvalidOutputError":
    case "StructuredOutputError":
      return new UpstreamError.MalformedOutput({ detail: reason.description })
    case "UnknownError": {
      const detail = reason.description ?? "unknown error"
      if (timeoutPattern.test(detail)) return timedOut()
      return status !== undefined
        ? UpstreamError.fromStatus(status, detail)
        : new UpstreamError.Unavailable({ status: 500, detail })
    }
    case "UnsupportedSchemaError":
    case "ToolNotFoundError":
    case "ToolParameterValidationError":
    case "InvalidToolResultError":
    case "ToolResultEncodingError":
    case "ToolConfigurationError":
    case "ToolkitRequiredError":
    case "InvalidUserInputError":
      return new UpstreamError.BadRequest({ status: 400, detail: reason.message })
  }
}

/**
 * Wraps an `AiError` as the `UpstreamError` of upstream `upstream`.
 *
 * @example
 * ```ts
 * import { AiError } from "effect/ai"
 * import { LanguageModelUpstream } from "@roadcar/core"
 * const error = AiError.make({ module: "Fake", method: "generateText", reason: new AiError.RateLimitError({}) })
 * LanguageModelUpstream.toUpstreamError("primary", error).reason._tag // => "RateLimited"
 * ```
 *
 * @category error handling
 * @since 0.1.0
 */
export const toUpstreamError = (upstream: string, error: AiError.AiError): UpstreamError.UpstreamError =>
  UpstreamError.make(upstream, reasonFromAiError(error.reason))

/** An error part of a stream: an `AiError`, a bare reason, or anything else (a connection failure). */
const fromUnknown = (upstream: string, error: unknown): UpstreamError.UpstreamError => {
  if (AiError.isAiError(error)) return toUpstreamError(upstream, error)
  if (AiError.isAiErrorReason(error)) return UpstreamError.make(upstream, reasonFromAiError(error))
  if (UpstreamError.isUpstreamError(error)) return error
  return UpstreamError.make(
    upstream,
    new UpstreamError.ConnectionFailed({ detail: error instanceof Error ? error.message : String(error) })
  )
}
