import { defineConfig } from "vitest/config"

// One vitest run over every workspace package and the cross-package scenarios in test/.
export default defineConfig({
  test: {
    projects: ["packages/*", "test"]
  }
})
