/**
 * Caches successful answers by an exact, canonical request key, and coalesces identical requests in
 * flight into one upstream call.
 *
 * `ResponseCache` wraps `effect/Cache`: capacity (least recently used out), time to live, and one
 * shared lookup for concurrent identical requests. The key covers everything that shapes the answer
 * (model, messages, tools, tool_choice, response_format, temperature, top_p, seed, stop, penalties,
 * max tokens, ...) and ignores what does not (stream, stream_options, user, metadata, JSON key order
 * and formatting, whitespace around each message's text). Only successes are kept, and answers marked
 * not cacheable (the static fallback) are never stored.
 *
 * @since 0.1.0
 */
import { createHash } from "node:crypto"
import * as Cache from "effect/Cache"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Equal from "effect/Equal"
import * as Exit from "effect/Exit"
import * as Hash from "effect/Hash"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import { type ChatMessage, type ChatRequest, ChatResponse } from "./ChatCompletion.ts"

/**
 * @category options
 * @since 0.1.0
 */
export interface Options {
  /** How many answers are kept (default 10,000). */
  readonly capacity: number
  /** How long an answer is served from the cache (default 10 minutes). */
  readonly timeToLive: Duration.Input
}

/**
 * @category options
 * @since 0.1.0
 */
export const defaults: Options = { capacity: 10_000, timeToLive: "10 minutes" }

/**
 * What the cache stores for one request: the answer and who gave it.
 *
 * @category models
 * @since 0.1.0
 */
export interface Entry {
  readonly response: ChatResponse
  readonly upstream: string
  /** `false` for answers that must not be served again (the static fallback). */
  readonly cacheable: boolean
}

/**
 * The schema of an entry, for stores that serialise it.
 *
 * @category models
 * @since 0.1.0
 */
export const EntrySchema = Schema.Struct({ response: ChatResponse, upstream: Schema.String, cacheable: Schema.Boolean })

/**
 * A shared cache store could not answer.
 *
 * @category errors
 * @since 0.1.0
 */
export class ResponseCacheStoreError extends Schema.TaggedError<ResponseCacheStoreError>()("ResponseCacheStoreError", {
  detail: Schema.String
}) {}

/**
 * A shared tier behind the in-process cache (Redis, for replicas): consulted on a local miss, written
 * after a call. Keys are the SHA-256 of the canonical request. A store that fails is skipped: the
 * request is computed as on a miss (the store's own layer decides how to log and alert).
 *
 * @category services
 * @since 0.1.0
 */
export class ResponseCacheStore extends Context.Service<
  ResponseCacheStore,
  {
    readonly get: (key: string) => Effect.Effect<Option.Option<Entry>, ResponseCacheStoreError>
    readonly set: (
      key: string,
      entry: Entry,
      timeToLive: Duration.Duration
    ) => Effect.Effect<void, ResponseCacheStoreError>
  }
>()("@roadcar/core/ResponseCacheStore") {}

// Fields that never change the answer.
const ignoredFields = new Set(["stream", "stream_options", "user", "metadata", "store", "service_tier"])

const sortKeys = (value: unknown): unknown => {
  if (Array.isArray(value)) return value.map(sortKeys)
  if (value !== null && typeof value === "object") {
    const out: Record<string, unknown> = {}
    for (const key of Object.keys(value).sort()) {
      const field = (value as Record<string, unknown>)[key]
      if (field !== undefined) out[key] = sortKeys(field)
    }
    return out
  }
  return value
}

const canonicalMessage = (message: ChatMessage): unknown => {
  const content = message.content
  if (typeof content === "string") return { ...message, content: content.trim() }
  if (Array.isArray(content)) {
    return {
      ...message,
      content: content.map((part) =>
        part.type === "text" && typeof part["text"] === "string" ? { ...part, text: part["text"].trim() } : part
      )
    }
  }
  return message
}

/**
 * The canonical key of a request: equal for requests that must get the same answer.
 *
 * @example
 * ```ts
 * import { ResponseCache } from "@roadcar/core"
 * const a = ResponseCache.canonicalKey({ model: "m", messages: [{ role: "user", content: " hi " }], stream: true })
 * const b = ResponseCache.canonicalKey({ messages: [{ content: "hi", role: "user" }], model: "m" })
 * a === b // => true
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const canonicalKey = (request: ChatRequest): string => {
  const shaping: Record<string, unknown> = {}
  for (const [field, value] of Object.entries(request)) {
    if (ignoredFields.has(field) || value === undefined) continue
    if (field === "max_completion_tokens") shaping["max_tokens"] = value
    else if (field === "messages") shaping[field] = request.messages.map(canonicalMessage)
    else shaping[field] = value
  }
  if (shaping["n"] === 1) delete shaping["n"]
  return JSON.stringify(sortKeys(shaping))
}

// A cache key compares by its canonical string; it carries the lookup of the request that made it.
class Key<E> implements Equal.Equal {
  computed = false
  readonly canonical: string
  readonly request: ChatRequest | undefined
  readonly compute: Effect.Effect<Entry, E>
  constructor(canonical: string, compute: Effect.Effect<Entry, E>, request?: ChatRequest) {
    this.canonical = canonical
    this.compute = compute
    this.request = request
  }
  [Equal.symbol](that: Equal.Equal): boolean {
    return that instanceof Key && that.canonical === this.canonical
  }
  [Hash.symbol](): number {
    return Hash.string(this.canonical)
  }
}

/**
 * The result of a lookup: the entry, and whether it came from the cache (or from another identical
 * request in flight) instead of a call of this request's own.
 *
 * @category models
 * @since 0.1.0
 */
export interface Lookup {
  readonly entry: Entry
  readonly hit: boolean
}

/**
 * The response cache service.
 *
 * @category services
 * @since 0.1.0
 */
export class ResponseCache extends Context.Service<
  ResponseCache,
  {
    /** The cached entry for `request`, or the result of `compute` (shared with identical requests in flight). */
    readonly lookup: <E>(request: ChatRequest, compute: Effect.Effect<Entry, E>) => Effect.Effect<Lookup, E>
    /** The cached entry for `request`, if one is held (no lookup, no coalescing: streams use this). */
    readonly peek: (request: ChatRequest) => Effect.Effect<Option.Option<Entry>>
    /** Stores an entry (e.g. an answer assembled from a stream). */
    readonly store: (request: ChatRequest, entry: Entry) => Effect.Effect<void>
    /** The number of entries held. */
    readonly size: Effect.Effect<number>
    readonly invalidateAll: Effect.Effect<void>
  }
>()("@roadcar/core/ResponseCache") {}

/**
 * Builds an in-process response cache.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = Effect.fnUntraced(function* (options: Options) {
  const timeToLive = Duration.fromInputUnsafe(options.timeToLive)
  const shared = yield* Effect.serviceOption(ResponseCacheStore)
  const warn = (what: string) => (error: ResponseCacheStoreError) =>
    Effect.logWarning(`response cache store ${what} failed: ${error.detail}`)
  // A local miss asks the shared store first; a computed entry is written back to it.
  const computeThrough = (key: Key<unknown>): Effect.Effect<Entry, unknown> => {
    const computeLocal = Effect.suspend(() => {
      key.computed = true
      return key.compute
    })
    if (shared._tag === "None" || key.request === undefined) return computeLocal
    const store = shared.value
    const hash = storeKey(key.request)
    return store.get(hash).pipe(
      Effect.catch((error) => Effect.as(warn("read")(error), Option.none<Entry>())),
      Effect.flatMap((found) =>
        Option.isSome(found)
          ? Effect.succeed(found.value)
          : Effect.tap(computeLocal, (entry) =>
              entry.cacheable ? store.set(hash, entry, timeToLive).pipe(Effect.catch(warn("write"))) : Effect.void
            )
      )
    )
  }
  // The lookup's error type is the caller's `E`, erased here and restored in `lookup`: a key's
  // lookup only ever fails with the error of the `compute` effect it carries.
  const cache = yield* Cache.makeWith((key: Key<unknown>) => computeThrough(key), {
    capacity: options.capacity,
    timeToLive: (exit) => (Exit.isSuccess(exit) && exit.value.cacheable ? timeToLive : Duration.zero)
  })
  const lookup = <E>(request: ChatRequest, compute: Effect.Effect<Entry, E>): Effect.Effect<Lookup, E> =>
    Effect.suspend(() => {
      const key = new Key<unknown>(canonicalKey(request), compute, request)
      return Effect.map(Cache.get(cache, key) as Effect.Effect<Entry, E>, (entry) => ({ entry, hit: !key.computed }))
    })
  return ResponseCache.of({
    lookup,
    peek: (request) =>
      Effect.flatMap(
        Cache.getSuccess(cache, new Key<unknown>(canonicalKey(request), Effect.never)) as Effect.Effect<
          Option.Option<Entry>
        >,
        (local) =>
          Option.isSome(local) || shared._tag === "None"
            ? Effect.succeed(local)
            : shared.value
                .get(storeKey(request))
                .pipe(Effect.catch((error) => Effect.as(warn("read")(error), Option.none<Entry>())))
      ),
    store: (request, entry) =>
      entry.cacheable
        ? Effect.andThen(
            Cache.set(cache, new Key<unknown>(canonicalKey(request), Effect.succeed(entry)), entry),
            shared._tag === "Some"
              ? shared.value.set(storeKey(request), entry, timeToLive).pipe(Effect.catch(warn("write")))
              : Effect.void
          )
        : Effect.void,
    size: Cache.size(cache),
    invalidateAll: Cache.invalidateAll(cache)
  })
})

/**
 * The in-process response cache layer.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (options: Options = defaults): Layer.Layer<ResponseCache> =>
  Layer.effect(ResponseCache, make(options))

/**
 * The key of a request in a shared store: the SHA-256 (hex) of its canonical key.
 *
 * @category constructors
 * @since 0.1.0
 */
export const storeKey = (request: ChatRequest): string =>
  createHash("sha256").update(canonicalKey(request)).digest("hex")

/**
 * A shared store in process memory (entries expire with their time to live): the reference
 * implementation of `ResponseCacheStore`, for tests and single-process setups that want the two tiers.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerStoreMemory: Layer.Layer<ResponseCacheStore> = Layer.sync(ResponseCacheStore, () => {
  const entries = new Map<string, { readonly entry: Entry; readonly expiresAt: number }>()
  return ResponseCacheStore.of({
    get: (key) =>
      Effect.map(
        Effect.clockWith((clock) => Effect.succeed(clock.currentTimeMillisUnsafe())),
        (now) => {
          const found = entries.get(key)
          if (found === undefined) return Option.none()
          if (found.expiresAt <= now) {
            entries.delete(key)
            return Option.none()
          }
          return Option.some(found.entry)
        }
      ),
    set: (key, entry, timeToLive) =>
      Effect.clockWith((clock) =>
        Effect.sync(() => {
          entries.set(key, { entry, expiresAt: clock.currentTimeMillisUnsafe() + Duration.toMillis(timeToLive) })
        })
      )
  })
})
