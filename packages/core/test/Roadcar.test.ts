// Config to upstreams: what `Roadcar.makeUpstream` builds from an upstream's config, seen from a real
// HTTP server on loopback.

import * as Http from "node:http"
import { assert, describe, it } from "@effect/vitest"
import { Roadcar, RoadcarConfig } from "@roadcar/core"
import { Effect } from "effect"
import { FetchHttpClient } from "effect/http"

// A loopback server answering Anthropic's Messages API and OpenAI's chat completions, keeping each
// request's headers.
const server = Effect.acquireRelease(
  Effect.promise(async () => {
    const seen: Array<Http.IncomingHttpHeaders> = []
    const listener = Http.createServer((request, response) => {
      seen.push(request.headers)
      request.resume()
      request.on("end", () => {
        response.setHeader("content-type", "application/json")
        response.end(
          JSON.stringify(
            request.url?.endsWith("/messages")
              ? {
                  id: "msg_1",
                  type: "message",
                  role: "assistant",
                  model: "claude-x",
                  content: [{ type: "text", text: "hi" }],
                  stop_reason: "end_turn",
                  usage: { input_tokens: 1, output_tokens: 1 }
                }
              : {
                  id: "c1",
                  object: "chat.completion",
                  created: 0,
                  model: "m",
                  choices: [{ index: 0, message: { role: "assistant", content: "hi" }, finish_reason: "stop" }],
                  usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 }
                }
          )
        )
      })
    })
    await new Promise<void>((resolve) => listener.listen(0, "127.0.0.1", resolve))
    const { port } = listener.address() as { port: number }
    return { listener, seen, url: `http://127.0.0.1:${port}/v1` }
  }),
  ({ listener }) => Effect.promise(() => new Promise<void>((resolve) => listener.close(() => resolve())))
)

describe("Roadcar.makeUpstream", () => {
  it.live("sends an upstream's configured headers and names its provider, for every HTTP provider", () =>
    Effect.gen(function* () {
      const { seen, url } = yield* server
      process.env["ROADCAR_TEST_UPSTREAM_KEY"] = "sk-test-upstream"
      const config = yield* RoadcarConfig.decode({
        upstreams: {
          claude: {
            provider: "anthropic",
            model: "claude-x",
            apiKey: { env: "ROADCAR_TEST_UPSTREAM_KEY" },
            baseUrl: url,
            headers: { "anthropic-beta": "tools-2024", "x-extra": "1" },
            providerName: "my-anthropic"
          },
          local: {
            provider: "openai-compatible",
            model: "m",
            baseUrl: url,
            headers: { "x-extra": "2" },
            providerName: "my-oai"
          }
        }
      })
      const request = { model: "x", messages: [{ role: "user" as const, content: "hi" }] }
      for (const [name, extra, provider] of [
        ["claude", "1", "my-anthropic"],
        ["local", "2", "my-oai"]
      ] as const) {
        const upstream = yield* Roadcar.makeUpstream(name, config.upstreams![name]!)
        seen.length = 0
        yield* upstream.complete(request)
        assert.strictEqual(upstream.provider, provider)
        assert.strictEqual(seen[0]?.["x-extra"], extra, name)
      }
      const claude = yield* Roadcar.makeUpstream("claude", config.upstreams!["claude"]!)
      seen.length = 0
      yield* claude.complete(request)
      assert.strictEqual(seen[0]?.["anthropic-beta"], "tools-2024")
    }).pipe(Effect.scoped, Effect.provide(FetchHttpClient.layer), Effect.orDie)
  )
})
