/**
 * Reads server-sent events in tests: split an SSE body into events and data lines, and read a `fetch`
 * response to the end without losing what arrived before a cut.
 *
 * A test helper, not a production SSE client: it follows the SSE framing rules (blank-line separated
 * events, `event:` and `data:` fields, `:` comments, an unterminated last event is dropped) and nothing
 * else (no reconnection, no `id`/`retry` handling).
 *
 * @since 0.1.0
 */

/**
 * One server-sent event.
 *
 * @category models
 * @since 0.1.0
 */
export interface Event {
  /** The `event:` field, if the event has one. */
  readonly event?: string | undefined
  /** The `data:` lines, joined with `"\n"`. */
  readonly data: string
}

/**
 * What {@link read} got from a response body.
 *
 * @category models
 * @since 0.1.0
 */
export interface ReadResult {
  /** Every complete event, in order. */
  readonly events: ReadonlyArray<Event>
  /** Each event's data (`events.map((e) => e.data)`). */
  readonly data: ReadonlyArray<string>
  /** The raw body text received. */
  readonly text: string
  /** Why reading stopped early (a cut connection, an abort), or `undefined` when the body ended cleanly. */
  readonly error: unknown
}

/**
 * Splits an SSE body into its complete events.
 *
 * @example
 * ```ts
 * import { Sse } from "@roadcar/testing"
 * Sse.parse("event: ping\ndata: {}\n\ndata: [DONE]\n\n")
 * // => [{ event: "ping", data: "{}" }, { data: "[DONE]" }]
 * ```
 *
 * @category parsing
 * @since 0.1.0
 */
export const parse = (text: string): ReadonlyArray<Event> => {
  const blocks = text.split(/\r?\n\r?\n/)
  // The piece after the last blank line is an unterminated event: dropped, as the SSE spec says.
  blocks.pop()
  const events: Array<Event> = []
  for (const block of blocks) {
    let event: string | undefined
    const data: Array<string> = []
    for (const line of block.split(/\r?\n/)) {
      if (line === "" || line.startsWith(":")) continue
      const colon = line.indexOf(":")
      const field = colon === -1 ? line : line.slice(0, colon)
      const raw = colon === -1 ? "" : line.slice(colon + 1)
      const value = raw.startsWith(" ") ? raw.slice(1) : raw
      if (field === "event") event = value
      else if (field === "data") data.push(value)
    }
    if (data.length === 0 && event === undefined) continue
    events.push(event === undefined ? { data: data.join("\n") } : { event, data: data.join("\n") })
  }
  return events
}

/**
 * The data of each complete event in an SSE body (`"[DONE]"` included).
 *
 * @example
 * ```ts
 * import { Sse } from "@roadcar/testing"
 * Sse.dataLines('data: {"a":1}\n\ndata: [DONE]\n\n') // => ['{"a":1}', "[DONE]"]
 * ```
 *
 * @category parsing
 * @since 0.1.0
 */
export const dataLines = (text: string): ReadonlyArray<string> => parse(text).map((event) => event.data)

/**
 * Reads a response body to its end and parses it, keeping what arrived when the body fails midway
 * (a cut connection): the failure is returned in `error`, never thrown.
 *
 * @example
 * ```ts
 * import { Behaviour, FakeUpstream, Sse } from "@roadcar/testing"
 *
 * const fake = await FakeUpstream.start({ behaviour: Behaviour.cutAfter(1) })
 * const response = await fetch(`${fake.url}/v1/chat/completions`, {
 *   method: "POST",
 *   body: JSON.stringify({ model: "m", stream: true, messages: [{ role: "user", content: "hello there" }] })
 * })
 * const { data, error } = await Sse.read(response)
 * await fake.close()
 * data.length // => 2 (the role chunk and one text chunk)
 * error !== undefined // => true
 * ```
 *
 * @category parsing
 * @since 0.1.0
 */
export const read = async (response: { readonly body: ReadableStream<Uint8Array> | null }): Promise<ReadResult> => {
  const decoder = new TextDecoder()
  let text = ""
  let error: unknown
  if (response.body !== null) {
    const reader = response.body.getReader()
    try {
      for (;;) {
        const { done, value } = await reader.read()
        if (done) break
        text += decoder.decode(value, { stream: true })
      }
      text += decoder.decode()
    } catch (cause) {
      error = cause ?? new Error("the response body failed")
    } finally {
      reader.releaseLock()
    }
  }
  const events = parse(text)
  return { events, data: events.map((event) => event.data), text, error }
}
