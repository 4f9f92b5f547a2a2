/**
 * The README's short program: a pipeline with a retrying primary, a backup and a static answer.
 *
 * Run it with `node examples/quick-start/src/main.ts`.
 */

import { Breaker, Monitor, Pipeline, ResponseCache, Simulated } from "@roadcar/core"
import { Effect, Layer } from "effect"

const program = Effect.gen(function* () {
  const primary = Simulated.makeUnsafe({
    name: "primary",
    faults: Simulated.failFirst(2, Simulated.SimulatedFault.Unavailable({ status: 503 }))
  })
  const backup = Simulated.makeUnsafe({ name: "backup" })
  const pipeline = yield* Pipeline.make({
    steps: [{ upstream: primary }, { upstream: backup }],
    staticAnswer: "Sorry, please try again in a minute."
  })
  // The type says it: with a static answer, no upstream error can reach this caller.
  const answer = yield* pipeline.complete({ model: "chat", messages: [{ role: "user", content: "Hi" }] })
  return `${answer.meta.upstream} answered after ${answer.meta.attempts} attempts`
})

const Stages = Layer.mergeAll(Breaker.layerMemory(), Monitor.layerNoop, ResponseCache.layer())
Effect.runPromise(program.pipe(Effect.scoped, Effect.provide(Stages))).then(console.log)
// => "primary answered after 3 attempts"
