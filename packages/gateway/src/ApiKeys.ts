/**
 * Virtual API keys: hashing, constant-time lookup, and the loopback rule for a gateway without keys.
 *
 * The config stores each key as the SHA-256 hex digest of the secret (`roadcar hash-key` prints it),
 * so a leaked config file leaks no key. `make` turns the configured keys into a lookup that hashes the
 * presented key and compares it with every configured digest using `crypto.timingSafeEqual`, without
 * stopping at the first match, so neither timing nor order tells which key (if any) matched. With no
 * keys configured, only loopback callers are served (`isLoopback`). Nothing here logs; callers log the
 * matched key's `name`, never the key.
 *
 * @since 0.1.0
 */

import { createHash, timingSafeEqual } from "node:crypto"
import type { RoadcarConfig } from "@roadcar/core"

/**
 * A configured key: its name (safe to log), its allowed models, its own rate limits.
 *
 * @category models
 * @since 0.1.0
 */
export type Key = typeof RoadcarConfig.KeyConfig.Type

/**
 * The key lookup.
 *
 * @category models
 * @since 0.1.0
 */
export interface ApiKeys {
  /** Whether any key is configured (if not, only loopback callers are served). */
  readonly configured: boolean
  /** The key whose digest matches `secret`'s, if any; constant time in the number of keys. */
  readonly authenticate: (secret: string) => Key | undefined
}

/**
 * The SHA-256 hex digest of a key, as the config stores it.
 *
 * @example
 * ```ts
 * import { ApiKeys } from "@roadcar/gateway"
 * ApiKeys.hash("sk-roadcar-team-a") // => "b11455453695eac0..." (64 hex characters)
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const hash = (secret: string): string => createHash("sha256").update(secret, "utf8").digest("hex")

/**
 * Builds the lookup over the configured keys.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = (keys: ReadonlyArray<Key>): ApiKeys => {
  const digests = keys.map((key) => ({ key, digest: Buffer.from(key.sha256, "hex") }))
  return {
    configured: digests.length > 0,
    authenticate: (secret) => {
      const presented = createHash("sha256").update(secret, "utf8").digest()
      let match: Key | undefined
      // Every digest is compared, whatever matched before: the time does not depend on which key it is.
      for (const entry of digests) {
        const equal = timingSafeEqual(presented, entry.digest)
        match = equal && match === undefined ? entry.key : match
      }
      return match
    }
  }
}

/**
 * The token of an `Authorization: Bearer <token>` header, if the header has that form.
 *
 * @category constructors
 * @since 0.1.0
 */
export const bearerToken = (authorization: string | undefined): string | undefined => {
  if (authorization === undefined) return undefined
  const match = /^\s*bearer\s+(\S+)\s*$/i.exec(authorization)
  return match?.[1]
}

/**
 * Whether a peer address is loopback: `127.0.0.0/8`, `::1`, or IPv4-mapped `::ffff:127.x.x.x`.
 *
 * @category guards
 * @since 0.1.0
 */
export const isLoopback = (address: string | undefined): boolean => {
  if (address === undefined) return false
  const lower = address.toLowerCase()
  if (lower === "::1" || lower === "0:0:0:0:0:0:0:1") return true
  const v4 = lower.startsWith("::ffff:") ? lower.slice("::ffff:".length) : lower
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(v4)
}

/**
 * Whether a key may use a public model (a key without `models` may use every model).
 *
 * @category guards
 * @since 0.1.0
 */
export const allows = (key: Key | undefined, model: string): boolean =>
  key?.models === undefined || key.models.includes(model)
