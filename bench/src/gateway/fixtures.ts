/**
 * What every gateway benchmark run sends and gets: the upstream's fixed answer, the API key the
 * gateway is configured with, and the request bodies (a distinct prompt per request, so the response
 * cache always misses).
 */
import { createHash } from "node:crypto"

/** Words in the fake upstream's answer (streamed two words per chunk: 12 content chunks). */
export const answerWords = 24

/** The fake upstream's answer text. */
export const answerText: string = Array.from({ length: answerWords }, (_, i) => `word${i}`).join(" ")

/** The API key the benchmark's gateway accepts (a test value, not a secret). */
export const benchKey = "sk-roadcar-bench-not-a-secret"

/** Its SHA-256, for the config's `keys`. */
export const benchKeyDigest: string = createHash("sha256").update(benchKey).digest("hex")

/** The public model name the gateway serves. */
export const model = "chat"

/**
 * A chat request body with a distinct prompt. `id` is autocannon's per-request placeholder
 * (`[<id>]`, replaced by a unique id on every request with `idReplacement: true`) or any text.
 */
export const requestBody = (id: string, stream: boolean): string =>
  JSON.stringify({
    model,
    messages: [
      { role: "system", content: "You are a concise assistant." },
      { role: "user", content: `Summarise request ${id} in one line, please.` }
    ],
    max_tokens: 64,
    ...(stream ? { stream: true, stream_options: { include_usage: true } } : {})
  })

/** The headers every request carries (the gateway checks the key; the upstream and proxy ignore it). */
export const requestHeaders: Readonly<Record<string, string>> = {
  "content-type": "application/json",
  authorization: `Bearer ${benchKey}`
}
