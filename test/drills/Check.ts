/**
 * What a drill reports: named pass/fail checks, the figures behind them, and notes for the reader.
 *
 * Every drill returns a `DrillResult`; the runner prints the checks, writes the figures to
 * `bench/results/drills.{md,json}` and exits non-zero when any check failed.
 */

/** One pass/fail statement with the numbers that decided it. */
export interface Check {
  readonly name: string
  readonly ok: boolean
  readonly detail: string
}

/** A drill's outcome. */
export interface DrillResult<Figures = Record<string, unknown>> {
  /** Short id: `soak`, `memory`, `streams`, `process`, `badInput`, `security`. */
  readonly id: string
  readonly title: string
  readonly durationSeconds: number
  readonly figures: Figures
  readonly checks: ReadonlyArray<Check>
  /** Findings and explanations worth reading even when every check passed. */
  readonly notes: ReadonlyArray<string>
}

/** A check from a condition and the detail that explains it. */
export const check = (name: string, ok: boolean, detail: string): Check => ({ name, ok, detail })

/** Whether every check of every result passed. */
export const allPassed = (results: ReadonlyArray<DrillResult<unknown>>): boolean =>
  results.every((result) => result.checks.every((item) => item.ok))

/** Seconds since `startedMs` (`performance.now()`), rounded to 0.1 s. */
export const secondsSince = (startedMs: number): number => Math.round((performance.now() - startedMs) / 100) / 10
