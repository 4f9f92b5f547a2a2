/**
 * Test helpers: a gateway in front of a fake upstream, an `openai` client, log capture.
 */
import { RoadcarConfig } from "@roadcar/core"
import { Effect, type Layer, Logger } from "effect"
import OpenAI from "openai"
import { GatewayServer } from "../src/index.ts"

/** A config whose upstreams point at fake upstreams, with tiny delays and timeouts for tests. */
export const fakeConfig = (
  upstreams: Readonly<Record<string, { readonly url: string; readonly provider?: "openai-compatible" | "anthropic" }>>,
  models: Readonly<Record<string, unknown>>,
  overrides: Readonly<Record<string, unknown>> = {}
): Record<string, unknown> => ({
  upstreams: Object.fromEntries(
    Object.entries(upstreams).map(([name, upstream]) => [
      name,
      upstream.provider === "anthropic"
        ? {
            provider: "anthropic",
            model: "fake-model",
            baseUrl: `${upstream.url}/v1`,
            apiKey: { env: "ROADCAR_TEST_ANTHROPIC_KEY" }
          }
        : { provider: "openai-compatible", model: "fake-model", baseUrl: `${upstream.url}/v1` }
    ])
  ),
  models,
  retry: { attempts: 3, baseDelay: "5 millis", maxDelay: "20 millis", jitter: false },
  timeouts: { attempt: "400 millis", firstChunk: "400 millis", chunkGap: "200 millis", total: "3 seconds" },
  breaker: { consecutiveFailures: 50, openDuration: "300 millis" },
  cache: { enabled: false },
  ...overrides
})

process.env["ROADCAR_TEST_ANTHROPIC_KEY"] ??= "sk-ant-test-secret"

/** Validates a config with the core's schema (a test's config is always valid). */
export const decode = (input: unknown): Effect.Effect<RoadcarConfig.RoadcarConfig> =>
  Effect.orDie(RoadcarConfig.decode(input, "test"))

/** Starts a gateway on 127.0.0.1 and a free port, in the test's scope, with its own metrics. */
export const startGateway = (input: unknown, options: Partial<GatewayServer.Options> = {}) =>
  Effect.flatMap(decode(input), (config) =>
    Effect.orDie(GatewayServer.start({ config, port: 0, env: {}, isolatedMetrics: true, ...options }))
  )

/** The official client, pointed at a gateway, without client-side retries. */
export const client = (url: string, apiKey = "sk-local-test"): OpenAI =>
  new OpenAI({ baseURL: `${url}/v1`, apiKey, maxRetries: 0, timeout: 10_000 })

/** Awaits a promise that must reject; succeeds with its error. */
export const rejection = <A>(promise: () => Promise<A>): Effect.Effect<unknown> =>
  Effect.promise(() =>
    promise().then(
      () => {
        throw new Error("expected the call to fail, but it succeeded")
      },
      (error: unknown) => error
    )
  )

/** An `openai` API error, narrowed. */
export const apiError = (error: unknown): InstanceType<typeof OpenAI.APIError> => {
  if (error instanceof OpenAI.APIError) return error
  throw new Error(`expected an OpenAI.APIError, got ${String(error)}`)
}

/** Captures every log line as the JSON the production logger would print; prints nothing. */
export const captureLogs = () => {
  const lines: Array<string> = []
  const logger = Logger.make((options) => {
    lines.push(String(Logger.formatJson.log(options)))
  })
  return { lines, layer: Logger.layer([logger]) as Layer.Layer<never> }
}

/** Silences logs (tests assert on behaviour; `captureLogs` when they assert on logs). */
export const quiet = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.provide(effect, captureLogs().layer)

/** Collects an `openai` stream: the text, the chunks, and the error that ended it, if any. */
export const collect = async (stream: AsyncIterable<OpenAI.Chat.Completions.ChatCompletionChunk>) => {
  const chunks: Array<OpenAI.Chat.Completions.ChatCompletionChunk> = []
  let error: unknown
  try {
    for await (const chunk of stream) chunks.push(chunk)
  } catch (e) {
    error = e
  }
  const text = chunks.map((chunk) => chunk.choices[0]?.delta.content ?? "").join("")
  return { chunks, text, error }
}

/** A raw POST to the gateway's chat endpoint. */
export const post = (url: string, body: string, headers: Record<string, string> = {}) =>
  fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body
  })

/** A valid chat request body. */
export const chatBody = (content = "hello there", model = "chat") => ({
  model,
  messages: [{ role: "user" as const, content }]
})
