/**
 * Converts between Roadcar's chat contract and Anthropic's Messages API: requests, answers, and
 * the stream's events.
 *
 * Pure functions and wire schemas, no I/O; `Anthropic.make` sends what `toMessagesRequest` builds
 * and reads answers with `toChatResponse` and `makeEventDecoder`. Tools are passed through
 * best-effort (OpenAI function tools become Anthropic tools, `tool_calls` become `tool_use` blocks
 * and back); content parts other than text and images are dropped.
 *
 * @since 0.1.0
 */
import type * as Sse from "effect/encoding/Sse"
import * as Predicate from "effect/Predicate"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import * as ChatCompletion from "../ChatCompletion.ts"
import * as Errors from "../internal/http/Errors.ts"
import * as EventStream from "../internal/http/EventStream.ts"
import * as Exchange from "../internal/http/Exchange.ts"
import type * as UpstreamError from "../UpstreamError.ts"

// =============================================================================
// Request
// =============================================================================

type Block = Record<string, unknown>
type Turn = { role: "user" | "assistant"; content: Array<Block> }

const textOf = (content: ChatCompletion.ChatMessage["content"]): string => ChatCompletion.contentText(content)

const dataUrl = /^data:([^;,]+);base64,(.*)$/s

const imageBlock = (part: Record<string, unknown>): Block | undefined => {
  const image = part["image_url"]
  const url = typeof image === "string" ? image : Predicate.isObject(image) ? image["url"] : undefined
  if (typeof url !== "string") return undefined
  const inline = dataUrl.exec(url)
  return inline
    ? { type: "image", source: { type: "base64", media_type: inline[1], data: inline[2] } }
    : { type: "image", source: { type: "url", url } }
}

const userBlocks = (content: ChatCompletion.ChatMessage["content"]): Array<Block> => {
  if (content === undefined || content === null) return []
  if (typeof content === "string") return content.length > 0 ? [{ type: "text", text: content }] : []
  const blocks: Array<Block> = []
  for (const part of content) {
    if (part.type === "text" && typeof part["text"] === "string" && part["text"].length > 0) {
      blocks.push({ type: "text", text: part["text"] })
    } else if (part.type === "image_url") {
      const block = imageBlock(part)
      if (block) blocks.push(block)
    }
  }
  return blocks
}

const toolInput = (args: string | undefined): unknown => {
  if (args === undefined || args.trim() === "") return {}
  try {
    const parsed: unknown = JSON.parse(args)
    return Predicate.isObject(parsed) ? parsed : { value: parsed }
  } catch {
    return { arguments: args }
  }
}

const assistantBlocks = (message: ChatCompletion.ChatMessage): Array<Block> => {
  const text = textOf(message.content)
  const blocks: Array<Block> = text.length > 0 ? [{ type: "text", text }] : []
  for (const call of message.tool_calls ?? []) {
    blocks.push({
      type: "tool_use",
      id: call.id ?? `toolu_${blocks.length}`,
      name: call.function?.name ?? "",
      input: toolInput(call.function?.arguments)
    })
  }
  return blocks
}

const toTool = (tool: unknown): Block | undefined => {
  if (!Predicate.isObject(tool) || tool["type"] !== "function" || !Predicate.isObject(tool["function"])) {
    return undefined
  }
  const fn = tool["function"]
  if (typeof fn["name"] !== "string") return undefined
  return {
    name: fn["name"],
    ...(typeof fn["description"] === "string" ? { description: fn["description"] } : {}),
    input_schema: Predicate.isObject(fn["parameters"]) ? fn["parameters"] : { type: "object", properties: {} }
  }
}

const toToolChoice = (choice: unknown, parallel: boolean | undefined): Block | undefined => {
  let result: Block | undefined
  if (choice === "auto") result = { type: "auto" }
  else if (choice === "required") result = { type: "any" }
  else if (choice === "none") result = { type: "none" }
  else if (Predicate.isObject(choice) && Predicate.isObject(choice["function"])) {
    const name = choice["function"]["name"]
    if (typeof name === "string") result = { type: "tool", name }
  }
  if (parallel === false && result?.["type"] !== "none") {
    return { ...(result ?? { type: "auto" }), disable_parallel_tool_use: true }
  }
  return result
}

/**
 * Converts a chat request into a Messages API body.
 *
 * **Details**
 *
 * - `system` and `developer` messages are joined (blank line between) into `system`.
 * - `user` text and images (`image_url`, data URLs as base64) become content blocks; `tool` messages
 *   become `tool_result` blocks in a user turn; assistant `tool_calls` become `tool_use` blocks;
 *   consecutive turns of the same role are merged.
 * - `max_tokens` is `max_completion_tokens ?? max_tokens ?? maxTokensDefault` (Anthropic requires it);
 *   `temperature` is capped at 1 (Anthropic's maximum); `stop` becomes `stop_sequences`; `user`
 *   becomes `metadata.user_id`; function `tools` / `tool_choice` / `parallel_tool_calls: false` are
 *   translated. Other OpenAI fields (`seed`, penalties, `response_format`, `logprobs`, ...) are dropped.
 *
 * @category mapping
 * @since 0.1.0
 */
export const toMessagesRequest = (
  request: ChatCompletion.ChatRequest,
  options: { readonly model: string; readonly maxTokensDefault: number; readonly stream: boolean }
): Record<string, unknown> => {
  const system: Array<string> = []
  const turns: Array<Turn> = []
  const push = (role: Turn["role"], blocks: Array<Block>) => {
    if (blocks.length === 0) return
    const last = turns[turns.length - 1]
    if (last !== undefined && last.role === role) last.content.push(...blocks)
    else turns.push({ role, content: blocks })
  }
  for (const message of request.messages) {
    switch (message.role) {
      case "system":
      case "developer": {
        const text = textOf(message.content)
        if (text.length > 0) system.push(text)
        break
      }
      case "user":
        push("user", userBlocks(message.content))
        break
      case "assistant":
        push("assistant", assistantBlocks(message))
        break
      case "tool":
        push("user", [
          { type: "tool_result", tool_use_id: message.tool_call_id ?? "", content: textOf(message.content) }
        ])
        break
    }
  }
  const stop = request.stop
  const stopSequences = stop === undefined || stop === null ? [] : typeof stop === "string" ? [stop] : stop
  const tools = (request.tools ?? []).flatMap((tool) => toTool(tool) ?? [])
  const toolChoice = tools.length > 0 ? toToolChoice(request.tool_choice, request.parallel_tool_calls) : undefined
  return {
    model: options.model,
    max_tokens: ChatCompletion.maxOutputTokens(request) ?? options.maxTokensDefault,
    ...(system.length > 0 ? { system: system.join("\n\n") } : {}),
    messages: turns,
    ...(request.temperature !== undefined ? { temperature: Math.min(request.temperature, 1) } : {}),
    ...(request.top_p !== undefined ? { top_p: request.top_p } : {}),
    ...(stopSequences.length > 0 ? { stop_sequences: stopSequences } : {}),
    ...(request.user !== undefined ? { metadata: { user_id: request.user } } : {}),
    ...(tools.length > 0 ? { tools } : {}),
    ...(toolChoice !== undefined ? { tool_choice: toolChoice } : {}),
    ...(options.stream ? { stream: true } : {})
  }
}

// =============================================================================
// Answer
// =============================================================================

const OptionalNumber = Schema.optionalKey(Schema.NullOr(Schema.Number))

const WireUsage = Schema.Struct({
  input_tokens: OptionalNumber,
  output_tokens: OptionalNumber,
  cache_creation_input_tokens: OptionalNumber,
  cache_read_input_tokens: OptionalNumber
})

type WireUsage = typeof WireUsage.Type

const WireBlock = Schema.Struct({
  type: Schema.String,
  text: Schema.optionalKey(Schema.String),
  id: Schema.optionalKey(Schema.String),
  name: Schema.optionalKey(Schema.String),
  input: Schema.optionalKey(Schema.Unknown)
})

const WireMessage = Schema.Struct({
  id: Schema.optionalKey(Schema.String),
  model: Schema.optionalKey(Schema.String),
  content: Schema.Array(WireBlock),
  stop_reason: Schema.optionalKey(Schema.NullOr(Schema.String)),
  usage: Schema.optionalKey(Schema.NullOr(WireUsage))
})

/**
 * The Messages API answer, as far as Roadcar reads it.
 *
 * @category models
 * @since 0.1.0
 */
export const MessageResponse = WireMessage

const count = (value: number | null | undefined): number =>
  value === null || value === undefined || !Number.isFinite(value) ? 0 : Math.trunc(value)

/** Prompt tokens include cache writes and reads, as OpenAI's `prompt_tokens` includes cached tokens. */
const inputTokens = (usage: WireUsage): number =>
  count(usage.input_tokens) + count(usage.cache_creation_input_tokens) + count(usage.cache_read_input_tokens)

/**
 * Maps Anthropic's `stop_reason`: `end_turn` / `stop_sequence` → `stop`, `max_tokens` → `length`,
 * `tool_use` → `tool_calls`, `refusal` → `content_filter`; `null` stays `null`; anything else → `stop`.
 *
 * @category mapping
 * @since 0.1.0
 */
export const finishReason = (stopReason: string | null | undefined): ChatCompletion.FinishReason | null => {
  switch (stopReason) {
    case null:
    case undefined:
    case "":
      return null
    case "max_tokens":
    case "model_context_window_exceeded":
      return "length"
    case "tool_use":
      return "tool_calls"
    case "refusal":
      return "content_filter"
    default:
      return "stop"
  }
}

const toolCall = (block: typeof WireBlock.Type, index: number): ChatCompletion.ToolCall => ({
  id: block.id ?? `toolu_${index}`,
  type: "function",
  function: { name: block.name ?? "", arguments: JSON.stringify(block.input ?? {}) }
})

/**
 * Converts a Messages API answer into a chat response (text blocks joined, `tool_use` blocks as
 * `tool_calls`, thinking blocks dropped).
 *
 * @category mapping
 * @since 0.1.0
 */
export const toChatResponse = (
  message: typeof WireMessage.Type,
  defaults: { readonly model: string; readonly now: number }
): ChatCompletion.ChatResponse => {
  let text = ""
  const toolCalls: Array<ChatCompletion.ToolCall> = []
  for (const block of message.content) {
    if (block.type === "text" && block.text !== undefined) text += block.text
    else if (block.type === "tool_use") toolCalls.push(toolCall(block, toolCalls.length))
  }
  const usage = message.usage ?? {}
  return {
    id: message.id ?? `msg-${defaults.now}`,
    object: "chat.completion",
    created: Math.floor(defaults.now / 1000),
    model: message.model ?? defaults.model,
    choices: [
      {
        index: 0,
        message:
          toolCalls.length > 0
            ? { role: "assistant", content: text.length > 0 ? text : null, tool_calls: toolCalls }
            : { role: "assistant", content: text },
        finish_reason: finishReason(message.stop_reason)
      }
    ],
    usage: ChatCompletion.usage(inputTokens(usage), count(usage.output_tokens))
  }
}

// =============================================================================
// Errors
// =============================================================================

const statusOfErrorType: Record<string, number> = {
  invalid_request_error: 400,
  authentication_error: 401,
  billing_error: 402,
  permission_error: 403,
  not_found_error: 404,
  request_too_large: 413,
  rate_limit_error: 429,
  api_error: 500,
  timeout_error: 504,
  overloaded_error: 529
}

/**
 * Maps an `error` event (`{ type: "error", error: { type, message } }`) onto a reason, using the
 * HTTP status Anthropic documents for its error type (e.g. `overloaded_error` → 529 → `Unavailable`).
 *
 * @category error handling
 * @since 0.1.0
 */
export const errorEventReason = (json: unknown, scrub: Errors.Scrub): UpstreamError.Reason => {
  const body = Errors.errorBodyFromJson(json, "upstream reported an error")
  const status = (body.type !== undefined ? statusOfErrorType[body.type] : undefined) ?? 500
  return Errors.reasonFromStatus(status, body, undefined, scrub)
}

// =============================================================================
// Stream
// =============================================================================

const WireEvent = Schema.Struct({
  type: Schema.String,
  index: OptionalNumber,
  message: Schema.optionalKey(
    Schema.Struct({
      id: Schema.optionalKey(Schema.String),
      model: Schema.optionalKey(Schema.String),
      usage: Schema.optionalKey(Schema.NullOr(WireUsage))
    })
  ),
  content_block: Schema.optionalKey(WireBlock),
  delta: Schema.optionalKey(
    Schema.Struct({
      type: Schema.optionalKey(Schema.String),
      text: Schema.optionalKey(Schema.String),
      partial_json: Schema.optionalKey(Schema.String),
      stop_reason: Schema.optionalKey(Schema.NullOr(Schema.String))
    })
  ),
  usage: Schema.optionalKey(Schema.NullOr(WireUsage))
})

type Delta = ChatCompletion.ChatChunk["choices"][number]["delta"]

/**
 * A decoder for one Messages API stream: emits a role chunk at `message_start`, a content chunk per
 * `text_delta`, tool call chunks (OpenAI style, by index) for `tool_use` blocks, and at
 * `message_delta` the finish chunk carrying usage; `message_stop` ends the stream; `ping`, thinking
 * deltas and unknown events are skipped; an `error` event fails the stream.
 *
 * @category constructors
 * @since 0.1.0
 */
export const makeEventDecoder =
  (defaults: { readonly model: string; readonly now: number }, scrub: Errors.Scrub) =>
  (): EventStream.EventDecoder<ChatCompletion.ChatChunk> => {
    let id = `msg-${defaults.now}`
    let model = defaults.model
    const created = Math.floor(defaults.now / 1000)
    // The latest value of each counter: message_delta repeats only some of them.
    const tokens = { input_tokens: 0, output_tokens: 0, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 }
    const record = (usage: WireUsage | null | undefined) => {
      if (usage === null || usage === undefined) return
      for (const key of Object.keys(tokens) as Array<keyof typeof tokens>) {
        const value = usage[key]
        if (value !== null && value !== undefined) tokens[key] = count(value)
      }
    }
    let finished = false
    const toolIndex = new Map<number, number>()

    const chunk = (
      delta: Delta,
      finish: ChatCompletion.FinishReason | null = null,
      usage?: ChatCompletion.Usage
    ): ChatCompletion.ChatChunk => ({
      id,
      object: "chat.completion.chunk",
      created,
      model,
      choices: [{ index: 0, delta, finish_reason: finish }],
      ...(usage !== undefined ? { usage } : {})
    })

    const malformed = (what: string) => Result.fail(Exchange.malformed(`${what} in a stream event`))

    return {
      event: (event: Sse.Event) => {
        const json = Exchange.parseJson(event.data, "a stream event")
        if (Result.isFailure(json)) return Result.fail(json.failure)
        if (event.event === "error" || (Predicate.isObject(json.success) && json.success["type"] === "error")) {
          return Result.fail(errorEventReason(json.success, scrub))
        }
        const decoded = Exchange.decodeJson(WireEvent, json.success, "a stream event")
        if (Result.isFailure(decoded)) return Result.fail(decoded.failure)
        const data = decoded.success
        switch (data.type) {
          case "message_start": {
            if (data.message === undefined) return malformed("no message")
            id = data.message.id ?? id
            model = data.message.model ?? model
            record(data.message.usage)
            return EventStream.emit(chunk({ role: "assistant", content: "" }))
          }
          case "content_block_start": {
            const block = data.content_block
            if (block === undefined) return malformed("no content_block")
            if (block.type === "text" && block.text !== undefined && block.text.length > 0) {
              return EventStream.emit(chunk({ content: block.text }))
            }
            if (block.type === "tool_use") {
              const index = toolIndex.size
              toolIndex.set(count(data.index), index)
              return EventStream.emit(
                chunk({
                  tool_calls: [
                    {
                      index,
                      id: block.id ?? `toolu_${index}`,
                      type: "function",
                      function: { name: block.name ?? "", arguments: "" }
                    }
                  ]
                })
              )
            }
            return EventStream.emit()
          }
          case "content_block_delta": {
            const delta = data.delta
            if (delta === undefined) return malformed("no delta")
            if (delta.type === "text_delta") {
              return delta.text === undefined ? malformed("no text") : EventStream.emit(chunk({ content: delta.text }))
            }
            if (delta.type === "input_json_delta") {
              const index = toolIndex.get(count(data.index))
              if (index === undefined || delta.partial_json === undefined) return malformed("an unknown tool block")
              return EventStream.emit(chunk({ tool_calls: [{ index, function: { arguments: delta.partial_json } }] }))
            }
            // thinking_delta, signature_delta, citations_delta, ...: not part of the chat contract.
            return EventStream.emit()
          }
          case "message_delta": {
            record(data.usage)
            const finish = finishReason(data.delta?.stop_reason)
            if (finish === null) return EventStream.emit()
            finished = true
            return EventStream.emit(chunk({}, finish, ChatCompletion.usage(inputTokens(tokens), tokens.output_tokens)))
          }
          case "message_stop":
            return EventStream.done()
          default:
            // ping, content_block_stop, and event types added later.
            return EventStream.emit()
        }
      },
      end: () => (finished ? Result.succeed([]) : Result.fail(EventStream.cut()))
    }
  }
