/**
 * One load run with autocannon: fixed connections and duration, `POST /v1/chat/completions` with a
 * distinct prompt per request (autocannon's `[<id>]` replacement), JSON or streaming.
 *
 * Latency percentiles are computed here from every response's own time (autocannon's `response`
 * event, fractional milliseconds from the request written to the response complete), not from
 * autocannon's histogram, which keeps whole milliseconds only: a 2 ms target needs better. Only 2xx
 * responses count as served; anything else is counted apart. The load generator's own CPU time is
 * recorded too, to show whether it, not the target, was the limit.
 */
import autocannon from "autocannon"
import { quantile } from "../stats.ts"
import { requestBody, requestHeaders } from "./fixtures.ts"

/** How to load a target. */
export interface LoadOptions {
  /** The target's base URL (`http://127.0.0.1:<port>`). */
  readonly url: string
  readonly connections: number
  readonly durationSeconds: number
  readonly stream: boolean
}

/** Latency percentiles, in milliseconds. */
export interface Latency {
  readonly p50: number
  readonly p90: number
  readonly p99: number
  readonly max: number
  readonly mean: number
}

/** What one run measured. */
export interface LoadResult {
  /** 2xx responses completed. */
  readonly responses: number
  readonly non2xx: number
  /** Connection errors and timeouts. */
  readonly errors: number
  readonly seconds: number
  /** 2xx responses per second. */
  readonly rps: number
  readonly latencyMs: Latency
  /** CPU time of the load generator (this process) per 2xx response, µs. */
  readonly generatorCpuUsPerRequest: number
}

/** Percentiles of `values` (milliseconds). */
export const latencyOf = (values: ReadonlyArray<number>): Latency => {
  if (values.length === 0)
    return { p50: Number.NaN, p90: Number.NaN, p99: Number.NaN, max: Number.NaN, mean: Number.NaN }
  let sum = 0
  let max = 0
  for (const value of values) {
    sum += value
    if (value > max) max = value
  }
  return {
    p50: quantile(values, 0.5),
    p90: quantile(values, 0.9),
    p99: quantile(values, 0.99),
    max,
    mean: sum / values.length
  }
}

/** Runs autocannon against `options.url` and resolves with what it measured. */
export const run = (options: LoadOptions): Promise<LoadResult> =>
  new Promise((resolve, reject) => {
    const latencies: Array<number> = []
    let non2xx = 0
    const cpuBefore = process.cpuUsage()
    const startedAt = performance.now()
    const instance = autocannon(
      {
        url: `${options.url}/v1/chat/completions`,
        method: "POST",
        headers: { ...requestHeaders },
        body: requestBody("[<id>]", options.stream),
        idReplacement: true,
        connections: options.connections,
        duration: options.durationSeconds,
        // autocannon checks its stop flag once per sample interval (default 1 s): sample often, so a run
        // lasts its duration rather than the next whole second.
        sampleInt: 100,
        timeout: 10
      },
      (error, result) => {
        if (error !== null && error !== undefined) return reject(error)
        const seconds = (performance.now() - startedAt) / 1000
        const cpu = process.cpuUsage(cpuBefore)
        resolve({
          responses: latencies.length,
          non2xx,
          errors: result.errors,
          seconds,
          rps: latencies.length / seconds,
          latencyMs: latencyOf(latencies),
          generatorCpuUsPerRequest: (cpu.user + cpu.system) / Math.max(1, latencies.length)
        })
      }
    )
    instance.on("response", (_client, statusCode, _bytes, responseTime) => {
      if (statusCode >= 200 && statusCode < 300) latencies.push(responseTime)
      else non2xx++
    })
  })
