/**
 * What each stage costs inside the in-process pipeline: the full pipeline beside the same pipeline
 * with one stage taken out, interleaved round by round in one process (process CPU time per call,
 * medians over rounds), for finding the next thing to make cheaper.
 *
 *     node bench/src/inprocess/stages.ts [rounds=15] [calls per batch=4000]
 */
import { AlertSink, Breaker, Budget, Monitor, Pipeline, RateLimit, RequestLog, ResponseCache } from "@roadcar/core"
import type * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as ManagedRuntime from "effect/ManagedRuntime"
import { requests, response } from "./fixtures.ts"
import { benchUpstream, pipelineOptions } from "./roadcar.ts"

const rounds = Number(process.argv[2] ?? "15")
const batch = Number(process.argv[3] ?? "4000")

const rateLimit = RateLimit.layerMemory({
  rules: [
    {
      by: "key",
      requests: { limit: 1_000_000_000, window: "1 minute" },
      tokens: { limit: 1_000_000_000_000, window: "1 minute" }
    }
  ],
  onExceeded: "reject"
})
const cache = ResponseCache.layer({ capacity: 1024, timeToLive: "10 minutes" })
const monitor = Monitor.layer().pipe(Layer.provide(AlertSink.layerLog))
const log = Logger.layer([RequestLog.formatJson, Logger.tracerLogger])

const budget = Budget.layerMemory({ budgets: [{ per: "day", tokens: 1_000_000_000_000 }] })

type Parts = { rateLimit: boolean; cache: boolean; monitor: boolean; log: boolean; budget?: boolean }
const all: Parts = { rateLimit: true, cache: true, monitor: true, log: true }
const variants: ReadonlyArray<readonly [string, Parts]> = [
  ["full", all],
  ["full + budget", { ...all, budget: true }],
  ["no rate limit", { ...all, rateLimit: false }],
  ["no cache", { ...all, cache: false }],
  ["monitor noop", { ...all, monitor: false }],
  ["no logger", { ...all, log: false }],
  ["nothing optional", { rateLimit: false, cache: false, monitor: false, log: false }]
]

// Disposed at the end: the stages' own timers (the monitor's checks) would keep the process alive.
const runtimes: Array<{ readonly dispose: () => Promise<void> }> = []

const build = async (parts: Parts) => {
  const { upstream } = benchUpstream("success")
  const layers = [
    Breaker.layerMemory(),
    parts.monitor ? monitor : Monitor.layerNoop,
    parts.log ? log : Logger.layer([])
  ]
  if (parts.rateLimit) layers.push(rateLimit)
  if (parts.cache) layers.push(cache)
  if (parts.budget === true) layers.push(budget)
  const runtime = ManagedRuntime.make(
    Pipeline.layer(pipelineOptions(upstream)).pipe(
      Layer.provideMerge(Layer.mergeAll(...(layers as [Layer.Layer<never>])))
    ) as Layer.Layer<Pipeline.PipelineService>
  )
  runtimes.push(runtime)
  const context = (await runtime.context()) as Context.Context<never>
  const pipeline = await runtime.runPromise(Effect.service(Pipeline.PipelineService))
  const run = Effect.runPromiseWith(context)
  return (i: number) => run(pipeline.complete(requests[i & 8191]!, { key: "bench" }))
}

const raw = Effect.runPromiseWith((await ManagedRuntime.make(Layer.empty).context()) as Context.Context<never>)
const rawCall = () => raw(Effect.succeed(response))
const calls = await Promise.all(variants.map(([, parts]) => build(parts)))
const cpu = () => {
  const u = process.cpuUsage()
  return u.user + u.system
}
const time = async (call: (i: number) => Promise<unknown>, offset: number) => {
  const start = cpu()
  for (let i = 0; i < batch; i++) await call(offset + i)
  return (cpu() - start) / batch
}
const samples = variants.map(() => [] as Array<number>)
let offset = 0
for (let r = -2; r < rounds; r++) {
  for (let v = 0; v < variants.length; v++) {
    const index = (v + r + 2) % variants.length
    const baseline = await time(rawCall, 0)
    const measured = await time(calls[index]!, offset)
    offset += batch
    if (r >= 0) samples[index]!.push(measured - baseline)
  }
}
const median = (xs: Array<number>) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const full = median([...samples[0]!])
for (let v = 0; v < variants.length; v++) {
  const m = median(samples[v]!)
  process.stdout.write(
    `${variants[v]![0].padEnd(18)} ${m.toFixed(2).padStart(7)} µs CPU overhead/call   (${(m - full).toFixed(2)} vs full)\n`
  )
}
await Promise.all(runtimes.map((runtime) => runtime.dispose()))
