/**
 * What the rate limiter's in-process store does with keys nobody uses any more: its sweep.
 *
 * `RateLimiter.layerStoreMemory` keeps one entry per key (`{ count, expiresAt }` for a fixed window,
 * in a `Map` keyed by the full key string) and a background fiber that, every minute, walks every
 * entry and deletes the expired ones; nothing caps the number of entries. This measures, on a virtual
 * clock (`TestClock`), one sweep over `entries` live keys (nothing to delete: the walk alone) and the
 * sweep after their window has passed (everything deleted), and the entry counts around them. The
 * sweep runs synchronously: its duration is how long it blocks the event loop.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as TestClock from "effect/testing/TestClock"
import { makeMemoryStore } from "./harness.ts"

/** What the sweep measurement found. */
export interface SweepResult {
  readonly entries: number
  /** Entries after filling, after a sweep with nothing expired, and after one past the window. */
  readonly sizes: { readonly filled: number; readonly afterLiveSweep: number; readonly afterExpiredSweep: number }
  /** Milliseconds the sweep took with every entry live (the walk alone). */
  readonly liveSweepMs: number
  /** Milliseconds from the window's end to an empty store (the sweep that deletes everything). */
  readonly expiredSweepMs: number
}

const now = Effect.sync(() => performance.now())

/**
 * Fills a fresh memory store with `entries` keys (a 2-minute window each, so the sweep at 1 minute
 * finds them all live and the one at 2 minutes finds them all expired) and times both sweeps.
 */
export const measureSweep = (entries: number): Promise<SweepResult | undefined> => {
  const make = makeMemoryStore
  if (make === undefined) return Promise.resolve(undefined)
  const program = Effect.gen(function* () {
    const memory = yield* make
    const refillRate = Duration.divideUnsafe(Duration.minutes(2), 1_000_000_000)
    for (let i = 0; i < entries; i++) {
      yield* memory.store.fixedWindow({
        key: `roadcar:user:user-${i}:requests`,
        tokens: 1,
        refillRate,
        limit: 1_000_000_000
      })
    }
    const filled = memory.size
    const liveStart = yield* now
    yield* TestClock.adjust("1 minute")
    const liveSweepMs = (yield* now) - liveStart
    const afterLiveSweep = memory.size
    // The window has passed at the next sweep: it deletes every entry.
    const expiredStart = yield* now
    yield* TestClock.adjust("1 minute")
    const expiredSweepMs = (yield* now) - expiredStart
    return {
      entries,
      sizes: { filled, afterLiveSweep, afterExpiredSweep: memory.size },
      liveSweepMs,
      expiredSweepMs
    }
  })
  // No logger: the test clock warns when a long fill runs without advancing it.
  return Effect.runPromise(
    program.pipe(Effect.scoped, Effect.provide(Layer.merge(TestClock.layer(), Logger.layer([]))))
  )
}
