import { assert, describe, it } from "@effect/vitest"
import { RoadcarConfig } from "@roadcar/core"
import { FakeUpstream } from "@roadcar/testing"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { afterAll, beforeAll } from "vitest"
import { start } from "../src/gateway/bareProxy.ts"
import { spawnChild } from "../src/gateway/children.ts"
import { gatewayConfig, simulatedConfig } from "../src/gateway/config.ts"
import { answerText, benchKeyDigest, requestBody } from "../src/gateway/fixtures.ts"
import { summarise } from "../src/gateway/index.ts"
import { latencyOf, run } from "../src/gateway/load.ts"
import { type RunRecord, rotate } from "../src/gateway/measure.ts"
import { readyUrl } from "../src/gateway/targets.ts"
import { streamText, verifyTarget } from "../src/gateway/verify.ts"

let upstream: FakeUpstream.Handle

beforeAll(async () => {
  upstream = await FakeUpstream.start({ behaviour: { _tag: "Ok", text: answerText } })
})

afterAll(() => upstream.close())

describe("bare proxy", () => {
  it("forwards JSON and event streams with http.request and with fetch", async () => {
    for (const client of ["http", "fetch"] as const) {
      const proxy = await start(upstream.url, 0, client)
      try {
        assert.isUndefined(await verifyTarget(proxy.url), client)
      } finally {
        await proxy.close()
      }
    }
    const seen = upstream.attempts().filter((attempt) => attempt.path === "/v1/chat/completions")
    assert.isAtLeast(seen.length, 4)
  })

  it("answers 400 to a body that is not JSON", async () => {
    const proxy = await start(upstream.url)
    try {
      const response = await fetch(`${proxy.url}/v1/chat/completions`, { method: "POST", body: "{not json" })
      assert.strictEqual(response.status, 400)
    } finally {
      await proxy.close()
    }
  })
})

describe("load", () => {
  it("counts 2xx responses and their latencies for a short run", async () => {
    const proxy = await start(upstream.url)
    try {
      const result = await run({ url: proxy.url, connections: 2, durationSeconds: 0.3, stream: false })
      assert.isAbove(result.responses, 0)
      assert.strictEqual(result.non2xx, 0)
      assert.strictEqual(result.errors, 0)
      assert.isAtMost(result.latencyMs.p50, result.latencyMs.p99)
      assert.isAtMost(result.latencyMs.p99, result.latencyMs.max)
      assert.closeTo(result.rps, result.responses / result.seconds, 1e-9)
    } finally {
      await proxy.close()
    }
  })

  it("latency percentiles interpolate between ranks", () => {
    const latency = latencyOf([1, 2, 3, 4, 5])
    assert.strictEqual(latency.p50, 3)
    assert.strictEqual(latency.max, 5)
    assert.strictEqual(latency.mean, 3)
    assert.closeTo(latency.p99, 4.96, 1e-9)
    assert.isNaN(latencyOf([]).p50)
  })
})

describe("measure", () => {
  it("rotate moves the first items to the end, wrapping around", () => {
    assert.deepStrictEqual(rotate(["a", "b", "c"], 1), ["b", "c", "a"])
    assert.deepStrictEqual(rotate(["a", "b", "c"], 4), ["b", "c", "a"])
    assert.deepStrictEqual(rotate(["a", "b", "c"], -1), ["c", "a", "b"])
  })

  it("summarise pairs each run with the bare proxy's and the upstream's of the same repeat", () => {
    const record = (target: string, repeat: number, rps: number, p99: number): RunRecord => ({
      target,
      repeat,
      position: 0,
      responses: 100,
      non2xx: 0,
      errors: 0,
      seconds: 1,
      rps,
      latencyMs: { p50: p99 / 2, p90: p99, p99, max: p99, mean: p99 / 2 },
      generatorCpuUsPerRequest: 1,
      targetCpuUsPerRequest: 10,
      upstreamCpuUsPerRequest: 5,
      targetRss: 1,
      load1: 0
    })
    const records = [
      record("upstream", 0, 1000, 10),
      record("bare-proxy", 0, 800, 12),
      record("gateway", 0, 400, 20),
      record("upstream", 1, 500, 10),
      record("bare-proxy", 1, 400, 12),
      record("gateway", 1, 100, 30)
    ]
    const [, bare, gateway] = summarise(records, ["upstream", "bare-proxy", "gateway"], "bare-proxy", "upstream")
    assert.strictEqual(bare?.ratioToBareProxy, 1)
    // Repeat 0: 400 / 800 = 0.5; repeat 1: 100 / 400 = 0.25; median 0.375.
    assert.strictEqual(gateway?.ratioToBareProxy, 0.375)
    // Added p99: 20 - 10 = 10 and 30 - 10 = 20; median 15.
    assert.strictEqual(gateway?.addedP99, 15)
    assert.strictEqual(gateway?.responses, 200)
  })
})

describe("config", () => {
  it("the benchmark configs are valid gateway configs with every stage on", () => {
    const decoded = Effect.runSyncExit(RoadcarConfig.decode(gatewayConfig("http://127.0.0.1:1234")))
    assert.isTrue(Exit.isSuccess(decoded))
    if (Exit.isSuccess(decoded)) {
      const config = decoded.value
      assert.strictEqual(config.keys?.[0]?.sha256, benchKeyDigest)
      assert.strictEqual(config.rateLimit?.rules?.length, 1)
      assert.strictEqual(config.cache?.enabled, true)
      assert.strictEqual(config.logLevel, "Info")
      assert.strictEqual(config.budgets?.rules.length, 1)
    }
    assert.isTrue(Exit.isSuccess(Effect.runSyncExit(RoadcarConfig.decode(simulatedConfig()))))
  })
})

describe("verify", () => {
  it("streamText joins the content deltas and sees [DONE]", () => {
    const body = [
      'data: {"choices":[{"delta":{"role":"assistant"}}]}',
      'data: {"choices":[{"delta":{"content":"a "}}]}',
      'data: {"choices":[{"delta":{"content":"b"}}]}',
      "data: [DONE]",
      ""
    ].join("\n\n")
    assert.deepStrictEqual(streamText(body), { text: "a b", done: true })
    assert.isFalse(streamText('data: {"choices":[]}\n\n').done)
  })

  it("reports a target that does not answer with the upstream's text", async () => {
    const other = await FakeUpstream.start({ behaviour: { _tag: "Ok", text: "something else" } })
    try {
      assert.strictEqual(await verifyTarget(other.url), "JSON: not the upstream's answer")
    } finally {
      await other.close()
    }
  })
})

describe("children", () => {
  it("the upstream child reports its URL, its CPU and memory, changes behaviour, and stops on SIGTERM", async () => {
    const child = spawnChild({
      name: "upstream",
      args: [new URL("../src/gateway/upstreamChild.ts", import.meta.url).pathname]
    })
    try {
      const url = await child.receive(readyUrl)
      const before = await child.probe()
      const ok = await fetch(`${url}/v1/chat/completions`, { method: "POST", body: requestBody("x", false) })
      assert.strictEqual(ok.status, 200)
      const acknowledged = child.receive((message) =>
        (message as { type?: unknown }).type === "behaviour-set" ? true : undefined
      )
      child.send({ type: "behaviour", id: 0, behaviour: { _tag: "Status", status: 503 } })
      await acknowledged
      const refused = await fetch(`${url}/v1/chat/completions`, { method: "POST", body: requestBody("y", false) })
      assert.strictEqual(refused.status, 503)
      const after = await child.probe({ gc: true })
      assert.isAbove(after.cpu.user + after.cpu.system, before.cpu.user + before.cpu.system)
      assert.isAbove(after.memory.rss, 0)
      assert.strictEqual(after.resources["TCPServerWrap"], 1)
    } finally {
      assert.strictEqual(await child.stop(), 0)
    }
  })
})
