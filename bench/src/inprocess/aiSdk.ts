/**
 * The Vercel AI SDK: `generateText` with its mock language model (`MockLanguageModelV4` from
 * `ai/test`) answering at once, and `maxRetries: 2` (3 attempts in all).
 *
 * Only the success path: the SDK's retry waits 2 s before the first retry and takes no backoff
 * option, so a fail-twice path would measure its sleeps.
 */
import { generateText } from "ai"
import { MockLanguageModelV4 } from "ai/test"
import { answerText, prompts } from "./fixtures.ts"
import type { Candidate } from "./measure.ts"
import { rawAsyncCandidate, verifyAnswers } from "./raw.ts"

const model = new MockLanguageModelV4({
  provider: "bench",
  modelId: "bench-model",
  doGenerate: async () => ({
    content: [{ type: "text", text: answerText }],
    finishReason: { unified: "stop", raw: "stop" },
    usage: {
      inputTokens: { total: 8, noCache: 8, cacheRead: undefined, cacheWrite: undefined },
      outputTokens: { total: 1, text: 1, reasoning: undefined }
    },
    warnings: []
  })
})

// The mock records every call; the benchmark makes millions.
const forget = () => {
  model.doGenerateCalls.length = 0
}

const call = async (i: number) => {
  const result = await generateText({ model, prompt: prompts[i]!, maxRetries: 2 })
  if ((i & 1023) === 0) forget()
  return result.text
}

/** The AI SDK candidate. */
export const generateTextCandidate: Candidate = {
  id: "ai-sdk",
  label: "Vercel AI SDK generateText (mock model, maxRetries: 2)",
  path: "success",
  baseline: rawAsyncCandidate,
  call,
  verify: verifyAnswers(call)
}
