/**
 * The two wire formats the fake upstream speaks: reading requests and writing bodies, stream events and
 * error payloads for OpenAI chat completions and Anthropic Messages. Pure functions, no I/O.
 */
import type { Wire } from "../Attempt.ts"

// =============================================================================
// Requests
// =============================================================================

/** What the fake upstream needs from a chat request. */
export interface ChatRequestInfo {
  readonly model: string
  readonly stream: boolean
  readonly includeUsage: boolean
  readonly lastUserText: string
  readonly promptTokens: number
}

const isRecord = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

/** The text of a message content: a string, or the `text` of its text parts. */
const contentText = (content: unknown): string => {
  if (typeof content === "string") return content
  if (!Array.isArray(content)) return ""
  let text = ""
  for (const part of content) {
    if (isRecord(part) && part["type"] === "text" && typeof part["text"] === "string") text += part["text"]
  }
  return text
}

/** About four characters a token, at least one. */
export const estimateTokens = (text: string): number => Math.max(1, Math.ceil(text.length / 4))

/** Reads a chat request body, or `undefined` when it is not a usable request (no model or no messages). */
export const readChatRequest = (wire: Wire, body: unknown): ChatRequestInfo | undefined => {
  if (!isRecord(body)) return undefined
  const model = body["model"]
  const messages = body["messages"]
  if (typeof model !== "string" || model === "" || !Array.isArray(messages)) return undefined
  let lastUserText = ""
  let promptChars = wire === "anthropic" ? contentText(body["system"]).length : 0
  for (const message of messages) {
    if (!isRecord(message)) continue
    const text = contentText(message["content"])
    promptChars += text.length + 16
    if (message["role"] === "user") lastUserText = text
  }
  const streamOptions = body["stream_options"]
  return {
    model,
    stream: body["stream"] === true,
    includeUsage: isRecord(streamOptions) && streamOptions["include_usage"] === true,
    lastUserText,
    promptTokens: Math.max(1, Math.ceil(promptChars / 4))
  }
}

/** The model a body names, if any (for the attempt log of requests that are not usable). */
export const modelOf = (body: unknown): string =>
  isRecord(body) && typeof body["model"] === "string" ? body["model"] : ""

/** Whether a body asks for a stream (for the attempt log of requests that are not usable). */
export const streamOf = (body: unknown): boolean => isRecord(body) && body["stream"] === true

/** Splits an answer into chunks of `wordsPerChunk` words, each keeping its trailing space (the first
 * also any leading space), so the chunks join to the text exactly. */
export const splitChunks = (text: string, wordsPerChunk: number): ReadonlyArray<string> => {
  const words = text.match(/\s*\S+\s*/g) ?? [text]
  const chunks: Array<string> = []
  for (let i = 0; i < words.length; i += wordsPerChunk) chunks.push(words.slice(i, i + wordsPerChunk).join(""))
  return chunks.length > 0 ? chunks : [""]
}

// =============================================================================
// Healthy answers
// =============================================================================

/** One healthy answer, in both shapes: a JSON body and the stream's SSE frames. */
export interface Answer {
  readonly json: string
  /** Frames before the first text chunk (role chunk / `message_start`, `content_block_start`). */
  readonly preamble: ReadonlyArray<string>
  /** One frame per text chunk. */
  readonly deltas: ReadonlyArray<string>
  /** The i-th text chunk's frame, truncated so its data line is not valid JSON. */
  readonly malformedDelta: (index: number) => string
  /** Frames after the text (finish reason, usage). */
  readonly finish: ReadonlyArray<string>
  /** The stream terminator (`data: [DONE]` / `message_stop`). */
  readonly terminator: string
}

/** Everything an answer depends on. */
export interface AnswerInput {
  readonly wire: Wire
  readonly id: string
  readonly model: string
  readonly text: string
  readonly wordsPerChunk: number
  readonly promptTokens: number
  readonly includeUsage: boolean
}

const dataFrame = (data: unknown): string => `data: ${JSON.stringify(data)}\n\n`
const eventFrame = (event: string, data: unknown): string => `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`

/** Cuts a frame's JSON short (a strict prefix of a JSON object never parses) and keeps the frame shape. */
const truncateFrame = (frame: string): string => {
  const start = frame.indexOf("data: ") + "data: ".length
  const json = frame.slice(start).trimEnd()
  return `${frame.slice(0, start)}${json.slice(0, Math.max(1, Math.floor(json.length / 2)))}\n\n`
}

export const answer = (input: AnswerInput): Answer => {
  const chunks = splitChunks(input.text, input.wordsPerChunk)
  const outputTokens = estimateTokens(input.text)
  return input.wire === "openai"
    ? openAiAnswer(input, chunks, outputTokens)
    : anthropicAnswer(input, chunks, outputTokens)
}

const openAiAnswer = (input: AnswerInput, chunks: ReadonlyArray<string>, outputTokens: number): Answer => {
  const created = Math.floor(Date.now() / 1000)
  const usage = {
    prompt_tokens: input.promptTokens,
    completion_tokens: outputTokens,
    total_tokens: input.promptTokens + outputTokens
  }
  const json = JSON.stringify({
    id: input.id,
    object: "chat.completion",
    created,
    model: input.model,
    choices: [
      {
        index: 0,
        message: { role: "assistant", content: input.text, refusal: null },
        logprobs: null,
        finish_reason: "stop"
      }
    ],
    usage
  })
  const chunk = (delta: Record<string, unknown>, finishReason: string | null) => ({
    id: input.id,
    object: "chat.completion.chunk",
    created,
    model: input.model,
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }],
    ...(input.includeUsage ? { usage: null } : {})
  })
  const deltas = chunks.map((text) => dataFrame(chunk({ content: text }, null)))
  const finish = [dataFrame(chunk({}, "stop"))]
  if (input.includeUsage) {
    finish.push(
      dataFrame({ id: input.id, object: "chat.completion.chunk", created, model: input.model, choices: [], usage })
    )
  }
  return {
    json,
    preamble: [dataFrame(chunk({ role: "assistant", content: "" }, null))],
    deltas,
    malformedDelta: (index) => truncateFrame(deltas[index] ?? ""),
    finish,
    terminator: "data: [DONE]\n\n"
  }
}

const anthropicAnswer = (input: AnswerInput, chunks: ReadonlyArray<string>, outputTokens: number): Answer => {
  const json = JSON.stringify({
    id: input.id,
    type: "message",
    role: "assistant",
    model: input.model,
    content: [{ type: "text", text: input.text }],
    stop_reason: "end_turn",
    stop_sequence: null,
    usage: { input_tokens: input.promptTokens, output_tokens: outputTokens }
  })
  const deltas = chunks.map((text) =>
    eventFrame("content_block_delta", {
      type: "content_block_delta",
      index: 0,
      delta: { type: "text_delta", text }
    })
  )
  return {
    json,
    preamble: [
      eventFrame("message_start", {
        type: "message_start",
        message: {
          id: input.id,
          type: "message",
          role: "assistant",
          model: input.model,
          content: [],
          stop_reason: null,
          stop_sequence: null,
          usage: { input_tokens: input.promptTokens, output_tokens: 1 }
        }
      }),
      eventFrame("content_block_start", {
        type: "content_block_start",
        index: 0,
        content_block: { type: "text", text: "" }
      })
    ],
    deltas,
    malformedDelta: (index) => truncateFrame(deltas[index] ?? ""),
    finish: [
      eventFrame("content_block_stop", { type: "content_block_stop", index: 0 }),
      eventFrame("message_delta", {
        type: "message_delta",
        delta: { stop_reason: "end_turn", stop_sequence: null },
        usage: { output_tokens: outputTokens }
      })
    ],
    terminator: eventFrame("message_stop", { type: "message_stop" })
  }
}

/** The body of `GET /v1/models` in the wire format. */
export const modelList = (wire: Wire, models: ReadonlyArray<string>): string => {
  if (wire === "openai") {
    return JSON.stringify({
      object: "list",
      data: models.map((id) => ({ id, object: "model", created: 1700000000, owned_by: "roadcar-fake-upstream" }))
    })
  }
  return JSON.stringify({
    data: models.map((id) => ({ type: "model", id, display_name: id, created_at: "2024-01-01T00:00:00Z" })),
    has_more: false,
    first_id: models[0] ?? null,
    last_id: models[models.length - 1] ?? null
  })
}

/** A JSON body truncated so it does not parse. */
export const malformed = (json: string): string => json.slice(0, Math.max(1, Math.floor(json.length / 2)))

// =============================================================================
// Errors
// =============================================================================

/** The error kinds the fake upstream sends, independent of the wire. */
export type ErrorKind =
  | { readonly _tag: "RateLimited" }
  | { readonly _tag: "Status"; readonly status: number; readonly message?: string | undefined }
  | { readonly _tag: "ContextLengthExceeded"; readonly promptTokens: number }
  | { readonly _tag: "ContentFiltered" }
  | { readonly _tag: "NotFound"; readonly method: string; readonly path: string }
  | { readonly _tag: "BadRequest" }

const statusMessage = (status: number): string => {
  if (status >= 500) return `The server had an error while processing your request (fake upstream, status ${status}).`
  return `The request was rejected (fake upstream, status ${status}).`
}

const openAiStatusType = (status: number): string => {
  if (status === 401) return "authentication_error"
  if (status === 403) return "permission_error"
  if (status === 404) return "not_found_error"
  if (status === 429) return "requests"
  return status >= 500 ? "server_error" : "invalid_request_error"
}

const anthropicStatusType = (status: number): string => {
  switch (status) {
    case 401:
      return "authentication_error"
    case 403:
      return "permission_error"
    case 404:
      return "not_found_error"
    case 413:
      return "request_too_large"
    case 429:
      return "rate_limit_error"
    case 529:
      return "overloaded_error"
    default:
      return status >= 500 ? "api_error" : "invalid_request_error"
  }
}

/** The HTTP status and JSON body of an error, in the wire format. */
export const errorBody = (wire: Wire, kind: ErrorKind): { readonly status: number; readonly body: string } => {
  const openai = (status: number, message: string, type: string, code: string | null, param: string | null = null) => ({
    status,
    body: JSON.stringify({ error: { message, type, param, code } })
  })
  const anthropic = (status: number, type: string, message: string) => ({
    status,
    body: JSON.stringify({ type: "error", error: { type, message } })
  })
  switch (kind._tag) {
    case "RateLimited":
      return wire === "openai"
        ? openai(429, "Rate limit reached for requests (fake upstream).", "requests", "rate_limit_exceeded")
        : anthropic(429, "rate_limit_error", "Number of requests has exceeded your rate limit (fake upstream).")
    case "Status": {
      const message = kind.message ?? statusMessage(kind.status)
      return wire === "openai"
        ? openai(
            kind.status,
            message,
            openAiStatusType(kind.status),
            kind.status === 429 ? "rate_limit_exceeded" : null
          )
        : anthropic(kind.status, anthropicStatusType(kind.status), message)
    }
    case "ContextLengthExceeded": {
      const limit = 8192
      const tokens = Math.max(kind.promptTokens, limit + 1)
      return wire === "openai"
        ? openai(
            400,
            `This model's maximum context length is ${limit} tokens. However, your messages resulted in ${tokens} tokens. Please reduce the length of the messages.`,
            "invalid_request_error",
            "context_length_exceeded",
            "messages"
          )
        : anthropic(400, "invalid_request_error", `prompt is too long: ${tokens} tokens > ${limit} maximum`)
    }
    case "ContentFiltered":
      return wire === "openai"
        ? openai(
            400,
            "Your request was rejected as a result of our safety system (fake upstream).",
            "invalid_request_error",
            "content_policy_violation",
            "messages"
          )
        : anthropic(400, "invalid_request_error", "Output blocked by content filtering policy")
    case "NotFound":
      return wire === "openai"
        ? openai(404, `Unknown request URL: ${kind.method} ${kind.path}.`, "invalid_request_error", "unknown_url")
        : anthropic(404, "not_found_error", `Not found: ${kind.method} ${kind.path}`)
    case "BadRequest":
      return wire === "openai"
        ? openai(
            400,
            "The request body must be a JSON object with a non-empty `model` and a `messages` array.",
            "invalid_request_error",
            null
          )
        : anthropic(
            400,
            "invalid_request_error",
            "The request body must be a JSON object with a non-empty `model` and a `messages` array."
          )
  }
}
