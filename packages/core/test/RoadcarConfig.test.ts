import { assert, describe, it } from "@effect/vitest"
import { AlertSink, Breaker, Monitor, RateLimit, Roadcar, RoadcarConfig } from "@roadcar/core"
import { ConfigProvider, Context, Effect, Fiber, Layer, Option } from "effect"
import { FetchHttpClient } from "effect/http"
import { TestClock } from "effect/testing"

const problemsOf = (input: unknown) =>
  Effect.map(Effect.flip(RoadcarConfig.decode(input, "test.json")), (error) => error.problems)

describe("RoadcarConfig", () => {
  it.effect("accepts the empty config: one model, chat, on the simulated model", () =>
    Effect.gen(function* () {
      const config = yield* RoadcarConfig.decode({})
      assert.deepStrictEqual(Object.keys(RoadcarConfig.resolveModels(config)), ["chat"])
    })
  )

  it.effect("names the field, the value and the fix for every bad value", () =>
    Effect.gen(function* () {
      assert.deepStrictEqual(yield* problemsOf({ retry: { attempts: 0 } }), [
        "retry.attempts: expected a value between 1 and 10, got 0"
      ])
      assert.deepStrictEqual(yield* problemsOf({ timeouts: { total: "soon" } }), [
        'timeouts.total: use a duration such as "250 millis", "30 seconds" or "5 minutes", got "soon"'
      ])
      assert.deepStrictEqual(yield* problemsOf({ server: { port: "80" } }), ['server.port: expected number, got "80"'])
      const [provider] = yield* problemsOf({ upstreams: { x: { provider: "gemini", model: "m" } } })
      assert.match(provider!, /^upstreams\.x\.provider: expected one of "simulated" \| "openai".*got "gemini"$/)
    })
  )

  it.effect("refuses values the stages would reject at startup, naming the field, the value and the fix", () =>
    Effect.gen(function* () {
      const aboveZero = (field: string) =>
        `${field}: must be above 0; use a duration such as "250 millis", "30 seconds" or "5 minutes", got "0 millis"`
      const share = (field: string, value: number) =>
        `${field}: expected a share of requests from 0 up to but not including 1 (e.g. 0.2 for 20%), or false to turn the rule off, got ${value}`
      assert.deepStrictEqual(yield* problemsOf({ monitor: { errorRate: 1, fallbackRate: 1 } }), [
        share("monitor.errorRate", 1),
        share("monitor.fallbackRate", 1)
      ])
      assert.deepStrictEqual(yield* problemsOf({ monitor: { errorRate: -0.1 } }), [share("monitor.errorRate", -0.1)])
      assert.deepStrictEqual(yield* problemsOf({ monitor: { window: "0 millis" } }), [aboveZero("monitor.window")])
      assert.deepStrictEqual(
        yield* problemsOf({ alerts: { webhook: { url: { env: "HOOK" }, timeout: "0 millis" } } }),
        [aboveZero("alerts.webhook.timeout")]
      )
      assert.deepStrictEqual(
        yield* problemsOf({
          timeouts: { attempt: "0 millis", firstChunk: "0 millis", chunkGap: "0 millis", total: "0 millis" }
        }),
        ["timeouts.attempt", "timeouts.firstChunk", "timeouts.chunkGap", "timeouts.total"].map(aboveZero)
      )
      for (const coolDown of ["0 millis", "999 millis"]) {
        assert.deepStrictEqual(yield* problemsOf({ monitor: { coolDown } }), [
          `monitor.coolDown: must be at least 1 second (a rule raises at most once per cool-down and the monitor checks every second, so a shorter one repeats an alert at every check); use a duration such as "1 minute" or "5 minutes", got "${coolDown}"`
        ])
      }
      assert.deepStrictEqual(
        yield* problemsOf({ breaker: { failureRate: { threshold: 0.5, window: 5, minimumCalls: 10 } } }),
        [
          "breaker.failureRate.minimumCalls: 10 is more than breaker.failureRate.window (5), the number of recent calls the failure rate is computed over, so the rate could never be reached; set minimumCalls to at most 5 or window to at least 10"
        ]
      )
      assert.deepStrictEqual(yield* problemsOf({ breaker: { openDuration: "10 minutes" } }), [
        'breaker.openDuration: "10 minutes" is longer than breaker.maxOpenDuration (the default, "5 minutes"), the longest a circuit stays open, so it would be cut to that; set maxOpenDuration to at least "10 minutes" or openDuration to at most "5 minutes"'
      ])
      yield* RoadcarConfig.decode({ breaker: { openDuration: "10 minutes", maxOpenDuration: "10 minutes" } })
      // The limits themselves are accepted, and still a bad duration says only what a duration is.
      yield* RoadcarConfig.decode({
        monitor: { errorRate: 0, fallbackRate: 0.99, window: "1 millis", coolDown: "1 second" },
        timeouts: { attempt: "1 millis" },
        breaker: { failureRate: { threshold: 1, window: 5, minimumCalls: 5 } },
        alerts: { webhook: { url: { env: "HOOK" }, timeout: "1 millis" } }
      })
      assert.deepStrictEqual(yield* problemsOf({ monitor: { coolDown: "soon" } }), [
        'monitor.coolDown: use a duration such as "250 millis", "30 seconds" or "5 minutes", got "soon"'
      ])
    })
  )

  it.effect("builds the stages of every config it accepts at the limits", () =>
    Effect.gen(function* () {
      const config = yield* RoadcarConfig.decode({
        monitor: { errorRate: 0.99, fallbackRate: 0, window: "1 millis", coolDown: "1 second" },
        breaker: { failureRate: { threshold: 1, window: 5, minimumCalls: 5 } }
      })
      const stages = yield* Layer.build(Roadcar.layerStages(config, { sink: AlertSink.layerLog }))
      assert.isTrue(Option.isSome(Context.getOption(stages, Monitor.Monitor)))
      assert.isTrue(Option.isSome(Context.getOption(stages, Breaker.Breaker)))
    }).pipe(Effect.scoped, Effect.provide(FetchHttpClient.layer))
  )

  it.effect("suggests the field meant by an unknown one", () =>
    Effect.gen(function* () {
      const [problem] = yield* problemsOf({ retry: { attemps: 2 } })
      assert.match(
        problem!,
        /^retry\.attemps: unknown field; did you mean "attempts"\? Allowed here: attempts, baseDelay/
      )
      const [top] = yield* problemsOf({ modles: {} })
      assert.match(top!, /^modles: unknown field; did you mean "models"\?/)
    })
  )

  it.effect("checks references between sections", () =>
    Effect.gen(function* () {
      const problems = yield* problemsOf({
        upstreams: {
          claude: { provider: "anthropic", model: "claude-x" },
          local: { provider: "openai-compatible", model: "m" }
        },
        models: { chat: { upstream: "claud", fallbacks: [{ upstream: "nope" }] } },
        keys: [
          { name: "a", sha256: "0".repeat(64), models: ["chta"] },
          { name: "a", sha256: "1".repeat(64) }
        ]
      })
      assert.deepStrictEqual(problems, [
        'models.chat.upstream: "claud" is not a configured upstream; did you mean "claude"? use one of: claude, local, simulated (or add it under "upstreams")',
        'models.chat.fallbacks[0].upstream: "nope" is not a configured upstream; use one of: claude, local, simulated (or add it under "upstreams")',
        'keys[0].models[0]: "chta" is not a configured model; use one of: chat',
        'keys[1].name: "a" is used twice; key names must be unique',
        'upstreams.claude.apiKey: required for provider "anthropic", e.g. { "env": "ANTHROPIC_API_KEY" }',
        'upstreams.local.baseUrl: required for provider "openai-compatible" (e.g. "http://127.0.0.1:11434/v1" for Ollama)'
      ])
      assert.deepStrictEqual(
        yield* problemsOf({ upstreams: { sim: { provider: "simulated", providerName: "x", headers: { a: "b" } } } }),
        [
          'upstreams.sim.providerName: not for provider "simulated" (it makes no HTTP calls); remove it',
          'upstreams.sim.headers: not for provider "simulated" (it makes no HTTP calls); remove it'
        ]
      )
    })
  )

  it.effect("reports every problem at once, and JSON syntax errors", () =>
    Effect.gen(function* () {
      assert.strictEqual(
        (yield* problemsOf({ retry: { attempts: 0, jitter: "yes" }, cache: { capacity: -1 } })).length,
        3
      )
      const error = yield* Effect.flip(RoadcarConfig.decodeJson("{ retry: 1 }", "roadcar.config.json"))
      assert.match(error.message, /^invalid configuration in roadcar\.config\.json:\n {2}- not valid JSON/)
    })
  )
})

describe("Roadcar", () => {
  const config = {
    upstreams: {
      flaky: {
        provider: "simulated",
        model: "flaky-1",
        faults: { failFirst: 5, kinds: [{ kind: "unavailable", status: 503 }] }
      },
      steady: { provider: "simulated", model: "steady-1" },
      openai: { provider: "openai", model: "gpt-4o-mini", apiKey: { env: "ROADCAR_TEST_OPENAI_KEY" } }
    },
    models: {
      chat: { upstream: "flaky", fallbacks: [{ upstream: "steady" }] },
      safe: { upstream: "flaky", staticAnswer: "Please try again." }
    },
    retry: { jitter: false, baseDelay: "10 millis" }
  }

  it.effect("builds one pipeline per public model with its fallback chain", () =>
    Effect.gen(function* () {
      const decoded = yield* RoadcarConfig.decode(config)
      const roadcar = yield* Roadcar.make(decoded)
      assert.deepStrictEqual([...roadcar.models.keys()], ["chat", "safe"])
      assert.deepStrictEqual([...roadcar.upstreams.keys()], ["simulated", "flaky", "steady", "openai"])
      const fiber = yield* Effect.forkChild(
        roadcar.models.get("chat")!.complete({ model: "chat", messages: [{ role: "user", content: "hi" }] })
      )
      yield* TestClock.adjust("1 second")
      const answer = yield* Fiber.join(fiber)
      assert.strictEqual(answer.meta.upstream, "steady")
      assert.strictEqual(answer.response.model, "steady-1")
    }).pipe(
      Effect.scoped,
      Effect.provide(Roadcar.layerStages({}).pipe(Layer.provideMerge(FetchHttpClient.layer))),
      Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env: { ROADCAR_TEST_OPENAI_KEY: "sk-test" } })))
    )
  )

  it.effect("names a missing secret's environment variable", () =>
    Effect.gen(function* () {
      const decoded = yield* RoadcarConfig.decode(config)
      const error = yield* Effect.flip(Roadcar.make(decoded))
      assert.deepStrictEqual(error.problems, [
        "upstreams.openai.apiKey: the environment variable ROADCAR_TEST_OPENAI_KEY is not set; export it before starting"
      ])
    }).pipe(
      Effect.scoped,
      Effect.provide(Roadcar.layerStages({}).pipe(Layer.provideMerge(FetchHttpClient.layer))),
      Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env: {} })))
    )
  )

  it.effect("names a missing webhook secret, and builds the webhook sink when it is set", () =>
    Effect.gen(function* () {
      const config = yield* RoadcarConfig.decode({ alerts: { webhook: { url: { env: "ROADCAR_TEST_WEBHOOK" } } } })
      const missing = yield* Effect.flip(
        Layer.build(Roadcar.layerAlertSink(config)).pipe(
          Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env: {} })))
        )
      )
      assert.deepStrictEqual(missing.problems, [
        "alerts.webhook.url: the environment variable ROADCAR_TEST_WEBHOOK is not set; export it before starting"
      ])
      const built = yield* Layer.build(Roadcar.layerAlertSink(config)).pipe(
        Effect.provide(
          ConfigProvider.layer(ConfigProvider.fromEnv({ env: { ROADCAR_TEST_WEBHOOK: "http://127.0.0.1:9/hook" } }))
        )
      )
      assert.isTrue(Option.isSome(Context.getOption(built, AlertSink.AlertSink)))
    }).pipe(Effect.scoped, Effect.provide(FetchHttpClient.layer))
  )

  it.effect("keeps at most rateLimit.maxKeys rate-limit keys in memory, the least recently used dropped", () =>
    Effect.gen(function* () {
      assert.deepStrictEqual(yield* problemsOf({ rateLimit: { maxKeys: 0 } }), [
        "rateLimit.maxKeys: expected a value greater than 0, got 0"
      ])
      const config = yield* RoadcarConfig.decode({
        rateLimit: { maxKeys: 2, rules: [{ by: "user", requests: { limit: 1, window: "1 minute" } }] }
      })
      const stages = yield* Layer.build(Roadcar.layerStages(config, { sink: AlertSink.layerLog }))
      const rateLimit = Context.get(stages, RateLimit.RateLimit)
      const admits = (user: string) =>
        Effect.isSuccess(rateLimit.admit({ model: "chat", messages: [{ role: "user", content: "hi" }] }, { user }))
      assert.deepStrictEqual([yield* admits("a"), yield* admits("a"), yield* admits("b")], [true, false, true])
      // A third user evicts `a` (least recently used): its window starts again.
      assert.isTrue(yield* admits("c"))
      assert.isTrue(yield* admits("a"))
    }).pipe(Effect.scoped, Effect.provide(FetchHttpClient.layer))
  )

  it("collects each key's own rate limits after the global ones", () => {
    const rules = Roadcar.rateLimitRules({
      rateLimit: { rules: [{ by: "global", requests: { limit: 100, window: "1 minute" } }] },
      keys: [
        {
          name: "team-a",
          sha256: "0".repeat(64),
          rateLimit: [{ by: "key", tokens: { limit: 1000, window: "1 minute" } }]
        }
      ]
    })
    assert.deepStrictEqual(rules, [
      { by: "global", requests: { limit: 100, window: "1 minute" } },
      { by: "key", tokens: { limit: 1000, window: "1 minute" }, forKey: "team-a" }
    ])
  })
})
