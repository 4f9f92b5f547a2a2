/**
 * The seed walkthrough: a demo LLM call made production-grade.
 *
 * Five prompts go through the Roadcar pipeline in front of a flaky simulated model (no network, no
 * key). The log shows each request with its time, latency and status; an upstream that hangs, times
 * out, is retried (`retry 1/3`) and then answers; a request whose three attempts all fail and is
 * answered by the fallback model; a repeated prompt served from the cache; then a summary.
 *
 * Run it with `pnpm demo`.
 */

import { Breaker, Monitor, Pipeline, ResponseCache, Simulated } from "@roadcar/core"
import { Effect, Layer, Logger, References } from "effect"

const { SimulatedFault } = Simulated

// The primary model fails on a script: call 2 hangs, calls 4-6 answer 503. Everything else works.
const primary = Simulated.makeUnsafe({
  name: "primary",
  model: "sim-large",
  latency: "120 millis",
  faults: Simulated.sequence([
    null,
    SimulatedFault.Hang(),
    null,
    SimulatedFault.Unavailable({ status: 503 }),
    SimulatedFault.Unavailable({ status: 503 }),
    SimulatedFault.Unavailable({ status: 503 })
  ])
})
const fallback = Simulated.makeUnsafe({ name: "fallback", model: "sim-small", latency: "60 millis" })

// Human-readable log lines: time, level, message, and the fields that matter.
const time = (date: Date) => date.toISOString().slice(11, 23)
const DemoLogger = Logger.make(({ date, fiber, logLevel, message }) => {
  const text = Array.isArray(message) ? message.join(" ") : String(message)
  const a = fiber.getRef(References.CurrentLogAnnotations) as Record<string, unknown>
  const line =
    text === "request"
      ? `request ${a["request_id"]}  ${a["status"]}  ${a["latency_ms"]}ms  answered by ${a["upstream"] ?? "-"}  ` +
        `attempts=${a["attempts"]} cache=${a["cache_hit"] ? "hit" : "miss"}` +
        (a["fallback_reason"] ? `  fallback because ${a["fallback_reason"]}` : "") +
        `  tokens=${a["input_tokens"]}+${a["output_tokens"]}`
      : text
  console.log(`${time(date)} ${logLevel.toUpperCase().padEnd(5)} ${line}`)
})

const prompts = [
  "What is a circuit breaker?",
  "Why retry with jitter?",
  "When should a fallback answer?",
  "What does a cache save?",
  "What is a circuit breaker?"
]

const program = Effect.gen(function* () {
  const pipeline = yield* Pipeline.make({
    steps: [
      // A hung attempt is retried here so the walkthrough shows it; by default a timeout moves on to the fallback.
      { upstream: primary, retry: { retryTimeouts: true } },
      { upstream: fallback }
    ],
    timeouts: { attempt: "1 second", total: "20 seconds" },
    staticAnswer: "Sorry, every model is busy right now. Please try again in a minute."
  })
  let index = 0
  const answers: Array<Pipeline.Answer> = []
  for (const prompt of prompts) {
    index++
    // The pipeline never fails with an upstream error here: the static answer is the last resort.
    const answer = yield* pipeline.complete(
      { model: "chat", messages: [{ role: "user", content: prompt }] },
      { requestId: `#${index}` }
    )
    answers.push(answer)
    console.log(`        > ${answer.response.choices[0]?.message.content}`)
  }
  const by = (predicate: (answer: Pipeline.Answer) => boolean) => answers.filter(predicate).length
  console.log("\nsummary")
  console.log(`  requests          ${answers.length}`)
  console.log(`  answered          ${answers.length} (nobody saw an error)`)
  console.log(`  by the primary    ${by((a) => a.meta.upstream === "primary" && !a.meta.cacheHit)}`)
  console.log(`  by the fallback   ${by((a) => a.meta.fallback !== undefined && !a.meta.static)}`)
  console.log(`  from the cache    ${by((a) => a.meta.cacheHit)}`)
  console.log(`  upstream calls    ${(yield* primary.calls) + (yield* fallback.calls)}`)
})

const Stages = Layer.mergeAll(Breaker.layerMemory(), Monitor.layerNoop, ResponseCache.layer())

Effect.runPromise(program.pipe(Effect.scoped, Effect.provide(Stages), Effect.provide(Logger.layer([DemoLogger]))))
