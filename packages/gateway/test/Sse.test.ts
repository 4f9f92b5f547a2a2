// The SSE encoding as one stream stage: the same events as the text encoding, in bytes, one buffer per
// batch of chunks; usage-only batches the client did not ask for send nothing; a chunk that cannot be
// serialised ends the stream with the error event; interruptions pass through.

import { assert, describe, it } from "@effect/vitest"
import type { ChatCompletion } from "@roadcar/core"
import { Cause, Deferred, Effect, Exit, Fiber, Stream } from "effect"
import { Sse } from "../src/index.ts"

const base = { id: "c1", object: "chat.completion.chunk" as const, created: 1, model: "m" }
const content = (text: string): ChatCompletion.ChatChunk => ({
  ...base,
  choices: [{ index: 0, delta: { content: text }, finish_reason: null }]
})
const usageOnly: ChatCompletion.ChatChunk = {
  ...base,
  choices: [],
  usage: { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 }
}
const errorBody = { error: { message: "cut", type: "upstream_error" as const, param: null, code: "x" } }
const onFailure = () => Effect.succeed(errorBody)
const decoder = new TextDecoder()

const bytesOf = <E>(chunks: Stream.Stream<ChatCompletion.ChatChunk, E>, includeUsage = false) =>
  Effect.map(Stream.runCollect(Sse.encodeBytes(chunks, { includeUsage, onFailure })), (buffers) =>
    buffers.map((buffer) => decoder.decode(buffer))
  )
const textOf = <E>(chunks: Stream.Stream<ChatCompletion.ChatChunk, E>, includeUsage = false) =>
  Effect.map(Stream.runCollect(Sse.encode(chunks, { includeUsage, onFailure })), (events) => events.join(""))

describe("Sse.encodeBytes", () => {
  it.effect("sends the text encoding's events, one buffer per batch of chunks, then [DONE]", () =>
    Effect.gen(function* () {
      const batches = Stream.fromArrays([content("a"), content("b")], [content("c")])
      const buffers = yield* bytesOf(batches)
      assert.deepStrictEqual(buffers, [
        `${Sse.event(content("a"))}${Sse.event(content("b"))}`,
        Sse.event(content("c")),
        Sse.done
      ])
      assert.strictEqual(buffers.join(""), yield* textOf(batches))
    })
  )

  it.effect("a batch of usage-only chunks the client did not ask for sends nothing; asked for, it is sent", () =>
    Effect.gen(function* () {
      const batches = Stream.fromArrays([content("a")], [usageOnly], [content("b")])
      assert.deepStrictEqual(yield* bytesOf(batches), [Sse.event(content("a")), Sse.event(content("b")), Sse.done])
      assert.deepStrictEqual(yield* bytesOf(batches, true), [
        Sse.event(content("a")),
        Sse.event(usageOnly),
        Sse.event(content("b")),
        Sse.done
      ])
    })
  )

  it.effect("a failure ends with the error event and no [DONE], as does a chunk that cannot be serialised", () =>
    Effect.gen(function* () {
      const failed = yield* bytesOf(Stream.concat(Stream.make(content("a")), Stream.fail("boom")))
      assert.deepStrictEqual(failed, [Sse.event(content("a")), Sse.event(errorBody)])
      // JSON.stringify throws on a BigInt: a defect while encoding, answered like a failure.
      const unserialisable = { ...content("b"), created: 1n } as unknown as ChatCompletion.ChatChunk
      const causes: Array<Cause.Cause<unknown>> = []
      const encoded = yield* Stream.runCollect(
        Sse.encode(Stream.make(content("a"), unserialisable), {
          includeUsage: false,
          onFailure: (cause) =>
            Effect.as(
              Effect.sync(() => causes.push(cause)),
              errorBody
            )
        })
      )
      assert.deepStrictEqual(encoded, [Sse.event(errorBody)])
      assert.isTrue(Cause.hasDies(causes[0]!))
    })
  )

  it.effect("an interruption passes through: no error event, no [DONE]", () =>
    Effect.gen(function* () {
      const sent: Array<string> = []
      const first = yield* Deferred.make<void>()
      const fiber = yield* Stream.runForEach(
        Sse.encodeBytes(Stream.concat(Stream.make(content("a")), Stream.never), { includeUsage: false, onFailure }),
        (buffer) =>
          Effect.andThen(
            Effect.sync(() => sent.push(decoder.decode(buffer))),
            Deferred.succeed(first, undefined)
          )
      ).pipe(Effect.forkChild)
      yield* Deferred.await(first)
      const exit = yield* Fiber.interrupt(fiber).pipe(Effect.andThen(Fiber.await(fiber)))
      assert.isTrue(Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause))
      assert.deepStrictEqual(sent, [Sse.event(content("a"))])
    })
  )
})
