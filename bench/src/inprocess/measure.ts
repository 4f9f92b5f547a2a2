/**
 * The in-process measurement: each candidate is timed in batches of sequential calls, interleaved
 * with batches of its raw call, over several rounds, in one process.
 *
 * A round runs, for every candidate in turn (the order rotates from round to round), one batch of
 * its baseline and one batch of the candidate, alternating which goes first, with a young-generation
 * garbage collection before each batch (see `collectGarbage`). A candidate's overhead in a round is
 * its time per call minus its baseline's time per call in that same round, so drift (CPU frequency,
 * a noisy neighbour) hits both; the figures reported are the medians over rounds. Wall time and
 * process CPU time are both recorded. Calls are awaited one after the other: this is the cost added
 * to one request, not a throughput test.
 */
import { collectGarbage, median, quantile } from "../stats.ts"
import { requestRing } from "./fixtures.ts"

/** The path a candidate is measured on. */
export type Path = "success" | "fail-twice"

/** One thing to time: a call, the baseline it is compared with, and a check that it does its job. */
export interface Candidate {
  readonly id: string
  readonly label: string
  readonly path: Path
  /** The raw call it is compared with (undefined for the baselines themselves). */
  readonly baseline: Candidate | undefined
  /** One call on request `i` of the fixture ring; resolves with the answer. */
  readonly call: (i: number) => Promise<unknown>
  /** Checks that a few calls behave as described (the answer, the attempts made); resolves with a problem. */
  readonly verify: () => Promise<string | undefined>
  /** Releases what the candidate holds (runtimes, timers). */
  readonly close?: (() => Promise<void>) | undefined
}

/** How long and how often to measure. */
export interface Settings {
  readonly rounds: number
  /** Target duration of one candidate batch. */
  readonly batchMs: number
  /** Warm-up per candidate and baseline, before sizing its batch. */
  readonly warmupMs: number
  readonly minBatch: number
  readonly maxBatch: number
}

/** The default settings: about a minute for a dozen candidates on 2 cores. */
export const defaults: Settings = { rounds: 41, batchMs: 70, warmupMs: 800, minBatch: 20, maxBatch: 50_000 }

/** Settings for `--quick`: checks the harness in seconds, figures not meant to be read. */
export const quick: Settings = { rounds: 3, batchMs: 10, warmupMs: 50, minBatch: 5, maxBatch: 2_000 }

/** What was measured for one candidate. */
export interface Measured {
  readonly id: string
  readonly label: string
  readonly path: Path
  readonly baseline: string | undefined
  /** Calls per batch. */
  readonly batch: number
  /** Microseconds per call, one value per round. */
  readonly candidateUs: ReadonlyArray<number>
  readonly baselineUs: ReadonlyArray<number>
  /** Candidate minus baseline, per round. */
  readonly overheadUs: ReadonlyArray<number>
  /** The same in process CPU time (robust to other processes on the machine). */
  readonly candidateCpuUs: ReadonlyArray<number>
  readonly baselineCpuUs: ReadonlyArray<number>
  readonly overheadCpuUs: ReadonlyArray<number>
  readonly medianOverheadCpuUs: number
  readonly medianUs: number
  readonly medianBaselineUs: number
  readonly medianOverheadUs: number
  readonly p25OverheadUs: number
  readonly p75OverheadUs: number
}

// Every call takes the next request of the ring, across candidates and rounds: a cache holding
// fewer than `requestRing` entries never sees a request again before evicting it.
let cursor = 0
const mask = requestRing - 1

// Wall time and process CPU time (all threads: the garbage collector's helpers count) per call, in µs.
interface Timing {
  readonly wall: number
  readonly cpu: number
}

const runBatch = async (call: (i: number) => Promise<unknown>, calls: number): Promise<Timing> => {
  collectGarbage()
  const cpuStart = process.cpuUsage()
  const start = performance.now()
  for (let k = 0; k < calls; k++) {
    await call(cursor++ & mask)
  }
  const wall = ((performance.now() - start) * 1000) / calls
  const cpu = process.cpuUsage(cpuStart)
  return { wall, cpu: (cpu.user + cpu.system) / calls }
}

const warmUp = async (call: (i: number) => Promise<unknown>, ms: number): Promise<number> => {
  const start = performance.now()
  let calls = 0
  while (performance.now() - start < ms || calls < 10) {
    await call(cursor++ & mask)
    calls++
  }
  return ((performance.now() - start) * 1000) / calls
}

/**
 * Measures every candidate against its baseline, interleaved, and returns the medians.
 */
export const measure = async (
  candidates: ReadonlyArray<Candidate>,
  settings: Settings,
  log: (line: string) => void
): Promise<ReadonlyArray<Measured>> => {
  const batches = new Map<string, number>()
  for (const candidate of candidates) {
    if (candidate.baseline === undefined) throw new Error(`${candidate.id} has no baseline`)
    await warmUp(candidate.baseline.call, settings.warmupMs / 4)
    const perCall = await warmUp(candidate.call, settings.warmupMs)
    const calls = Math.round((settings.batchMs * 1000) / perCall)
    batches.set(candidate.id, Math.min(settings.maxBatch, Math.max(settings.minBatch, calls)))
    log(`  warm-up ${candidate.id}: ~${perCall.toFixed(1)} µs/call, batch ${batches.get(candidate.id)}`)
  }
  const samples = new Map(
    candidates.map((c) => [c.id, { candidate: [] as Array<Timing>, baseline: [] as Array<Timing> }])
  )
  for (let round = 0; round < settings.rounds; round++) {
    const started = performance.now()
    for (let k = 0; k < candidates.length; k++) {
      const candidate = candidates[(k + round) % candidates.length]!
      const calls = batches.get(candidate.id)!
      const sample = samples.get(candidate.id)!
      if ((round + k) % 2 === 0) {
        sample.baseline.push(await runBatch(candidate.baseline!.call, calls))
        sample.candidate.push(await runBatch(candidate.call, calls))
      } else {
        sample.candidate.push(await runBatch(candidate.call, calls))
        sample.baseline.push(await runBatch(candidate.baseline!.call, calls))
      }
    }
    log(`  round ${round + 1}/${settings.rounds} (${Math.round(performance.now() - started)} ms)`)
  }
  return candidates.map((candidate) => {
    const sample = samples.get(candidate.id)!
    const candidateUs = sample.candidate.map((t) => t.wall)
    const baselineUs = sample.baseline.map((t) => t.wall)
    const overheadUs = candidateUs.map((us, round) => us - baselineUs[round]!)
    const candidateCpuUs = sample.candidate.map((t) => t.cpu)
    const baselineCpuUs = sample.baseline.map((t) => t.cpu)
    const overheadCpuUs = candidateCpuUs.map((us, round) => us - baselineCpuUs[round]!)
    return {
      id: candidate.id,
      label: candidate.label,
      path: candidate.path,
      baseline: candidate.baseline?.id,
      batch: batches.get(candidate.id)!,
      candidateUs,
      baselineUs,
      overheadUs,
      candidateCpuUs,
      baselineCpuUs,
      overheadCpuUs,
      medianOverheadCpuUs: median(overheadCpuUs),
      medianUs: median(candidateUs),
      medianBaselineUs: median(baselineUs),
      medianOverheadUs: median(overheadUs),
      p25OverheadUs: quantile(overheadUs, 0.25),
      p75OverheadUs: quantile(overheadUs, 0.75)
    }
  })
}
