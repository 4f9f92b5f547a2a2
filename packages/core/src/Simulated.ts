/**
 * The simulated model: an upstream that needs no network and no key, Roadcar's default when nothing
 * is configured.
 *
 * It answers every request with deterministic text derived from the prompt (always marked
 * `[simulated]`), honours `max_tokens`, reports usage, streams in OpenAI chunk shapes, and waits and
 * fails on demand: latency runs on Effect's `Clock` (so `TestClock` drives it) and faults follow a
 * script (`failFirst`, `sequence`, `always`, or `random` with a seed). It counts its calls so tests
 * can assert how many upstream calls a pipeline made. It is not a language model: the text carries
 * no meaning.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Ref from "effect/Ref"
import * as Stream from "effect/Stream"
import * as ChatCompletion from "./ChatCompletion.ts"
import type { Upstream } from "./Upstream.ts"
import * as UpstreamError from "./UpstreamError.ts"

// =============================================================================
// Constants
// =============================================================================

/**
 * The simulated model's `gen_ai.provider.name`.
 *
 * @category constants
 * @since 0.1.0
 */
export const provider = "roadcar.simulated"

/**
 * The upstream name used when none is given.
 *
 * @category constants
 * @since 0.1.0
 */
export const defaultName = "simulated"

/**
 * The model name used when none is given.
 *
 * @category constants
 * @since 0.1.0
 */
export const defaultModel = "roadcar-sim-1"

// =============================================================================
// Faults
// =============================================================================

/**
 * One thing that can go wrong with a simulated call.
 *
 * **Details**
 *
 * | Fault | `complete` | `stream` |
 * | --- | --- | --- |
 * | `RateLimited({ retryAfter? })` | fails `RateLimited` | fails before any chunk |
 * | `Unavailable({ status })` | fails `Unavailable` | fails before any chunk |
 * | `ConnectionReset()` | fails `ConnectionFailed` | fails before any chunk |
 * | `Hang()` | never answers | never emits, never ends |
 * | `MalformedOutput()` | fails `MalformedOutput` | fails before any chunk |
 * | `SlowFirstChunk({ delay })` | answers `delay` later | first chunk `delay` later, then normal |
 * | `CutMidStream({ afterChunks, error? })` | fails (`error`, default `ConnectionFailed`) | emits `afterChunks` chunks, then fails |
 * | `StallStream({ afterChunks })` | never answers | emits `afterChunks` chunks, then neither emits nor ends |
 * | `ContextLengthExceeded()` | fails `ContextLengthExceeded` | fails before any chunk |
 * | `ContentFiltered()` | fails `ContentFiltered` | fails before any chunk |
 *
 * The call's `latency` passes before every outcome. A cut or stalled stream never includes the final
 * chunk, however large `afterChunks` is.
 *
 * @category models
 * @since 0.1.0
 */
export type SimulatedFault = Data.TaggedEnum<{
  RateLimited: { readonly retryAfter?: Duration.Input | undefined }
  Unavailable: { readonly status: number }
  ConnectionReset: {}
  Hang: {}
  MalformedOutput: {}
  SlowFirstChunk: { readonly delay: Duration.Input }
  CutMidStream: {
    readonly afterChunks: number
    readonly error?: "ConnectionFailed" | "MalformedOutput" | undefined
  }
  StallStream: { readonly afterChunks: number }
  ContextLengthExceeded: {}
  ContentFiltered: {}
}>

/**
 * Constructors, `$is` and `$match` for {@link SimulatedFault}.
 *
 * @example
 * ```ts
 * import { Simulated } from "@roadcar/core"
 * Simulated.SimulatedFault.RateLimited({ retryAfter: "2 seconds" })._tag // => "RateLimited"
 * Simulated.SimulatedFault.Hang()._tag // => "Hang"
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const SimulatedFault = Data.taggedEnum<SimulatedFault>()

/**
 * Which calls fail, and how: a policy as data.
 *
 * @see {@link healthy}, {@link failFirst}, {@link sequence}, {@link always}, {@link random}
 *
 * @category models
 * @since 0.1.0
 */
export type FaultScript = Data.TaggedEnum<{
  Healthy: {}
  FailFirst: { readonly count: number; readonly fault: SimulatedFault }
  Sequence: { readonly faults: ReadonlyArray<SimulatedFault | null> }
  Always: { readonly fault: SimulatedFault }
  Random: { readonly seed: number; readonly rate: number; readonly faults: ReadonlyArray<SimulatedFault> }
}>

const Script = Data.taggedEnum<FaultScript>()

/**
 * Every call succeeds (the default).
 *
 * @category constructors
 * @since 0.1.0
 */
export const healthy: FaultScript = Script.Healthy()

/**
 * The first `count` calls fail with `fault`; later calls succeed.
 *
 * @example
 * ```ts
 * import { Simulated } from "@roadcar/core"
 * const script = Simulated.failFirst(2, Simulated.SimulatedFault.Unavailable({ status: 503 }))
 * Simulated.faultFor(script, 2)?._tag // => "Unavailable"
 * Simulated.faultFor(script, 3) // => undefined
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const failFirst = (count: number, fault: SimulatedFault): FaultScript => {
  if (!Number.isInteger(count) || count < 0) {
    throw new RangeError(`Simulated.failFirst: count must be a non-negative integer, got ${count}`)
  }
  return Script.FailFirst({ count, fault })
}

/**
 * Call `k` (counting from 1) gets entry `k - 1`: a fault, or `null` for a healthy call. Calls past
 * the end succeed.
 *
 * @example
 * ```ts
 * import { Simulated } from "@roadcar/core"
 * const { ConnectionReset, Hang } = Simulated.SimulatedFault
 * const script = Simulated.sequence([ConnectionReset(), null, Hang()])
 * Simulated.faultFor(script, 2) // => undefined
 * Simulated.faultFor(script, 3)?._tag // => "Hang"
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const sequence = (faults: ReadonlyArray<SimulatedFault | null>): FaultScript =>
  Script.Sequence({ faults: [...faults] })

/**
 * Every call fails with `fault`.
 *
 * @category constructors
 * @since 0.1.0
 */
export const always = (fault: SimulatedFault): FaultScript => Script.Always({ fault })

/**
 * Each call fails with probability `rate`, with a fault picked from `faults`; the draw is a seeded
 * function of the call number, so the same seed always fails the same calls the same way.
 *
 * @example
 * ```ts
 * import { Simulated } from "@roadcar/core"
 * const script = Simulated.random({ seed: 42, rate: 0.3, faults: [Simulated.SimulatedFault.ConnectionReset()] })
 * Simulated.faultFor(script, 7) === Simulated.faultFor(script, 7) // => true
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const random = (options: {
  readonly seed: number
  readonly rate: number
  readonly faults: ReadonlyArray<SimulatedFault>
}): FaultScript => {
  if (!Number.isFinite(options.rate) || options.rate < 0 || options.rate > 1) {
    throw new RangeError(`Simulated.random: rate must be between 0 and 1, got ${options.rate}`)
  }
  if (options.faults.length === 0) {
    throw new RangeError("Simulated.random: faults must not be empty")
  }
  if (!Number.isFinite(options.seed)) {
    throw new RangeError(`Simulated.random: seed must be a finite number, got ${options.seed}`)
  }
  return Script.Random({ seed: options.seed, rate: options.rate, faults: [...options.faults] })
}

/**
 * The fault a script assigns to call number `call` (counting from 1), or `undefined` for a healthy
 * call. Pure: the simulated model calls it with its own call count.
 *
 * @category accessors
 * @since 0.1.0
 */
export const faultFor = (script: FaultScript, call: number): SimulatedFault | undefined => {
  switch (script._tag) {
    case "Healthy":
      return undefined
    case "FailFirst":
      return call <= script.count ? script.fault : undefined
    case "Sequence":
      return script.faults[call - 1] ?? undefined
    case "Always":
      return script.fault
    case "Random": {
      const next = prng(mix(Math.trunc(script.seed), call))
      if (next() >= script.rate) return undefined
      return script.faults[Math.floor(next() * script.faults.length)]
    }
  }
}

// =============================================================================
// Deterministic text
// =============================================================================

/** FNV-1a, 32 bits. */
const hash = (text: string): number => {
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return h >>> 0
}

const mix = (a: number, b: number): number => {
  let h = Math.imul(a ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(b + 0x27d4eb2f, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/** mulberry32: a small seeded PRNG returning numbers in [0, 1). */
const prng = (seed: number): (() => number) => {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const vocabulary = [
  "amber",
  "bridge",
  "canyon",
  "signal",
  "engine",
  "harbor",
  "lantern",
  "meadow",
  "orbit",
  "pebble",
  "quartz",
  "river",
  "summit",
  "timber",
  "valley",
  "willow",
  "compass",
  "ember",
  "glacier",
  "horizon",
  "junction",
  "kestrel",
  "lighthouse",
  "mosaic",
  "nebula",
  "prism",
  "relay",
  "sparrow",
  "tunnel",
  "voyage",
  "window",
  "zephyr"
]

const echoWords = 8

/**
 * What the simulated model answers to a request: its text, why it stopped and its usage.
 *
 * @category models
 * @since 0.1.0
 */
export interface Answer {
  readonly text: string
  readonly finishReason: ChatCompletion.FinishReason
  readonly usage: ChatCompletion.Usage
  /** The answer's words, in order; `text` is them joined with single spaces. */
  readonly words: ReadonlyArray<string>
}

/**
 * The simulated answer to a request, without latency or faults.
 *
 * **Details**
 *
 * The text is `[simulated]`, then a short echo of the last user message, then words picked by a hash
 * of the messages: the same messages always give the same text. Each word counts as one completion
 * token; the answer stops after `max_completion_tokens` (or `max_tokens`) words with finish reason
 * `"length"`. Prompt tokens are `ChatCompletion.estimatePromptTokens(request)`.
 *
 * @example
 * ```ts
 * import { Simulated } from "@roadcar/core"
 * const answer = Simulated.answer({ model: "m", messages: [{ role: "user", content: "hello there" }], max_tokens: 3 })
 * answer.text // => '[simulated] echo: "hello'
 * answer.finishReason // => "length"
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const answer = (
  request: ChatCompletion.ChatRequest,
  options?: { readonly words?: number | undefined }
): Answer => {
  const digest = hash(
    request.messages
      .map((message) => `${message.role}\u0000${ChatCompletion.contentText(message.content)}`)
      .join("\u0001")
  )
  const words: Array<string> = ["[simulated]"]
  let lastUser: string | undefined
  for (const message of request.messages) {
    if (message.role === "user") lastUser = ChatCompletion.contentText(message.content)
  }
  const echo = lastUser?.split(/\s+/).filter((word) => word.length > 0) ?? []
  if (echo.length > 0) {
    const shown = echo.slice(0, echoWords)
    if (echo.length > echoWords) shown[shown.length - 1] = `${shown[shown.length - 1]}...`
    shown[0] = `"${shown[0]}`
    shown[shown.length - 1] = `${shown[shown.length - 1]}"`
    words.push("echo:", ...shown, "reply:")
  } else {
    words.push("reply:")
  }
  const next = prng(digest)
  const fillers = options?.words ?? 6 + (digest % 7)
  for (let i = 0; i < fillers; i++) words.push(vocabulary[Math.floor(next() * vocabulary.length)] ?? "relay")
  const limit = ChatCompletion.maxOutputTokens(request)
  const cut = limit !== undefined && words.length > limit
  const emitted = cut ? words.slice(0, limit) : words
  return {
    text: emitted.join(" "),
    finishReason: cut ? "length" : "stop",
    usage: ChatCompletion.usage(ChatCompletion.estimatePromptTokens(request), emitted.length),
    words: emitted
  }
}

// =============================================================================
// Upstream
// =============================================================================

/**
 * Options for {@link make}. Every field is optional.
 *
 * @category options
 * @since 0.1.0
 */
export interface Options {
  /** The upstream's name (default `"simulated"`). */
  readonly name?: string | undefined
  /** The model name reported in responses (default `"roadcar-sim-1"`). */
  readonly model?: string | undefined
  /** Time before each call answers, or before a stream's first chunk (default none). */
  readonly latency?: Duration.Input | undefined
  /** Time before each later stream chunk (default none). */
  readonly chunkLatency?: Duration.Input | undefined
  /** Words per streamed content chunk (default 3). */
  readonly wordsPerChunk?: number | undefined
  /** A fixed number of generated words after the echo (default 6 to 12, from the prompt's hash). */
  readonly words?: number | undefined
  /** Which calls fail, and how (default {@link healthy}). */
  readonly faults?: FaultScript | undefined
  /** How many recent calls `callLog` keeps (default 1000). */
  readonly callLogLimit?: number | undefined
}

/**
 * One call the simulated model received.
 *
 * @category models
 * @since 0.1.0
 */
export interface CallRecord {
  /** The call's number, counting from 1 across `complete` and `stream`. */
  readonly call: number
  readonly method: "complete" | "stream"
  readonly request: ChatCompletion.ChatRequest
  /** The fault the script assigned to the call, if any. */
  readonly fault: SimulatedFault | undefined
}

/**
 * The simulated model: an `Upstream` that also reports the calls it received.
 *
 * @category models
 * @since 0.1.0
 */
export interface Simulated extends Upstream {
  /** How many calls started so far (`complete` and `stream` runs together). */
  readonly calls: Effect.Effect<number>
  /** The most recent calls, oldest first (at most `callLogLimit`). */
  readonly callLog: Effect.Effect<ReadonlyArray<CallRecord>>
}

interface State {
  readonly calls: number
  readonly log: ReadonlyArray<CallRecord>
}

const toDuration = (input: Duration.Input | undefined): Duration.Duration =>
  input === undefined ? Duration.zero : Duration.fromInputUnsafe(input)

const sleep = (duration: Duration.Duration): Effect.Effect<void> =>
  Duration.isZero(duration) ? Effect.void : Effect.sleep(duration)

/**
 * Builds a simulated model synchronously (the state lives in a `Ref` made on the spot).
 *
 * **When to use**
 *
 * In static configuration, where no Effect runs yet; otherwise prefer {@link make}.
 *
 * **Gotchas**
 *
 * Throws a `RangeError` for a `wordsPerChunk` or `callLogLimit` below 1.
 *
 * @category constructors
 * @since 0.1.0
 */
export const makeUnsafe = (options: Options = {}): Simulated => {
  const name = options.name ?? defaultName
  const model = options.model ?? defaultModel
  const latency = toDuration(options.latency)
  const chunkLatency = toDuration(options.chunkLatency)
  const wordsPerChunk = options.wordsPerChunk ?? 3
  const logLimit = options.callLogLimit ?? 1000
  const script = options.faults ?? healthy
  if (!Number.isInteger(wordsPerChunk) || wordsPerChunk < 1) {
    throw new RangeError(`Simulated.make: wordsPerChunk must be a positive integer, got ${wordsPerChunk}`)
  }
  if (!Number.isInteger(logLimit) || logLimit < 1) {
    throw new RangeError(`Simulated.make: callLogLimit must be a positive integer, got ${logLimit}`)
  }
  const state = Ref.makeUnsafe<State>({ calls: 0, log: [] })

  const begin = (method: CallRecord["method"], request: ChatCompletion.ChatRequest) =>
    Ref.modify(state, (current): [CallRecord, State] => {
      const call = current.calls + 1
      const record: CallRecord = { call, method, request, fault: faultFor(script, call) }
      const log = current.log.length >= logLimit ? [...current.log.slice(1), record] : [...current.log, record]
      return [record, { calls: call, log }]
    })

  const fail = (reason: UpstreamError.Reason) => UpstreamError.make(name, reason)

  /** The failure a fault stands for, when it fails outright. */
  const failureOf = (fault: SimulatedFault): UpstreamError.UpstreamError | undefined => {
    switch (fault._tag) {
      case "RateLimited":
        return fail(
          fault.retryAfter === undefined
            ? new UpstreamError.RateLimited({})
            : new UpstreamError.RateLimited({ retryAfter: Duration.fromInputUnsafe(fault.retryAfter) })
        )
      case "Unavailable":
        return fail(new UpstreamError.Unavailable({ status: fault.status, detail: "simulated outage" }))
      case "ConnectionReset":
        return fail(new UpstreamError.ConnectionFailed({ detail: "simulated connection reset" }))
      case "MalformedOutput":
        return fail(new UpstreamError.MalformedOutput({ detail: "simulated malformed output" }))
      case "ContextLengthExceeded":
        return fail(new UpstreamError.ContextLengthExceeded({ detail: "simulated context length exceeded" }))
      case "ContentFiltered":
        return fail(new UpstreamError.ContentFiltered({ detail: "simulated content filter" }))
      case "CutMidStream":
        return fail(
          fault.error === "MalformedOutput"
            ? new UpstreamError.MalformedOutput({ detail: "simulated stream cut before its finish reason" })
            : new UpstreamError.ConnectionFailed({ detail: "simulated connection reset mid-stream" })
        )
      case "Hang":
      case "SlowFirstChunk":
      case "StallStream":
        return undefined
    }
  }

  const firstDelay = (fault: SimulatedFault | undefined): Duration.Duration =>
    fault?._tag === "SlowFirstChunk" ? Duration.sum(latency, Duration.fromInputUnsafe(fault.delay)) : latency

  const created = Effect.map(Clock.currentTimeMillis, (millis) => Math.floor(millis / 1000))

  const complete = (
    request: ChatCompletion.ChatRequest
  ): Effect.Effect<ChatCompletion.ChatResponse, UpstreamError.UpstreamError> =>
    Effect.gen(function* () {
      const record = yield* begin("complete", request)
      const fault = record.fault
      yield* sleep(firstDelay(fault))
      if (fault?._tag === "Hang" || fault?._tag === "StallStream") return yield* Effect.never
      const failure = fault && failureOf(fault)
      if (failure) return yield* Effect.fail(failure)
      const result = answer(request, { words: options.words })
      return {
        id: `chatcmpl-${name}-${record.call}`,
        object: "chat.completion",
        created: yield* created,
        model,
        choices: [
          { index: 0, message: { role: "assistant", content: result.text }, finish_reason: result.finishReason }
        ],
        usage: result.usage
      } satisfies ChatCompletion.ChatResponse
    })

  const stream = (
    request: ChatCompletion.ChatRequest
  ): Stream.Stream<ChatCompletion.ChatChunk, UpstreamError.UpstreamError> =>
    Stream.unwrap(
      Effect.gen(function* () {
        const record = yield* begin("stream", request)
        const fault = record.fault
        const createdAt = yield* created
        const chunks = toChunks(
          `chatcmpl-${name}-${record.call}`,
          createdAt,
          model,
          answer(request, { words: options.words }),
          wordsPerChunk
        )
        const timed = (items: ReadonlyArray<ChatCompletion.ChatChunk>) =>
          Stream.fromIterable(items.map((chunk, index) => ({ chunk, index }))).pipe(
            Stream.mapEffect(({ chunk, index }) =>
              Effect.as(sleep(index === 0 ? firstDelay(fault) : chunkLatency), chunk)
            )
          )
        if (fault === undefined || fault._tag === "SlowFirstChunk") return timed(chunks)
        if (fault._tag === "Hang") return Stream.never
        // a cut or stalled stream never includes the final chunk
        const kept = (afterChunks: number) => chunks.slice(0, Math.max(0, Math.min(afterChunks, chunks.length - 1)))
        const then = (
          items: ReadonlyArray<ChatCompletion.ChatChunk>,
          end: Effect.Effect<never, UpstreamError.UpstreamError>
        ) =>
          items.length === 0
            ? Stream.fromEffect(Effect.andThen(sleep(latency), end))
            : Stream.concat(timed(items), Stream.fromEffect(end))
        if (fault._tag === "StallStream") return then(kept(fault.afterChunks), Effect.never)
        const failure = failureOf(fault)
        const end = failure ? Effect.fail(failure) : Effect.never
        return then(fault._tag === "CutMidStream" ? kept(fault.afterChunks) : [], end)
      })
    )

  return {
    name,
    provider,
    model,
    complete,
    stream,
    calls: Effect.map(Ref.get(state), (current) => current.calls),
    callLog: Effect.map(Ref.get(state), (current) => current.log)
  }
}

/**
 * Builds a simulated model.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Simulated } from "@roadcar/core"
 *
 * const program = Effect.gen(function*() {
 *   const model = yield* Simulated.make({
 *     faults: Simulated.failFirst(1, Simulated.SimulatedFault.Unavailable({ status: 503 }))
 *   })
 *   const request = { model: "any", messages: [{ role: "user" as const, content: "hi" }] }
 *   const first = yield* Effect.flip(model.complete(request))
 *   const second = yield* model.complete(request)
 *   return [first.reason._tag, second.choices[0]?.finish_reason, yield* model.calls]
 * })
 * await Effect.runPromise(program) // => ["Unavailable", "stop", 2]
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = (options: Options = {}): Effect.Effect<Simulated> => Effect.sync(() => makeUnsafe(options))

/**
 * Splits an answer into stream chunks: a role chunk, content chunks of `wordsPerChunk` words, and a
 * final chunk with the finish reason and usage.
 */
const toChunks = (
  id: string,
  created: number,
  model: string,
  result: Answer,
  wordsPerChunk: number
): Array<ChatCompletion.ChatChunk> => {
  const base = { id, object: "chat.completion.chunk" as const, created, model }
  const chunks: Array<ChatCompletion.ChatChunk> = [
    { ...base, choices: [{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null }] }
  ]
  for (let start = 0; start < result.words.length; start += wordsPerChunk) {
    const text = result.words.slice(start, start + wordsPerChunk).join(" ")
    const content = start === 0 ? text : ` ${text}`
    chunks.push({ ...base, choices: [{ index: 0, delta: { content }, finish_reason: null }] })
  }
  chunks.push({
    ...base,
    choices: [{ index: 0, delta: {}, finish_reason: result.finishReason }],
    usage: result.usage
  })
  return chunks
}
