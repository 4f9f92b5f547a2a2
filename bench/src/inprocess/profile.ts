/**
 * Runs one in-process candidate in a loop for a while, for `node --cpu-prof`:
 *
 *     node --cpu-prof --cpu-prof-dir bench/results bench/src/inprocess/profile.ts [candidate] [seconds]
 *
 * Candidates: the Roadcar variants (`roadcar`, `roadcar-monitor-noop`, `roadcar-logs-off`,
 * `roadcar-fail-twice`). Prints the time per call; `bench/src/cpuprofile.ts` summarises the profile.
 */
import * as Roadcar from "./roadcar.ts"

const id = process.argv[2] ?? "roadcar"
const seconds = Number(process.argv[3] ?? "10")
const variant = Roadcar.variants.find((v) => v.id === id)
if (variant === undefined) {
  process.stderr.write(`unknown candidate ${id}; one of ${Roadcar.variants.map((v) => v.id).join(", ")}\n`)
  process.exit(2)
}
const candidate = await Roadcar.candidate(variant)
const problem = await candidate.verify()
if (problem !== undefined) throw new Error(problem)
const deadline = performance.now() + seconds * 1000
let calls = 0
let windowStart = performance.now()
let windowCalls = 0
while (performance.now() < deadline) {
  await candidate.call(calls++ & 8191)
  windowCalls++
  if (performance.now() - windowStart >= 1000) {
    process.stderr.write(`${id}: ${((1000 * (performance.now() - windowStart)) / windowCalls).toFixed(1)} µs/call\n`)
    windowStart = performance.now()
    windowCalls = 0
  }
}
await candidate.close?.()
process.stderr.write(`${id}: ${calls} calls in ${seconds} s\n`)
