/**
 * Caches successful answers by an exact, canonical request key, and coalesces identical requests in
 * flight into one upstream call.
 *
 * `ResponseCache` keeps answers in process with a capacity (least recently used out) and a time to
 * live, and makes one shared call for concurrent identical requests; a `ResponseCacheStore` (Redis)
 * can sit behind it, shared by replicas. The key covers everything that shapes the answer
 * (model, messages, tools, tool_choice, response_format, temperature, top_p, seed, stop, penalties,
 * max tokens, ...) and ignores what does not (stream, stream_options, user, metadata, JSON key order
 * and formatting, whitespace around each message's text). Only successes are kept, and answers marked
 * not cacheable (the static fallback) are never stored.
 *
 * @since 0.1.0
 */
import { createHash } from "node:crypto"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import { type ChatMessage, type ChatRequest, ChatResponse, maxOutputTokens } from "./ChatCompletion.ts"

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
    // The output limit the upstream is asked for, under one name (`max_completion_tokens` wins when
    // both are set, as `maxOutputTokens` says).
    if (field === "max_completion_tokens" || field === "max_tokens") shaping["max_tokens"] = maxOutputTokens(request)
    else if (field === "messages") shaping[field] = request.messages.map(canonicalMessage)
    else shaping[field] = value
  }
  if (shaping["n"] === 1) delete shaping["n"]
  return JSON.stringify(sortKeys(shaping))
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
  const timeToLiveMillis = Duration.toMillis(Duration.fromInputUnsafe(options.timeToLive))
  const timeToLive = Duration.fromInputUnsafe(options.timeToLive)
  const shared = yield* Effect.serviceOption(ResponseCacheStore)
  const clock = yield* Clock.Clock
  const warn = (what: string) => (error: ResponseCacheStoreError) =>
    Effect.logWarning(`response cache store ${what} failed: ${error.detail}`)
  // Entries by key, linked in least-recently-used order (oldest at `head`): a hit moves its node to
  // the tail, a full cache drops the head. (A Map's own order would do, but finding its first live
  // key walks the holes deletions leave, which grows with the capacity.)
  interface Node {
    readonly key: string
    entry: Entry
    expiresAt: number
    previous: Node | undefined
    next: Node | undefined
  }
  const entries = new Map<string, Node>()
  let head: Node | undefined
  let tail: Node | undefined
  const unlink = (node: Node) => {
    if (node.previous) node.previous.next = node.next
    else head = node.next
    if (node.next) node.next.previous = node.previous
    else tail = node.previous
    node.previous = undefined
    node.next = undefined
  }
  const append = (node: Node) => {
    node.previous = tail
    node.next = undefined
    if (tail) tail.next = node
    else head = node
    tail = node
  }
  // One call in flight per key; identical requests wait for it.
  const inFlight = new Map<string, Deferred.Deferred<Entry, unknown>>()

  const held = (key: string): Entry | undefined => {
    const node = entries.get(key)
    if (node === undefined) return undefined
    unlink(node)
    if (node.expiresAt <= clock.currentTimeMillisUnsafe()) {
      entries.delete(key)
      return undefined
    }
    append(node)
    return node.entry
  }
  const keep = (key: string, entry: Entry) => {
    if (!entry.cacheable || timeToLiveMillis <= 0) return
    const expiresAt = clock.currentTimeMillisUnsafe() + timeToLiveMillis
    const existing = entries.get(key)
    if (existing !== undefined) {
      unlink(existing)
      existing.entry = entry
      existing.expiresAt = expiresAt
      append(existing)
      return
    }
    const node: Node = { key, entry, expiresAt, previous: undefined, next: undefined }
    entries.set(key, node)
    append(node)
    if (entries.size > options.capacity && head !== undefined) {
      const oldest = head
      unlink(oldest)
      entries.delete(oldest.key)
    }
  }
  // A local miss asks the shared store first; a computed entry is written back to it.
  // `computed` is set when this request's own call ran (an entry from the shared store is a hit).
  const computeThrough = <E>(
    request: ChatRequest,
    compute: Effect.Effect<Entry, E>,
    computed: { ran: boolean }
  ): Effect.Effect<Entry, E> => {
    if (shared._tag === "None") {
      computed.ran = true // without a shared store, a local miss always runs its own call
      return compute
    }
    const own = Effect.suspend(() => {
      computed.ran = true
      return compute
    })
    const store = shared.value
    const hash = storeKey(request)
    return store.get(hash).pipe(
      Effect.catch((error) => Effect.as(warn("read")(error), Option.none<Entry>())),
      // An entry marked not cacheable (written by some other writer) is never served.
      Effect.flatMap((found) =>
        Option.isSome(found) && found.value.cacheable
          ? Effect.succeed(found.value)
          : Effect.tap(own, (entry) =>
              entry.cacheable ? store.set(hash, entry, timeToLive).pipe(Effect.catch(warn("write"))) : Effect.void
            )
      )
    )
  }
  // Share the call in flight; if its caller was interrupted, take over with a call of our own.
  const follow = <E>(
    pending: Deferred.Deferred<Entry, unknown>,
    request: ChatRequest,
    compute: Effect.Effect<Entry, E>
  ): Effect.Effect<Lookup, E> =>
    (Deferred.await(pending) as Effect.Effect<Entry, E>).pipe(
      Effect.map((entry): Lookup => ({ entry, hit: true })),
      Effect.catchCause((cause) =>
        Cause.hasInterruptsOnly(cause) ? lookup(request, compute) : Effect.failCause(cause)
      )
    )
  // The leader registers its call and completes it under one uninterruptible mask, so an interruption
  // can never fall between the two (a call registered and never completed would hang every identical
  // request after it); only the call itself, and a follower's wait, can be interrupted.
  const lookup = <E>(request: ChatRequest, compute: Effect.Effect<Entry, E>): Effect.Effect<Lookup, E> =>
    Effect.uninterruptibleMask((restore) =>
      Effect.suspend(() => {
        const key = canonicalKey(request)
        const entry = held(key)
        if (entry !== undefined) return Effect.succeed({ entry, hit: true })
        const pending = inFlight.get(key)
        if (pending !== undefined) return restore(follow(pending, request, compute))
        const deferred = Deferred.makeUnsafe<Entry, unknown>()
        inFlight.set(key, deferred)
        const computed = { ran: false }
        return Effect.matchCauseEffect(restore(computeThrough(request, compute, computed)), {
          onFailure: (cause) => {
            inFlight.delete(key)
            Deferred.doneUnsafe(deferred, Exit.failCause(cause))
            return Effect.failCause(cause)
          },
          onSuccess: (entry) => {
            inFlight.delete(key)
            keep(key, entry)
            Deferred.doneUnsafe(deferred, Exit.succeed(entry))
            return Effect.succeed<Lookup>({ entry, hit: !computed.ran })
          }
        })
      })
    )
  return ResponseCache.of({
    lookup,
    peek: (request) =>
      Effect.suspend(() => {
        const local = held(canonicalKey(request))
        if (local !== undefined) return Effect.succeed(Option.some(local))
        return shared._tag === "None"
          ? Effect.succeed(Option.none<Entry>())
          : shared.value.get(storeKey(request)).pipe(
              Effect.map(Option.filter((entry) => entry.cacheable)),
              Effect.catch((error) => Effect.as(warn("read")(error), Option.none<Entry>()))
            )
      }),
    store: (request, entry) =>
      entry.cacheable
        ? Effect.andThen(
            Effect.sync(() => keep(canonicalKey(request), entry)),
            shared._tag === "Some"
              ? shared.value.set(storeKey(request), entry, timeToLive).pipe(Effect.catch(warn("write")))
              : Effect.void
          )
        : Effect.void,
    size: Effect.sync(() => {
      const now = clock.currentTimeMillisUnsafe()
      let size = 0
      for (const node of entries.values()) if (node.expiresAt > now) size++
      return size
    }),
    invalidateAll: Effect.sync(() => {
      entries.clear()
      head = undefined
      tail = undefined
    })
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
