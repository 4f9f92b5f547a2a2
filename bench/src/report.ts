/**
 * The benchmark report shared by every part: `bench/results/latest.json` and `latest.md`.
 *
 * Each part (in-process overhead, gateway throughput, growth, ...) returns a `Section`: its tables,
 * notes and raw data, stamped with the machine, Node version and date it was measured on. `save`
 * merges a section into the report already on disk, so running one part keeps the others' latest
 * sections, and renders the Markdown from the merged JSON. Nothing here measures anything.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs"
import os from "node:os"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"

// =============================================================================
// Models
// =============================================================================

/** Where a section was measured. */
export interface Machine {
  readonly cpu: string
  readonly cores: number
  readonly memoryGiB: number
  readonly os: string
  readonly node: string
}

/** A table: the header, then rows of preformatted cells (numbers as text, units in the header). */
export interface Table {
  readonly title: string
  readonly columns: ReadonlyArray<string>
  readonly rows: ReadonlyArray<ReadonlyArray<string>>
}

/** A chart image written next to the report (a file name in `bench/results/`). */
export interface Chart {
  readonly title: string
  readonly file: string
}

/** One part's results. */
export interface Section {
  /** The part's name as given on the command line (`inprocess`, `gateway`, ...). */
  readonly part: string
  readonly title: string
  /** ISO date-time the part finished. */
  readonly date: string
  readonly machine: Machine
  readonly seconds: number
  /** Markdown paragraphs shown before the tables (method, targets met or missed). */
  readonly summary: ReadonlyArray<string>
  readonly tables: ReadonlyArray<Table>
  readonly charts?: ReadonlyArray<Chart> | undefined
  /** Markdown bullets shown after the tables. */
  readonly notes: ReadonlyArray<string>
  /** The raw figures, for tools (not rendered). */
  readonly data: unknown
}

/** The whole report: the latest section of every part that has run. */
export interface Report {
  readonly updated: string
  readonly sections: ReadonlyArray<Section>
}

// =============================================================================
// Machine
// =============================================================================

/** The machine this process runs on. */
export const machine = (): Machine => {
  const cpus = os.cpus()
  return {
    cpu: cpus[0]?.model.trim() ?? "unknown",
    cores: cpus.length,
    memoryGiB: Math.round((os.totalmem() / 1024 ** 3) * 10) / 10,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version
  }
}

// =============================================================================
// Files
// =============================================================================

/** `bench/results/`, wherever the command is run from. */
export const resultsDir = join(dirname(fileURLToPath(import.meta.url)), "..", "results")

const isSection = (value: unknown): value is Section =>
  typeof value === "object" &&
  value !== null &&
  typeof (value as { part?: unknown }).part === "string" &&
  Array.isArray((value as { tables?: unknown }).tables)

/** The report on disk, or an empty one. */
export const load = (dir: string = resultsDir): Report => {
  try {
    const parsed: unknown = JSON.parse(readFileSync(join(dir, "latest.json"), "utf8"))
    const sections = (parsed as { sections?: unknown }).sections
    return {
      updated: String((parsed as { updated?: unknown }).updated ?? ""),
      sections: Array.isArray(sections) ? sections.filter(isSection) : []
    }
  } catch {
    return { updated: "", sections: [] }
  }
}

/**
 * Replaces (or adds) the section of the same part; sections follow `order`, unknown parts last.
 */
export const merge = (report: Report, section: Section, order: ReadonlyArray<string>): Report => {
  const others = report.sections.filter((s) => s.part !== section.part)
  const rank = (part: string) => {
    const index = order.indexOf(part)
    return index === -1 ? order.length : index
  }
  const sections = [...others, section].sort((a, b) => rank(a.part) - rank(b.part))
  return { updated: section.date, sections }
}

const cell = (text: string) => text.replaceAll("|", "\\|").replaceAll("\n", " ")

const renderTable = (table: Table): string => {
  const header = `| ${table.columns.map(cell).join(" | ")} |`
  const rule = `| ${table.columns.map((_, i) => (i === 0 ? "---" : "---:")).join(" | ")} |`
  const rows = table.rows.map((row) => `| ${row.map(cell).join(" | ")} |`)
  return [`**${table.title}**`, "", header, rule, ...rows].join("\n")
}

const renderMachine = (m: Machine, date: string, seconds: number) =>
  `_Measured ${date} on ${m.cpu} × ${m.cores} cores, ${m.memoryGiB} GiB, ${m.os}, Node ${m.node}; the part took ${Math.round(seconds)} s._`

/** The Markdown of a report. */
export const renderMarkdown = (report: Report): string => {
  const lines = [
    "# Roadcar benchmarks: latest results",
    "",
    "Generated by `pnpm bench` (see `bench/README.md`). Compare ratios measured in the same run: absolute",
    "times move by 2x between runs on a shared machine.",
    ""
  ]
  for (const section of report.sections) {
    lines.push(`## ${section.title}`, "", renderMachine(section.machine, section.date, section.seconds), "")
    for (const paragraph of section.summary) lines.push(paragraph, "")
    for (const table of section.tables) lines.push(renderTable(table), "")
    for (const chart of section.charts ?? []) lines.push(`![${chart.title}](${chart.file})`, "")
    if (section.notes.length > 0) {
      for (const note of section.notes) lines.push(`- ${note}`)
      lines.push("")
    }
  }
  return lines.join("\n")
}

/**
 * Merges `section` into the report on disk and writes `latest.json` and `latest.md`.
 *
 * @returns the paths written
 */
export const save = (
  section: Section,
  order: ReadonlyArray<string>,
  dir: string = resultsDir
): ReadonlyArray<string> => {
  mkdirSync(dir, { recursive: true })
  const report = merge(load(dir), section, order)
  const json = join(dir, "latest.json")
  const md = join(dir, "latest.md")
  writeFileSync(json, `${JSON.stringify(report, null, 2)}\n`)
  writeFileSync(md, renderMarkdown(report))
  return [json, md]
}

/** Writes a file (a chart) into the results folder and returns its name. */
export const writeAsset = (file: string, content: string, dir: string = resultsDir): string => {
  mkdirSync(dir, { recursive: true })
  writeFileSync(join(dir, file), content)
  return file
}
