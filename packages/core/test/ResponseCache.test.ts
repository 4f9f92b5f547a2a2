import { assert, describe, it } from "@effect/vitest"
import { type ChatCompletion, ResponseCache } from "@roadcar/core"
import { Duration, Effect, Fiber, Option, References, Schema } from "effect"
import { TestClock } from "effect/testing"
import { request, response } from "./utils/Scripted.ts"

const key = ResponseCache.canonicalKey
const entry = (text: string): ResponseCache.Entry => ({ response: response("m", text), upstream: "m", cacheable: true })

describe("ResponseCache", () => {
  describe("canonicalKey", () => {
    it.prop(
      "ignores what does not shape the answer",
      { content: Schema.String, user: Schema.String, pad: Schema.Literals(["", " ", "\n", "\t "]) },
      ({ content, user, pad }) => {
        const plain = request(content)
        const noisy: ChatCompletion.ChatRequest = {
          stream: true,
          stream_options: { include_usage: true },
          user,
          metadata: { trace: user },
          messages: [{ content: `${pad}${content}${pad}`, role: "user" }],
          model: "chat",
          n: 1
        }
        assert.strictEqual(key(noisy), key(plain))
      }
    )

    it.prop(
      "distinguishes everything that shapes the answer",
      {
        content: Schema.String,
        field: Schema.Literals([
          "model",
          "temperature",
          "top_p",
          "seed",
          "max_tokens",
          "stop",
          "tools",
          "tool_choice",
          "response_format",
          "system",
          "presence_penalty"
        ])
      },
      ({ content, field }) => {
        const base = request(content)
        const changes: Record<typeof field, ChatCompletion.ChatRequest> = {
          model: { ...base, model: "other" },
          temperature: { ...base, temperature: 0.7 },
          top_p: { ...base, top_p: 0.5 },
          seed: { ...base, seed: 42 },
          max_tokens: { ...base, max_tokens: 10 },
          stop: { ...base, stop: ["\n"] },
          tools: { ...base, tools: [{ type: "function", function: { name: "f" } }] },
          tool_choice: { ...base, tool_choice: "required" },
          response_format: { ...base, response_format: { type: "json_object" } },
          system: { ...base, messages: [{ role: "system", content: "be brief" }, ...base.messages] },
          presence_penalty: { ...base, presence_penalty: 1 }
        }
        assert.notStrictEqual(key(changes[field]), key(base))
      }
    )

    it("treats max_completion_tokens as max_tokens and orders object keys", () => {
      assert.strictEqual(key(request("a", { max_tokens: 5 })), key(request("a", { max_completion_tokens: 5 })))
      // Both set: the upstream is asked for max_completion_tokens, and so the key says.
      const both = key(request("a", { max_completion_tokens: 1000, max_tokens: 10 }))
      assert.strictEqual(both, key(request("a", { max_completion_tokens: 1000 })))
      assert.notStrictEqual(both, key(request("a", { max_tokens: 10 })))
      assert.strictEqual(
        key(request("a", { response_format: { type: "json_schema", json_schema: { name: "x", strict: true } } })),
        key(request("a", { response_format: { json_schema: { strict: true, name: "x" }, type: "json_schema" } }))
      )
    })
  })

  it.effect("expires entries after the time to live", () =>
    Effect.gen(function* () {
      const cache = yield* ResponseCache.ResponseCache
      let computed = 0
      const compute = Effect.sync(() => {
        computed++
        return entry(`v${computed}`)
      })
      assert.isFalse((yield* cache.lookup(request(), compute)).hit)
      assert.isTrue((yield* cache.lookup(request(), compute)).hit)
      yield* TestClock.adjust("61 seconds")
      const again = yield* cache.lookup(request(), compute)
      assert.isFalse(again.hit)
      assert.strictEqual(again.entry.response.choices[0]?.message.content, "v2")
    }).pipe(Effect.provide(ResponseCache.layer({ capacity: 10, timeToLive: "1 minute" })))
  )

  it.effect("keeps at most `capacity` entries, dropping the least recently used", () =>
    Effect.gen(function* () {
      const cache = yield* ResponseCache.ResponseCache
      for (const text of ["a", "b", "c"]) yield* cache.lookup(request(text), Effect.succeed(entry(text)))
      yield* cache.lookup(request("a"), Effect.succeed(entry("a"))) // touch a
      yield* cache.lookup(request("d"), Effect.succeed(entry("d")))
      assert.strictEqual(yield* cache.size, 3)
      assert.isTrue((yield* cache.lookup(request("a"), Effect.succeed(entry("a2")))).hit)
      assert.isFalse((yield* cache.lookup(request("b"), Effect.succeed(entry("b2")))).hit)
    }).pipe(Effect.provide(ResponseCache.layer({ capacity: 3, timeToLive: "1 hour" })))
  )

  it.effect("does not keep failures or uncacheable entries", () =>
    Effect.gen(function* () {
      const cache = yield* ResponseCache.ResponseCache
      yield* Effect.flip(cache.lookup(request(), Effect.fail("boom")))
      yield* cache.lookup(request(), Effect.succeed({ ...entry("static"), cacheable: false }))
      assert.isFalse((yield* cache.lookup(request(), Effect.succeed(entry("real")))).hit)
      assert.isTrue((yield* cache.lookup(request(), Effect.succeed(entry("other")))).hit)
    }).pipe(Effect.provide(ResponseCache.layer()))
  )

  it.effect("identical requests in flight share one call; when its caller is interrupted, a waiter makes its own", () =>
    Effect.gen(function* () {
      const cache = yield* ResponseCache.ResponseCache
      const leader = yield* Effect.forkChild(cache.lookup(request("shared"), Effect.never))
      yield* Effect.yieldNow
      const follower = yield* Effect.forkChild(cache.lookup(request("shared"), Effect.succeed(entry("own"))))
      yield* Effect.yieldNow
      yield* Fiber.interrupt(leader)
      const taken = yield* Fiber.join(follower)
      assert.isFalse(taken.hit, "the waiter ran its own call")
      assert.strictEqual(taken.entry.response.choices[0]!.message.content, "own")
      const later = yield* cache.lookup(request("shared"), Effect.succeed(entry("unused")))
      assert.isTrue(later.hit)
      assert.strictEqual(later.entry.response.choices[0]!.message.content, "own")
    }).pipe(Effect.provide(ResponseCache.layer()))
  )

  it.effect("a caller interrupted at any step never leaves a call registered that nobody completes", () =>
    Effect.gen(function* () {
      // The runtime yields after every operation here, and the caller is interrupted after 0, 1, 2, ...
      // yields: whichever step it is at, a later identical request is answered, not left waiting.
      for (let steps = 0; steps < 12; steps++) {
        const cache = yield* ResponseCache.make({ capacity: 10, timeToLive: "1 minute" })
        const caller = yield* Effect.forkChild(
          cache.lookup(request("shared"), Effect.never).pipe(Effect.provideService(References.MaxOpsBeforeYield, 1)),
          { startImmediately: false }
        )
        for (let i = 0; i < steps; i++) yield* Effect.yieldNow
        yield* Fiber.interrupt(caller)
        const later = yield* Effect.forkChild(cache.lookup(request("shared"), Effect.succeed(entry("later"))))
        for (let i = 0; i < 5 && later.pollUnsafe() === undefined; i++) yield* Effect.yieldNow
        const exit = later.pollUnsafe()
        assert.isDefined(exit, `a request after the caller was interrupted at step ${steps} was left waiting`)
        assert.strictEqual((yield* Fiber.join(later)).entry.response.choices[0]!.message.content, "later")
      }
    })
  )

  it.effect("an entry in the shared store marked not cacheable is never served", () =>
    Effect.gen(function* () {
      const shared = yield* ResponseCache.ResponseCacheStore
      const cache = yield* ResponseCache.make({ capacity: 10, timeToLive: "1 minute" })
      // Written by some other writer (our own never stores these).
      yield* shared.set(
        ResponseCache.storeKey(request("foreign")),
        { ...entry("static"), cacheable: false },
        Duration.minutes(1)
      )
      assert.isTrue(Option.isNone(yield* cache.peek(request("foreign"))))
      const looked = yield* cache.lookup(request("foreign"), Effect.succeed(entry("computed")))
      assert.isFalse(looked.hit)
      assert.strictEqual(looked.entry.response.choices[0]!.message.content, "computed")
    }).pipe(Effect.provide(ResponseCache.layerStoreMemory))
  )

  it.effect("with a shared store, an answer cached by one instance is a hit on another", () =>
    Effect.gen(function* () {
      const a = yield* ResponseCache.make({ capacity: 10, timeToLive: "1 minute" })
      const b = yield* ResponseCache.make({ capacity: 10, timeToLive: "1 minute" })
      let computed = 0
      const compute = Effect.sync(() => {
        computed++
        return entry(`v${computed}`)
      })
      assert.isFalse((yield* a.lookup(request("shared"), compute)).hit)
      const onB = yield* b.lookup(request("shared"), compute)
      assert.isTrue(onB.hit)
      assert.strictEqual(onB.entry.response.choices[0]?.message.content, "v1")
      assert.strictEqual(computed, 1)
      yield* a.store(request("streamed"), entry("s"))
      assert.isTrue(Option.isSome(yield* b.peek(request("streamed"))))
      yield* TestClock.adjust("61 seconds")
      assert.isFalse((yield* b.lookup(request("shared"), compute)).hit, "the shared entry expired too")
    }).pipe(Effect.provide(ResponseCache.layerStoreMemory))
  )

  it.effect("a failing shared store is skipped: the request is computed", () =>
    Effect.gen(function* () {
      const cache = yield* ResponseCache.make({ capacity: 10, timeToLive: "1 minute" })
      const looked = yield* cache.lookup(request("x"), Effect.succeed(entry("computed")))
      assert.isFalse(looked.hit)
      assert.strictEqual(looked.entry.response.choices[0]?.message.content, "computed")
    }).pipe(
      Effect.provideService(ResponseCache.ResponseCacheStore, {
        get: () => Effect.fail(new ResponseCache.ResponseCacheStoreError({ detail: "down" })),
        set: () => Effect.fail(new ResponseCache.ResponseCacheStoreError({ detail: "down" }))
      })
    )
  )
})
