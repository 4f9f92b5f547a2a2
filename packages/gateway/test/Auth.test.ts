import { assert, describe, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import { HttpServerRequest } from "effect/http"
import { ApiKeys, Gateway } from "../src/index.ts"
import { apiError, captureLogs, chatBody, client, rejection, startGateway } from "./utils.ts"

const teamKey = "sk-roadcar-team-a-0123456789"
const internKey = "sk-roadcar-intern-9876543210"

const keyedConfig = {
  models: { chat: { upstream: "simulated" }, premium: { upstream: "simulated" } },
  keys: [
    { name: "team-a", sha256: ApiKeys.hash(teamKey) },
    { name: "intern", sha256: ApiKeys.hash(internKey), models: ["chat"] }
  ]
}

describe("ApiKeys", () => {
  it("hashes keys to the SHA-256 hex digest the config stores", () => {
    assert.strictEqual(ApiKeys.hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
  })

  it("finds the configured key, and no other", () => {
    const keys = ApiKeys.make(keyedConfig.keys)
    assert.isTrue(keys.configured)
    assert.strictEqual(keys.authenticate(teamKey)?.name, "team-a")
    assert.strictEqual(keys.authenticate(internKey)?.name, "intern")
    assert.isUndefined(keys.authenticate("sk-roadcar-team-a-012345678"))
    assert.isUndefined(keys.authenticate(""))
    assert.isFalse(ApiKeys.make([]).configured)
  })

  it("reads bearer tokens and recognises loopback peers", () => {
    assert.strictEqual(ApiKeys.bearerToken("Bearer abc"), "abc")
    assert.strictEqual(ApiKeys.bearerToken("bearer   abc  "), "abc")
    assert.isUndefined(ApiKeys.bearerToken("Basic abc"))
    assert.isUndefined(ApiKeys.bearerToken("Bearer a b"))
    assert.isUndefined(ApiKeys.bearerToken(undefined))
    for (const address of ["127.0.0.1", "127.3.2.1", "::1", "::ffff:127.0.0.1"]) {
      assert.isTrue(ApiKeys.isLoopback(address), address)
    }
    for (const address of ["10.0.0.1", "::ffff:10.0.0.1", "192.168.1.127", "fe80::1", "1127.0.0.1", undefined]) {
      assert.isFalse(ApiKeys.isLoopback(address), String(address))
    }
  })

  it("allows a key without a model list every model", () => {
    const [team, intern] = keyedConfig.keys
    assert.isTrue(ApiKeys.allows(team, "premium"))
    assert.isTrue(ApiKeys.allows(intern, "chat"))
    assert.isFalse(ApiKeys.allows(intern, "premium"))
    assert.isTrue(ApiKeys.allows(undefined, "premium"))
  })
})

describe("Gateway.authorize", () => {
  const request = (remoteAddress: string, authorization?: string) =>
    HttpServerRequest.fromWeb(
      new Request("http://gateway.test/v1/models", {
        headers: authorization === undefined ? {} : { authorization }
      })
    ).modify({ remoteAddress: Option.some(remoteAddress) })

  it.effect("without keys: serves loopback callers and refuses others with a 401 that says how to add keys", () =>
    Effect.gen(function* () {
      const keys = ApiKeys.make([])
      assert.isUndefined(yield* Gateway.authorize(keys, request("127.0.0.1")))
      assert.isUndefined(yield* Gateway.authorize(keys, request("::1", "Bearer anything")))
      const refused = yield* Effect.flip(Gateway.authorize(keys, request("10.1.2.3")))
      assert.strictEqual(refused.status, 401)
      assert.strictEqual(refused.code, "no_keys_configured")
      assert.include(refused.message, "roadcar hash-key")
    })
  )

  it.effect("with keys: requires a configured key, from loopback too", () =>
    Effect.gen(function* () {
      const keys = ApiKeys.make(keyedConfig.keys)
      assert.strictEqual((yield* Gateway.authorize(keys, request("10.1.2.3", `Bearer ${teamKey}`)))?.name, "team-a")
      assert.strictEqual((yield* Effect.flip(Gateway.authorize(keys, request("127.0.0.1")))).code, "missing_api_key")
      const wrong = yield* Effect.flip(Gateway.authorize(keys, request("127.0.0.1", "Bearer sk-nope")))
      assert.strictEqual(wrong.code, "invalid_api_key")
      assert.notInclude(wrong.message, "sk-nope")
    })
  )
})

describe("virtual keys over HTTP", () => {
  it.live("401 without or with an unknown key, 403 for a model the key may not use, 200 otherwise", () => {
    const logs = captureLogs()
    return Effect.gen(function* () {
      const { url } = yield* startGateway(keyedConfig)
      const missing = yield* Effect.promise(() =>
        fetch(`${url}/v1/chat/completions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(chatBody())
        })
      )
      assert.strictEqual(missing.status, 401)
      assert.strictEqual((yield* Effect.promise(() => missing.json())).error.code, "missing_api_key")

      const unknown = apiError(
        yield* rejection(() => client(url, "sk-not-a-key-at-all").chat.completions.create(chatBody()))
      )
      assert.strictEqual(unknown.status, 401)
      assert.strictEqual(unknown.type, "authentication_error")

      const forbidden = apiError(
        yield* rejection(() => client(url, internKey).chat.completions.create(chatBody("hi", "premium")))
      )
      assert.strictEqual(forbidden.status, 403)
      assert.strictEqual(forbidden.code, "model_not_allowed")

      // An unknown model's 404 names the models this key may use, not the others.
      const missingModel = apiError(
        yield* rejection(() => client(url, internKey).chat.completions.create(chatBody("hi", "gpt-9")))
      )
      assert.strictEqual(missingModel.status, 404)
      assert.include(missingModel.message, "Available models: chat.")
      assert.notInclude(missingModel.message, "premium")

      const ok = yield* Effect.promise(() => client(url, internKey).chat.completions.create(chatBody("hi", "chat")))
      assert.include(ok.choices[0]?.message.content ?? "", "hi")
      const premium = yield* Effect.promise(() =>
        client(url, teamKey).chat.completions.create(chatBody("hi", "premium"))
      )
      assert.include(premium.choices[0]?.message.content ?? "", "hi")

      // /v1/models lists what the key may use.
      const internModels = yield* Effect.promise(() => client(url, internKey).models.list())
      assert.deepStrictEqual(
        internModels.data.map((model) => model.id),
        ["chat"]
      )
      const teamModels = yield* Effect.promise(() => client(url, teamKey).models.list())
      assert.deepStrictEqual(
        teamModels.data.map((model) => model.id),
        ["chat", "premium"]
      )
      const anonymous = yield* Effect.promise(() =>
        fetch(`${url}/v1/models`, { headers: { "x-request-id": "list-1" } })
      )
      assert.strictEqual(anonymous.status, 401)
      assert.strictEqual(anonymous.headers.get("x-request-id"), "list-1")

      // The request log names the key; no line ever holds a key. Every request has one request line,
      // the refused ones too (with the status and code they were answered with), a refused listing too.
      const requestLines = logs.lines.filter((line) => line.includes('"message":"request"'))
      assert.strictEqual(requestLines.length, 7)
      assert.isTrue(requestLines.some((line) => line.includes('"key":"intern"')))
      assert.isTrue(requestLines.some((line) => line.includes('"key":"team-a"')))
      const refusals = requestLines
        .map((line) => JSON.parse(line) as { level: string; annotations: Record<string, unknown> })
        .filter((line) => line.annotations["status"] === "refused")
      assert.deepStrictEqual(
        refusals.map(({ annotations, level }) => [
          level,
          annotations["key"],
          annotations["model"],
          annotations["http_status"],
          annotations["code"]
        ]),
        [
          ["WARN", null, null, 401, "missing_api_key"],
          ["WARN", null, null, 401, "invalid_api_key"],
          ["WARN", "intern", "premium", 403, "model_not_allowed"],
          ["WARN", "intern", "gpt-9", 404, "model_not_found"],
          ["WARN", undefined, undefined, 401, "missing_api_key"]
        ]
      )
      assert.strictEqual(refusals[4]?.annotations["route"], "GET /v1/models")
      assert.strictEqual(refusals[4]?.annotations["request_id"], "list-1")
      for (const line of logs.lines) {
        assert.notInclude(line, teamKey)
        assert.notInclude(line, internKey)
        assert.notInclude(line, "sk-not-a-key-at-all")
      }
    }).pipe(Effect.provide(logs.layer))
  })

  it.live("without keys, a loopback caller needs no key and the start log warns about it", () => {
    const logs = captureLogs()
    return Effect.gen(function* () {
      const { url } = yield* startGateway({})
      const answer = yield* Effect.promise(() => client(url, "anything").chat.completions.create(chatBody("hey")))
      assert.include(answer.choices[0]?.message.content ?? "", "hey")
      assert.isTrue(logs.lines.some((line) => line.includes("roadcar gateway listening")))
      assert.isTrue(logs.lines.some((line) => line.includes("no API keys configured") && line.includes('"WARN"')))
    }).pipe(Effect.provide(logs.layer))
  })
})
