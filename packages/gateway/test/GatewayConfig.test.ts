import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Result } from "effect"
import { GatewayConfig } from "../src/index.ts"

describe("GatewayConfig", () => {
  describe("locate", () => {
    it("prefers the flag, then ROADCAR_CONFIG, then ./roadcar.config.json, else none", () => {
      const exists = () => true
      assert.deepStrictEqual(GatewayConfig.locate({ flag: "a.json", env: { ROADCAR_CONFIG: "b.json" }, exists }), {
        _tag: "Flag",
        path: "a.json"
      })
      assert.deepStrictEqual(GatewayConfig.locate({ env: { ROADCAR_CONFIG: "b.json" }, exists }), {
        _tag: "Env",
        path: "b.json"
      })
      assert.deepStrictEqual(GatewayConfig.locate({ env: {}, cwd: "/srv/app", exists }), {
        _tag: "DefaultFile",
        path: "/srv/app/roadcar.config.json"
      })
      assert.deepStrictEqual(GatewayConfig.locate({ env: {}, cwd: "/srv/app", exists: () => false }), { _tag: "None" })
    })
  })

  describe("serverSettings", () => {
    it("defaults to 127.0.0.1:8787, 1 MiB and a 10 s drain", () => {
      const settings = Result.getOrThrow(GatewayConfig.serverSettings({}))
      assert.strictEqual(settings.host, "127.0.0.1")
      assert.strictEqual(settings.port, 8787)
      assert.strictEqual(settings.bodyLimitBytes, 1_048_576)
      assert.strictEqual(Duration.toMillis(settings.drainTimeout), 10_000)
    })

    it("HOST and PORT in the environment win over the file; explicit overrides win over both", () => {
      const config = { server: { host: "127.0.0.2", port: 9000, drainTimeout: "3 seconds" } }
      const fromFile = Result.getOrThrow(GatewayConfig.serverSettings(config))
      assert.deepStrictEqual([fromFile.host, fromFile.port], ["127.0.0.2", 9000])
      assert.strictEqual(Duration.toMillis(fromFile.drainTimeout), 3_000)
      const fromEnv = Result.getOrThrow(GatewayConfig.serverSettings(config, { HOST: "127.0.0.3", PORT: "0" }))
      assert.deepStrictEqual([fromEnv.host, fromEnv.port], ["127.0.0.3", 0])
      const explicit = Result.getOrThrow(
        GatewayConfig.serverSettings(config, { HOST: "127.0.0.3", PORT: "1" }, { host: "127.0.0.4", port: 2 })
      )
      assert.deepStrictEqual([explicit.host, explicit.port], ["127.0.0.4", 2])
    })

    it("an invalid PORT is a config error naming it", () => {
      const result = GatewayConfig.serverSettings({}, { PORT: "http" })
      assert.isTrue(Result.isFailure(result))
      if (Result.isFailure(result)) {
        assert.deepStrictEqual(result.failure.problems, [
          'PORT: expected a port number between 0 and 65535, got "http"'
        ])
      }
    })
  })

  describe("load", () => {
    it.effect("reads and validates the file; the empty config without one", () =>
      Effect.gen(function* () {
        const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "roadcar-config-"))
        const none = yield* GatewayConfig.load({ env: {}, cwd: dir })
        assert.deepStrictEqual(none, { config: {}, source: { _tag: "None" } })
        Fs.writeFileSync(Path.join(dir, "roadcar.config.json"), JSON.stringify({ logLevel: "Debug" }))
        const found = yield* GatewayConfig.load({ env: {}, cwd: dir })
        assert.strictEqual(found.config.logLevel, "Debug")
        assert.strictEqual(found.source._tag, "DefaultFile")
        // A file saved with a byte-order mark reads the same.
        Fs.writeFileSync(Path.join(dir, "roadcar.config.json"), `\ufeff${JSON.stringify({ logLevel: "Warn" })}`)
        assert.strictEqual((yield* GatewayConfig.load({ env: {}, cwd: dir })).config.logLevel, "Warn")
        Fs.writeFileSync(Path.join(dir, "roadcar.config.json"), JSON.stringify({ logLevel: "loud" }))
        const invalid = yield* Effect.flip(GatewayConfig.load({ env: {}, cwd: dir }))
        assert.strictEqual(invalid.problems.length, 1)
        assert.include(invalid.problems[0], "logLevel")
        Fs.rmSync(dir, { recursive: true, force: true })
      })
    )

    it("lists secrets whose environment variable is missing", () => {
      const config = {
        upstreams: {
          a: { provider: "openai" as const, model: "m", apiKey: { env: "A_KEY" } },
          b: { provider: "openai" as const, model: "m", apiKey: { env: "B_KEY" } },
          c: { provider: "simulated" as const }
        }
      }
      assert.deepStrictEqual(GatewayConfig.missingSecrets(config, { A_KEY: "x", B_KEY: "" }), [
        "upstreams.b.apiKey: the environment variable B_KEY is not set; export it before starting"
      ])
      // The alert webhook's URL too, and the Redis URL once a store is on Redis.
      const elsewhere = {
        alerts: { webhook: { url: { env: "HOOK" } } },
        redis: { url: { env: "MY_REDIS" } }
      }
      assert.deepStrictEqual(GatewayConfig.missingSecrets(elsewhere, {}), [
        "alerts.webhook.url: the environment variable HOOK is not set; export it before starting"
      ])
      assert.deepStrictEqual(
        GatewayConfig.missingSecrets({ ...elsewhere, stores: { cache: "redis" } }, { HOOK: "h" }),
        ["redis.url: the environment variable MY_REDIS is not set; export it before starting"]
      )
    })
  })
})
