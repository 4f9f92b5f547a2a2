/**
 * Two gateway replicas sharing state through the real Redis at REDIS_URL: rate limits, the response
 * cache, breakers and budgets hold across both; a dead Redis follows the configured fault policy.
 */
import { randomUUID } from "node:crypto"
import { assert, describe, it } from "@effect/vitest"
import { Behaviour, FakeUpstream } from "@roadcar/testing"
import { ConfigProvider, Effect } from "effect"
import { ApiKeys } from "../src/index.ts"
import { chatBody, fakeConfig, post, quiet, startGateway } from "./utils.ts"

const redisUrl = process.env["REDIS_URL"]
const key = "sk-replica-test-key"

const sharedConfig = (upstreamUrl: string, overrides: Record<string, unknown>) =>
  fakeConfig(
    { upstream: { url: upstreamUrl } },
    { chat: { upstream: "upstream" } },
    {
      redis: { prefix: `roadcar-test:${randomUUID()}:` },
      stores: { rateLimit: "redis", breaker: "redis", cache: "redis", budget: "redis" },
      keys: [{ name: "team-a", sha256: ApiKeys.hash(key) }],
      ...overrides
    }
  )

interface Answer {
  readonly choices?: ReadonlyArray<unknown>
  readonly usage?: { readonly total_tokens: number }
  readonly error?: { readonly code: string; readonly message: string }
}

const ask = (url: string, content: string, extra: Record<string, unknown> = {}) =>
  Effect.promise(async () => {
    const response = await post(url, JSON.stringify({ ...chatBody(content), ...extra }), {
      authorization: `Bearer ${key}`
    })
    return { status: response.status, headers: response.headers, body: (await response.json()) as Answer }
  })

describe.skipIf(redisUrl === undefined)("replicas sharing Redis", () => {
  it.live("of N concurrent requests spread over two replicas, exactly the limit is admitted", () =>
    Effect.gen(function* () {
      const upstream = yield* FakeUpstream.make()
      const config = sharedConfig(upstream.url, {
        rateLimit: { rules: [{ by: "key", requests: { limit: 7, window: "1 minute" } }] },
        cache: { enabled: false }
      })
      const a = yield* startGateway(config)
      const b = yield* startGateway(config)
      const answers = yield* Effect.all(
        Array.from({ length: 20 }, (_, i) => ask(i % 2 === 0 ? a.url : b.url, `q${i}`)),
        { concurrency: "unbounded" }
      )
      assert.strictEqual(answers.filter((answer) => answer.status === 200).length, 7)
      const refused = answers.filter((answer) => answer.status === 429)
      assert.strictEqual(refused.length, 13)
      assert.isNotNull(refused[0]!.headers.get("retry-after"))
    }).pipe(Effect.scoped, quiet)
  )

  it.live("an answer cached by one replica is a hit on the other", () =>
    Effect.gen(function* () {
      const upstream = yield* FakeUpstream.make()
      const config = sharedConfig(upstream.url, { cache: { enabled: true } })
      const a = yield* startGateway(config)
      const b = yield* startGateway(config)
      const first = yield* ask(a.url, "shared question")
      assert.strictEqual(first.headers.get("x-roadcar-cache"), "miss")
      const second = yield* ask(b.url, "shared question")
      assert.strictEqual(second.headers.get("x-roadcar-cache"), "hit")
      assert.deepStrictEqual(second.body.choices, first.body.choices)
      assert.strictEqual((yield* upstream.attempts).length, 1)
    }).pipe(Effect.scoped, quiet)
  )

  it.live("a breaker opened through one replica makes the other fail fast", () =>
    Effect.gen(function* () {
      const upstream = yield* FakeUpstream.make({ behaviour: Behaviour.status(503) })
      const config = sharedConfig(upstream.url, {
        retry: { attempts: 1 },
        breaker: { consecutiveFailures: 2, openDuration: "30 seconds" },
        cache: { enabled: false }
      })
      const a = yield* startGateway(config)
      const b = yield* startGateway(config)
      yield* ask(a.url, "one")
      yield* ask(a.url, "two")
      const seen = (yield* upstream.attempts).length
      const onB = yield* ask(b.url, "three")
      assert.strictEqual(onB.status, 503)
      assert.strictEqual((yield* upstream.attempts).length, seen, "replica B did not call the open upstream")
    }).pipe(Effect.scoped, quiet)
  )

  it.live("a spent budget is a 429 that says which budget and when it resets, on every replica", () =>
    Effect.gen(function* () {
      const upstream = yield* FakeUpstream.make()
      const config = sharedConfig(upstream.url, {
        budgets: { rules: [{ key: "team-a", per: "day", tokens: 120 }] },
        cache: { enabled: false }
      })
      const a = yield* startGateway(config)
      const b = yield* startGateway(config)
      // Each request reserves its prompt estimate plus max_tokens, and is settled with its real usage.
      let spent = 0
      let refused: Answer | undefined
      for (let i = 0; i < 40 && refused === undefined; i++) {
        const answer = yield* ask(i % 2 === 0 ? a.url : b.url, `spend ${i}`, { max_tokens: 20 })
        if (answer.status === 200) spent += answer.body.usage?.total_tokens ?? 0
        else if (answer.status === 429) refused = answer.body
        else assert.fail(`unexpected status ${answer.status}`)
      }
      assert.isDefined(refused, "the budget ran out")
      assert.isAtMost(spent, 120, "the replicas together never spent more than the budget")
      assert.strictEqual(refused?.error?.code, "budget_exceeded")
      assert.match(refused?.error?.message ?? "", /tokens per day for key team-a.*resets at \d{4}-\d{2}-\d{2}T00:00:00/)
    }).pipe(Effect.scoped, quiet)
  )

  it.live("with Redis down, a fail-closed rate limit answers 503 at once and a fail-open one serves", () =>
    Effect.gen(function* () {
      const upstream = yield* FakeUpstream.make()
      const rules = { rules: [{ by: "key", requests: { limit: 100, window: "1 minute" } }] }
      const closed = yield* startGateway(
        sharedConfig(upstream.url, {
          rateLimit: rules,
          redis: { url: { env: "DEAD_REDIS" }, policies: { rateLimit: "fail-closed" }, commandTimeout: "100 millis" },
          stores: { rateLimit: "redis" }
        }),
        { env: {} }
      ).pipe(
        Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env: { DEAD_REDIS: "redis://127.0.0.1:1" } })))
      )
      const started = Date.now()
      const refused = yield* ask(closed.url, "x")
      assert.strictEqual(refused.status, 503)
      assert.strictEqual(refused.body.error?.code, "store_unavailable")
      assert.isBelow(Date.now() - started, 2000)
      assert.strictEqual((yield* upstream.attempts).length, 0)

      const open = yield* startGateway(
        sharedConfig(upstream.url, {
          rateLimit: rules,
          redis: { url: { env: "DEAD_REDIS" }, policies: { rateLimit: "fail-open" }, commandTimeout: "100 millis" },
          stores: { rateLimit: "redis" }
        }),
        { env: {} }
      ).pipe(
        Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env: { DEAD_REDIS: "redis://127.0.0.1:1" } })))
      )
      const served = yield* ask(open.url, "y")
      assert.strictEqual(served.status, 200)
    }).pipe(Effect.scoped, quiet)
  )
})
