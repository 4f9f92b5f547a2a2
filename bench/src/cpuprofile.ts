/**
 * Summarises a V8 `.cpuprofile` (from `node --cpu-prof`): the functions with the most self time,
 * and the files (packages) the time is spent in.
 *
 *     node bench/src/cpuprofile.ts bench/results/<file>.cpuprofile [top=30]
 *
 * Self time of a function is the samples taken while it was on top of the stack; "(garbage
 * collector)" and "(program)" are V8's own.
 */
import { readFileSync } from "node:fs"

interface CallFrame {
  readonly functionName: string
  readonly url: string
  readonly lineNumber: number
}

interface ProfileNode {
  readonly id: number
  readonly callFrame: CallFrame
  readonly children?: ReadonlyArray<number>
}

interface Profile {
  readonly nodes: ReadonlyArray<ProfileNode>
  readonly samples: ReadonlyArray<number>
  readonly timeDeltas: ReadonlyArray<number>
}

/** One row of the summary. */
export interface Row {
  readonly name: string
  readonly where: string
  readonly selfMs: number
  readonly share: number
}

const shortUrl = (url: string): string => {
  if (url === "") return ""
  const path = url.replace(/^file:\/\//, "")
  const pnpm = path.match(/node_modules\/\.pnpm\/[^/]+\/node_modules\/(.+)$/)
  if (pnpm) return pnpm[1]!
  const workspace = path.match(/\/(packages|bench)\/(.+)$/)
  if (workspace) return `${workspace[1]}/${workspace[2]}`
  return path.replace(/^node:/, "node:")
}

/** Self time per function and per file, most first. */
export const summarise = (
  profile: Profile
): { readonly totalMs: number; readonly functions: ReadonlyArray<Row>; readonly files: ReadonlyArray<Row> } => {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]))
  const self = new Map<number, number>()
  let total = 0
  profile.samples.forEach((id, i) => {
    const delta = profile.timeDeltas[i] ?? 0
    self.set(id, (self.get(id) ?? 0) + delta)
    total += delta
  })
  const functions = new Map<string, Row>()
  const files = new Map<string, Row>()
  for (const [id, micros] of self) {
    const frame = byId.get(id)!.callFrame
    const where = shortUrl(frame.url)
    const key = `${frame.functionName}@${where}:${frame.lineNumber}`
    const name = frame.functionName || "(anonymous)"
    const fn = functions.get(key)
    functions.set(key, {
      name,
      where: where === "" ? "" : `${where}:${frame.lineNumber + 1}`,
      selfMs: (fn?.selfMs ?? 0) + micros / 1000,
      share: 0
    })
    const fileKey = where === "" ? name : where
    const file = files.get(fileKey)
    files.set(fileKey, { name: fileKey, where: "", selfMs: (file?.selfMs ?? 0) + micros / 1000, share: 0 })
  }
  const ranked = (rows: Iterable<Row>) =>
    [...rows].map((row) => ({ ...row, share: row.selfMs / (total / 1000) })).sort((a, b) => b.selfMs - a.selfMs)
  return { totalMs: total / 1000, functions: ranked(functions.values()), files: ranked(files.values()) }
}

const main = () => {
  const file = process.argv[2]
  if (file === undefined) {
    process.stderr.write("usage: node bench/src/cpuprofile.ts <file.cpuprofile> [top]\n")
    process.exitCode = 2
    return
  }
  const top = Number(process.argv[3] ?? "30")
  const { totalMs, functions, files } = summarise(JSON.parse(readFileSync(file, "utf8")) as Profile)
  const pct = (share: number) => `${(share * 100).toFixed(1).padStart(5)}%`
  const lines = [`${file}: ${Math.round(totalMs)} ms sampled`, "", "self time by function:"]
  for (const row of functions.slice(0, top)) lines.push(`${pct(row.share)}  ${row.name}  ${row.where}`)
  lines.push("", "self time by file:")
  for (const row of files.slice(0, Math.min(top, 25))) lines.push(`${pct(row.share)}  ${row.name}`)
  process.stdout.write(`${lines.join("\n")}\n`)
}

if (import.meta.main) main()
