import { defineConfig } from "vitest/config"

// The harness's own tests (statistics, report merging, profile summary); the benchmarks themselves
// run with `pnpm bench`, not here.
export default defineConfig({
  test: { include: ["test/**/*.test.ts"] }
})
