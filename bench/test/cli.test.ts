// The runners' command lines: a wrong part, drill or figure is refused with what was wrong and what
// is accepted (exit 2), before anything is measured.
import { spawnSync } from "node:child_process"
import { fileURLToPath } from "node:url"
import { assert, describe, it } from "@effect/vitest"

const run = (script: string, args: ReadonlyArray<string>) => {
  const result = spawnSync(process.execPath, [fileURLToPath(new URL(script, import.meta.url)), ...args], {
    encoding: "utf8",
    timeout: 20_000
  })
  return { status: result.status, stderr: `${result.stderr}${result.stdout}` }
}

describe("runner command lines", () => {
  it("pnpm bench refuses an unknown part and lists the parts", () => {
    const { status, stderr } = run("../src/main.ts", ["nosuchpart"])
    assert.strictEqual(status, 2)
    assert.include(stderr, "unknown part: nosuchpart")
    for (const part of ["inprocess", "gateway", "memory", "growth"]) assert.include(stderr, part)
  })

  it("pnpm drill refuses an unknown drill and a count that is not positive", () => {
    const unknown = run("../../test/drills/main.ts", ["--only", "nope", "--no-write"])
    assert.strictEqual(unknown.status, 2)
    assert.include(unknown.stderr, "--only: unknown drill(s) nope; known: soak, streams, process, badInput, slowLoris")
    const negative = run("../../test/drills/main.ts", ["--requests", "-3", "--no-write"])
    assert.strictEqual(negative.status, 2)
    assert.include(negative.stderr, '--requests must be a positive number, got "-3"')
  })
})
