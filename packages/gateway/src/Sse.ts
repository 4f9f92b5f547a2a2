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
 * @since 0.1.0
 */
import type { ChatCompletion } from "@roadcar/core"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Predicate from "effect/Predicate"
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
 * Encodes a chunk stream as SSE text: events, then `[DONE]`; on failure one error event (from
 * `onFailure`) and no `[DONE]`. Interruptions pass through.
 *
 * @category constructors
 * @since 0.1.0
 */
export const encode = <E>(
  chunks: Stream.Stream<ChatCompletion.ChatChunk, E>,
  options: {
    readonly includeUsage: boolean
    readonly onFailure: (cause: Cause.Cause<E>) => Effect.Effect<ErrorBody>
  }
): Stream.Stream<string> =>
  chunks.pipe(
    Stream.map(shape(options.includeUsage)),
    Stream.flattenIterable,
    Stream.map(event),
    Stream.concat(Stream.succeed(done)),
    Stream.catchCause((cause) =>
      Cause.hasInterruptsOnly(cause)
        ? Stream.failCause(cause as Cause.Cause<never>)
        : Stream.fromEffect(Effect.map(options.onFailure(cause), event))
    )
  )
