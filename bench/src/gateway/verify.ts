/**
 * Checks that a target really does the job before it is timed: a JSON answer with the upstream's
 * text, a complete event stream (every chunk, then `[DONE]`) with the same text, and for the gateway
 * a cache miss answered by the fake upstream and a 401 without the API key.
 */
import { answerText, requestBody, requestHeaders } from "./fixtures.ts"

/** The text of an OpenAI event stream's content deltas, and whether it ended with `[DONE]`. */
export const streamText = (body: string): { readonly text: string; readonly done: boolean } => {
  let text = ""
  let done = false
  for (const line of body.split("\n")) {
    if (!line.startsWith("data: ")) continue
    const data = line.slice("data: ".length)
    if (data === "[DONE]") {
      done = true
      continue
    }
    const chunk = JSON.parse(data) as { readonly choices?: ReadonlyArray<{ readonly delta?: { content?: unknown } }> }
    for (const choice of chunk.choices ?? [])
      if (typeof choice.delta?.content === "string") text += choice.delta.content
  }
  return { text, done }
}

const post = (url: string, body: string, headers: Readonly<Record<string, string>> = requestHeaders) =>
  fetch(`${url}/v1/chat/completions`, { method: "POST", headers, body })

/**
 * Resolves with a problem, or `undefined` when the target answers as it should. `gateway` adds the
 * gateway's own checks (`x-roadcar-*` headers, and the API key required unless `keys` is `false`).
 */
export const verifyTarget = async (
  url: string,
  options: {
    readonly gateway?: boolean | undefined
    /** The gateway requires the API key (default `true` with `gateway`). */
    readonly keys?: boolean | undefined
    readonly upstream?: string | undefined
  } = {}
): Promise<string | undefined> => {
  const tag = `verify-${Math.random().toString(36).slice(2)}`
  const json = await post(url, requestBody(tag, false))
  if (json.status !== 200) return `JSON: status ${json.status}: ${(await json.text()).slice(0, 200)}`
  const answer = (await json.json()) as {
    readonly choices?: ReadonlyArray<{ readonly message?: { readonly content?: unknown } }>
  }
  if (answer.choices?.[0]?.message?.content !== answerText) return "JSON: not the upstream's answer"
  if (options.gateway === true) {
    if (json.headers.get("x-roadcar-cache") !== "miss") return "JSON: expected a cache miss"
    const upstream = json.headers.get("x-roadcar-upstream")
    if (upstream !== (options.upstream ?? "fake")) return `JSON: answered by ${upstream}, not the fake upstream`
  }
  if (options.gateway === true && options.keys !== false) {
    const anonymous = await post(url, requestBody(`${tag}-anonymous`, false), { "content-type": "application/json" })
    await anonymous.body?.cancel()
    if (anonymous.status !== 401) return `without the API key: status ${anonymous.status}, expected 401`
  }
  const stream = await post(url, requestBody(`${tag}-stream`, true))
  if (stream.status !== 200) return `stream: status ${stream.status}`
  if (!(stream.headers.get("content-type") ?? "").startsWith("text/event-stream")) return "stream: not an event stream"
  const { text, done } = streamText(await stream.text())
  if (text !== answerText) return "stream: the chunks do not add up to the upstream's answer"
  if (!done) return "stream: no [DONE]"
  return undefined
}
