/**
 * The growth part: time per request and memory as the number of distinct rate-limit keys (users) and
 * cache entries grows from 1 to 1,000,000, in process, through `Pipeline.make`.
 *
 * At each checkpoint N users have come (each through `RateLimit.admit` and `ResponseCache.store` like
 * a request would, see `harness.ts`); the in-process rate limit holds at most `maxKeys` of them (the
 * least recently used dropped), the cache at most its capacity. Then the heap is measured after a full
 * GC, and requests are timed through the pipeline in batches: users spread over the N known ones
 * ("existing keys") and, from 10,000 up, users never seen ("new keys"), every request with a new prompt
 * (a cache miss that stores an entry). A separate measurement times a full cache by capacity and its
 * eviction alone (`eviction.ts`).
 */
import os from "node:os"
import v8 from "node:v8"
import vm from "node:vm"
import { RateLimit } from "@roadcar/core"
import { type Bar, barChart } from "../chart.ts"
import type { Part, RunOptions } from "../part.ts"
import { machine, type Section, type Table, writeAsset } from "../report.ts"
import { collectGarbage, formatNumber, formatRatio, median, quantile } from "../stats.ts"
import { type EvictionCost, measureEviction } from "./eviction.ts"
import { build, type Harness, user, window } from "./harness.ts"

/** A count as text: `1,000,000`. */
const count = (value: number) => Math.round(value).toLocaleString("en-US")

interface Settings {
  readonly checkpoints: ReadonlyArray<number>
  readonly capacity: number
  /** The rate limit's `maxKeys`: below the last checkpoint, so that the bound shows. */
  readonly maxKeys: number
  readonly rounds: number
  readonly batch: number
  /** New-key batches are timed from this many users up (below, they would change N noticeably). */
  readonly newKeysFrom: number
  readonly newBatch: number
  /** Cache capacities timed with a full cache. */
  readonly capacities: ReadonlyArray<number>
}

const full: Settings = {
  checkpoints: [1, 1_000, 10_000, 100_000, 1_000_000],
  capacity: 10_000,
  maxKeys: RateLimit.defaultMaxKeys,
  rounds: 15,
  batch: 400,
  newKeysFrom: 10_000,
  newBatch: 200,
  capacities: [1_000, 10_000, 100_000]
}

const quick: Settings = {
  checkpoints: [1, 1_000, 10_000],
  capacity: 1_000,
  maxKeys: 1_000,
  rounds: 3,
  batch: 100,
  newKeysFrom: 10_000,
  newBatch: 100,
  capacities: [100, 1_000]
}

v8.setFlagsFromString("--expose-gc")
const gc: (options: { readonly type: "major"; readonly execution: "sync" }) => void = vm.runInNewContext("gc")

/** Heap used and RSS after two full garbage collections, in bytes. */
const memoryAfterGc = () => {
  gc({ type: "major", execution: "sync" })
  gc({ type: "major", execution: "sync" })
  const usage = process.memoryUsage()
  return { heapUsed: usage.heapUsed, rss: usage.rss }
}

/** Microseconds per request: median and spread over batches. */
interface Timing {
  readonly median: number
  readonly p25: number
  readonly p75: number
  readonly batches: ReadonlyArray<number>
}

const timingOf = (batches: ReadonlyArray<number>): Timing => ({
  median: median(batches),
  p25: quantile(batches, 0.25),
  p75: quantile(batches, 0.75),
  batches
})

/** One checkpoint. */
export interface Checkpoint {
  readonly users: number
  /** Keys the rate limit holds (`RateLimit.keysHeld`), at most `maxKeys`. */
  readonly rateLimitKeys: number
  readonly cacheEntries: number
  readonly heapUsed: number
  readonly rss: number
  readonly existing: Timing
  readonly newKeys: Timing | undefined
  readonly fillSeconds: number
  /** The 1-minute load average when the checkpoint's timing started. */
  readonly load1: number
}

const timeBatch = async (run: () => Promise<void>, count: number): Promise<number> => {
  collectGarbage()
  const started = performance.now()
  await run()
  return ((performance.now() - started) * 1000) / count
}

const measure = async (harness: Harness, settings: Settings, log: (line: string) => void) => {
  const base = memoryAfterGc()
  const checkpoints: Array<Checkpoint> = []
  let users = 0
  let nextRequest = 0
  // The cache full from the start, so every checkpoint stores and evicts alike and only the number of
  // rate-limit keys changes; then a warm-up of the pipeline's code paths on one user.
  await harness.fillCache(settings.capacity)
  await harness.fill(0, 1)
  users = 1
  await harness.run(nextRequest, 2_000, () => user(0))
  nextRequest += 2_000
  for (const target of settings.checkpoints) {
    const fillStarted = performance.now()
    for (let from = users; from < target; from += 10_000) {
      await harness.fill(from, Math.min(10_000, target - from))
    }
    users = Math.max(users, target)
    const fillSeconds = (performance.now() - fillStarted) / 1000
    const memory = memoryAfterGc()
    const rateLimitKeys = harness.rateLimitKeys()
    const cacheEntries = await harness.cacheEntries()
    const existing: Array<number> = []
    const fresh: Array<number> = []
    const n = users
    const load1 = os.loadavg()[0] ?? Number.NaN
    for (let round = 0; round < settings.rounds; round++) {
      const from = nextRequest
      // Users spread over all n known ones (a stride coprime with most n), a new prompt per request.
      existing.push(
        await timeBatch(() => harness.run(from, settings.batch, (i) => user((i * 7_919) % n)), settings.batch)
      )
      nextRequest += settings.batch
      if (n >= settings.newKeysFrom) {
        const first = users
        const start = nextRequest
        fresh.push(
          await timeBatch(
            () => harness.run(start, settings.newBatch, (i) => user(first + i - start)),
            settings.newBatch
          )
        )
        users += settings.newBatch
        nextRequest += settings.newBatch
      }
    }
    const checkpoint: Checkpoint = {
      users: target,
      rateLimitKeys,
      cacheEntries,
      heapUsed: memory.heapUsed - base.heapUsed,
      rss: memory.rss,
      existing: timingOf(existing),
      newKeys: fresh.length > 0 ? timingOf(fresh) : undefined,
      fillSeconds,
      load1
    }
    checkpoints.push(checkpoint)
    log(
      `   ${count(target).padStart(9)} users: ${formatNumber(checkpoint.existing.median)} µs/request (existing keys)${checkpoint.newKeys ? `, ${formatNumber(checkpoint.newKeys.median)} µs (new keys)` : ""}; heap +${formatNumber(checkpoint.heapUsed / 1024 / 1024)} MB; ${rateLimitKeys} rate-limit keys, ${cacheEntries} cache entries`
    )
  }
  return { base, checkpoints, requests: nextRequest }
}

/** A full cache of one capacity: time per request through the pipeline, and the eviction alone. */
export interface CapacityPoint {
  readonly capacity: number
  readonly pipeline: Timing
  readonly eviction: EvictionCost
}

const measureCapacities = async (settings: Settings, log: (line: string) => void) => {
  const points: Array<CapacityPoint> = []
  for (const capacity of settings.capacities) {
    const harness = await build(capacity, settings.maxKeys)
    const batches: Array<number> = []
    try {
      // Twice the capacity: the second half evicts, so the cache's table has gone through its hole cycle.
      for (let from = 0; from < 2 * capacity; from += 10_000) {
        await harness.fill(from, Math.min(10_000, 2 * capacity - from))
      }
      let next = 0
      await harness.run(next, 2_000, (i) => user(i % capacity))
      next += 2_000
      // Timed batches over at least 40% of the capacity, so the median spans the eviction cost's cycle.
      const batch = Math.max(settings.batch, Math.ceil((0.4 * capacity) / settings.rounds))
      for (let round = 0; round < settings.rounds; round++) {
        const from = next
        batches.push(await timeBatch(() => harness.run(from, batch, (i) => user((i * 7_919) % capacity)), batch))
        next += batch
      }
    } finally {
      await harness.close()
    }
    const point = {
      capacity,
      pipeline: timingOf(batches),
      eviction: measureEviction(capacity, Math.max(50_000, 2 * capacity))
    }
    points.push(point)
    log(
      `   cache capacity ${count(capacity)}: ${formatNumber(point.pipeline.median)} µs/request; eviction ${formatNumber(point.eviction.linkedListUs)} µs (linked list) vs ${formatNumber(point.eviction.mapIteratorUs)} µs (Map iterator)`
    )
  }
  return points
}

// =============================================================================
// Report
// =============================================================================

const mb = (bytes: number) => formatNumber(bytes / 1024 / 1024)

const buildSection = (
  result: Awaited<ReturnType<typeof measure>>,
  capacities: ReadonlyArray<CapacityPoint>,
  settings: Settings,
  options: RunOptions,
  seconds: number,
  upstreamCalls: number
): Section => {
  const { checkpoints } = result
  const first = checkpoints[0]!
  const last = checkpoints[checkpoints.length - 1]!
  // The first checkpoint where the rate limit holds `maxKeys` keys: up to it the heap grows with the
  // keys (the cache is full from the start), past it the keys stay at the bound.
  const capped = checkpoints.find((c) => c.rateLimitKeys >= settings.maxKeys) ?? last
  const perKey = (capped.heapUsed - first.heapUsed) / Math.max(1, capped.rateLimitKeys - first.rateLimitKeys)
  const heapAfterCap = last.heapUsed - capped.heapUsed
  const perUserAfterCap = heapAfterCap / Math.max(1, last.users - capped.users)
  // Bounded: never more keys than configured, and past the bound the heap grows by less than a tenth of
  // what a key cost up to it, per user (unbounded, it would grow by about a key's cost per user).
  const bounded =
    checkpoints.every((c) => c.rateLimitKeys <= settings.maxKeys) && capped !== last && perUserAfterCap < 0.1 * perKey
  const flat = last.existing.median / first.existing.median
  const table: Table = {
    title: `Time per request and memory as keys grow (rate limit maxKeys ${count(settings.maxKeys)}, cache capacity ${count(settings.capacity)}; medians over batches; heap after a full GC, above the empty pipeline's)`,
    columns: [
      "distinct users (rate-limit keys)",
      "rate-limit keys held",
      "cache entries",
      "heap used MB",
      "µs/request, existing keys",
      "p25–p75",
      "÷ at 1 user",
      "µs/request, new keys",
      "load average"
    ],
    rows: checkpoints.map((c) => [
      count(c.users),
      count(c.rateLimitKeys),
      count(c.cacheEntries),
      mb(c.heapUsed),
      formatNumber(c.existing.median),
      `${formatNumber(c.existing.p25)}–${formatNumber(c.existing.p75)}`,
      formatRatio(c.existing.median / first.existing.median),
      c.newKeys === undefined ? "" : formatNumber(c.newKeys.median),
      formatNumber(c.load1, 2)
    ])
  }
  const targets: Table = {
    title: "Targets",
    columns: ["target", "measured", "result"],
    rows: [
      [
        `cost per request flat from 1 to ${count(last.users)} keys (within 1.5x)`,
        `${formatNumber(first.existing.median)} µs at 1 user, ${formatNumber(last.existing.median)} µs at ${count(last.users)} (${formatRatio(flat)})`,
        flat <= 1.5 ? "met" : "missed"
      ],
      [
        `cache memory bounded by its capacity (${count(settings.capacity)} entries)`,
        `${count(last.cacheEntries)} entries held at ${count(last.users)} users`,
        last.cacheEntries <= settings.capacity ? "met" : "missed"
      ],
      [
        `rate-limit memory bounded by configuration (\`maxKeys\` ${count(settings.maxKeys)})`,
        `${count(last.rateLimitKeys)} keys held at ${count(last.users)} users (${count(capped.rateLimitKeys)} at ${count(capped.users)}); heap ${mb(capped.heapUsed)} MB at ${count(capped.users)} users, ${mb(last.heapUsed)} MB at ${count(last.users)} (${heapAfterCap >= 0 ? "+" : ""}${mb(heapAfterCap)} MB past the bound); ${formatNumber(perKey)} bytes per key up to the bound, ${formatNumber(perUserAfterCap)} per further user past it`,
        bounded ? "met" : "missed"
      ]
    ]
  }
  const capacityTable: Table = {
    title: "A full response cache: time per request by capacity, and the eviction alone",
    columns: [
      "cache capacity",
      "µs/request through the pipeline (cache full)",
      "p25–p75",
      "eviction µs, Map + linked list (ResponseCache today)",
      "eviction µs, Map keys().next() (ResponseCache before)"
    ],
    rows: capacities.map((point) => [
      count(point.capacity),
      formatNumber(point.pipeline.median),
      `${formatNumber(point.pipeline.p25)}–${formatNumber(point.pipeline.p75)}`,
      formatNumber(point.eviction.linkedListUs),
      formatNumber(point.eviction.mapIteratorUs)
    ])
  }
  const timeBars: ReadonlyArray<Bar> = checkpoints.map((c) => ({
    label: `${count(c.users)} users`,
    value: c.existing.median,
    low: c.existing.p25,
    high: c.existing.p75,
    highlight: true
  }))
  const memoryBars: ReadonlyArray<Bar> = checkpoints.map((c) => ({
    label: `${count(c.users)} users`,
    value: c.heapUsed / 1024 / 1024
  }))
  const charts = [
    {
      title: "Time per request as keys grow",
      file: writeAsset(
        "growth-time.svg",
        barChart("µs per request (existing keys) as users grow", "µs", timeBars),
        options.outDir
      )
    },
    {
      title: "Heap as keys grow",
      file: writeAsset(
        "growth-memory.svg",
        barChart("Heap used above the empty pipeline, after a full GC", "MB", memoryBars),
        options.outDir
      )
    }
  ]
  const summary = [
    `In process: \`Pipeline.make\` with \`RateLimit.layerMemory\` keyed by user (one rule on requests and tokens, windows of ${window} so nothing expires during the run, \`maxKeys: ${count(settings.maxKeys)}\`), \`ResponseCache.layer({ capacity: ${count(settings.capacity)} })\`, \`Breaker.layerMemory()\`, the alerting monitor, no logger, around an upstream that answers at once. The cache is filled to its capacity first, so that at every checkpoint each request stores an entry and evicts one alike; users are added through \`RateLimit.admit\` and \`ResponseCache.store\` (what a request does to the stores, without the rest of the pipeline) up to each checkpoint; then ${settings.rounds} batches of ${settings.batch} requests are timed through the pipeline with users spread over the known ones and a new prompt per request (a cache miss that stores), and from ${count(settings.newKeysFrom)} users on, batches of ${settings.newBatch} users never seen. ${count(result.requests)} requests went through the pipeline (${count(upstreamCalls)} upstream calls).`,
    `What the rate limit keeps: one key per group of a rule (here one per user: \`roadcar:user:<user>\`, holding its request and token windows), at most \`maxKeys\` of them in least-recently-used order; a new key beyond that drops the least recently used one, whose windows restart if it comes back. The keys held grew with the users up to ${count(capped.rateLimitKeys)} at ${count(capped.users)} users (about ${formatNumber(perKey)} bytes of heap per key) and stayed there: ${count(last.rateLimitKeys)} at ${count(last.users)} users, heap ${mb(capped.heapUsed)} MB then ${mb(last.heapUsed)} MB. Past the bound, most "existing" users have been dropped (the ${count(settings.maxKeys)} most recent are held), so their requests create a key and drop one, like new users. The response cache is capped too (least recently used out, on a linked list) and stays at its capacity; its eviction alone took ${capacities.map((p) => `${formatNumber(p.eviction.linkedListUs)} µs at ${count(p.capacity)}`).join(", ")} entries (the \`Map\`-iterator eviction it replaced: ${capacities.map((p) => `${formatNumber(p.eviction.mapIteratorUs)} µs`).join(", ")}).`,
    `Load average (1 min) during the part: ${formatNumber(Math.min(...checkpoints.map((c) => c.load1)), 2)}–${formatNumber(Math.max(...checkpoints.map((c) => c.load1)), 2)} on ${os.cpus().length} cores (per checkpoint in the table).`
  ]
  return {
    part: "growth",
    title: "Growth: rate-limit keys and cache entries",
    date: new Date().toISOString(),
    machine: machine(),
    seconds,
    summary,
    tables: [targets, table, capacityTable],
    charts,
    notes: [
      "Heap figures are `process.memoryUsage().heapUsed` after two forced full collections, minus the same figure for the built pipeline before any request (the benchmark process's RSS, which also carries the parts run before, is in the JSON).",
      "Rate-limit keys are read with `RateLimit.keysHeld` (the in-process rate limit's key count). The rate-limit target is met when the keys never exceed `maxKeys` and, past the bound, the heap grows by less than a tenth of a key's cost per further user. Past the bound the heap still moves by a few MB: the keys' `Map` keeps a dropped key's slot as a hole until it rehashes.",
      "The capacity table fills the cache to twice its capacity first (so it has been evicting for a while), then times at least 40% of a capacity's worth of requests. The eviction columns time the eviction alone on the same string keys: a `Map` for lookups with a linked list for the order (what `ResponseCache` does), and a `Map` in recency order evicting with `keys().next()` (what it did before; V8's `Map` leaves a hole per deleted entry until it rehashes and the iterator walks the holes at the front, so that eviction's cost climbs with the capacity).",
      '"existing keys" requests each update a known user\'s two rate-limit windows (creating its key again if it was dropped, past `maxKeys`) and add a cache entry (evicting the oldest at capacity); "new keys" requests also create the user\'s key, and past `maxKeys` drop the least recently used one.',
      "Re-run: `pnpm bench growth`."
    ],
    data: {
      settings,
      checkpoints,
      capacities,
      baseHeapUsed: result.base.heapUsed,
      perKeyBytes: perKey,
      heapAfterCapBytes: heapAfterCap
    }
  }
}

const runPart = async (options: RunOptions): Promise<Section> => {
  const settings = options.quick ? quick : full
  const started = performance.now()
  const harness = await build(settings.capacity, settings.maxKeys)
  let result: Awaited<ReturnType<typeof measure>>
  let upstreamCalls: number
  try {
    result = await measure(harness, settings, options.log)
    upstreamCalls = harness.upstreamCalls()
  } finally {
    await harness.close()
  }
  const capacities = await measureCapacities(settings, options.log)
  return buildSection(result, capacities, settings, options, (performance.now() - started) / 1000, upstreamCalls)
}

/** The growth part. */
export const part: Part = {
  name: "growth",
  description: "time per request and memory as rate-limit keys and cache entries grow to 1,000,000",
  run: runPart
}
