/**
 * The gateway's benchmark config: every stage on, generous enough that nothing is refused.
 *
 * One public model (`chat`) on one `openai-compatible` upstream (the fake upstream), one API key
 * (checked on every request), a per-key rate limit on requests and tokens, a per-key token budget,
 * the response cache (10,000 entries; the traffic never repeats a prompt, so every request misses and
 * stores), the circuit breaker, 3 attempts, the default timeouts, the alerting monitor, and the JSON
 * request log at `Info` (one line per request). `overrides` replaces top-level sections.
 */
import { benchKeyDigest, model } from "./fixtures.ts"

/** The config as the gateway reads it (JSON). */
export type GatewayConfig = Readonly<Record<string, unknown>>

/** The benchmark config in front of the fake upstream at `upstreamUrl`. */
export const gatewayConfig = (upstreamUrl: string, overrides: GatewayConfig = {}): GatewayConfig => ({
  logLevel: "Info",
  upstreams: {
    fake: { provider: "openai-compatible", model: "fake-model", baseUrl: `${upstreamUrl}/v1` }
  },
  models: { [model]: { upstream: "fake" } },
  keys: [{ name: "bench", sha256: benchKeyDigest }],
  rateLimit: {
    onExceeded: "reject",
    rules: [
      {
        by: "key",
        requests: { limit: 1_000_000_000, window: "1 minute" },
        tokens: { limit: 1_000_000_000_000, window: "1 minute" }
      }
    ]
  },
  budgets: { rules: [{ per: "day", tokens: 1_000_000_000_000 }] },
  cache: { enabled: true, capacity: 10_000, timeToLive: "10 minutes" },
  retry: { attempts: 3 },
  breaker: { consecutiveFailures: 5 },
  monitor: {},
  ...overrides
})

/** The same gateway on the in-process simulated upstream (no upstream socket per request). */
export const simulatedConfig = (overrides: GatewayConfig = {}): GatewayConfig => ({
  ...gatewayConfig("http://127.0.0.1:9"),
  upstreams: { sim: { provider: "simulated" } },
  models: { [model]: { upstream: "sim" } },
  ...overrides
})
