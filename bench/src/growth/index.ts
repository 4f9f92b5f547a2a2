/**
 * The growth part: time per request and memory as the number of distinct rate-limit keys (users) and
 * cache entries grows from 1 to 1,000,000, in process, through `Pipeline.make`.
 *
 * At each checkpoint the stores hold N users (each with its rate-limit entries and one cache entry,
 * added through `RateLimit.admit` and `ResponseCache.store` like a request would, see `harness.ts`);
 * then the heap is measured after a full GC, and requests are timed through the pipeline in batches:
 * users spread over the N known ones ("existing keys") and, from 10,000 up, users never seen ("new
 * keys"), every request with a new prompt (a cache miss that stores an entry). A separate measurement
 * (`sweep.ts`) times the rate limiter store's periodic sweep.
 */
import os from "node:os"
import v8 from "node:v8"
import vm from "node:vm"
import { type Bar, barChart } from "../chart.ts"
import type { Part, RunOptions } from "../part.ts"
import { machine, type Section, type Table, writeAsset } from "../report.ts"
import { collectGarbage, formatNumber, formatRatio, median, quantile } from "../stats.ts"
import { type EvictionCost, measureEviction } from "./eviction.ts"
import { build, type Harness, user, window } from "./harness.ts"
import { measureSweep, type SweepResult } from "./sweep.ts"

/** A count as text: `1,000,000`. */
const count = (value: number) => Math.round(value).toLocaleString("en-US")

interface Settings {
  readonly checkpoints: ReadonlyArray<number>
  readonly capacity: number
  readonly rounds: number
  readonly batch: number
  /** New-key batches are timed from this many users up (below, they would change N noticeably). */
  readonly newKeysFrom: number
  readonly newBatch: number
  readonly sweepEntries: number
  /** Cache capacities timed with a full cache. */
  readonly capacities: ReadonlyArray<number>
}

const full: Settings = {
  checkpoints: [1, 1_000, 10_000, 100_000, 1_000_000],
  capacity: 10_000,
  rounds: 15,
  batch: 400,
  newKeysFrom: 10_000,
  newBatch: 200,
  sweepEntries: 2_000_000,
  capacities: [1_000, 10_000, 100_000]
}

const quick: Settings = {
  checkpoints: [1, 1_000, 10_000],
  capacity: 1_000,
  rounds: 3,
  batch: 100,
  newKeysFrom: 10_000,
  newBatch: 100,
  sweepEntries: 20_000,
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
  readonly rateLimitEntries: number | undefined
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
    const rateLimitEntries = harness.rateLimitEntries()
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
      rateLimitEntries,
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
      `   ${count(target).padStart(9)} users: ${formatNumber(checkpoint.existing.median)} µs/request (existing keys)${checkpoint.newKeys ? `, ${formatNumber(checkpoint.newKeys.median)} µs (new keys)` : ""}; heap +${formatNumber(checkpoint.heapUsed / 1024 / 1024)} MB; ${rateLimitEntries ?? "?"} rate-limit entries, ${cacheEntries} cache entries`
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
    const harness = await build(capacity)
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
      `   cache capacity ${count(capacity)}: ${formatNumber(point.pipeline.median)} µs/request; eviction ${formatNumber(point.eviction.mapIteratorUs)} µs (Map iterator) vs ${formatNumber(point.eviction.linkedListUs)} µs (linked list)`
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
  sweep: SweepResult | undefined,
  settings: Settings,
  options: RunOptions,
  seconds: number,
  upstreamCalls: number
): Section => {
  const { checkpoints } = result
  const first = checkpoints[0]!
  const last = checkpoints[checkpoints.length - 1]!
  // Bytes per user between the last two checkpoints (the cache is full by then, so this is the rate limiter).
  const previous = checkpoints[checkpoints.length - 2]
  const perUser =
    previous === undefined ? Number.NaN : (last.heapUsed - previous.heapUsed) / Math.max(1, last.users - previous.users)
  const perEntry =
    previous === undefined || last.rateLimitEntries === undefined || previous.rateLimitEntries === undefined
      ? Number.NaN
      : (last.heapUsed - previous.heapUsed) / Math.max(1, last.rateLimitEntries - previous.rateLimitEntries)
  const flat = last.existing.median / first.existing.median
  const table: Table = {
    title:
      "Time per request and memory as keys grow (medians over batches; heap after a full GC, above the empty pipeline's)",
    columns: [
      "distinct users (rate-limit keys)",
      "rate-limiter entries",
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
      c.rateLimitEntries === undefined ? "n/a" : count(c.rateLimitEntries),
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
        "rate-limit memory bounded by configuration",
        `${last.rateLimitEntries === undefined ? "?" : count(last.rateLimitEntries)} entries at ${count(last.users)} users (${formatNumber(perUser)} bytes per user, ${formatNumber(perEntry)} per entry); no capacity: entries live for their window, then until the next sweep`,
        "missed"
      ]
    ]
  }
  const sweepTable: Table | undefined =
    sweep === undefined
      ? undefined
      : {
          title: "The rate limiter store's sweep (every minute; virtual clock)",
          columns: [
            "entries",
            "sweep, all live (walk only) ms",
            "sweep, all expired (deletes all) ms",
            "entries after"
          ],
          rows: [
            [
              count(sweep.sizes.filled),
              formatNumber(sweep.liveSweepMs),
              formatNumber(sweep.expiredSweepMs),
              `${count(sweep.sizes.afterLiveSweep)}, then ${count(sweep.sizes.afterExpiredSweep)}`
            ]
          ]
        }
  const capacityTable: Table = {
    title: "A full response cache: time per request by capacity, and the eviction alone",
    columns: [
      "cache capacity",
      "µs/request through the pipeline (cache full)",
      "p25–p75",
      "eviction µs, Map keys().next() (ResponseCache today)",
      "eviction µs, Map + linked list"
    ],
    rows: capacities.map((point) => [
      count(point.capacity),
      formatNumber(point.pipeline.median),
      `${formatNumber(point.pipeline.p25)}–${formatNumber(point.pipeline.p75)}`,
      formatNumber(point.eviction.mapIteratorUs),
      formatNumber(point.eviction.linkedListUs)
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
    `In process: \`Pipeline.make\` with \`RateLimit\` keyed by user (one rule on requests and tokens, windows of ${window} so nothing expires during the run) on the in-process \`RateLimiter\` store, \`ResponseCache.layer({ capacity: ${count(settings.capacity)} })\`, \`Breaker.layerMemory()\`, the alerting monitor, no logger, around an upstream that answers at once. The cache is filled to its capacity first, so that at every checkpoint each request stores an entry and evicts one alike; users are added through \`RateLimit.admit\` and \`ResponseCache.store\` (what a request does to the stores, without the rest of the pipeline) up to each checkpoint; then ${settings.rounds} batches of ${settings.batch} requests are timed through the pipeline with users spread over the known ones and a new prompt per request (a cache miss that stores), and from ${count(settings.newKeysFrom)} users on, batches of ${settings.newBatch} users never seen. ${count(result.requests)} requests went through the pipeline (${count(upstreamCalls)} upstream calls).`,
    `What the rate limiter keeps: per rule and per subject, one entry per limit (here 2 per user: \`roadcar:user:<user>:requests\` and \`:tokens\`) in a \`Map\` keyed by that string, holding \`{ count, expiresAt }\` for the fixed window; an entry expires at the end of its window and a background sweep deletes expired entries once a minute, so the store holds every subject seen in the last window plus up to a minute. Nothing caps it: ${formatNumber(perUser)} bytes of heap per user here, so a million users active within one window cost about ${mb(perUser * 1_000_000)} MB. The response cache is capped (least recently used out) and stays at its capacity; but each eviction costs in proportion to the capacity (the capacity table: \`entries.keys().next()\` on a \`Map\` walks the holes earlier deletions left), which a linked-list order would make constant.`,
    `Load average (1 min) during the part: ${formatNumber(Math.min(...checkpoints.map((c) => c.load1)), 2)}–${formatNumber(Math.max(...checkpoints.map((c) => c.load1)), 2)} on ${os.cpus().length} cores (per checkpoint in the table).`
  ]
  return {
    part: "growth",
    title: "Growth: rate-limit keys and cache entries",
    date: new Date().toISOString(),
    machine: machine(),
    seconds,
    summary,
    tables: sweepTable === undefined ? [targets, table, capacityTable] : [targets, table, capacityTable, sweepTable],
    charts,
    notes: [
      "Heap figures are `process.memoryUsage().heapUsed` after two forced full collections, minus the same figure for the built pipeline before any request (the benchmark process's RSS, which also carries the parts run before, is in the JSON).",
      "The capacity table fills the cache to twice its capacity first (so it has been evicting for a while), then times at least 40% of a capacity's worth of requests: V8's `Map` leaves a hole per deleted entry until it rehashes, and `keys().next()` walks the holes at the front, so the cost of an eviction climbs from nothing to about the capacity's worth of holes and back at each rehash; the median spans that cycle.",
      '"existing keys" requests each update a user\'s two rate-limit counters and add a cache entry (evicting the oldest at capacity); "new keys" requests also create the user\'s entries.',
      "The sweep is timed on `TestClock` (`effect/testing`) with a fresh store of that many entries (2-minute windows): one sweep with every entry live, one with every entry expired. It runs in one synchronous step, so its duration is a pause of the event loop.",
      "Re-run: `pnpm bench growth`."
    ],
    data: {
      settings,
      checkpoints,
      capacities,
      sweep,
      baseHeapUsed: result.base.heapUsed,
      perUserBytes: perUser,
      perEntryBytes: perEntry
    }
  }
}

const runPart = async (options: RunOptions): Promise<Section> => {
  const settings = options.quick ? quick : full
  const started = performance.now()
  const harness = await build(settings.capacity)
  let result: Awaited<ReturnType<typeof measure>>
  let upstreamCalls: number
  try {
    result = await measure(harness, settings, options.log)
    upstreamCalls = harness.upstreamCalls()
  } finally {
    await harness.close()
  }
  const capacities = await measureCapacities(settings, options.log)
  options.log(`   sweep of ${count(settings.sweepEntries)} rate-limit entries`)
  const sweep = await measureSweep(settings.sweepEntries)
  return buildSection(result, capacities, sweep, settings, options, (performance.now() - started) / 1000, upstreamCalls)
}

/** The growth part. */
export const part: Part = {
  name: "growth",
  description: "time per request and memory as rate-limit keys and cache entries grow to 1,000,000",
  run: runPart
}
