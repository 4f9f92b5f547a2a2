/**
 * Reads a Server-Sent Events body as it arrives and turns its events into values.
 *
 * `decode` feeds the body's text to Effect's SSE parser (multi-line `data:`, comments, CRLF, BOM),
 * hands each event to a provider-specific, stateful `EventDecoder`, and stops reading once the
 * decoder says the answer is done. If the body ends first, the decoder decides whether the answer
 * was complete (it had its finish reason) or was cut. Nothing is buffered beyond the current event.
 *
 * @since 0.1.0
 */

import * as Sse from "effect/encoding/Sse"
import type { LazyArg } from "effect/Function"
import type * as HttpClientError from "effect/http/HttpClientError"
import * as Result from "effect/Result"
import * as Stream from "effect/Stream"
import * as UpstreamError from "../../UpstreamError.ts"

/**
 * What one event produced: values to emit, and whether the answer is done (`[DONE]`, `message_stop`).
 *
 * @category models
 * @since 0.1.0
 */
export interface Step<A> {
  readonly items: ReadonlyArray<A>
  readonly done: boolean
}

/**
 * The stateful, provider-specific part: one instance per stream.
 *
 * @category models
 * @since 0.1.0
 */
export interface EventDecoder<A> {
  /** Handles one event; fails for malformed data or an error event. */
  readonly event: (event: Sse.Event) => Result.Result<Step<A>, UpstreamError.Reason>
  /** The body ended before `done`: the last values if the answer had finished, else why it is incomplete. */
  readonly end: () => Result.Result<ReadonlyArray<A>, UpstreamError.Reason>
}

interface Batch<A> {
  readonly items: ReadonlyArray<A>
  readonly done: boolean
  readonly failure: UpstreamError.Reason | undefined
}

/**
 * A step that emits the given values and goes on.
 *
 * @category constructors
 * @since 0.1.0
 */
export const emit = <A>(...items: ReadonlyArray<A>): Result.Result<Step<A>, never> =>
  Result.succeed({ items, done: false })

/**
 * The step that ends the stream, after the given values.
 *
 * @category constructors
 * @since 0.1.0
 */
export const done = <A>(...items: ReadonlyArray<A>): Result.Result<Step<A>, never> =>
  Result.succeed({ items, done: true })

/**
 * The reason for a stream that ended before its finish reason.
 *
 * @category constructors
 * @since 0.1.0
 */
export const cut = (): UpstreamError.Reason =>
  new UpstreamError.MalformedOutput({ detail: "stream ended before the answer finished" })

/**
 * Decodes an SSE body with a fresh decoder per run.
 *
 * **Details**
 *
 * A failure reading the body becomes `onBodyError(error)` (a reset socket: `ConnectionFailed`). At the
 * end of the body, an event the upstream left unterminated is still dispatched; if it cannot be read,
 * it is ignored when the answer had already finished and the stream fails as cut otherwise.
 *
 * @category constructors
 * @since 0.1.0
 */
export const decode = <A>(
  body: Stream.Stream<Uint8Array, HttpClientError.HttpClientError>,
  makeDecoder: LazyArg<EventDecoder<A>>,
  onBodyError: (error: HttpClientError.HttpClientError) => UpstreamError.Reason
): Stream.Stream<A, UpstreamError.Reason> =>
  Stream.suspend(() => {
    const decoder = makeDecoder()
    const pending: Array<Sse.Event> = []
    // `retry:` directives are for EventSource reconnection; an upstream answer has no use for them.
    const parser = Sse.makeParser((event) => {
      if (event._tag === "Event") pending.push(event)
    })
    let finished = false

    // The values of every complete event received so far, and how the batch ended: values that
    // arrived before an error event are still emitted, then the stream fails.
    const drain = (): Batch<A> => {
      const items: Array<A> = []
      while (pending.length > 0) {
        const step = decoder.event(pending.shift()!)
        if (Result.isFailure(step)) return { items, done: false, failure: step.failure }
        items.push(...step.success.items)
        if (step.success.done) {
          finished = true
          pending.length = 0
          return { items, done: true, failure: undefined }
        }
      }
      return { items, done: false, failure: undefined }
    }

    const feed = (text: string): Batch<A> => {
      const error = parser.feed(text)
      return error === undefined
        ? drain()
        : { items: [], done: false, failure: new UpstreamError.MalformedOutput({ detail: error.message }) }
    }

    const emitBatch = (batch: Batch<A>): Stream.Stream<A, UpstreamError.Reason> =>
      batch.failure === undefined
        ? Stream.fromIterable(batch.items)
        : Stream.concat(Stream.fromIterable(batch.items), Stream.fail(batch.failure))

    const atEnd = Stream.suspend((): Stream.Stream<A, UpstreamError.Reason> => {
      if (finished) return Stream.empty
      parser.feed("\n\n")
      const last = drain()
      if (last.failure !== undefined) {
        const items = Stream.fromIterable(last.items)
        // An unterminated trailing event that says what went wrong (an error event the upstream sent
        // as its last words, without the closing blank line) fails with what it says.
        if (last.failure._tag !== "MalformedOutput") return Stream.concat(items, Stream.fail(last.failure))
        // One that cannot be read is a cut, not malformed output: the answer is complete if it had
        // already finished, and cut otherwise.
        const complete = decoder.end()
        return Stream.concat(
          items,
          Result.isFailure(complete) ? Stream.fail(complete.failure) : Stream.fromIterable(complete.success)
        )
      }
      if (last.done) return Stream.fromIterable(last.items)
      const rest = decoder.end()
      return Result.isFailure(rest)
        ? Stream.concat(Stream.fromIterable(last.items), Stream.fail(rest.failure))
        : Stream.fromIterable([...last.items, ...rest.success])
    })

    return body.pipe(
      Stream.mapError(onBodyError),
      Stream.decodeText(),
      Stream.map(feed),
      Stream.takeUntil((batch) => batch.done || batch.failure !== undefined),
      Stream.flatMap(emitBatch),
      Stream.concat(atEnd)
    )
  })
