/**
 * Where the gateway's configuration comes from, and the server settings it resolves to.
 *
 * `locate` picks the file: the `--config` flag, else `ROADCAR_CONFIG`, else `./roadcar.config.json` if
 * present, else none (the empty config: one model, `chat`, on the simulated model). `load` reads and
 * validates it with the core's schema (`RoadcarConfig.decodeJson`), so every problem names its field.
 * `serverSettings` resolves host, port, body limit and drain timeout: `HOST` / `PORT` in the
 * environment win over the file, which wins over the defaults. Secrets are not read here (the core
 * reads `{ "env": ... }` references when it builds the upstreams).
 *
 * @since 0.1.0
 */

import * as Fs from "node:fs"
import * as Path from "node:path"
import { RoadcarConfig } from "@roadcar/core"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"

/**
 * The environment, as far as the gateway reads it.
 *
 * @category models
 * @since 0.1.0
 */
export type Env = Readonly<Record<string, string | undefined>>

// =============================================================================
// Server settings
// =============================================================================

/**
 * The server's resolved settings.
 *
 * @category models
 * @since 0.1.0
 */
export interface ServerSettings {
  readonly host: string
  readonly port: number
  readonly bodyLimitBytes: number
  readonly drainTimeout: Duration.Duration
}

/**
 * The defaults: `127.0.0.1:8787`, 1 MiB bodies, 10 seconds to drain on shutdown.
 *
 * @category options
 * @since 0.1.0
 */
export const defaults = {
  host: "127.0.0.1",
  port: 8787,
  bodyLimitBytes: 1_048_576,
  drainTimeout: "10 seconds"
} as const

/**
 * Resolves the server settings: explicit `overrides` (the programmatic API), then `HOST` / `PORT`
 * from `env`, then `config.server`, then `defaults`.
 *
 * @category constructors
 * @since 0.1.0
 */
export const serverSettings = (
  config: RoadcarConfig.RoadcarConfig,
  env: Env = {},
  overrides: { readonly host?: string | undefined; readonly port?: number | undefined } = {}
): Result.Result<ServerSettings, RoadcarConfig.ConfigError> => {
  const problems: Array<string> = []
  let port = overrides.port ?? config.server?.port ?? defaults.port
  const envPort = env["PORT"]
  if (overrides.port === undefined && envPort !== undefined && envPort.trim() !== "") {
    const parsed = Number(envPort)
    if (Number.isInteger(parsed) && parsed >= 0 && parsed <= 65535) port = parsed
    else problems.push(`PORT: expected a port number between 0 and 65535, got ${JSON.stringify(envPort)}`)
  }
  const envHost = env["HOST"]?.trim()
  const host = overrides.host ?? (envHost !== undefined && envHost !== "" ? envHost : undefined) ?? config.server?.host
  if (problems.length > 0) return Result.fail(new RoadcarConfig.ConfigError({ source: "environment", problems }))
  return Result.succeed({
    host: host ?? defaults.host,
    port,
    bodyLimitBytes: config.server?.bodyLimitBytes ?? defaults.bodyLimitBytes,
    drainTimeout: Duration.fromInputUnsafe((config.server?.drainTimeout ?? defaults.drainTimeout) as Duration.Input)
  })
}

// =============================================================================
// Loading
// =============================================================================

/**
 * The default config file, looked up in the working directory.
 *
 * @category options
 * @since 0.1.0
 */
export const defaultFile = "roadcar.config.json"

/**
 * Where the config was found.
 *
 * @category models
 * @since 0.1.0
 */
export type Source =
  | { readonly _tag: "Flag"; readonly path: string }
  | { readonly _tag: "Env"; readonly path: string }
  | { readonly _tag: "DefaultFile"; readonly path: string }
  | { readonly _tag: "None" }

/**
 * Picks the config file: `flag`, else `ROADCAR_CONFIG`, else `./roadcar.config.json` if it exists.
 *
 * @category constructors
 * @since 0.1.0
 */
export const locate = (options: {
  readonly flag?: string | undefined
  readonly env?: Env | undefined
  readonly cwd?: string | undefined
  readonly exists?: ((path: string) => boolean) | undefined
}): Source => {
  if (options.flag !== undefined) return { _tag: "Flag", path: options.flag }
  const fromEnv = options.env?.["ROADCAR_CONFIG"]
  if (fromEnv !== undefined && fromEnv.trim() !== "") return { _tag: "Env", path: fromEnv }
  const candidate = Path.resolve(options.cwd ?? process.cwd(), defaultFile)
  return (options.exists ?? Fs.existsSync)(candidate) ? { _tag: "DefaultFile", path: candidate } : { _tag: "None" }
}

/**
 * A human description of a source (`"--config ./prod.json"`, `"the built-in defaults"`).
 *
 * @category constructors
 * @since 0.1.0
 */
export const describeSource = (source: Source): string => {
  switch (source._tag) {
    case "Flag":
      return source.path
    case "Env":
      return `${source.path} (from ROADCAR_CONFIG)`
    case "DefaultFile":
      return source.path
    case "None":
      return "the built-in defaults (no config file)"
  }
}

/**
 * A loaded, validated config and where it came from.
 *
 * @category models
 * @since 0.1.0
 */
export interface Loaded {
  readonly config: RoadcarConfig.RoadcarConfig
  readonly source: Source
}

/**
 * Reads and validates the config from `source`; the empty config when there is none.
 *
 * @category constructors
 * @since 0.1.0
 */
export const read = (source: Source): Effect.Effect<Loaded, RoadcarConfig.ConfigError> => {
  if (source._tag === "None") return Effect.map(RoadcarConfig.decode({}, "defaults"), (config) => ({ config, source }))
  const path = source.path
  return Effect.tryPromise({
    try: () => Fs.promises.readFile(path, "utf8"),
    catch: (error) =>
      new RoadcarConfig.ConfigError({
        source: path,
        problems: [`cannot read the config file ${path}: ${readError(error)}`]
      })
  }).pipe(
    // A byte-order mark (some Windows editors write one) is not part of the JSON.
    Effect.flatMap((text) => RoadcarConfig.decodeJson(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text, path)),
    Effect.map((config) => ({ config, source }))
  )
}

/**
 * Locates, reads and validates the config.
 *
 * @category constructors
 * @since 0.1.0
 */
export const load = (
  options: {
    readonly flag?: string | undefined
    readonly env?: Env | undefined
    readonly cwd?: string | undefined
  } = {}
): Effect.Effect<Loaded, RoadcarConfig.ConfigError> =>
  Effect.suspend(() => read(locate({ ...options, env: options.env ?? process.env })))

/**
 * The environment variables the config reads secrets from (upstream API keys, the alert webhook's URL,
 * the Redis URL when a store is on Redis), with a problem for each one that is not set: what
 * `roadcar check-config` reports, and what would stop `serve`.
 *
 * @example
 * ```ts
 * import { GatewayConfig } from "@roadcar/gateway"
 * GatewayConfig.missingSecrets({ alerts: { webhook: { url: { env: "HOOK" } } } }, {})
 * // => ["alerts.webhook.url: the environment variable HOOK is not set; export it before starting"]
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const missingSecrets = (config: RoadcarConfig.RoadcarConfig, env: Env): ReadonlyArray<string> => {
  const references: Array<readonly [string, string | undefined]> = [
    ...Object.entries(config.upstreams ?? {}).map(
      ([name, upstream]) => [`upstreams.${name}.apiKey`, upstream.apiKey?.env] as const
    ),
    ["alerts.webhook.url", config.alerts?.webhook?.url.env],
    ["redis.url", RoadcarConfig.usesRedis(config) ? config.redis?.url?.env : undefined]
  ]
  return references.flatMap(([field, variable]) =>
    variable !== undefined && (env[variable] === undefined || env[variable] === "")
      ? [`${field}: the environment variable ${variable} is not set; export it before starting`]
      : []
  )
}

const readError = (error: unknown): string => {
  if (typeof error === "object" && error !== null && "code" in error) {
    const code = String((error as { code: unknown }).code)
    if (code === "ENOENT") return "no such file"
    if (code === "EACCES") return "permission denied"
    if (code === "EISDIR") return "it is a directory"
    return code
  }
  return error instanceof Error ? error.message : String(error)
}
