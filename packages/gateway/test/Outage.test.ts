/**
 * A primary that is down for a while and then recovers, behind the gateway: the breaker opens, the
 * fallback serves during the outage, a probe closes the breaker after recovery, traffic returns.
 */
import { assert, describe, it } from "@effect/vitest"
import { Behaviour, FakeUpstream, Script } from "@roadcar/testing"
import { Effect } from "effect"
import { chatBody, client, fakeConfig, quiet, startGateway } from "./utils.ts"

// Wide margins: the first three requests must land inside the open duration even on a loaded machine.
const outageMs = 2_500

describe("outage and recovery", () => {
  it.live("opens the breaker, serves from the fallback, probes after recovery and returns to the primary", () =>
    Effect.gen(function* () {
      const primary = yield* FakeUpstream.make({
        behaviour: Script.downFor(outageMs, { during: Behaviour.status(503) })
      })
      const backup = yield* FakeUpstream.make()
      const installed = Date.now()
      const { url } = yield* startGateway(
        fakeConfig(
          { primary, backup },
          {
            chat: { upstream: "primary", fallbacks: [{ upstream: "backup" }] },
            solo: { upstream: "primary" }
          },
          {
            retry: { attempts: 1 },
            breaker: { consecutiveFailures: 2, openDuration: "1500 millis" }
          }
        )
      )
      const openai = client(url)
      const ask = (content: string) =>
        Effect.promise(() => openai.chat.completions.create(chatBody(content)).withResponse()).pipe(
          Effect.map(({ data, response }) => ({
            text: data.choices[0]?.message.content,
            upstream: response.headers.get("x-roadcar-upstream"),
            fallback: response.headers.get("x-roadcar-fallback")
          }))
        )
      const ready = Effect.promise(() =>
        fetch(`${url}/ready`).then(async (response) => ({ status: response.status, body: await response.json() }))
      )

      // Two failures in a row open the primary's circuit; the backup answers both.
      const first = yield* ask("one")
      const second = yield* ask("two")
      assert.deepStrictEqual([first.upstream, first.fallback], ["backup", "Unavailable"])
      assert.deepStrictEqual([second.upstream, second.fallback], ["backup", "Unavailable"])
      assert.strictEqual((yield* primary.attempts).length, 2)

      // Open: the primary is not called at all, the backup answers at once.
      const third = yield* ask("three")
      assert.deepStrictEqual([third.upstream, third.fallback, third.text], ["backup", "CircuitOpen", "echo: three"])
      assert.strictEqual((yield* primary.attempts).length, 2)
      const during = yield* ready
      assert.strictEqual(during.status, 503)
      assert.strictEqual(during.body.models.solo.ready, false)
      assert.strictEqual(during.body.models.chat.ready, true)
      assert.strictEqual(during.body.models.chat.upstreams.primary, "Open")
      assert.include(during.body.message, "solo")

      // After the outage and the open duration, the next request is the probe: the primary answers.
      yield* Effect.sleep(Math.max(0, installed + outageMs + 50 - Date.now()))
      const probe = yield* ask("four")
      assert.deepStrictEqual([probe.upstream, probe.fallback, probe.text], ["primary", null, "echo: four"])
      const after = yield* ask("five")
      assert.deepStrictEqual([after.upstream, after.fallback], ["primary", null])
      const recovered = yield* ready
      assert.strictEqual(recovered.status, 200)
      assert.strictEqual(recovered.body.models.chat.upstreams.primary, "Closed")
      assert.deepStrictEqual(
        (yield* primary.attempts).map((attempt) => attempt.fault),
        ["503", "503", "ok", "ok"]
      )
      assert.strictEqual((yield* backup.attempts).length, 3)
    }).pipe(quiet)
  )
})
