import { defineConfig } from "vitest/config"

// One vitest run over every workspace package and the cross-package scenarios in test/.
// In CI (.ci/run sets VITEST_JSON_REPORT) a JSON report is written beside the usual output.
const jsonReport = process.env["VITEST_JSON_REPORT"]

export default defineConfig({
  test: {
    projects: ["packages/*", "bench", "test"],
    ...(jsonReport ? { reporters: ["default", "json"], outputFile: { json: jsonReport } } : {})
  }
})
