/**
 * Small statistics and formatting helpers shared by the parts: quantiles, medians, number formats,
 * and a young-generation garbage collection between measured batches.
 */
import v8 from "node:v8"
import vm from "node:vm"

/** The `q` quantile (0..1) of `values`, linear between the two nearest ranks. */
export const quantile = (values: ReadonlyArray<number>, q: number): number => {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  const position = (sorted.length - 1) * q
  const below = Math.floor(position)
  const above = Math.ceil(position)
  const low = sorted[below]!
  const high = sorted[above]!
  return low + (high - low) * (position - below)
}

/** The median of `values`. */
export const median = (values: ReadonlyArray<number>): number => quantile(values, 0.5)

/** `value` with `digits` significant digits at most, as text (`12.3`, `0.41`, `1,234`). */
export const formatNumber = (value: number, digits = 3): string => {
  if (!Number.isFinite(value)) return "n/a"
  const magnitude = Math.abs(value)
  if (magnitude >= 10 ** digits) return Math.round(value).toLocaleString("en-US")
  const decimals = magnitude === 0 ? 0 : Math.max(0, digits - 1 - Math.floor(Math.log10(magnitude)))
  return value.toFixed(Math.min(decimals, 3))
}

/** A ratio as text: `2.4x`. */
export const formatRatio = (value: number): string => (Number.isFinite(value) ? `${formatNumber(value, 2)}x` : "n/a")

v8.setFlagsFromString("--expose-gc")

// V8's `gc(options)`, reachable once the flag is set.
const gc: (options?: { readonly type: "minor" | "major" }) => void = vm.runInNewContext("gc")

/**
 * A young-generation garbage collection (a scavenge): run before each measured batch, so a batch does
 * not inherit the previous batch's short-lived garbage. Not a full GC: a forced full GC shrinks the
 * young generation and makes the next batch of an allocating candidate up to 1.5x slower.
 */
export const collectGarbage = (): void => gc({ type: "minor" })
