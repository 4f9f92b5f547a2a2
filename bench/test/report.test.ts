import { mkdtempSync, readFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { summarise } from "../src/cpuprofile.ts"
import { load, machine, merge, renderMarkdown, type Section, save } from "../src/report.ts"

const section = (part: string, title: string): Section => ({
  part,
  title,
  date: "2026-12-03T00:00:00.000Z",
  machine: machine(),
  seconds: 1,
  summary: [`${title} summary`],
  tables: [{ title: `${title} table`, columns: ["name", "µs"], rows: [["a|b", "1.5"]] }],
  notes: [`${title} note`],
  data: { part }
})

describe("report", () => {
  it("records the machine and Node version", () => {
    const m = machine()
    assert.isAbove(m.cores, 0)
    assert.strictEqual(m.node, process.version)
  })

  it("a part's new section replaces its old one and keeps the others, in part order", () => {
    const order = ["inprocess", "gateway"]
    const first = merge({ updated: "", sections: [] }, section("gateway", "Gateway"), order)
    const second = merge(first, section("inprocess", "Old"), order)
    const third = merge(second, section("inprocess", "New"), order)
    assert.deepStrictEqual(
      third.sections.map((s) => s.title),
      ["New", "Gateway"]
    )
  })

  it("saves JSON and Markdown, merging with what is on disk", () => {
    const dir = mkdtempSync(join(tmpdir(), "roadcar-bench-"))
    save(section("gateway", "Gateway"), ["inprocess", "gateway"], dir)
    save(section("inprocess", "In-process"), ["inprocess", "gateway"], dir)
    const report = load(dir)
    assert.deepStrictEqual(
      report.sections.map((s) => s.part),
      ["inprocess", "gateway"]
    )
    const markdown = readFileSync(join(dir, "latest.md"), "utf8")
    assert.include(markdown, "## In-process")
    assert.include(markdown, "## Gateway")
    assert.include(markdown, "| a\\|b | 1.5 |")
    assert.strictEqual(markdown, renderMarkdown(report))
  })

  it("an unreadable report on disk is treated as empty", () => {
    const dir = mkdtempSync(join(tmpdir(), "roadcar-bench-"))
    assert.deepStrictEqual(load(dir).sections, [])
  })
})

describe("cpuprofile", () => {
  it("sums self time per function and per file, most first", () => {
    const frame = (functionName: string, url: string) => ({ functionName, url, lineNumber: 0 })
    const { totalMs, functions, files } = summarise({
      nodes: [
        { id: 1, callFrame: frame("(root)", ""), children: [2, 3] },
        { id: 2, callFrame: frame("hot", "file:///work/main/packages/core/src/Pipeline.ts") },
        { id: 3, callFrame: frame("cold", "file:///x/node_modules/.pnpm/effect@4.1.5/node_modules/effect/dist/a.js") }
      ],
      samples: [2, 2, 3, 2],
      timeDeltas: [1000, 1000, 1000, 1000]
    })
    assert.strictEqual(totalMs, 4)
    assert.strictEqual(functions[0]?.name, "hot")
    assert.strictEqual(functions[0]?.share, 0.75)
    assert.strictEqual(files[0]?.name, "packages/core/src/Pipeline.ts")
    assert.strictEqual(files[1]?.name, "effect/dist/a.js")
  })
})
