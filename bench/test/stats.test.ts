import { assert, describe, it } from "@effect/vitest"
import { formatNumber, formatRatio, median, quantile } from "../src/stats.ts"

describe("stats", () => {
  it("quantile interpolates between the nearest ranks and ignores input order", () => {
    assert.strictEqual(quantile([4, 1, 3, 2], 0), 1)
    assert.strictEqual(quantile([4, 1, 3, 2], 1), 4)
    assert.strictEqual(quantile([4, 1, 3, 2], 0.5), 2.5)
    assert.strictEqual(quantile([10, 20, 30, 40, 50], 0.25), 20)
    assert.isNaN(quantile([], 0.5))
  })

  it("median of an odd count is the middle value", () => {
    assert.strictEqual(median([9, 1, 5]), 5)
  })

  it("formats numbers with three significant digits and ratios with two", () => {
    assert.strictEqual(formatNumber(12.3456), "12.3")
    assert.strictEqual(formatNumber(0.41234), "0.412")
    assert.strictEqual(formatNumber(1234.5), "1,235")
    assert.strictEqual(formatNumber(Number.NaN), "n/a")
    assert.strictEqual(formatRatio(4.567), "4.6x")
    assert.strictEqual(formatRatio(Number.POSITIVE_INFINITY), "n/a")
  })
})
