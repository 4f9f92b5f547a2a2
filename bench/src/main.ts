/**
 * `pnpm bench [part ...] [--quick]`: runs the selected benchmark parts (all of them when none is
 * named) one after the other and merges each part's section into `bench/results/latest.json` and
 * `latest.md`, keeping the sections of the parts not run (`--quick` writes to `bench/results/quick/`).
 */

import { join } from "node:path"
import { part as gateway } from "./gateway/index.ts"
import { part as growth } from "./growth/index.ts"
import { part as inprocess } from "./inprocess/index.ts"
import { part as memory } from "./memory/index.ts"
import type { Part } from "./part.ts"
import { resultsDir, save } from "./report.ts"

/** Every part, in report order. */
const parts: ReadonlyArray<Part> = [inprocess, gateway, memory, growth]

const log = (line: string) => process.stderr.write(`${line}\n`)

const usage = () =>
  [
    "usage: pnpm bench [part ...] [--quick]",
    "parts:",
    ...parts.map((p) => `  ${p.name.padEnd(12)} ${p.description}`),
    "  --quick      a short smoke run that checks the harness (figures not meant to be read)"
  ].join("\n")

const main = async (argv: ReadonlyArray<string>): Promise<number> => {
  if (argv.includes("--help") || argv.includes("-h")) {
    log(usage())
    return 0
  }
  const quick = argv.includes("--quick")
  const names = argv.filter((arg) => !arg.startsWith("-"))
  const unknown = names.filter((name) => !parts.some((p) => p.name === name))
  if (unknown.length > 0) {
    log(`unknown part: ${unknown.join(", ")}\n${usage()}`)
    return 2
  }
  const selected = names.length === 0 ? parts : parts.filter((p) => names.includes(p.name))
  const order = parts.map((p) => p.name)
  for (const p of selected) {
    log(`== ${p.name}: ${p.description}`)
    // A quick run never replaces the real results.
    const outDir = quick ? join(resultsDir, "quick") : resultsDir
    const section = await p.run({ quick, log, outDir })
    const written = save(section, order, outDir)
    log(`== ${p.name} done in ${Math.round(section.seconds)} s; wrote ${written.join(", ")}`)
  }
  return 0
}

process.exitCode = await main(process.argv.slice(2))
