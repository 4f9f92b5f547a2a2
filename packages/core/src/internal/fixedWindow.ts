/**
 * Fixed-window counters in process memory, bounded by a number of keys.
 *
 * The arithmetic is that of `effect/persistence` `RateLimiter.consume` with the `fixed-window`
 * algorithm over `RateLimiter.makeMemoryStore` (same counts, same expiries, same delays and
 * retry-after durations, down to the floating-point order of operations), done in plain code so
 * that `RateLimit.makeMemory` admits a request in one Effect step.
 *
 * Where effect keys a counter by one string (`roadcar:<by>:<value>:requests`), here a rule's
 * grouping (`Group`, one per key prefix: rules that group alike share it, as they share keys there)
 * maps each value (an API key, a user, a model) to a `Node` holding its request and token counters:
 * a request looks its values up as they are, without building and hashing key strings.
 *
 * Bound: at most `maxKeys` nodes, in least-recently-used order (a list threaded through the nodes);
 * a new node beyond that evicts the least recently used one, whose windows then restart when its
 * value comes back. A node whose counters have all expired is dropped when touched; untouched ones
 * drift to the front of the order and are the first evicted. There is no background sweep.
 *
 * @internal
 */
import * as Duration from "effect/Duration"
import type { Limit } from "../RateLimit.ts"

/**
 * A `Limit` with its window decoded once: what `RateLimiter.consume` derives from it on every call.
 *
 * @internal
 */
export class DecodedLimit implements Limit {
  readonly limit: number
  /** The window as configured (decoded). */
  readonly window: Duration.Duration
  /** The window `consume` uses: at least 1 millisecond. */
  readonly effectiveWindow: Duration.Duration
  readonly windowMillis: number
  /** `window / limit` in milliseconds, rounded like `Duration.divideUnsafe`; unused when `limit <= 0`. */
  readonly refillRateMillis: number

  constructor(limit: Limit) {
    this.limit = limit.limit
    this.window = Duration.fromInputUnsafe(limit.window)
    this.effectiveWindow = Duration.max(this.window, Duration.millis(1))
    this.windowMillis = Duration.toMillis(this.effectiveWindow)
    this.refillRateMillis =
      this.limit > 0 ? Duration.toMillis(Duration.divideUnsafe(this.effectiveWindow, this.limit)) : 0
  }
}

/**
 * Decodes a limit, or returns it when it already is.
 *
 * @internal
 */
export const decodeLimit = (limit: Limit): DecodedLimit =>
  limit instanceof DecodedLimit ? limit : new DecodedLimit(limit)

/**
 * `fail`: refuse what does not fit (the counter is capped at the limit); `delay`: always take, and
 * say how long the caller should wait for its window.
 *
 * @internal
 */
export type Mode = "fail" | "delay"

/**
 * Which counter of a node: `requests` or `tokens`.
 *
 * @internal
 */
export type Measure = "requests" | "tokens"

/**
 * The values seen under one key prefix.
 *
 * @internal
 */
export interface Group {
  readonly prefix: string
  readonly nodes: Map<string, Node>
}

interface Counter {
  count: number
  expiresAt: number
}

interface Node {
  readonly group: Group
  readonly value: string
  requests: Counter | undefined
  tokens: Counter | undefined
  // The least-recently-used order: `older` towards the front (evicted first).
  older: Node | undefined
  newer: Node | undefined
}

const isLive = (counter: Counter | undefined, now: number) => counter !== undefined && counter.expiresAt > now

/**
 * The counters.
 *
 * @internal
 */
export class FixedWindows {
  readonly maxKeys: number
  private readonly groups = new Map<string, Group>()
  private oldest: Node | undefined = undefined
  private newest: Node | undefined = undefined
  private count = 0

  constructor(maxKeys: number) {
    if (!(maxKeys >= 1)) throw new RangeError(`maxKeys must be at least 1, got ${maxKeys}`)
    this.maxKeys = maxKeys
  }

  /** The group of a key prefix (one per prefix). */
  group(prefix: string): Group {
    let group = this.groups.get(prefix)
    if (group === undefined) {
      group = { prefix, nodes: new Map() }
      this.groups.set(prefix, group)
    }
    return group
  }

  /** Finds the group and value of a full key (`<prefix><value>:<measure>`), for keys from elsewhere. */
  parse(key: string): { readonly group: Group; readonly value: string; readonly measure: Measure } | undefined {
    const measure: Measure | undefined = key.endsWith(":requests")
      ? "requests"
      : key.endsWith(":tokens")
        ? "tokens"
        : undefined
    if (measure === undefined) return undefined
    let found: Group | undefined
    for (const group of this.groups.values()) {
      if (key.startsWith(group.prefix) && (found === undefined || group.prefix.length > found.prefix.length)) {
        found = group
      }
    }
    return found && { group: found, value: key.slice(found.prefix.length, -measure.length - 1), measure }
  }

  /** How many keys (a value under a group, with its counters) are kept. */
  get size(): number {
    return this.count
  }

  /** The keys kept (`<prefix><value>`), least recently used first. */
  keys(): Array<string> {
    const keys: Array<string> = []
    for (let node = this.oldest; node !== undefined; node = node.newer) keys.push(node.group.prefix + node.value)
    return keys
  }

  /**
   * Takes `tokens` (negative: gives back) from the `measure` counter of `value` in `group` at time
   * `now` (milliseconds).
   *
   * `fail` mode returns `undefined` when taken, else the retry-after of the refusal (nothing is
   * taken). `delay` mode always takes and returns `undefined` when there is no wait, else the wait.
   */
  consume(
    group: Group,
    value: string,
    measure: Measure,
    limit: DecodedLimit,
    tokens: number,
    mode: Mode,
    now: number
  ): Duration.Duration | undefined {
    const exceeded = tokens > limit.limit
    if (mode === "fail" && exceeded) return limit.effectiveWindow
    // A nonpositive limit never refills: nothing is recorded.
    if (limit.limit <= 0) return mode === "delay" && exceeded ? Duration.infinity : undefined

    const node = group.nodes.get(value)
    const counter = node?.[measure]
    // An expired counter is the same as none.
    const live = isLive(counter, now)
    const count = live ? counter!.count : 0
    const expiresAt = live ? counter!.expiresAt : now
    const refillRateMillis = limit.refillRateMillis

    if (mode === "fail") {
      const next = count + tokens
      if (next > limit.limit) {
        if (node !== undefined) this.touch(node)
        return Duration.millis(expiresAt - now)
      }
      // A capped window opens on its first positive admission and lasts the full window.
      const nextExpiresAt = expiresAt === now && tokens > 0 ? now + refillRateMillis * limit.limit : expiresAt
      this.store(group, value, node, measure, next, nextExpiresAt, now)
      return undefined
    }

    const nextCount = count + tokens
    const nextExpiresAt = expiresAt + refillRateMillis * tokens
    this.store(group, value, node, measure, nextCount, nextExpiresAt, now)
    const ttl = nextExpiresAt - now
    const ttlTotal = nextCount * refillRateMillis
    const elapsed = ttlTotal - ttl
    const windowNumber = Math.floor((nextCount - 1) / limit.limit)
    const remaining = windowNumber * limit.windowMillis - elapsed
    if (remaining <= 0) return undefined
    const delay = Duration.millis(remaining)
    return Duration.isZero(delay) ? undefined : delay
  }

  // Records a counter's new state. A state already expired is the same as none: it is not kept, and
  // a node left with no live counter is dropped.
  private store(
    group: Group,
    value: string,
    node: Node | undefined,
    measure: Measure,
    count: number,
    expiresAt: number,
    now: number
  ): void {
    if (!(expiresAt > now)) {
      if (node === undefined) return
      node[measure] = undefined
      if (isLive(node.requests, now) || isLive(node.tokens, now)) this.touch(node)
      else this.remove(node)
      return
    }
    if (node === undefined) {
      if (this.count >= this.maxKeys) this.remove(this.oldest!)
      node = { group, value, requests: undefined, tokens: undefined, older: this.newest, newer: undefined }
      if (this.newest === undefined) this.oldest = node
      else this.newest.newer = node
      this.newest = node
      this.count++
      group.nodes.set(value, node)
    } else {
      this.touch(node)
    }
    const counter = node[measure]
    if (counter === undefined) node[measure] = { count, expiresAt }
    else {
      counter.count = count
      counter.expiresAt = expiresAt
    }
  }

  // Moves a node to the back of the least-recently-used order.
  private touch(node: Node): void {
    if (node === this.newest) return
    this.unlink(node)
    node.older = this.newest
    node.newer = undefined
    this.newest!.newer = node
    this.newest = node
  }

  private remove(node: Node): void {
    this.unlink(node)
    node.group.nodes.delete(node.value)
    this.count--
  }

  private unlink(node: Node): void {
    if (node.older === undefined) this.oldest = node.newer
    else node.older.newer = node.newer
    if (node.newer === undefined) this.newest = node.older
    else node.newer.older = node.older
  }
}

/**
 * The counters of each in-process rate limit service, for tests.
 *
 * @internal
 */
export const windowsOf = new WeakMap<object, FixedWindows>()
