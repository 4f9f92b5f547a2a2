import { assert, describe, it } from "@effect/vitest"
import { measureEviction } from "../src/growth/eviction.ts"
import { build, user } from "../src/growth/harness.ts"

describe("growth harness", () => {
  it("keeps one rate-limit key per user up to maxKeys and no more cache entries than its capacity", async () => {
    const harness = await build(50, 120)
    try {
      await harness.fill(0, 100)
      assert.strictEqual(harness.rateLimitKeys(), 100)
      assert.strictEqual(await harness.cacheEntries(), 50)
      assert.strictEqual(harness.upstreamCalls(), 0)
      // Requests through the pipeline: known users add no rate-limit key, every new prompt calls the upstream.
      await harness.run(0, 20, (i) => user(i % 100))
      assert.strictEqual(harness.rateLimitKeys(), 100)
      assert.strictEqual(harness.upstreamCalls(), 20)
      await harness.run(20, 5, (i) => user(1_000 + i))
      assert.strictEqual(harness.rateLimitKeys(), 105)
      assert.strictEqual(await harness.cacheEntries(), 50)
      // Cache entries alone: no rate-limit key added.
      await harness.fillCache(70)
      assert.strictEqual(harness.rateLimitKeys(), 105)
      assert.strictEqual(await harness.cacheEntries(), 50)
      // Past maxKeys the least recently used keys are dropped.
      await harness.fill(2_000, 100)
      assert.strictEqual(harness.rateLimitKeys(), 120)
    } finally {
      await harness.close()
    }
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
