/**
 * A fault-injecting fake upstream: a real HTTP server on 127.0.0.1 that speaks OpenAI chat completions
 * and Anthropic Messages (JSON and SSE) and misbehaves on demand.
 *
 * Use it to prove retries, timeouts, breakers, fallbacks and stream handling against real sockets:
 * install a `Behaviour` or a `Script` (per attempt, per model, per wall-clock phase, or seeded random),
 * point a client at `${url}/v1`, then read the attempt log. `make` is the Effect API (closed with its
 * `Scope`), `layer` provides it as a service, and `start` is the Promise API for code without Effect.
 * It answers chat requests only; it does not check credentials, tools or any other request field.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import type { Attempt } from "./Attempt.ts"
import * as Server from "./internal/server.ts"
import type * as Script from "./Script.ts"

// =============================================================================
// Models
// =============================================================================

/**
 * Options of {@link make}, {@link layer} and {@link start}.
 *
 * @category options
 * @since 0.1.0
 */
export interface Options {
  /** The initial script, or a bare behaviour meaning "always" (default: always healthy). */
  readonly behaviour?: Script.Input | undefined
  /** A fixed port (default: a free port chosen by the OS). The host is always 127.0.0.1. */
  readonly port?: number | undefined
  /** The model ids `GET /v1/models` lists (default: `["fake-model"]`). */
  readonly models?: ReadonlyArray<string> | undefined
  /** Words per streamed text chunk (default: 2). */
  readonly wordsPerChunk?: number | undefined
}

/**
 * A running fake upstream (Effect API).
 *
 * @category models
 * @since 0.1.0
 */
export interface Service {
  /** `"http://127.0.0.1:<port>"`; clients use `${url}/v1` as their base URL. */
  readonly url: string
  readonly port: number
  /** Replaces the script; its counters, clock origin and random generator start afresh. */
  readonly setBehaviour: (input: Script.Input) => Effect.Effect<void>
  /** Every request seen so far, in arrival order. */
  readonly attempts: Effect.Effect<ReadonlyArray<Attempt>>
  /** Empties the attempt log (indexes restart at 0); the script keeps its state. */
  readonly clearAttempts: Effect.Effect<void>
}

/**
 * A running fake upstream (Promise API).
 *
 * @category models
 * @since 0.1.0
 */
export interface Handle {
  readonly url: string
  readonly port: number
  readonly setBehaviour: (input: Script.Input) => void
  readonly attempts: () => ReadonlyArray<Attempt>
  readonly clearAttempts: () => void
  /** Stops listening, destroys every open connection (hanging ones included) and cancels pending delays. */
  readonly close: () => Promise<void>
}

/**
 * The fake upstream as a service, for tests that share one server across a block (see {@link layer}).
 *
 * @category services
 * @since 0.1.0
 */
export class FakeUpstream extends Context.Service<FakeUpstream, Service>()("@roadcar/testing/FakeUpstream") {}

// =============================================================================
// Constructors
// =============================================================================

const toService = (handle: Handle): Service => ({
  url: handle.url,
  port: handle.port,
  setBehaviour: (input) => Effect.sync(() => handle.setBehaviour(input)),
  attempts: Effect.sync(() => handle.attempts()),
  clearAttempts: Effect.sync(() => handle.clearAttempts())
})

/**
 * Starts a fake upstream on 127.0.0.1 and a free port; it is closed (connections destroyed, pending
 * delays cancelled) when the `Scope` closes.
 *
 * **Gotchas**
 *
 * Starting dies (a defect) only if the server cannot listen, i.e. a fixed `port` that is taken.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Behaviour, FakeUpstream, Script } from "@roadcar/testing"
 *
 * const program = Effect.gen(function*() {
 *   const fake = yield* FakeUpstream.make({ behaviour: Script.sequence([Behaviour.status(500)]) })
 *   const post = () =>
 *     fetch(`${fake.url}/v1/chat/completions`, {
 *       method: "POST",
 *       body: JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }] })
 *     })
 *   const first = yield* Effect.promise(post)
 *   const second = yield* Effect.promise(post)
 *   return [first.status, second.status, (yield* fake.attempts).length]
 * })
 * await Effect.runPromise(Effect.scoped(program)) // => [500, 200, 2]
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = (options: Options = {}): Effect.Effect<Service, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.promise(() => Server.start(options)),
    (handle) => Effect.promise(() => handle.close())
  ).pipe(Effect.map(toService))

/**
 * A layer providing {@link FakeUpstream}, closed with the layer's scope.
 *
 * @example
 * ```ts
 * import { assert, layer } from "@effect/vitest"
 * import { Effect } from "effect"
 * import { FakeUpstream } from "@roadcar/testing"
 *
 * layer(FakeUpstream.layer())("my provider", (it) => {
 *   it.effect("sees the fake", () =>
 *     Effect.gen(function*() {
 *       const fake = yield* FakeUpstream.FakeUpstream
 *       assert.match(fake.url, /^http:\/\/127\.0\.0\.1:\d+$/)
 *     }))
 * })
 * ```
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (options: Options = {}): Layer.Layer<FakeUpstream> => Layer.effect(FakeUpstream, make(options))

/**
 * Starts a fake upstream, Promise-style, for tests without Effect. Call `close()` when done (e.g. in
 * `afterEach`).
 *
 * @example
 * ```ts
 * import { Behaviour, FakeUpstream } from "@roadcar/testing"
 *
 * const fake = await FakeUpstream.start({ behaviour: Behaviour.rateLimited({ retryAfterSeconds: 1 }) })
 * const response = await fetch(`${fake.url}/v1/models`)
 * await fake.close()
 * response.headers.get("retry-after") // => "1"
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const start = (options: Options = {}): Promise<Handle> => Server.start(options)
