/**
 * Writes the drills' figures: `bench/results/drills.json` (everything, with the soak's headline
 * figures first) and `bench/results/drills.md` (the command, the machine, every check, the main tables
 * and the findings), and prints a short summary.
 */
import { execFileSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import type * as BadInput from "./BadInput.ts"
import type { DrillResult } from "./Check.ts"
import type * as Soak from "./Soak.ts"
import type * as Streams from "./Streams.ts"

/** What a run was. */
export interface RunInfo {
  /** The exact command, as typed. */
  readonly command: string
  readonly mode: "full" | "quick"
  readonly startedAt: Date
  readonly seconds: number
}

// The commit the drills ran on, and whether the working tree had uncommitted changes (read-only git).
const revision = (): string => {
  try {
    const options = { cwd: Path.dirname(new URL(import.meta.url).pathname), encoding: "utf8" as const }
    const commit = execFileSync("git", ["rev-parse", "--short", "HEAD"], options).trim()
    const changed = execFileSync("git", ["status", "--porcelain", "--untracked-files=no"], options).trim()
    return changed === "" ? commit : `${commit} (with uncommitted changes)`
  } catch {
    return "unknown"
  }
}

const machine = () => {
  const cpus = Os.cpus()
  return {
    node: process.version,
    platform: `${process.platform} ${Os.release()}`,
    cpus: `${cpus.length} x ${cpus[0]?.model ?? "unknown"}`,
    memoryGiB: Math.round(Os.totalmem() / 1024 ** 3),
    revision: revision()
  }
}

/** The JSON document. */
export const toJson = (info: RunInfo, results: ReadonlyArray<DrillResult<unknown>>) => {
  const soak = results.find((result) => result.id === "soak") as DrillResult<Soak.Figures> | undefined
  return {
    generatedAt: info.startedAt.toISOString(),
    command: info.command,
    mode: info.mode,
    durationSeconds: info.seconds,
    machine: machine(),
    passed: results.every((result) => result.checks.every((item) => item.ok)),
    soak:
      soak === undefined
        ? undefined
        : {
            requests: soak.figures.requests,
            answered: soak.figures.answered,
            fallback: soak.figures.fallback,
            cleanErrors: soak.figures.cleanErrors,
            lost: soak.figures.lost,
            latencyMs: soak.figures.latencyMs,
            deadlineMs: soak.figures.deadlineMs,
            attemptsPerRequest: { max: soak.figures.attempts.max, bound: soak.figures.attempts.bound },
            durationSeconds: soak.figures.durationSeconds
          },
    drills: results
  }
}

const cell = (text: string): string => text.replaceAll("|", "\\|").replaceAll("\n", " ")

const table = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string | number>>): string =>
  [
    `| ${header.join(" | ")} |`,
    `| ${header.map(() => "---").join(" | ")} |`,
    ...rows.map((row) => `| ${row.map((value) => cell(String(value))).join(" | ")} |`)
  ].join("\n")

const pct = (part: number, whole: number): string => (whole === 0 ? "0%" : `${Math.round((part / whole) * 1000) / 10}%`)

const soakSection = (result: DrillResult<Soak.Figures>): string => {
  const f = result.figures
  return [
    table(
      ["requests", "answered", "of which by fallback", "clean errors", "lost"],
      [
        [
          f.requests,
          `${f.answered} (${pct(f.answered, f.requests)})`,
          `${f.fallback} (${pct(f.fallback, f.requests)})`,
          `${f.cleanErrors} (${pct(f.cleanErrors, f.requests)})`,
          f.lost
        ]
      ]
    ),
    "",
    table(
      ["", "requests", "answered", "clean errors", "lost"],
      [
        ["JSON", f.json.requests, f.json.answered, f.json.cleanErrors, f.json.lost],
        [
          "streamed",
          f.stream.requests,
          f.stream.answered,
          `${f.stream.cleanErrors} (${f.stream.midStreamErrors} as an error event after the stream started)`,
          f.stream.lost
        ]
      ]
    ),
    "",
    `- Load: ${f.requests} requests, half JSON and half streamed, at most ${f.ratePerSecond}/s and ${f.concurrency} in flight (reached ${f.maxInFlight}); achieved ${f.achievedPerSecond}/s; ${f.durationSeconds} s.`,
    `- Latency (client side, to the complete answer or error): p50 ${f.latencyMs.p50} ms, p90 ${f.latencyMs.p90} ms, p99 ${f.latencyMs.p99} ms, max ${f.latencyMs.max} ms, against a configured deadline (\`timeouts.total\`) of ${f.deadlineMs} ms; ${f.overDeadline} requests took longer than deadline + 500 ms.`,
    `- Upstream attempts per request (from the fakes' attempt logs): max ${f.attempts.max}, bound ${f.attempts.bound} (\`retry.attempts\` x steps), mean ${f.attempts.mean}; histogram ${JSON.stringify(f.attempts.histogram)}; \`x-roadcar-attempts\` disagreed with the fakes ${f.attempts.headerMismatches} times.`,
    `- Clean errors by status and code: ${JSON.stringify(f.cleanErrorsByCode)}.`,
    `- Fallback reasons (\`x-roadcar-fallback\`): ${JSON.stringify(f.fallbackReasons)}.`,
    `- Faults injected (${Math.round(f.faultRate * 100)}% of attempts on each upstream), as the fakes logged them: primary ${JSON.stringify(f.upstreamAttempts.primary)}; backup ${JSON.stringify(f.upstreamAttempts.backup)}.`,
    `- Log lines: ${f.logLines} (${f.requestLogLines} request lines for the ${f.requests} soak requests).`,
    ...(f.lost === 0 ? [] : [`- Lost: ${JSON.stringify(f.lostReasons)}; e.g. ${f.lostExamples.join(" | ")}`])
  ].join("\n")
}

const memorySection = (result: DrillResult<Soak.MemoryFigures>): string => {
  const f = result.figures
  return table(
    ["", "RSS MiB", "heap used MiB", "open handles"],
    [
      ["before the soak (after warm-up, GC)", f.before.rssMiB, f.before.heapUsedMiB, JSON.stringify(f.handlesBefore)],
      ["peak during the soak", f.peakRssMiB, "", ""],
      ["after its first half (settled, GC)", f.middle.rssMiB, f.middle.heapUsedMiB, ""],
      [
        `after the soak (settled ${f.settleSeconds} s, GC)`,
        f.after.rssMiB,
        f.after.heapUsedMiB,
        JSON.stringify(f.handlesAfter)
      ]
    ]
  )
}

const streamsSection = (result: DrillResult<Streams.Figures>): string => {
  const f = result.figures
  return [
    table(
      ["", "RSS MiB", "heap used MiB (after GC)", "sockets in the gateway"],
      [
        ["before", f.before.rssMiB, f.before.heapUsedMiB, f.handlesBefore["TCPSocketWrap"] ?? 0],
        ...f.rounds.flatMap((round, index) => [
          [
            `round ${index + 1}: ${round.held} streams held`,
            round.rssHeldMiB,
            round.heldAfterGc.heapUsedMiB,
            round.socketsWhileHeld
          ],
          [`round ${index + 1}: after release (GC)`, round.after.rssMiB, round.after.heapUsedMiB, ""]
        ])
      ]
    ),
    "",
    `- Per held stream: about ${f.perStreamKiB.rss} KiB of RSS and ${f.perStreamKiB.heap} KiB of live heap.`
  ].join("\n")
}

const badInputSection = (result: DrillResult<BadInput.Figures>): string => {
  const f = result.figures
  const categories = [...new Set(Object.values(f.byFamily).flatMap((tally) => Object.keys(tally)))].sort()
  return [
    table(
      ["family", ...categories],
      Object.entries(f.byFamily).map(([family, tally]) => [family, ...categories.map((name) => tally[name] ?? 0)])
    ),
    "",
    `- ${f.cases} cases (fast-check, seed ${f.seed}); statuses ${JSON.stringify(f.byStatus)} (0: no HTTP answer).`,
    `- Meanwhile: ${f.servedDuringSlowLoris.answered}/${f.servedDuringSlowLoris.requests} normal requests answered (slowest ${f.servedDuringSlowLoris.maxMs} ms). Afterwards: process alive ${f.afterwards.alive}, \`/health\` ${f.afterwards.health}, a chat request ${f.afterwards.chat}.`
  ].join("\n")
}

/** The Markdown document. */
export const toMarkdown = (info: RunInfo, results: ReadonlyArray<DrillResult<unknown>>): string => {
  const m = machine()
  const passed = results.every((result) => result.checks.every((item) => item.ok))
  const out: Array<string> = [
    "# Reliability drills",
    "",
    `Produced by \`${info.command}\` (${info.mode} run) on ${info.startedAt.toISOString()}, in ${info.seconds} s.`,
    `Commit ${m.revision}. Machine: ${m.cpus}, ${m.memoryGiB} GiB, ${m.platform}, Node ${m.node}. Figures: [drills.json](drills.json).`,
    "",
    `**Result: ${passed ? "every check passed" : "some checks FAILED"}.**`,
    "",
    table(
      ["drill", "checks", "seconds"],
      results.map((result) => [
        `[${result.title}](#${result.id})`,
        result.checks.length === 0
          ? "pending"
          : `${result.checks.filter((item) => item.ok).length}/${result.checks.length} passed`,
        result.durationSeconds
      ])
    )
  ]
  for (const result of results) {
    out.push("", `<a id="${result.id}"></a>`, "", `## ${result.title}`, "")
    if (result.checks.length > 0) {
      out.push(
        table(
          ["check", "", "detail"],
          result.checks.map((item) => [item.name, item.ok ? "pass" : "**FAIL**", item.detail])
        ),
        ""
      )
    }
    if (result.id === "soak") out.push(soakSection(result as DrillResult<Soak.Figures>), "")
    if (result.id === "memory") out.push(memorySection(result as DrillResult<Soak.MemoryFigures>), "")
    if (result.id === "streams") out.push(streamsSection(result as DrillResult<Streams.Figures>), "")
    if (result.id === "badInput") out.push(badInputSection(result as DrillResult<BadInput.Figures>), "")
    for (const note of result.notes) out.push(`- ${note}`)
  }
  return `${out.join("\n").replace(/\n{3,}/g, "\n\n")}\n`
}

/** Writes `<prefix>.json` and `<prefix>.md`. */
export const write = (prefix: string, info: RunInfo, results: ReadonlyArray<DrillResult<unknown>>): void => {
  Fs.mkdirSync(Path.dirname(prefix), { recursive: true })
  Fs.writeFileSync(`${prefix}.json`, `${JSON.stringify(toJson(info, results), null, 2)}\n`)
  Fs.writeFileSync(`${prefix}.md`, toMarkdown(info, results))
}

/** One line per check, for the terminal. */
export const summary = (results: ReadonlyArray<DrillResult<unknown>>): string =>
  results
    .flatMap((result) => [
      `${result.title} (${result.durationSeconds} s)${result.checks.length === 0 ? ": pending" : ""}`,
      ...result.checks.map((item) => `  ${item.ok ? "pass" : "FAIL"}  ${item.name}: ${item.detail}`),
      ...result.notes.map((note) => `  note  ${note}`)
    ])
    .join("\n")
