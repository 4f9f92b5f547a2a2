/**
 * An open-loop load generator with a bounded rate and bounded concurrency.
 *
 * Request `i` is due at `start + i / rate`; at most `concurrency` requests are in flight, so when the
 * server is slower than the rate, requests wait for a free slot (the rate is an upper bound). Each
 * request's function must not throw (classify failures instead); the run ends when all are done.
 */
import { setTimeout as sleep } from "node:timers/promises"

/** How to run a load. */
export interface Options {
  readonly total: number
  /** Upper bound on requests started per second. */
  readonly ratePerSecond: number
  /** Upper bound on requests in flight. */
  readonly concurrency: number
  /** Sends request `index` and settles when it is classified. */
  readonly run: (index: number) => Promise<void>
  /** Called about every `progressEveryMs` with the number of requests done so far. */
  readonly onProgress?: ((done: number) => void) | undefined
  readonly progressEveryMs?: number | undefined
  /** Stops starting new requests (those in flight finish). */
  readonly signal?: AbortSignal | undefined
}

/** What a run did. */
export interface Result {
  readonly started: number
  readonly done: number
  readonly seconds: number
  /** The most requests in flight at once. */
  readonly maxInFlight: number
}

/** Runs the load to the end (or until `signal` aborts) and reports what it did. */
export const run = async (options: Options): Promise<Result> => {
  const started = performance.now()
  let next = 0
  let done = 0
  let startedCount = 0
  let inFlight = 0
  let maxInFlight = 0
  const timer =
    options.onProgress === undefined
      ? undefined
      : setInterval(() => options.onProgress?.(done), options.progressEveryMs ?? 5_000)
  const aborted = () => options.signal?.aborted === true
  const worker = async (): Promise<void> => {
    for (;;) {
      if (aborted()) return
      const index = next++
      if (index >= options.total) return
      const wait = started + (index * 1000) / options.ratePerSecond - performance.now()
      if (wait > 1) await sleep(wait)
      if (aborted()) return
      startedCount++
      inFlight++
      if (inFlight > maxInFlight) maxInFlight = inFlight
      try {
        await options.run(index)
      } finally {
        inFlight--
        done++
      }
    }
  }
  try {
    await Promise.all(Array.from({ length: Math.max(1, options.concurrency) }, worker))
  } finally {
    if (timer !== undefined) clearInterval(timer)
  }
  return { started: startedCount, done, seconds: (performance.now() - started) / 1000, maxInFlight }
}
