import { spawnSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Effect, Result } from "effect"
import { TestConsole } from "effect/testing"
import { ApiKeys, Cli } from "../src/index.ts"

const tempDirs: Array<string> = []
const tempDir = () => {
  const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "roadcar-cli-"))
  tempDirs.push(dir)
  return dir
}
afterAll(() => {
  for (const dir of tempDirs) Fs.rmSync(dir, { recursive: true, force: true })
})

const environment = (cwd: string, env: Record<string, string> = {}, stdin = ""): Cli.Environment => ({
  env,
  cwd,
  readStdin: () => stdin
})

const goodConfig = {
  upstreams: {
    openai: { provider: "openai", model: "gpt-4o-mini", apiKey: { env: "OPENAI_API_KEY" } },
    local: { provider: "openai-compatible", model: "llama3.2", baseUrl: "http://127.0.0.1:11434/v1" }
  },
  models: {
    chat: { upstream: "openai", fallbacks: [{ upstream: "local" }] },
    local: { upstream: "local" }
  }
}

const badConfig = {
  server: { port: 99999 },
  upstreams: { openai: { provider: "openai", model: "gpt-4o-mini" } },
  models: { chat: { upstream: "opneai" } },
  retry: { attemps: 3 }
}

describe("Cli.parse", () => {
  const parsed = (argv: ReadonlyArray<string>) => Result.getOrThrow(Cli.parse(argv))
  const failure = (argv: ReadonlyArray<string>) => {
    const result = Cli.parse(argv)
    assert.isTrue(Result.isFailure(result), argv.join(" "))
    return Result.isFailure(result) ? result.failure.message : ""
  }

  it("reads commands and --config in both spellings", () => {
    assert.deepStrictEqual(parsed(["serve"]), { _tag: "Serve", config: undefined })
    assert.deepStrictEqual(parsed(["serve", "--config", "a.json"]), { _tag: "Serve", config: "a.json" })
    assert.deepStrictEqual(parsed(["check-config", "--config=b.json"]), { _tag: "CheckConfig", config: "b.json" })
    assert.deepStrictEqual(parsed(["hash-key", "sk-1"]), { _tag: "HashKey", key: "sk-1" })
    assert.deepStrictEqual(parsed(["hash-key", "-"]), { _tag: "HashKey", key: "-" })
    for (const help of [["help"], ["--help"], ["-h"], ["serve", "--help"]]) {
      assert.deepStrictEqual(parsed(help), { _tag: "Help" })
    }
  })

  it("refuses what it does not know, saying what is wrong", () => {
    assert.strictEqual(failure([]), "missing command")
    assert.strictEqual(failure(["start"]), 'unknown command "start"')
    assert.strictEqual(failure(["serve", "--port", "1"]), "unknown option --port for serve")
    assert.strictEqual(failure(["serve", "--config"]), "--config needs a path: --config <path>")
    assert.strictEqual(failure(["serve", "--config", "--verbose"]), "--config needs a path: --config <path>")
    assert.strictEqual(failure(["serve", "--config", "a", "--config", "b"]), "--config given twice")
    assert.strictEqual(failure(["serve", "extra"]), 'serve takes no arguments, got "extra"')
    assert.strictEqual(failure(["hash-key"]), "hash-key needs exactly one key: roadcar hash-key <key>")
    assert.strictEqual(failure(["hash-key", "a", "b"]), "hash-key needs exactly one key: roadcar hash-key <key>")
    // A key that starts with "-" is never echoed.
    assert.notInclude(failure(["hash-key", "-sk-secret-1"]), "sk-secret-1")
    assert.include(failure(["hash-key", "-sk-secret-1"]), "roadcar hash-key -")
    assert.strictEqual(failure(["--verbose"]), "unknown option --verbose (expected a command first)")
  })
})

describe("Cli.run", () => {
  it.effect("hash-key prints the digest the config stores, from the argument or stdin", () =>
    Effect.gen(function* () {
      const dir = tempDir()
      assert.strictEqual(yield* Cli.main(["hash-key", "sk-team-a"], environment(dir)), 0)
      assert.strictEqual(yield* Cli.main(["hash-key", "-"], environment(dir, {}, "sk-from-stdin\n")), 0)
      assert.deepStrictEqual(yield* TestConsole.logLines, [ApiKeys.hash("sk-team-a"), ApiKeys.hash("sk-from-stdin")])
      assert.strictEqual(yield* Cli.main(["hash-key", "-"], environment(dir, {}, "  \n")), 2)
    })
  )

  it.effect("check-config prints ok with the counts for a valid config", () =>
    Effect.gen(function* () {
      const dir = tempDir()
      Fs.writeFileSync(Path.join(dir, "roadcar.config.json"), JSON.stringify(goodConfig))
      const code = yield* Cli.main(["check-config"], environment(dir, { OPENAI_API_KEY: "sk-x" }))
      assert.strictEqual(code, 0)
      const [line] = yield* TestConsole.logLines
      assert.match(String(line), /^ok: 2 models, 2 upstreams \(.*roadcar\.config\.json\)$/)
    })
  )

  it.effect("check-config with no file at all validates the built-in defaults", () =>
    Effect.gen(function* () {
      const code = yield* Cli.main(["check-config"], environment(tempDir()))
      assert.strictEqual(code, 0)
      assert.strictEqual(
        String((yield* TestConsole.logLines)[0]),
        "ok: 1 model, 1 upstream (the built-in defaults (no config file))"
      )
    })
  )

  it.effect("check-config prints every problem on its own line, naming the field, and exits 1", () =>
    Effect.gen(function* () {
      const dir = tempDir()
      const path = Path.join(dir, "bad.json")
      Fs.writeFileSync(path, JSON.stringify(badConfig))
      const code = yield* Cli.main(["check-config", "--config", path], environment(dir))
      assert.strictEqual(code, 1)
      const output = (yield* TestConsole.errorLines).map(String).join("\n")
      assert.include(output, `invalid configuration in ${path}`)
      assert.match(output, /\n {2}- server\.port: .*99999/)
      assert.match(output, /\n {2}- retry\.attemps: unknown field; did you mean "attempts"\?/)
    })
  )

  it.effect("check-config reports a secret whose environment variable is not set", () =>
    Effect.gen(function* () {
      const dir = tempDir()
      const path = Path.join(dir, "roadcar.config.json")
      Fs.writeFileSync(path, JSON.stringify(goodConfig))
      assert.strictEqual(yield* Cli.main(["check-config", "--config", path], environment(dir)), 1)
      const output = (yield* TestConsole.errorLines).map(String).join("\n")
      assert.include(output, "upstreams.openai.apiKey: the environment variable OPENAI_API_KEY is not set")
    })
  )

  it.effect("check-config checks the OTEL_* variables as serve does, never printing a header value", () =>
    Effect.gen(function* () {
      const dir = tempDir()
      const otel = { OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318" }
      assert.strictEqual(
        yield* Cli.main(["check-config"], environment(dir, { ...otel, OTEL_TRACES_SAMPLER: "bogus" })),
        1
      )
      assert.strictEqual(
        yield* Cli.main(
          ["check-config"],
          environment(dir, {
            ...otel,
            OTEL_TRACES_SAMPLER: "traceidratio",
            OTEL_TRACES_SAMPLER_ARG: "2",
            OTEL_EXPORTER_OTLP_HEADERS: "authorization=Bearer%0Asupersecret"
          })
        ),
        1
      )
      const output = (yield* TestConsole.errorLines).map(String).join("\n")
      assert.include(output, "invalid configuration in the built-in defaults")
      assert.match(output, /\n {2}- OTEL_TRACES_SAMPLER: "bogus" is not supported/)
      assert.match(output, /\n {2}- OTEL_TRACES_SAMPLER_ARG: must be a number between 0 and 1/)
      assert.notInclude(output, "supersecret")
      assert.deepStrictEqual(yield* TestConsole.logLines, [])
      assert.strictEqual(
        yield* Cli.main(["check-config"], environment(dir, { ...otel, OTEL_TRACES_SAMPLER: "always_off" })),
        0
      )
    })
  )

  it.effect("check-config refuses an OTEL_EXPORTER_OTLP_HEADERS value fetch cannot send, naming only the header", () =>
    Effect.gen(function* () {
      const env = {
        OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318",
        OTEL_EXPORTER_OTLP_HEADERS: "authorization=Bearer%0Asupersecret"
      }
      assert.strictEqual(yield* Cli.main(["check-config"], environment(tempDir(), env)), 1)
      const output = (yield* TestConsole.errorLines).map(String).join("\n")
      assert.match(output, /\n {2}- OTEL_EXPORTER_OTLP_HEADERS: the value of header "authorization" \(not shown\)/)
      assert.notInclude(output, "supersecret")
    })
  )

  it.effect("check-config names a file it cannot read; ROADCAR_CONFIG is used when there is no flag", () =>
    Effect.gen(function* () {
      const dir = tempDir()
      const missing = Path.join(dir, "nope.json")
      assert.strictEqual(yield* Cli.main(["check-config"], environment(dir, { ROADCAR_CONFIG: missing })), 1)
      const output = (yield* TestConsole.errorLines).map(String).join("\n")
      assert.include(output, `cannot read the config file ${missing}: no such file`)
    })
  )

  it.effect("serve with an invalid config prints the problems and exits 1 without listening", () =>
    Effect.gen(function* () {
      const dir = tempDir()
      Fs.writeFileSync(Path.join(dir, "roadcar.config.json"), "{ not json")
      assert.strictEqual(yield* Cli.main(["serve"], environment(dir)), 1)
      assert.include((yield* TestConsole.errorLines).map(String).join("\n"), "not valid JSON")
    })
  )

  it.effect("usage errors print the help and exit 2", () =>
    Effect.gen(function* () {
      assert.strictEqual(yield* Cli.main(["frobnicate"], environment(tempDir())), 2)
      const output = (yield* TestConsole.errorLines).map(String).join("\n")
      assert.include(output, 'unknown command "frobnicate"')
      assert.include(output, "roadcar serve [--config <path>]")
    })
  )
})

describe("the roadcar binary", () => {
  const bin = fileURLToPath(new URL("../src/bin.ts", import.meta.url))
  const run = (args: ReadonlyArray<string>) =>
    spawnSync(process.execPath, [bin, ...args], { encoding: "utf8", env: { PATH: process.env["PATH"] ?? "" } })

  it("check-config on a bad file prints the field and exits 1; an unknown command exits 2", () => {
    const dir = tempDir()
    const path = Path.join(dir, "bad.json")
    Fs.writeFileSync(path, JSON.stringify({ ...goodConfig, models: { chat: { upstream: "opneai" } } }))
    const bad = run(["check-config", "--config", path])
    assert.strictEqual(bad.status, 1, bad.stderr)
    assert.include(bad.stderr, 'models.chat.upstream: "opneai" is not a configured upstream; did you mean "openai"?')
    const unknown = run(["frobnicate"])
    assert.strictEqual(unknown.status, 2)
    assert.include(unknown.stderr, 'unknown command "frobnicate"')
    const hashed = run(["hash-key", "sk-binary"])
    assert.strictEqual(hashed.status, 0)
    assert.strictEqual(hashed.stdout.trim(), ApiKeys.hash("sk-binary"))
  }, 15_000)
})
