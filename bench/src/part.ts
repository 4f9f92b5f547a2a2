/**
 * What a benchmark part is: a name for the command line and a `run` that returns its report section.
 *
 * `main.ts` holds the list of parts; each part lives in its own folder (`inprocess/`, later `gateway/`,
 * `growth/`) and knows nothing of the others.
 */
import type { Section } from "./report.ts"

/** Options every part receives from the command line. */
export interface RunOptions {
  /** `--quick`: a short smoke run (few rounds, small batches) that checks the harness, not the figures. */
  readonly quick: boolean
  /** Progress lines go here (stderr), never into the report. */
  readonly log: (line: string) => void
  /** Where the report and its assets (charts) go: `bench/results/`, or `bench/results/quick/`. */
  readonly outDir: string
}

/** A benchmark part. */
export interface Part {
  readonly name: string
  readonly description: string
  readonly run: (options: RunOptions) => Promise<Section>
}
