/**
 * Server-sent events for streamed chat completions, in OpenAI's wire format.
 *
 * Each chunk is one `data: <json>\n\n` event and a complete answer ends with `data: [DONE]\n\n`. Usage
 * is sent only when the client asked for it (`stream_options.include_usage`), as a last chunk with
 * `choices: []`, like OpenAI. A stream that fails after it started ends with one error event,
 * `data: {"error":{...}}\n\n`, and **no** `[DONE]`, so no client takes a cut answer for a complete one
 * (the official `openai` client throws an `APIError` on that event). An interruption (the client went
 * away, the server is shutting down) is passed on, so the upstream stream is cancelled.
 *
 * The encoding is one stream stage (one pull wrapped around the chunks' pull), not a chain of
 * `map`/`flattenIterable`/`concat`/`catchCause`/`encodeText`: every stage of an Effect stream keeps
 * its own closures, scope and pull state alive for as long as the stream is open, which for a
 * gateway holding thousands of slow streams was several KB per stream.
 *
 * @since 0.1.0
 */
import type { ChatCompletion } from "@roadcar/core"
import type * as Arr from "effect/Array"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Predicate from "effect/Predicate"
import * as Pull from "effect/Pull"
import * as Stream from "effect/Stream"
import type { ErrorBody } from "./GatewayError.ts"

/**
 * The terminator of a complete stream.
 *
 * @category constants
 * @since 0.1.0
 */
export const done = "data: [DONE]\n\n"

/**
 * One `data:` event with a JSON value.
 *
 * @category constructors
 * @since 0.1.0
 */
export const event = (value: unknown): string => `data: ${JSON.stringify(value)}\n\n`

/**
 * Whether a request asked for usage in its stream (`stream_options.include_usage: true`).
 *
 * @category guards
 * @since 0.1.0
 */
export const wantsUsage = (request: ChatCompletion.ChatRequest): boolean =>
  Predicate.isObject(request.stream_options) &&
  Predicate.hasProperty(request.stream_options, "include_usage") &&
  request.stream_options.include_usage === true

/**
 * The chunks to send for one upstream chunk: without usage when the client did not ask for it (a
 * usage-only chunk is dropped), else with usage split off into its own `choices: []` chunk.
 *
 * @category combinators
 * @since 0.1.0
 */
export const shape =
  (includeUsage: boolean) =>
  (chunk: ChatCompletion.ChatChunk): ReadonlyArray<ChatCompletion.ChatChunk> => {
    if (chunk.usage === undefined) return [chunk]
    const { usage, ...rest } = chunk
    if (!includeUsage || usage === null) return rest.choices.length > 0 ? [rest] : []
    return rest.choices.length > 0 ? [rest, { ...rest, choices: [], usage }] : [chunk]
  }

/**
 * How to end and shape an encoded stream.
 *
 * @category options
 * @since 0.1.0
 */
export interface EncodeOptions<E> {
  readonly includeUsage: boolean
  readonly onFailure: (cause: Cause.Cause<E>) => Effect.Effect<ErrorBody>
}

// The events of a batch of chunks, in one pull of `chunks`; `pack` turns them into the output
// elements. `[DONE]` comes in the pull that finds the chunks ended, the error event in the pull that
// finds them failed (a defect thrown while shaping or serialising a chunk counts as a failure);
// after either, the stream is done. Interruptions pass through.
const encodeWith = <E, B>(
  chunks: Stream.Stream<ChatCompletion.ChatChunk, E>,
  options: EncodeOptions<E>,
  pack: (events: Arr.NonEmptyReadonlyArray<string>) => Arr.NonEmptyReadonlyArray<B>
): Stream.Stream<B> =>
  Stream.transformPull(chunks, (pull) =>
    Effect.sync(() => {
      const shapeChunk = shape(options.includeUsage)
      let ended = false
      const fail = (cause: Cause.Cause<E>): Effect.Effect<Arr.NonEmptyReadonlyArray<B>> => {
        ended = true
        return Effect.map(options.onFailure(cause), (body) => pack([event(body)]))
      }
      const next: Pull.Pull<Arr.NonEmptyReadonlyArray<B>> = Pull.matchEffect(pull, {
        onSuccess: (batch) => {
          const events: Array<string> = []
          try {
            for (const chunk of batch) for (const shaped of shapeChunk(chunk)) events.push(event(shaped))
          } catch (defect) {
            return fail(Cause.die(defect))
          }
          // A batch of usage-only chunks the client did not ask for sends nothing: pull the next one.
          return events.length === 0 ? next : Effect.succeed(pack(events as unknown as Arr.NonEmptyArray<string>))
        },
        onDone: () => {
          ended = true
          return Effect.succeed(pack([done]))
        },
        onFailure: (cause) =>
          Cause.hasInterruptsOnly(cause) ? Effect.failCause(cause as Cause.Cause<never>) : fail(cause)
      })
      return Effect.suspend(() => (ended ? Cause.done() : next))
    })
  )

/**
 * Encodes a chunk stream as SSE text: events, then `[DONE]`; on failure one error event (from
 * `onFailure`) and no `[DONE]`. Interruptions pass through.
 *
 * @category constructors
 * @since 0.1.0
 */
export const encode = <E>(
  chunks: Stream.Stream<ChatCompletion.ChatChunk, E>,
  options: EncodeOptions<E>
): Stream.Stream<string> => encodeWith(chunks, options, (events) => events)

const encoder = new TextEncoder()

/**
 * `encode` as UTF-8 bytes, what an HTTP response body takes: the events of each batch of chunks in
 * one `Uint8Array`.
 *
 * @category constructors
 * @since 0.1.0
 */
export const encodeBytes = <E>(
  chunks: Stream.Stream<ChatCompletion.ChatChunk, E>,
  options: EncodeOptions<E>
): Stream.Stream<Uint8Array> =>
  encodeWith(chunks, options, (events) => [encoder.encode(events.length === 1 ? events[0] : events.join(""))])
