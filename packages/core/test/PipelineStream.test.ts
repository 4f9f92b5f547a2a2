// The streamed answer's one stage: what it reports when the chunks end (usage, model), when it
// releases the upstream, and what an interruption leaves behind, with and without the response cache.

import { assert, describe, it } from "@effect/vitest"
import { Breaker, ChatCompletion, Monitor, Pipeline, RequestLog, ResponseCache, type Upstream } from "@roadcar/core"
import { Deferred, Effect, Fiber, Layer, Stream } from "effect"
import { TestConsole } from "effect/testing"
import { request, response } from "./utils/Scripted.ts"

const Stages = Layer.mergeAll(Breaker.layerMemory(), Monitor.layerNoop)

// An upstream whose stream is its answer's chunks, then (when `stall`) nothing more; `events` records
// when the stream's own finalizer ran.
const chunked = (name: string, events: Array<string>, stall = false): Upstream.Upstream => ({
  name,
  provider: "test",
  model: name,
  complete: () => Effect.succeed(response(name, `answer from ${name}`)),
  stream: () =>
    Stream.fromIterable(ChatCompletion.responseToChunks(response(name, `answer from ${name}`))).pipe(
      (chunks) => (stall ? Stream.concat(chunks, Stream.never) : chunks),
      Stream.ensuring(Effect.sync(() => events.push("released")))
    )
})

// A monitor that records every finished request in `events`.
const recording = (events: Array<string>, outcomes: Array<Monitor.RequestOutcome>) =>
  Monitor.Monitor.of({
    ...Monitor.noop,
    requestFinished: (outcome) =>
      Effect.sync(() => {
        events.push("finished")
        outcomes.push(outcome)
      })
  })

const requestLines = Effect.map(TestConsole.logLines, (lines) =>
  lines
    .map((line) => JSON.parse(String(line)) as { message: unknown; annotations: Record<string, unknown> })
    .filter((line) => line.message === "request")
)

describe("Pipeline.stream", () => {
  for (const [label, cache] of [
    ["without", Layer.empty],
    ["with", ResponseCache.layer()]
  ] as const) {
    it.effect(`a streamed answer logs its usage and answering model, ${label} the response cache`, () =>
      Effect.gen(function* () {
        const pipeline = yield* Pipeline.make({ steps: [{ upstream: chunked("primary", []) }] })
        const answer = yield* pipeline.stream(request("usage"), { requestId: "req-usage" })
        const chunks = yield* Stream.runCollect(answer.chunks)
        assert.strictEqual(chunks.map((chunk) => chunk.choices[0]?.delta.content ?? "").join(""), "answer from primary")
        const lines = yield* requestLines
        assert.strictEqual(lines.length, 1)
        const line = lines[0]!.annotations
        assert.strictEqual(line["status"], "success")
        assert.strictEqual(line["answered_model"], "primary")
        assert.strictEqual(line["input_tokens"], 5)
        assert.strictEqual(line["output_tokens"], 3)
        // With the cache, the complete answer was stored: the same request is now a hit.
        const again = yield* pipeline.stream(request("usage"))
        assert.strictEqual(again.meta.cacheHit, label === "with")
      }).pipe(Effect.scoped, Effect.provide(Layer.mergeAll(Stages, cache, RequestLog.layerJson("Info"))))
    )
  }

  it.effect("the upstream is released as soon as the chunks end, before the request finishes", () =>
    Effect.gen(function* () {
      const events: Array<string> = []
      const outcomes: Array<Monitor.RequestOutcome> = []
      const pipeline = yield* Pipeline.make({ steps: [{ upstream: chunked("primary", events) }] }).pipe(
        Effect.provideService(Monitor.Monitor, recording(events, outcomes))
      )
      // The caller's scope stays open: the release is the stream's, not the scope's.
      const answer = yield* pipeline.stream(request())
      yield* Stream.runDrain(answer.chunks)
      assert.deepStrictEqual(events, ["released", "finished"])
      assert.strictEqual(outcomes[0]?.outcome, "success")
    }).pipe(Effect.scoped, Effect.provide(Stages))
  )

  it.effect("a stream interrupted while it waits for a chunk releases the upstream and finishes as an error", () =>
    Effect.gen(function* () {
      const events: Array<string> = []
      const outcomes: Array<Monitor.RequestOutcome> = []
      const pipeline = yield* Pipeline.make({ steps: [{ upstream: chunked("primary", events, true) }] }).pipe(
        Effect.provideService(Monitor.Monitor, recording(events, outcomes))
      )
      const answer = yield* pipeline.stream(request())
      const first = yield* Deferred.make<void>()
      const reader = yield* Stream.runForEach(answer.chunks, () => Deferred.succeed(first, undefined)).pipe(
        Effect.forkChild
      )
      yield* Deferred.await(first)
      assert.deepStrictEqual(events, [])
      yield* Fiber.interrupt(reader)
      assert.deepStrictEqual(events, ["released", "finished"])
      assert.strictEqual(outcomes[0]?.outcome, "error")
    }).pipe(Effect.scoped, Effect.provide(Stages))
  )
})
