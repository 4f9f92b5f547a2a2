import { assert, describe, it } from "@effect/vitest"
import { measureEviction } from "../src/growth/eviction.ts"
import { build, user } from "../src/growth/harness.ts"
import { measureSweep } from "../src/growth/sweep.ts"

describe("growth harness", () => {
  it("keeps two rate-limit entries per user and no more cache entries than its capacity", async () => {
    const harness = await build(50)
    try {
      await harness.fill(0, 100)
      assert.strictEqual(harness.rateLimitEntries(), 200)
      assert.strictEqual(await harness.cacheEntries(), 50)
      assert.strictEqual(harness.upstreamCalls(), 0)
      // Requests through the pipeline: known users add no rate-limit entry, every new prompt calls the upstream.
      await harness.run(0, 20, (i) => user(i % 100))
      assert.strictEqual(harness.rateLimitEntries(), 200)
      assert.strictEqual(harness.upstreamCalls(), 20)
      await harness.run(20, 5, (i) => user(1_000 + i))
      assert.strictEqual(harness.rateLimitEntries(), 210)
      assert.strictEqual(await harness.cacheEntries(), 50)
      // Cache entries alone: no rate-limit key added.
      await harness.fillCache(70)
      assert.strictEqual(harness.rateLimitEntries(), 210)
      assert.strictEqual(await harness.cacheEntries(), 50)
    } finally {
      await harness.close()
    }
  })
})

describe("rate limiter sweep", () => {
  it("keeps live entries and deletes expired ones", async () => {
    const sweep = await measureSweep(1_000)
    assert.isDefined(sweep)
    assert.deepStrictEqual(sweep?.sizes, { filled: 1_000, afterLiveSweep: 1_000, afterExpiredSweep: 0 })
    assert.isAtLeast(sweep?.liveSweepMs ?? -1, 0)
  })
})

describe("eviction", () => {
  it("times both evictions at a capacity", () => {
    const cost = measureEviction(100, 2_000)
    assert.strictEqual(cost.capacity, 100)
    assert.isAbove(cost.mapIteratorUs, 0)
    assert.isAbove(cost.linkedListUs, 0)
  })
})
