/**
 * LangChain.js: a fake chat model (`FakeListChatModel` from `@langchain/core/utils/testing`) with
 * `.withRetry({ stopAfterAttempt: 3 })` and `.withFallbacks([fallback model])`, invoked with a prompt.
 *
 * Only the success path: `withRetry` backs off exponentially from 1 s (p-retry) with no option to
 * turn that off, so a fail-twice path would measure its sleeps.
 */
import type { BaseMessage } from "@langchain/core/messages"
import { FakeListChatModel } from "@langchain/core/utils/testing"
import { answerText, prompts } from "./fixtures.ts"
import type { Candidate } from "./measure.ts"
import { rawAsyncCandidate, verifyAnswers } from "./raw.ts"

const primary = new FakeListChatModel({ responses: [answerText] })
const fallback = new FakeListChatModel({ responses: [answerText] })
const protectedModel = primary.withRetry({ stopAfterAttempt: 3 }).withFallbacks([fallback])

const call = async (i: number): Promise<BaseMessage> => protectedModel.invoke(prompts[i]!)

/** The LangChain.js candidate. */
export const fakeChatModelCandidate: Candidate = {
  id: "langchain",
  label: "LangChain.js fake chat model .withRetry().withFallbacks()",
  path: "success",
  baseline: rawAsyncCandidate,
  call,
  verify: verifyAnswers(call)
}
