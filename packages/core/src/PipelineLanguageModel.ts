/**
 * A Roadcar pipeline as an `effect/ai` `LanguageModel`.
 *
 * A program written against `LanguageModel.generateText` / `streamText` becomes production-grade by
 * swapping one layer: `layer(pipeline)` answers every call through the pipeline (rate limit, cache,
 * retries, timeouts, breakers, fallback chain, static answer). The `effect/ai` prompt becomes a
 * `ChatRequest` (system, user, assistant text, tool calls, tool results; toolkit tools as OpenAI
 * functions), and the pipeline's answer comes back as encoded response parts with the finish reason,
 * the token usage and the response metadata, plus what Roadcar did (`roadcar` metadata: which
 * upstream answered, attempts, cache hit, fallback). Pipeline failures become `AiError`s whose reason
 * keeps the meaning (rate limited, retryable provider or network failure, invalid request, ...).
 * This is the opposite direction of `LanguageModelUpstream`. The generic `LanguageModel` API has no
 * sampling options (temperature, token limits): the requests carry none.
 *
 * @since 0.1.0
 */
import * as AiError from "effect/ai/AiError"
import * as LanguageModel from "effect/ai/LanguageModel"
import * as Prompt from "effect/ai/Prompt"
import type * as Response from "effect/ai/Response"
import * as Tool from "effect/ai/Tool"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Base64 from "effect/encoding/Base64"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import type * as ChatCompletion from "./ChatCompletion.ts"
import * as Pipeline from "./Pipeline.ts"
import * as UpstreamError from "./UpstreamError.ts"

// =============================================================================
// Options
// =============================================================================

/**
 * Options for {@link make}, {@link layer} and {@link layerFromService}. Every field is optional.
 *
 * @category options
 * @since 0.1.0
 */
export interface Options {
  /** The public model name the requests ask for (default {@link defaultModel}). */
  readonly model?: string | undefined
  /**
   * The pipeline's call options (who is asking, a request id) for one call, from the options
   * `LanguageModel` prepared for it. Default: none (the pipeline generates a request id).
   */
  readonly callOptions?: ((options: LanguageModel.ProviderOptions) => Pipeline.CallOptions) | undefined
}

/**
 * The model name requests carry when the options name none.
 *
 * @category constants
 * @since 0.1.0
 */
export const defaultModel = "default"

/**
 * The `module` of every `AiError` this model fails with.
 *
 * @category constants
 * @since 0.1.0
 */
export const moduleName = "PipelineLanguageModel"

/**
 * The metadata key under which the `response-metadata` part carries the pipeline's {@link Metadata}.
 *
 * @category constants
 * @since 0.1.0
 */
export const metadataKey = "roadcar"

/**
 * What the pipeline did for one answer, as JSON on the `response-metadata` part
 * (`part.metadata.roadcar`).
 *
 * @category models
 * @since 0.1.0
 */
export interface Metadata {
  readonly requestId: string
  readonly upstream: string
  readonly provider: string
  readonly attempts: number
  readonly upstreamMs: number
  readonly cacheHit: boolean
  readonly static: boolean
  readonly fallback: { readonly step: number; readonly reason: string; readonly reasonTag: string } | null
}

// =============================================================================
// Constructors
// =============================================================================

/**
 * A pipeline as a `LanguageModel` service, built with `LanguageModel.make`.
 *
 * **Details**
 *
 * - `generateText` (and `generateObject`) call `pipeline.complete`; `streamText` calls
 *   `pipeline.stream` in a scope that closes when the stream ends, so the upstream connection lives
 *   exactly as long as the caller consumes the stream.
 * - Requests: see {@link toChatRequest}. Retries, timeouts and fallback happen inside the pipeline,
 *   before the first part reaches the caller.
 * - Answers: a `response-metadata` part (id, model, timestamp, `roadcar` {@link Metadata}), the text,
 *   the tool calls, and a `finish` part (reason and input/output tokens). A stream emits
 *   `response-metadata`, `text-start`, `text-delta`s, `text-end`, the tool calls, then `finish`.
 * - Errors: see {@link toAiError}. With a pipeline that has a static answer, the only possible error
 *   is Roadcar's own rate limit (`RateLimitError`).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { LanguageModel } from "effect/ai"
 * import { PipelineLanguageModel } from "@roadcar/core"
 *
 * // `pipeline` is a Pipeline.Pipeline (see Pipeline.make)
 * const answer = Effect.gen(function*() {
 *   const model = yield* PipelineLanguageModel.make(pipeline, { model: "chat" })
 *   const response = yield* model.generateText({ prompt: "hello" })
 *   return response.text
 * })
 * ```
 *
 * @see {@link layer} to provide it as the program's `LanguageModel`
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = (
  pipeline: Pipeline.Pipeline,
  options: Options = {}
): Effect.Effect<LanguageModel.LanguageModel> => {
  const model = options.model ?? defaultModel
  const callOptionsOf = (providerOptions: LanguageModel.ProviderOptions) => options.callOptions?.(providerOptions)
  return LanguageModel.make({
    generateText: (providerOptions) =>
      pipeline.complete(toChatRequest(providerOptions, model), callOptionsOf(providerOptions)).pipe(
        Effect.mapError((error) => toAiError(error, "generateText")),
        Effect.tap((answer) => Effect.sync(() => annotateSpan(providerOptions, answer.meta))),
        Effect.map(toParts)
      ),
    streamText: (providerOptions) =>
      Stream.unwrap(
        pipeline.stream(toChatRequest(providerOptions, model), callOptionsOf(providerOptions)).pipe(
          Effect.mapError((error) => toAiError(error, "streamText")),
          Effect.tap((answer) => Effect.sync(() => annotateSpan(providerOptions, answer.meta))),
          Effect.map((answer) => {
            // `mapAccum`'s `onHalt` also runs when the stream fails: the closing parts are
            // appended only after a clean end, so a cut stream never looks finished.
            const state = initialStreamState(answer.meta)
            return answer.chunks.pipe(
              Stream.mapError((error) => toAiError(error, "streamText")),
              Stream.map((chunk) => onChunk(state, chunk)),
              Stream.flattenIterable,
              Stream.concat(Stream.suspend(() => Stream.fromIterable(onStreamEnd(state))))
            )
          })
        )
      )
  })
}

/**
 * A pipeline as the program's `LanguageModel`.
 *
 * **When to use**
 *
 * To make a program written against `effect/ai` production-grade without touching it: provide this
 * layer instead of a provider's model layer.
 *
 * @example
 * ```ts
 * import { Effect, Layer } from "effect"
 * import { LanguageModel } from "effect/ai"
 * import { Breaker, Monitor, Pipeline, PipelineLanguageModel, Simulated } from "@roadcar/core"
 *
 * // written against effect/ai only
 * const program = Effect.gen(function*() {
 *   const response = yield* LanguageModel.generateText({ prompt: "hello" })
 *   return response.text
 * })
 *
 * const main = Effect.gen(function*() {
 *   const primary = yield* Simulated.make({ name: "primary" })
 *   const pipeline = yield* Pipeline.make({ steps: [{ upstream: primary }], staticAnswer: "Please try again later." })
 *   // the swap: the pipeline is the LanguageModel
 *   return yield* program.pipe(Effect.provide(PipelineLanguageModel.layer(pipeline)))
 * })
 *
 * Effect.runPromise(main.pipe(Effect.scoped, Effect.provide(Layer.mergeAll(Breaker.layerMemory(), Monitor.layerNoop))))
 * // => '[simulated] echo: "hello" reply: valley voyage kestrel harbor relay bridge prism junction ember'
 * ```
 *
 * @see {@link layerFromService} for the `PipelineService` in context
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (pipeline: Pipeline.Pipeline, options?: Options): Layer.Layer<LanguageModel.LanguageModel> =>
  Layer.effect(LanguageModel.LanguageModel, make(pipeline, options))

/**
 * The `PipelineService` in context as the program's `LanguageModel`.
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { Pipeline, PipelineLanguageModel } from "@roadcar/core"
 *
 * // `options` are Pipeline.Options; `Stages` provides Breaker and Monitor
 * const Model = PipelineLanguageModel.layerFromService({ model: "chat" }).pipe(
 *   Layer.provide(Pipeline.layer(options)),
 *   Layer.provide(Stages)
 * )
 * ```
 *
 * @category layers
 * @since 0.1.0
 */
export const layerFromService = (
  options?: Options
): Layer.Layer<LanguageModel.LanguageModel, never, Pipeline.PipelineService> =>
  Layer.effect(
    LanguageModel.LanguageModel,
    Effect.flatMap(Effect.service(Pipeline.PipelineService), (pipeline) => make(pipeline, options))
  )

// =============================================================================
// Requests
// =============================================================================

/**
 * The chat request for one `LanguageModel` call.
 *
 * **Details**
 *
 * - `messages`: see {@link toMessages}.
 * - `tools`: the toolkit's tools as OpenAI functions (`{ type: "function", function: { name,
 *   description, parameters, strict } }`, parameters as JSON Schema), sent only when the call has a
 *   toolkit. Provider-defined tools have no function form and are left out.
 * - `tool_choice`: `"auto"`, `"none"`, `"required"`, or `{ type: "function", function: { name } }`
 *   for `{ tool }`; `{ oneOf }` sends only those tools with its `mode`.
 * - `response_format`: `generateObject` asks for `{ type: "json_schema", json_schema: { name,
 *   schema } }`.
 *
 * @category conversions
 * @since 0.1.0
 */
export const toChatRequest = (
  options: LanguageModel.ProviderOptions,
  model: string = defaultModel
): ChatCompletion.ChatRequest => {
  const functions = options.tools.filter((tool) => !Tool.isProviderDefined(tool)).map(toFunctionTool)
  const request: {
    -readonly [K in keyof ChatCompletion.ChatRequest]: ChatCompletion.ChatRequest[K]
  } = { model, messages: toMessages(options.prompt) }
  if (functions.length > 0) {
    request.tools = functions
    request.tool_choice = toToolChoice(options.toolChoice)
  }
  if (options.responseFormat.type === "json") {
    request.response_format = {
      type: "json_schema",
      json_schema: {
        name: options.responseFormat.objectName,
        schema: Tool.getJsonSchemaFromSchema(options.responseFormat.schema, {
          transformer: LanguageModel.defaultCodecTransformer
        })
      }
    }
  }
  return request
}

const toFunctionTool = (tool: Tool.Any): unknown => {
  const description = Tool.getDescription(tool)
  const strict = Tool.getStrictMode(tool)
  return {
    type: "function",
    function: {
      name: tool.name,
      ...(description === undefined ? {} : { description }),
      parameters: Tool.getJsonSchema(tool),
      ...(strict === undefined ? {} : { strict })
    }
  }
}

const toToolChoice = (choice: LanguageModel.ToolChoice<string>): unknown => {
  if (typeof choice === "string") return choice
  if ("tool" in choice) return { type: "function", function: { name: choice.tool } }
  return choice.mode ?? "auto"
}

/**
 * An `effect/ai` prompt as chat messages.
 *
 * **Details**
 *
 * - System messages stay system messages.
 * - User text stays text (a single text part becomes a plain string); images become `image_url`
 *   parts (a URL, or a `data:` URL for bytes and base64), other files with data become `file` parts
 *   (`file_data` as a `data:` URL); files given only by URL are left out.
 * - Assistant text is joined into `content`; tool calls become `tool_calls` (arguments as JSON);
 *   reasoning, files and provider-executed tool results are left out.
 * - Each tool result becomes a `tool` message for its call id, with the result's model output, or
 *   the result itself (strings as they are, anything else as JSON).
 *
 * @category conversions
 * @since 0.1.0
 */
export const toMessages = (prompt: Prompt.Prompt): Array<ChatCompletion.ChatMessage> => {
  const messages: Array<ChatCompletion.ChatMessage> = []
  for (const message of prompt.content) {
    switch (message.role) {
      case "system":
        messages.push({ role: "system", content: message.content })
        break
      case "user":
        messages.push({ role: "user", content: userContent(message.content) })
        break
      case "assistant": {
        let text = ""
        const toolCalls: Array<ChatCompletion.ToolCall> = []
        for (const part of message.content) {
          if (part.type === "text") text += part.text
          else if (part.type === "tool-call" && !part.providerExecuted) {
            toolCalls.push({
              id: part.id,
              type: "function",
              function: { name: part.name, arguments: JSON.stringify(part.params ?? {}) }
            })
          }
        }
        messages.push(
          toolCalls.length > 0
            ? { role: "assistant", content: text.length > 0 ? text : null, tool_calls: toolCalls }
            : { role: "assistant", content: text }
        )
        break
      }
      case "tool":
        for (const part of message.content) {
          if (part.type !== "tool-result") continue
          messages.push({ role: "tool", tool_call_id: part.id, content: toolResultText(part) })
        }
        break
    }
  }
  return messages
}

const userContent = (
  parts: ReadonlyArray<Prompt.UserMessagePart>
): string | ReadonlyArray<typeof ChatCompletion.ContentPart.Type> => {
  const only = parts[0]
  if (parts.length === 1 && only?.type === "text") return only.text
  const converted: Array<typeof ChatCompletion.ContentPart.Type> = []
  for (const part of parts) {
    if (part.type === "text") {
      converted.push({ type: "text", text: part.text })
    } else if (part.mediaType.startsWith("image/")) {
      converted.push({ type: "image_url", image_url: { url: fileUrl(part) } })
    } else if (!(part.data instanceof URL)) {
      converted.push({
        type: "file",
        file: { file_data: fileUrl(part), ...(part.fileName === undefined ? {} : { filename: part.fileName }) }
      })
    }
  }
  return converted
}

const fileUrl = (part: Prompt.FilePart): string => {
  if (part.data instanceof URL) return part.data.href
  const base64 = typeof part.data === "string" ? part.data : Base64.encode(part.data)
  return `data:${part.mediaType};base64,${base64}`
}

const toolResultText = (part: Prompt.ToolResultPart): string => {
  if (part.modelOutput !== undefined) return Prompt.toolModelOutputToText(part.modelOutput)
  if (typeof part.result === "string") return part.result
  return JSON.stringify(part.result) ?? ""
}

// =============================================================================
// Answers
// =============================================================================

/**
 * An OpenAI finish reason in `effect/ai`'s words (`null`, a stream that never said, is `"unknown"`).
 *
 * @example
 * ```ts
 * import { PipelineLanguageModel } from "@roadcar/core"
 * PipelineLanguageModel.toFinishReason("tool_calls") // => "tool-calls"
 * ```
 *
 * @category conversions
 * @since 0.1.0
 */
export const toFinishReason = (reason: ChatCompletion.FinishReason | null | undefined): Response.FinishReason => {
  switch (reason) {
    case "stop":
      return "stop"
    case "length":
      return "length"
    case "content_filter":
      return "content-filter"
    case "tool_calls":
    case "function_call":
      return "tool-calls"
    default:
      return "unknown"
  }
}

/**
 * An OpenAI usage as `effect/ai` usage (input and output totals; no usage leaves them unset).
 *
 * @category conversions
 * @since 0.1.0
 */
export const toUsage = (usage: ChatCompletion.Usage | null | undefined): typeof Response.Usage.Encoded => ({
  inputTokens: {
    uncached: undefined,
    total: usage?.prompt_tokens,
    cacheRead: undefined,
    cacheWrite: undefined
  },
  outputTokens: { total: usage?.completion_tokens, text: undefined, reasoning: undefined }
})

/**
 * The pipeline's bookkeeping as JSON {@link Metadata}.
 *
 * @category conversions
 * @since 0.1.0
 */
export const toMetadata = (meta: Pipeline.AnswerMeta): Metadata => ({
  requestId: meta.requestId,
  upstream: meta.upstream,
  provider: meta.provider,
  attempts: meta.attempts,
  upstreamMs: meta.upstreamMs,
  cacheHit: meta.cacheHit,
  static: meta.static,
  fallback: meta.fallback === undefined ? null : { ...meta.fallback }
})

const responseMetadata = (
  id: string,
  model: string,
  created: number,
  meta: Pipeline.AnswerMeta
): Response.ResponseMetadataPartEncoded => ({
  type: "response-metadata",
  id,
  modelId: model,
  timestamp: new Date(created * 1000).toISOString(),
  metadata: { [metadataKey]: { ...toMetadata(meta) } }
})

const parseArguments = (text: string | undefined): unknown => {
  if (text === undefined || text.trim().length === 0) return {}
  try {
    return JSON.parse(text)
  } catch {
    return text
  }
}

const toolCallPart = (call: ChatCompletion.ToolCall, index: number): Response.ToolCallPartEncoded => ({
  type: "tool-call",
  id: call.id ?? `call_${index}`,
  name: call.function?.name ?? "unknown",
  params: parseArguments(call.function?.arguments)
})

/**
 * A complete answer as encoded response parts: `response-metadata`, the text (when not empty), the
 * tool calls, and `finish`.
 *
 * @category conversions
 * @since 0.1.0
 */
export const toParts = (answer: Pipeline.Answer): Array<Response.PartEncoded> => {
  const { response, meta } = answer
  const choice = response.choices[0]
  const parts: Array<Response.PartEncoded> = [responseMetadata(response.id, response.model, response.created, meta)]
  const text = choice?.message.content
  if (text !== undefined && text !== null && text.length > 0) parts.push({ type: "text", text })
  choice?.message.tool_calls?.forEach((call, index) => {
    parts.push(toolCallPart(call, index))
  })
  parts.push({ type: "finish", reason: toFinishReason(choice?.finish_reason), usage: toUsage(response.usage) })
  return parts
}

// --- streams -----------------------------------------------------------------------------------

interface PendingToolCall {
  id: string | undefined
  name: string
  arguments: string
}

// State of one stream's conversion (each `pipeline.stream` call gets its own).
interface StreamState {
  readonly meta: Pipeline.AnswerMeta
  metadataSent: boolean
  textId: string | undefined
  readonly toolCalls: Map<number, PendingToolCall>
  finishReason: ChatCompletion.FinishReason | null
  usage: ChatCompletion.Usage | undefined
}

const initialStreamState = (meta: Pipeline.AnswerMeta): StreamState => ({
  meta,
  metadataSent: false,
  textId: undefined,
  toolCalls: new Map(),
  finishReason: null,
  usage: undefined
})

const onChunk = (state: StreamState, chunk: ChatCompletion.ChatChunk): ReadonlyArray<Response.StreamPartEncoded> => {
  const parts: Array<Response.StreamPartEncoded> = []
  if (!state.metadataSent) {
    state.metadataSent = true
    parts.push(responseMetadata(chunk.id, chunk.model, chunk.created, state.meta))
  }
  if (chunk.usage) state.usage = chunk.usage
  const choice = chunk.choices[0]
  if (choice === undefined) return parts
  const content = choice.delta.content
  if (content !== undefined && content !== null && content.length > 0) {
    if (state.textId === undefined) {
      state.textId = `text_${chunk.id}`
      parts.push({ type: "text-start", id: state.textId })
    }
    parts.push({ type: "text-delta", id: state.textId, delta: content })
  }
  choice.delta.tool_calls?.forEach((call, position) => {
    const index = call.index ?? position
    const pending = state.toolCalls.get(index) ?? { id: undefined, name: "", arguments: "" }
    if (call.id !== undefined) pending.id = call.id
    if (call.function?.name !== undefined && pending.name.length === 0) pending.name = call.function.name
    if (call.function?.arguments !== undefined) pending.arguments += call.function.arguments
    state.toolCalls.set(index, pending)
  })
  if (choice.finish_reason !== null) state.finishReason = choice.finish_reason
  return parts
}

const onStreamEnd = (state: StreamState): ReadonlyArray<Response.StreamPartEncoded> => {
  const parts: Array<Response.StreamPartEncoded> = []
  if (state.textId !== undefined) parts.push({ type: "text-end", id: state.textId })
  const indices = [...state.toolCalls.keys()].sort((a, b) => a - b)
  for (const index of indices) {
    const pending = state.toolCalls.get(index)
    if (pending === undefined) continue
    parts.push(
      toolCallPart(
        { id: pending.id ?? `call_${index}`, function: { name: pending.name, arguments: pending.arguments } },
        index
      )
    )
  }
  parts.push({ type: "finish", reason: toFinishReason(state.finishReason), usage: toUsage(state.usage) })
  return parts
}

const annotateSpan = (options: LanguageModel.ProviderOptions, meta: Pipeline.AnswerMeta): void => {
  options.span.attribute("roadcar.request_id", meta.requestId)
  options.span.attribute("roadcar.upstream", meta.upstream)
  options.span.attribute("roadcar.attempts", meta.attempts)
  options.span.attribute("roadcar.cache_hit", meta.cacheHit)
  options.span.attribute("roadcar.fallback", meta.fallback !== undefined)
}

// =============================================================================
// Errors
// =============================================================================

const seconds = (duration: Duration.Duration) => `${Math.ceil(Duration.toSeconds(duration))}s`

const httpStatus = (status: number) => ({ response: { status, headers: {} } })

/**
 * The `AiError` reason for an upstream failure reason.
 *
 * **Details**
 *
 * | `UpstreamError` reason | `AiError` reason | retryable |
 * | --- | --- | --- |
 * | `RateLimited` | `RateLimitError` (with `retryAfter`) | yes |
 * | `Unavailable` | `InternalProviderError` (with the status) | yes |
 * | `CircuitOpen` | `InternalProviderError` | yes |
 * | `ConnectionFailed` | `NetworkError` (`TransportError`) | yes |
 * | `TimedOut` (attempt, first chunk, chunk gap) | `NetworkError` (`TransportError`) | yes |
 * | `TimedOut` (the request's deadline) | `UnknownError` | no |
 * | `Authentication` | `AuthenticationError` (403: `InsufficientPermissions`) | no |
 * | `ContentFiltered` | `ContentPolicyError` | no |
 * | `BadRequest`, `ContextLengthExceeded` | `InvalidRequestError` | no |
 * | `MalformedOutput` | `InvalidResponseError` | no |
 *
 * A `NetworkError` names the upstream as its URL (`roadcar://<upstream>`): the pipeline does not
 * know the address behind an upstream.
 *
 * @category error handling
 * @since 0.1.0
 */
export const toAiErrorReason = (error: UpstreamError.UpstreamError): AiError.AiErrorReason => {
  const reason = error.reason
  const description = error.message
  switch (reason._tag) {
    case "RateLimited":
      return new AiError.RateLimitError({ retryAfter: reason.retryAfter })
    case "Unavailable":
      return new AiError.InternalProviderError({ description, http: httpStatus(reason.status) })
    case "CircuitOpen":
      return new AiError.InternalProviderError({
        description: reason.retryAfter ? `${description} (retry after ${seconds(reason.retryAfter)})` : description
      })
    case "ConnectionFailed":
      return new AiError.NetworkError({
        reason: "TransportError",
        method: "POST",
        url: `roadcar://${error.upstream}`,
        description
      })
    case "TimedOut":
      return reason.phase === "deadline"
        ? new AiError.UnknownError({ description })
        : new AiError.NetworkError({
            reason: "TransportError",
            method: "POST",
            url: `roadcar://${error.upstream}`,
            description
          })
    case "Authentication":
      return new AiError.AuthenticationError({
        kind: reason.status === 403 ? "InsufficientPermissions" : "Unknown",
        description,
        http: httpStatus(reason.status)
      })
    case "ContentFiltered":
      return new AiError.ContentPolicyError({ description })
    case "BadRequest":
      return new AiError.InvalidRequestError({ description, http: httpStatus(reason.status) })
    case "ContextLengthExceeded":
      return new AiError.InvalidRequestError({
        parameter: "messages",
        constraint: "context length exceeded",
        description: `${description}: ${reason.detail}`
      })
    case "MalformedOutput":
      return new AiError.InvalidResponseError({ description })
  }
}

/**
 * A pipeline failure as an `AiError` of this module: Roadcar's own rate limit is a `RateLimitError`
 * with its `retryAfter`; an upstream failure maps as {@link toAiErrorReason} says.
 *
 * @example
 * ```ts
 * import { PipelineLanguageModel, UpstreamError } from "@roadcar/core"
 * const error = UpstreamError.make("primary", new UpstreamError.BadRequest({ status: 400, detail: "bad" }))
 * PipelineLanguageModel.toAiError(error, "generateText").reason._tag // => "InvalidRequestError"
 * ```
 *
 * @category error handling
 * @since 0.1.0
 */
export const toAiError = (error: Pipeline.Refusal | UpstreamError.UpstreamError, method: string): AiError.AiError =>
  AiError.make({
    module: moduleName,
    method,
    reason: UpstreamError.isUpstreamError(error)
      ? toAiErrorReason(error)
      : error._tag === "StoreUnavailable"
        ? new AiError.InternalProviderError({ description: error.message })
        : new AiError.RateLimitError({ retryAfter: error.retryAfter })
  })
