/**
 * Small statistics for drill figures: percentiles of latencies, counts by key.
 */

/** p50, p90, p99, max and mean of a sample, rounded to 0.1. */
export interface Summary {
  readonly count: number
  readonly p50: number
  readonly p90: number
  readonly p99: number
  readonly max: number
  readonly mean: number
}

const round = (value: number): number => Math.round(value * 10) / 10

/** The nearest-rank percentile `p` (0..100) of an ascending sample; 0 for an empty one. */
export const percentile = (sorted: ArrayLike<number>, p: number): number => {
  if (sorted.length === 0) return 0
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[rank] ?? 0
}

/** Summarises a sample (it is copied, not modified). */
export const summarize = (values: ArrayLike<number>): Summary => {
  const sorted = Float64Array.from(values).sort()
  let total = 0
  for (const value of sorted) total += value
  return {
    count: sorted.length,
    p50: round(percentile(sorted, 50)),
    p90: round(percentile(sorted, 90)),
    p99: round(percentile(sorted, 99)),
    max: round(sorted.length === 0 ? 0 : (sorted[sorted.length - 1] ?? 0)),
    mean: round(sorted.length === 0 ? 0 : total / sorted.length)
  }
}

/** A counter by key, kept sorted by key when read. */
export class Tally {
  readonly #counts = new Map<string, number>()
  add(key: string, by = 1): void {
    this.#counts.set(key, (this.#counts.get(key) ?? 0) + by)
  }
  get(key: string): number {
    return this.#counts.get(key) ?? 0
  }
  total(): number {
    let sum = 0
    for (const value of this.#counts.values()) sum += value
    return sum
  }
  toJSON(): Record<string, number> {
    return Object.fromEntries(
      [...this.#counts.entries()].sort(([a], [b]) => a.localeCompare(b, "en", { numeric: true }))
    )
  }
}
