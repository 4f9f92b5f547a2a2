import { assert, describe, it } from "@effect/vitest"
import { ChatCompletion } from "@roadcar/core"

const chunk = (
  delta: ChatCompletion.ChatChunk["choices"][number]["delta"],
  finish: ChatCompletion.FinishReason | null = null
) =>
  ({
    id: "c1",
    object: "chat.completion.chunk",
    created: 1,
    model: "m",
    choices: [{ index: 0, delta, finish_reason: finish }]
  }) satisfies ChatCompletion.ChatChunk

describe("ChatCompletion", () => {
  it("assembles streamed tool calls piece by piece, by index", () => {
    const response = ChatCompletion.assembleChunks([
      chunk({ role: "assistant", content: "" }),
      chunk({
        tool_calls: [{ index: 0, id: "call_1", type: "function", function: { name: "weather", arguments: "" } }]
      }),
      chunk({ tool_calls: [{ index: 0, function: { arguments: '{"city":' } }] }),
      chunk({
        tool_calls: [{ index: 1, id: "call_2", type: "function", function: { name: "time", arguments: "{}" } }]
      }),
      chunk({ tool_calls: [{ index: 0, function: { arguments: '"Oslo"}' } }] }),
      chunk({}, "tool_calls")
    ])
    assert.deepStrictEqual(response.choices[0]?.message, {
      role: "assistant",
      content: null,
      tool_calls: [
        { id: "call_1", type: "function", function: { name: "weather", arguments: '{"city":"Oslo"}' } },
        { id: "call_2", type: "function", function: { name: "time", arguments: "{}" } }
      ]
    })
    assert.strictEqual(response.choices[0]?.finish_reason, "tool_calls")
  })

  it("round-trips a response through chunks", () => {
    const response: ChatCompletion.ChatResponse = {
      id: "r",
      object: "chat.completion",
      created: 5,
      model: "m",
      choices: [{ index: 0, message: { role: "assistant", content: "hello there" }, finish_reason: "stop" }],
      usage: ChatCompletion.usage(3, 2)
    }
    assert.deepStrictEqual(ChatCompletion.assembleChunks(ChatCompletion.responseToChunks(response)), response)
  })

  it("keeps a streamed refusal when assembling, and replays it as a refusal delta", () => {
    const response = ChatCompletion.assembleChunks([
      chunk({ role: "assistant", content: "" }),
      chunk({ refusal: "I can't " }),
      chunk({ refusal: "help with that." }),
      chunk({}, "stop")
    ])
    assert.deepStrictEqual(response.choices[0]?.message, {
      role: "assistant",
      content: null,
      refusal: "I can't help with that."
    })
    assert.deepStrictEqual(ChatCompletion.assembleChunks(ChatCompletion.responseToChunks(response)), response)
  })

  it("estimates prompt tokens from the text and reads the output limit", () => {
    const request: ChatCompletion.ChatRequest = {
      model: "m",
      messages: [{ role: "user", content: "x".repeat(40) }],
      max_completion_tokens: 7,
      max_tokens: 9
    }
    assert.strictEqual(ChatCompletion.estimatePromptTokens(request), 11)
    assert.strictEqual(ChatCompletion.maxOutputTokens(request), 7)
  })
})
