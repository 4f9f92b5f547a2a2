/**
 * Graceful shutdown: stop accepting, let in-flight requests (streams included) finish within the
 * drain timeout, then stop; under `roadcar serve`, SIGTERM exits 0.
 */

import { spawn } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import { assert, describe, it } from "@effect/vitest"
import { Behaviour, FakeUpstream } from "@roadcar/testing"
import { Effect, Exit, Fiber, Scope } from "effect"
import { chatBody, client, collect, fakeConfig, quiet, startGateway } from "./utils.ts"

const words = "one two three four five six seven eight nine ten"

const waitFor = (condition: Effect.Effect<boolean>, what: string) =>
  Effect.gen(function* () {
    for (let i = 0; i < 1000; i++) {
      if (yield* condition) return
      yield* Effect.sleep("10 millis")
    }
    return yield* Effect.die(new Error(`timed out waiting for ${what}`))
  })

describe("graceful shutdown", () => {
  it.live("closing the gateway's scope drains in-flight JSON and streamed requests and refuses new ones", () =>
    Effect.gen(function* () {
      const fake = yield* FakeUpstream.make({ behaviour: Behaviour.ok({ latencyMs: 150, chunkDelayMs: 30 }) })
      const scope = yield* Scope.make()
      const { url } = yield* startGateway(
        fakeConfig({ primary: fake }, { chat: { upstream: "primary" } }, { server: { drainTimeout: "5 seconds" } })
      ).pipe(Scope.provide(scope))
      const openai = client(url)
      const stream = yield* Effect.promise(() =>
        openai.chat.completions.create({ ...chatBody(words), stream: true }).then(collect)
      ).pipe(Effect.forkChild)
      const json = yield* Effect.promise(() => openai.chat.completions.create(chatBody("finish me"))).pipe(
        Effect.forkChild
      )
      yield* waitFor(
        Effect.map(fake.attempts, (attempts) => attempts.length === 2),
        "both requests upstream"
      )

      const started = Date.now()
      const closing = yield* Scope.close(scope, Exit.void).pipe(Effect.forkChild)
      yield* Effect.sleep("20 millis")
      const refused = yield* Effect.promise(() =>
        fetch(`${url}/health`).then(
          () => "answered",
          () => "refused"
        )
      )
      assert.strictEqual(refused, "refused")

      const streamed = yield* Fiber.join(stream)
      assert.isUndefined(streamed.error)
      assert.strictEqual(streamed.text, `echo: ${words}`)
      assert.strictEqual((yield* Fiber.join(json)).choices[0]?.message.content, "echo: finish me")
      yield* Fiber.join(closing)
      assert.isBelow(Date.now() - started, 1_500)
    }).pipe(quiet)
  )

  it.live("a stream still running at the drain timeout is cut, never finished with [DONE]", () =>
    Effect.gen(function* () {
      const fake = yield* FakeUpstream.make({ behaviour: Behaviour.ok({ chunkDelayMs: 100 }) })
      const scope = yield* Scope.make()
      const { url } = yield* startGateway(
        fakeConfig({ primary: fake }, { chat: { upstream: "primary" } }, { server: { drainTimeout: "150 millis" } })
      ).pipe(Scope.provide(scope))
      const raw = yield* Effect.promise(() =>
        fetch(`${url}/v1/chat/completions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ ...chatBody(`${words} ${words}`), stream: true })
        }).then((response) => response.text().catch(() => "(cut)"))
      ).pipe(Effect.forkChild)
      yield* waitFor(
        Effect.map(fake.attempts, (attempts) => attempts.length === 1),
        "the stream upstream"
      )
      yield* Effect.sleep("50 millis")
      const started = Date.now()
      yield* Scope.close(scope, Exit.void)
      // The whole answer takes about a second; the drain gives up after 150 ms.
      assert.isBelow(Date.now() - started, 700)
      const text = yield* Fiber.join(raw)
      assert.notInclude(text, "[DONE]")
    }).pipe(quiet)
  )

  it.live(
    "roadcar serve: SIGTERM lets the in-flight stream finish, then exits 0",
    () =>
      Effect.gen(function* () {
        const fake = yield* FakeUpstream.make({ behaviour: Behaviour.ok({ chunkDelayMs: 40 }) })
        const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "roadcar-shutdown-"))
        const configPath = Path.join(dir, "roadcar.config.json")
        Fs.writeFileSync(
          configPath,
          JSON.stringify(
            fakeConfig({ primary: fake }, { chat: { upstream: "primary" } }, { server: { drainTimeout: "5 seconds" } })
          )
        )
        const bin = fileURLToPath(new URL("../src/bin.ts", import.meta.url))
        const child = spawn(process.execPath, [bin, "serve", "--config", configPath], {
          env: { ...process.env, PORT: "0", HOST: "127.0.0.1" },
          stdio: ["ignore", "pipe", "pipe"]
        })
        yield* Effect.addFinalizer(() =>
          Effect.sync(() => {
            if (child.exitCode === null) child.kill("SIGKILL")
            Fs.rmSync(dir, { recursive: true, force: true })
          })
        )
        const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)))
        let stdout = ""
        let stderr = ""
        child.stdout.on("data", (data: Buffer) => {
          stdout += data.toString()
        })
        child.stderr.on("data", (data: Buffer) => {
          stderr += data.toString()
        })
        // PORT=0: the start line says which port was picked.
        const startLine = () =>
          stdout
            .split("\n")
            .filter((line) => line.includes('"message":"roadcar gateway listening"'))
            .map((line) => JSON.parse(line) as { annotations: { port: number } })[0]
        yield* waitFor(
          Effect.sync(() => startLine() !== undefined || child.exitCode !== null),
          "the gateway to start"
        )
        assert.isNull(child.exitCode, stderr)
        const port = startLine()!.annotations.port
        assert.isAbove(port, 0)
        const url = `http://127.0.0.1:${port}`

        const response = yield* Effect.promise(() =>
          fetch(`${url}/v1/chat/completions`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ ...chatBody(words), stream: true })
          })
        )
        const reader = response.body!.getReader()
        const decoder = new TextDecoder()
        let text = decoder.decode((yield* Effect.promise(() => reader.read())).value)
        assert.include(text, "data: ")
        process.kill(child.pid!, "SIGTERM")
        for (;;) {
          const next = yield* Effect.promise(() => reader.read())
          if (next.done) break
          text += decoder.decode(next.value)
        }
        assert.isTrue(text.trimEnd().endsWith("data: [DONE]"), text)
        const content = text
          .split("\n\n")
          .filter((event) => event.startsWith("data: {"))
          .map((event) => JSON.parse(event.slice("data: ".length)).choices[0]?.delta.content ?? "")
          .join("")
        assert.strictEqual(content, `echo: ${words}`)
        assert.strictEqual(yield* Effect.promise(() => exited), 0, stderr)
      }).pipe(quiet),
    15_000
  )
})
