/**
 * Classifies what a client got for one chat request: a complete answer, a clean error, or a lost
 * request.
 *
 * - **Answered**: `200` and a complete answer: JSON that parses, with the expected content, a finish
 *   reason and usage; or an event stream whose every event parses, ending with `[DONE]`, carrying the
 *   expected content, a finish reason and the usage chunk it asked for.
 * - **Clean error**: an OpenAI error JSON (`{ error: { message, type } }`) with a 4xx/5xx status (not
 *   500, which the gateway reserves for its own bugs), or an event stream that ends with one error event
 *   and no `[DONE]`.
 * - **Lost**: anything else: no answer in time, a dropped connection, a body cut short, a truncated or
 *   wrong answer passed as a success, a malformed chunk passed on, an error status without an error
 *   body, or a `500 internal_error`.
 */
import { Sse } from "@roadcar/testing"
import * as SecretScan from "./SecretScan.ts"

/** Why a request counts as lost. */
export type LostReason =
  | "no_answer"
  | "connection_error"
  | "body_cut"
  | "truncated_success"
  | "malformed_chunk"
  | "wrong_answer"
  | "error_without_body"
  | "internal_error"
  | "unexpected_status"

/** What one request came to. */
export type Outcome =
  | {
      readonly _tag: "Answered"
      /** `x-roadcar-fallback`: why the primary did not answer, when a fallback did. */
      readonly fallback: string | undefined
      readonly upstream: string | undefined
      readonly attemptsHeader: number | undefined
    }
  | { readonly _tag: "CleanError"; readonly status: number; readonly code: string; readonly midStream: boolean }
  | { readonly _tag: "Lost"; readonly reason: LostReason; readonly detail: string }

/** What the request asked for and what a complete answer must contain. */
export interface Expectation {
  readonly stream: boolean
  /** The exact answer text, when known (the fake upstream answers `echo: <prompt>`). */
  readonly content?: string | undefined
  /** Whether a stream must carry a usage chunk (`stream_options.include_usage`). */
  readonly usage?: boolean | undefined
}

const lost = (reason: LostReason, detail: string): Outcome => ({ _tag: "Lost", reason, detail })

const isRecord = (value: unknown): value is Record<string, unknown> => typeof value === "object" && value !== null

const parseJson = (text: string): unknown => {
  try {
    return JSON.parse(text) as unknown
  } catch {
    return undefined
  }
}

/** The `error` object of an OpenAI error body, if `value` is one. */
export const errorBodyOf = (
  value: unknown
): { readonly message: string; readonly type: string; readonly code: string } | undefined => {
  if (!isRecord(value) || !isRecord(value["error"])) return undefined
  const error = value["error"]
  if (typeof error["message"] !== "string" || typeof error["type"] !== "string") return undefined
  return {
    message: error["message"],
    type: error["type"],
    code: typeof error["code"] === "string" ? error["code"] : ""
  }
}

const headerNumber = (value: string | null): number | undefined =>
  value === null || !/^\d+$/.test(value) ? undefined : Number(value)

const answered = (response: Response): Outcome => ({
  _tag: "Answered",
  fallback: response.headers.get("x-roadcar-fallback") ?? undefined,
  upstream: response.headers.get("x-roadcar-upstream") ?? undefined,
  attemptsHeader: headerNumber(response.headers.get("x-roadcar-attempts"))
})

const isAbort = (error: unknown): boolean =>
  error instanceof Error && (error.name === "TimeoutError" || error.name === "AbortError")

const cut = (error: unknown, detail: string): Outcome =>
  isAbort(error) ? lost("no_answer", `${detail}: the deadline passed first`) : lost("body_cut", detail)

const short = (text: string): string => (text.length > 160 ? `${text.slice(0, 157)}...` : text)

const readText = async (response: Response): Promise<{ text: string; error: unknown }> => {
  try {
    return { text: await response.text(), error: undefined }
  } catch (error) {
    return { text: "", error: error ?? new Error("the body failed") }
  }
}

const classifyError = async (response: Response, scanner: SecretScan.Scanner | undefined): Promise<Outcome> => {
  const { text, error } = await readText(response)
  scanner?.scan(text, "error body")
  if (error !== undefined) return cut(error, `${response.status}: the error body was cut`)
  const body = errorBodyOf(parseJson(text))
  const json = (response.headers.get("content-type") ?? "").includes("application/json")
  if (body === undefined || !json) return lost("error_without_body", `${response.status}: ${short(text)}`)
  if (response.status === 500) return lost("internal_error", `500 ${body.code}: ${short(body.message)}`)
  return { _tag: "CleanError", status: response.status, code: body.code, midStream: false }
}

const classifyJson = async (
  response: Response,
  expectation: Expectation,
  scanner: SecretScan.Scanner | undefined
): Promise<Outcome> => {
  const { text, error } = await readText(response)
  scanner?.scan(text, "answer body")
  if (error !== undefined) return cut(error, "200, then the JSON body was cut")
  const body = parseJson(text)
  if (!isRecord(body) || !Array.isArray(body["choices"])) return lost("truncated_success", `200: ${short(text)}`)
  const choice: unknown = body["choices"][0]
  if (!isRecord(choice) || !isRecord(choice["message"]) || typeof choice["finish_reason"] !== "string") {
    return lost("truncated_success", `200 without a message and finish reason: ${short(text)}`)
  }
  if (!isRecord(body["usage"])) return lost("truncated_success", "200 without usage")
  const content = choice["message"]["content"]
  if (expectation.content !== undefined && content !== expectation.content) {
    return lost("wrong_answer", `expected ${JSON.stringify(expectation.content)}, got ${JSON.stringify(content)}`)
  }
  return answered(response)
}

const classifyStream = async (
  response: Response,
  expectation: Expectation,
  scanner: SecretScan.Scanner | undefined
): Promise<Outcome> => {
  if (!(response.headers.get("content-type") ?? "").includes("text/event-stream")) {
    await readText(response)
    return lost("unexpected_status", `200 for a stream without text/event-stream`)
  }
  const read = await Sse.read(response)
  scanner?.scan(read.text, "event stream")
  if (read.error !== undefined) return cut(read.error, `the stream was cut after ${read.data.length} events`)
  const data = read.data
  const last = data[data.length - 1]
  const chunks: Array<Record<string, unknown>> = []
  for (const [index, line] of data.entries()) {
    if (line === "[DONE]") {
      if (index !== data.length - 1) return lost("malformed_chunk", "[DONE] before the end of the stream")
      continue
    }
    const parsed = parseJson(line)
    if (!isRecord(parsed)) return lost("malformed_chunk", `event ${index} is not JSON: ${short(line)}`)
    chunks.push(parsed)
  }
  if (last !== "[DONE]") {
    const error = errorBodyOf(chunks[chunks.length - 1])
    if (error === undefined) return lost("truncated_success", `the stream ended without [DONE] or an error event`)
    if (chunks.slice(0, -1).some((chunk) => "error" in chunk)) return lost("malformed_chunk", "two error events")
    return { _tag: "CleanError", status: 200, code: error.code, midStream: true }
  }
  if (chunks.some((chunk) => "error" in chunk)) return lost("truncated_success", "an error event, then [DONE]")
  let content = ""
  let finished = false
  let usage = false
  for (const chunk of chunks) {
    if (isRecord(chunk["usage"])) usage = true
    const choices = Array.isArray(chunk["choices"]) ? (chunk["choices"] as ReadonlyArray<unknown>) : []
    for (const choice of choices) {
      if (!isRecord(choice)) continue
      if (typeof choice["finish_reason"] === "string") finished = true
      const delta = choice["delta"]
      if (isRecord(delta) && typeof delta["content"] === "string") content += delta["content"]
    }
  }
  if (!finished) return lost("truncated_success", "[DONE] without a finish reason")
  if (expectation.usage === true && !usage) return lost("truncated_success", "[DONE] without the usage chunk")
  if (expectation.content !== undefined && content !== expectation.content) {
    return lost("wrong_answer", `expected ${JSON.stringify(expectation.content)}, got ${JSON.stringify(content)}`)
  }
  return answered(response)
}

/**
 * Sends one request (`send`) and classifies what came back. Never throws: a rejected `fetch` is a lost
 * request (`no_answer` when it was aborted by its deadline, else `connection_error`).
 */
export const classify = async (
  send: () => Promise<Response>,
  expectation: Expectation,
  scanner?: SecretScan.Scanner
): Promise<Outcome> => {
  let response: Response
  try {
    response = await send()
  } catch (error) {
    if (isAbort(error)) return lost("no_answer", "no answer before the deadline")
    const cause = error instanceof Error && isRecord(error.cause) ? String(error.cause["code"] ?? "") : ""
    return lost("connection_error", `${String(error)}${cause === "" ? "" : ` (${cause})`}`)
  }
  if (scanner !== undefined) SecretScan.scanHeaders(scanner, response.headers)
  try {
    if (response.status >= 400) return await classifyError(response, scanner)
    if (response.status !== 200) {
      await readText(response)
      return lost("unexpected_status", `status ${response.status}`)
    }
    return expectation.stream
      ? await classifyStream(response, expectation, scanner)
      : await classifyJson(response, expectation, scanner)
  } catch (error) {
    return cut(error, String(error))
  }
}
