/**
 * The quick reliability drills, in the test run: the chaos soak with its secret scan and key checks
 * (drills 1 and 5) and the bad-input fuzzing (drill 4), at CI size. The heavy drills (100,000-request
 * soak, 10,000 held streams, process kills, the long slow-loris probe) run in `pnpm drill`.
 */
import { assert, describe, it } from "@effect/vitest"
import * as BadInput from "./BadInput.ts"
import type { DrillResult } from "./Check.ts"
import * as Soak from "./Soak.ts"

// Latency against the deadline is a figure of the full drill (`pnpm drill`), not a timed unit test: on a
// loaded CI machine it says more about the machine than about the gateway.
const assertChecks = (result: DrillResult<unknown>) => {
  for (const item of result.checks) {
    if (/latency/i.test(item.name)) continue
    assert.isTrue(item.ok, `${result.title}: ${item.name}: ${item.detail}`)
  }
}

describe("reliability drills (quick)", () => {
  it("chaos soak: every request answered or cleanly refused, attempts bounded, no secret anywhere, keys enforced", async () => {
    const run = await Soak.run({ requests: 2_000, ratePerSecond: 1_000, concurrency: 50 })
    const figures = run.soak.figures
    assert.strictEqual(figures.lost, 0, JSON.stringify(figures.lostExamples))
    assert.strictEqual(figures.answered + figures.cleanErrors, figures.requests)
    assert.isAbove(figures.fallback, 0, "the fallback answered some requests")
    assert.isAbove(figures.cleanErrors, 0, "some requests failed on both upstreams")
    assert.isAtMost(figures.attempts.max, figures.attempts.bound)
    assert.isAbove(figures.logLines, figures.requests)
    assertChecks(run.soak)
    assertChecks(run.security)
    assert.isAbove(Number(run.security.figures["spansScanned"]), 0, "the gateway's spans were exported and scanned")
  }, 60_000)

  it("bad input: never a 5xx, every rejection an OpenAI error JSON, healthy afterwards", async () => {
    const result = await BadInput.run({ cases: 300, slowLoris: { sockets: 20, maxMs: 2_000 } })
    assert.strictEqual(result.figures.cases, 300)
    assert.isTrue(result.figures.afterwards.alive)
    assertChecks(result)
  }, 60_000)
})
