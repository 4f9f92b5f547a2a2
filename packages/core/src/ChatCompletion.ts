/**
 * The model contract: chat requests, responses and stream chunks, close to OpenAI chat completions.
 *
 * Every stage and every upstream speaks these shapes. Fields that Roadcar does not interpret (tools,
 * tool_choice, response_format, ...) are passed through untouched; unknown request fields are rejected
 * with an error naming the field, so a typo never silently changes behaviour.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"

// =============================================================================
// Messages
// =============================================================================

/**
 * Who wrote a message.
 *
 * @category models
 * @since 0.1.0
 */
export const Role = Schema.Literals(["system", "developer", "user", "assistant", "tool"])

/**
 * @category models
 * @since 0.1.0
 */
export type Role = typeof Role.Type

/**
 * A content part (text, image, audio, ...): passed through as the caller wrote it.
 *
 * @category models
 * @since 0.1.0
 */
export const ContentPart = Schema.StructWithRest(Schema.Struct({ type: Schema.String }), [
  Schema.Record(Schema.String, Schema.Unknown)
])

/**
 * A tool call requested by the model (OpenAI shape, passed through).
 *
 * @category models
 * @since 0.1.0
 */
export const ToolCall = Schema.StructWithRest(
  Schema.Struct({
    id: Schema.optionalKey(Schema.String),
    type: Schema.optionalKey(Schema.String),
    index: Schema.optionalKey(Schema.Number),
    function: Schema.optionalKey(
      Schema.Struct({ name: Schema.optionalKey(Schema.String), arguments: Schema.optionalKey(Schema.String) })
    )
  }),
  [Schema.Record(Schema.String, Schema.Unknown)]
)

/**
 * @category models
 * @since 0.1.0
 */
export type ToolCall = typeof ToolCall.Type

/**
 * One chat message.
 *
 * @category models
 * @since 0.1.0
 */
export const ChatMessage = Schema.Struct({
  role: Role,
  content: Schema.optionalKey(Schema.NullOr(Schema.Union([Schema.String, Schema.Array(ContentPart)]))),
  name: Schema.optionalKey(Schema.String),
  tool_calls: Schema.optionalKey(Schema.Array(ToolCall)),
  tool_call_id: Schema.optionalKey(Schema.String),
  /** An assistant's refusal, as answers carry it (clients send the previous answer's message back). */
  refusal: Schema.optionalKey(Schema.NullOr(Schema.String))
})

/**
 * @category models
 * @since 0.1.0
 */
export type ChatMessage = typeof ChatMessage.Type

// =============================================================================
// Request
// =============================================================================

const Json = Schema.Unknown

/**
 * A chat completion request.
 *
 * **Details**
 *
 * `model` is the public model name; routing maps it to an upstream deployment. `tools`, `tool_choice`,
 * `response_format`, `stream_options`, `logit_bias` and `metadata` are passed through as given.
 *
 * @category models
 * @since 0.1.0
 */
export const ChatRequest = Schema.Struct({
  model: Schema.String.check(Schema.isNonEmpty()),
  messages: Schema.Array(ChatMessage).check(Schema.isMinLength(1)),
  temperature: Schema.optionalKey(Schema.Number.check(Schema.isBetween({ minimum: 0, maximum: 2 }))),
  top_p: Schema.optionalKey(Schema.Number.check(Schema.isBetween({ minimum: 0, maximum: 1 }))),
  max_tokens: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThan(0))),
  max_completion_tokens: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThan(0))),
  stop: Schema.optionalKey(Schema.NullOr(Schema.Union([Schema.String, Schema.Array(Schema.String)]))),
  seed: Schema.optionalKey(Schema.Int),
  n: Schema.optionalKey(Schema.Literal(1)),
  presence_penalty: Schema.optionalKey(Schema.Number),
  frequency_penalty: Schema.optionalKey(Schema.Number),
  logit_bias: Schema.optionalKey(Json),
  logprobs: Schema.optionalKey(Schema.Boolean),
  top_logprobs: Schema.optionalKey(Schema.Int),
  user: Schema.optionalKey(Schema.String),
  tools: Schema.optionalKey(Schema.Array(Json)),
  tool_choice: Schema.optionalKey(Json),
  parallel_tool_calls: Schema.optionalKey(Schema.Boolean),
  response_format: Schema.optionalKey(Json),
  stream: Schema.optionalKey(Schema.Boolean),
  stream_options: Schema.optionalKey(Json),
  metadata: Schema.optionalKey(Json),
  store: Schema.optionalKey(Schema.Boolean),
  reasoning_effort: Schema.optionalKey(Schema.String),
  service_tier: Schema.optionalKey(Schema.String)
})

/**
 * @category models
 * @since 0.1.0
 */
export type ChatRequest = typeof ChatRequest.Type

// =============================================================================
// Response
// =============================================================================

/**
 * Why the model stopped.
 *
 * @category models
 * @since 0.1.0
 */
export const FinishReason = Schema.Literals(["stop", "length", "tool_calls", "content_filter", "function_call"])

/**
 * @category models
 * @since 0.1.0
 */
export type FinishReason = typeof FinishReason.Type

/**
 * Token counts for one answer, in OpenAI's names.
 *
 * @category models
 * @since 0.1.0
 */
export const Usage = Schema.Struct({
  prompt_tokens: Schema.Int,
  completion_tokens: Schema.Int,
  total_tokens: Schema.Int
})

/**
 * @category models
 * @since 0.1.0
 */
export type Usage = typeof Usage.Type

/**
 * Builds a `Usage` from input and output token counts.
 *
 * @example
 * ```ts
 * import { ChatCompletion } from "@roadcar/core"
 * ChatCompletion.usage(10, 5) // => { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 }
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const usage = (input: number, output: number): Usage => ({
  prompt_tokens: input,
  completion_tokens: output,
  total_tokens: input + output
})

/**
 * The assistant message of a non-streamed answer.
 *
 * @category models
 * @since 0.1.0
 */
export const AssistantMessage = Schema.Struct({
  role: Schema.Literal("assistant"),
  content: Schema.NullOr(Schema.String),
  tool_calls: Schema.optionalKey(Schema.Array(ToolCall)),
  refusal: Schema.optionalKey(Schema.NullOr(Schema.String))
})

/**
 * A complete (non-streamed) chat completion.
 *
 * @category models
 * @since 0.1.0
 */
export const ChatResponse = Schema.Struct({
  id: Schema.String,
  object: Schema.Literal("chat.completion"),
  created: Schema.Int,
  model: Schema.String,
  choices: Schema.Array(
    Schema.Struct({
      index: Schema.Int,
      message: AssistantMessage,
      finish_reason: Schema.NullOr(FinishReason),
      logprobs: Schema.optionalKey(Json)
    })
  ).check(Schema.isMinLength(1)),
  usage: Usage,
  system_fingerprint: Schema.optionalKey(Schema.NullOr(Schema.String))
})

/**
 * @category models
 * @since 0.1.0
 */
export type ChatResponse = typeof ChatResponse.Type

// =============================================================================
// Stream chunks
// =============================================================================

/**
 * One streamed chunk (`chat.completion.chunk`). The last chunk of a stream carries `usage`.
 *
 * @category models
 * @since 0.1.0
 */
export const ChatChunk = Schema.Struct({
  id: Schema.String,
  object: Schema.Literal("chat.completion.chunk"),
  created: Schema.Int,
  model: Schema.String,
  choices: Schema.Array(
    Schema.Struct({
      index: Schema.Int,
      delta: Schema.Struct({
        role: Schema.optionalKey(Schema.Literal("assistant")),
        content: Schema.optionalKey(Schema.NullOr(Schema.String)),
        tool_calls: Schema.optionalKey(Schema.Array(ToolCall)),
        refusal: Schema.optionalKey(Schema.NullOr(Schema.String))
      }),
      finish_reason: Schema.NullOr(FinishReason),
      logprobs: Schema.optionalKey(Json)
    })
  ),
  usage: Schema.optionalKey(Schema.NullOr(Usage))
})

/**
 * @category models
 * @since 0.1.0
 */
export type ChatChunk = typeof ChatChunk.Type

// =============================================================================
// Helpers
// =============================================================================

/**
 * The text of a message's content (text parts joined; other parts ignored).
 *
 * @category accessors
 * @since 0.1.0
 */
export const contentText = (content: ChatMessage["content"]): string => {
  if (content === undefined || content === null) return ""
  if (typeof content === "string") return content
  let text = ""
  for (const part of content) {
    if (part.type === "text" && typeof part["text"] === "string") text += part["text"]
  }
  return text
}

/**
 * A rough token estimate for a request's prompt (about four characters a token), used to reserve
 * token budgets before the upstream reports real usage.
 *
 * @category accessors
 * @since 0.1.0
 */
export const estimatePromptTokens = (request: ChatRequest): number => {
  let chars = 0
  for (const message of request.messages) chars += contentText(message.content).length + 4
  return Math.max(1, Math.ceil(chars / 4))
}

/**
 * The most output tokens a request allows (`max_completion_tokens`, else `max_tokens`), if it says.
 *
 * @category accessors
 * @since 0.1.0
 */
export const maxOutputTokens = (request: ChatRequest): number | undefined =>
  request.max_completion_tokens ?? request.max_tokens

/**
 * Assembles streamed chunks into one complete response (what a cache stores, or what a client that
 * asked for JSON receives from a streamed upstream).
 *
 * @category constructors
 * @since 0.1.0
 */
export const assembleChunks = (chunks: ReadonlyArray<ChatChunk>, fallbackUsage?: Usage): ChatResponse => {
  const first = chunks[0]
  let content = ""
  let refusal: string | undefined
  let finish: FinishReason | null = null
  let chunkUsage: Usage | undefined
  // Tool calls stream in pieces keyed by `index`: the first piece has id, type and name, later pieces
  // append to the arguments.
  const toolCalls = new Map<number, { id?: string; type?: string; name?: string; arguments: string }>()
  for (const chunk of chunks) {
    if (chunk.usage) chunkUsage = chunk.usage
    const choice = chunk.choices[0]
    if (!choice) continue
    if (choice.delta.content) content += choice.delta.content
    if (choice.delta.refusal) refusal = (refusal ?? "") + choice.delta.refusal
    for (const [position, piece] of (choice.delta.tool_calls ?? []).entries()) {
      const index = piece.index ?? position
      const call = toolCalls.get(index) ?? { arguments: "" }
      if (piece.id !== undefined) call.id = piece.id
      if (piece.type !== undefined) call.type = piece.type
      if (piece.function?.name !== undefined) call.name = piece.function.name
      if (piece.function?.arguments !== undefined) call.arguments += piece.function.arguments
      toolCalls.set(index, call)
    }
    if (choice.finish_reason) finish = choice.finish_reason
  }
  const calls: Array<ToolCall> = [...toolCalls.entries()]
    .sort(([a], [b]) => a - b)
    .map(([, call]) => ({
      ...(call.id !== undefined ? { id: call.id } : {}),
      type: call.type ?? "function",
      function: { ...(call.name !== undefined ? { name: call.name } : {}), arguments: call.arguments }
    }))
  return {
    id: first?.id ?? "chatcmpl-empty",
    object: "chat.completion",
    created: first?.created ?? 0,
    model: first?.model ?? "",
    choices: [
      {
        index: 0,
        message:
          calls.length > 0
            ? { role: "assistant", content: content.length > 0 ? content : null, tool_calls: calls }
            : refusal !== undefined
              ? { role: "assistant", content: content.length > 0 ? content : null, refusal }
              : { role: "assistant", content },
        finish_reason: finish
      }
    ],
    usage: chunkUsage ?? fallbackUsage ?? usage(0, 0)
  }
}

/**
 * Splits a complete response into stream chunks (role, content, finish, usage), e.g. to replay a
 * cached answer to a streaming client.
 *
 * @category constructors
 * @since 0.1.0
 */
export const responseToChunks = (response: ChatResponse): Array<ChatChunk> => {
  const base = { id: response.id, object: "chat.completion.chunk" as const, created: response.created }
  const choice = response.choices[0]
  const content = choice?.message.content ?? ""
  const chunks: Array<ChatChunk> = [
    {
      ...base,
      model: response.model,
      choices: [{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null }]
    }
  ]
  if (content.length > 0) {
    chunks.push({ ...base, model: response.model, choices: [{ index: 0, delta: { content }, finish_reason: null }] })
  }
  const refusal = choice?.message.refusal
  if (typeof refusal === "string" && refusal.length > 0) {
    chunks.push({ ...base, model: response.model, choices: [{ index: 0, delta: { refusal }, finish_reason: null }] })
  }
  if (choice?.message.tool_calls) {
    const toolCalls = choice.message.tool_calls.map((call, index) => ({ ...call, index }))
    chunks.push({
      ...base,
      model: response.model,
      choices: [{ index: 0, delta: { tool_calls: toolCalls }, finish_reason: null }]
    })
  }
  chunks.push({
    ...base,
    model: response.model,
    choices: [{ index: 0, delta: {}, finish_reason: choice?.finish_reason ?? "stop" }],
    usage: response.usage
  })
  return chunks
}
