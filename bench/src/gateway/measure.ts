/**
 * Measured load runs: one autocannon run against a target with the CPU time of the processes
 * involved, and rounds of such runs over several targets in a rotating order.
 *
 * The CPU time per request of the target's process (and of the fake upstream's) comes from the probe
 * in each child (`process.cpuUsage()` before and after the run), divided by the 2xx responses. The
 * 1-minute load average is recorded with every run: the machine may be shared.
 */
import os from "node:os"
import type { Child } from "./children.ts"
import { type LoadOptions, type LoadResult, run } from "./load.ts"

/** A target to load: where, and which process serves it. */
export interface Runnable {
  readonly id: string
  readonly label: string
  readonly url: string
  readonly child: Child
}

/** One measured run. */
export interface RunRecord extends LoadResult {
  readonly target: string
  readonly repeat: number
  /** Position of the target in this repeat's order (0 = first). */
  readonly position: number
  /** CPU time (user + system) of the target's process per 2xx response, µs. */
  readonly targetCpuUsPerRequest: number
  /** CPU time of the fake upstream's process per 2xx response, µs. */
  readonly upstreamCpuUsPerRequest: number
  /** RSS of the target's process after the run, bytes. */
  readonly targetRss: number
  /** The 1-minute load average when the run started. */
  readonly load1: number
}

const cpuOf = (sample: { readonly cpu: { readonly user: number; readonly system: number } }) =>
  sample.cpu.user + sample.cpu.system

/** Runs the load once against `target`, with CPU accounting on the target and the upstream. */
export const measureRun = async (
  target: Runnable,
  upstream: Child,
  load: Omit<LoadOptions, "url">,
  at: { readonly repeat: number; readonly position: number }
): Promise<RunRecord> => {
  const load1 = os.loadavg()[0] ?? Number.NaN
  const [targetBefore, upstreamBefore] = await Promise.all([target.child.probe(), upstream.probe()])
  const result = await run({ ...load, url: target.url })
  const [targetAfter, upstreamAfter] = await Promise.all([target.child.probe(), upstream.probe()])
  const per = (after: number, before: number) => (after - before) / Math.max(1, result.responses)
  return {
    ...result,
    target: target.id,
    repeat: at.repeat,
    position: at.position,
    targetCpuUsPerRequest: per(cpuOf(targetAfter), cpuOf(targetBefore)),
    upstreamCpuUsPerRequest: target.child === upstream ? Number.NaN : per(cpuOf(upstreamAfter), cpuOf(upstreamBefore)),
    targetRss: targetAfter.memory.rss,
    load1
  }
}

/** `items` rotated left by `by`. */
export const rotate = <A>(items: ReadonlyArray<A>, by: number): ReadonlyArray<A> => {
  if (items.length === 0) return items
  const shift = ((by % items.length) + items.length) % items.length
  return [...items.slice(shift), ...items.slice(0, shift)]
}

/**
 * `repeats` rounds over `targets`, each round in an order rotated by one more place (`offset` shifts
 * the first round), so every target runs first, in the middle and last equally often.
 */
export const rounds = async (
  targets: ReadonlyArray<Runnable>,
  upstream: Child,
  load: Omit<LoadOptions, "url">,
  options: { readonly repeats: number; readonly offset?: number | undefined; readonly log?: (line: string) => void }
): Promise<ReadonlyArray<RunRecord>> => {
  const records: Array<RunRecord> = []
  for (let repeat = 0; repeat < options.repeats; repeat++) {
    const order = rotate(targets, repeat + (options.offset ?? 0))
    for (const [position, target] of order.entries()) {
      const record = await measureRun(target, upstream, load, { repeat, position })
      records.push(record)
      options.log?.(
        `   ${target.id.padEnd(22)} ${Math.round(record.rps).toString().padStart(6)} req/s  p50 ${record.latencyMs.p50.toFixed(1)} ms  p99 ${record.latencyMs.p99.toFixed(1)} ms  ${Math.round(record.targetCpuUsPerRequest)} µs CPU/req  load ${record.load1.toFixed(2)}`
      )
    }
  }
  return records
}
