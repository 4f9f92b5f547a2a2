/**
 * The `roadcar` command line: `serve`, `check-config`, `hash-key`, `help`.
 *
 * `parse` is a small hand-written argv parser (a command, `--config <path>` / `--config=<path>`, one
 * positional for `hash-key`); anything else is a `UsageError` (exit code 2). `run` executes a command
 * and returns its exit code: 0 on success, 1 for an invalid config (every problem printed on its own
 * line, naming the field) or a server that cannot start, 2 for usage errors. `serve` runs until
 * interrupted (SIGTERM / SIGINT under `NodeRuntime.runMain`), drains, and exits 0; `teardown` maps
 * the program's exit to the process exit code.
 *
 * @since 0.1.0
 */

import * as Fs from "node:fs"
import { RequestLog, type RoadcarConfig } from "@roadcar/core"
import { Telemetry, TelemetryEnv } from "@roadcar/opentelemetry"
import * as Cause from "effect/Cause"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Result from "effect/Result"
import type * as Runtime from "effect/Runtime"
import * as ApiKeys from "./ApiKeys.ts"
import * as GatewayConfig from "./GatewayConfig.ts"
import * as GatewayServer from "./GatewayServer.ts"

// =============================================================================
// Commands
// =============================================================================

/**
 * A parsed command line.
 *
 * @category models
 * @since 0.1.0
 */
export type Command =
  | { readonly _tag: "Serve"; readonly config: string | undefined }
  | { readonly _tag: "CheckConfig"; readonly config: string | undefined }
  | { readonly _tag: "HashKey"; readonly key: string }
  | { readonly _tag: "Help" }

/**
 * A command line that cannot be run; printed with a hint, exit code 2.
 *
 * @category errors
 * @since 0.1.0
 */
export interface UsageError {
  readonly _tag: "UsageError"
  readonly message: string
}

const usageError = (message: string): Result.Result<Command, UsageError> => Result.fail({ _tag: "UsageError", message })

/**
 * The help text.
 *
 * @category constants
 * @since 0.1.0
 */
export const usage = `roadcar: an OpenAI-compatible LLM gateway with rate limits, cache, retries, circuit breakers and fallbacks

Usage:
  roadcar serve [--config <path>]          start the gateway (default 127.0.0.1:8787)
  roadcar check-config [--config <path>]   validate the config and print its problems
  roadcar hash-key <key>                   print the SHA-256 digest of an API key for "keys" in the config
  roadcar hash-key -                       the same, reading the key from stdin
  roadcar help                             this text (also --help, -h)

Config: --config <path>, else $ROADCAR_CONFIG, else ./roadcar.config.json, else the built-in defaults
(one model "chat" on the simulated model). HOST and PORT in the environment override server.host/port.`

const commands = ["serve", "check-config", "hash-key", "help"]

/**
 * Parses the arguments after `roadcar`.
 *
 * @example
 * ```ts
 * import { Cli } from "@roadcar/gateway"
 * Cli.parse(["serve", "--config", "prod.json"]) // => Result.succeed({ _tag: "Serve", config: "prod.json" })
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const parse = (argv: ReadonlyArray<string>): Result.Result<Command, UsageError> => {
  const [command, ...rest] = argv
  if (command === undefined) return usageError("missing command")
  if (command === "help" || command === "--help" || command === "-h") {
    return rest.length === 0 ? Result.succeed({ _tag: "Help" }) : usageError(`help takes no arguments`)
  }
  if (!commands.includes(command)) {
    return usageError(
      command.startsWith("-") ? `unknown option ${command} (expected a command first)` : `unknown command "${command}"`
    )
  }
  let config: string | undefined
  const positionals: Array<string> = []
  for (let index = 0; index < rest.length; index++) {
    const arg = rest[index]!
    if (arg === "--help" || arg === "-h") return Result.succeed({ _tag: "Help" })
    if (arg === "--config" || arg.startsWith("--config=")) {
      if (command === "hash-key") return usageError("hash-key takes no --config")
      const value = arg === "--config" ? rest[++index] : arg.slice("--config=".length)
      if (value === undefined || value === "" || (arg === "--config" && value.startsWith("--"))) {
        return usageError("--config needs a path: --config <path>")
      }
      if (config !== undefined) return usageError("--config given twice")
      config = value
      continue
    }
    if (arg.startsWith("-") && arg !== "-") {
      // A key can start with "-": never echoed (usage errors reach logs).
      return usageError(
        command === "hash-key"
          ? "hash-key takes no options; to hash a key that starts with '-', pipe it in: roadcar hash-key -"
          : `unknown option ${arg} for ${command}`
      )
    }
    positionals.push(arg)
  }
  switch (command) {
    case "serve":
    case "check-config":
      return positionals.length > 0
        ? usageError(`${command} takes no arguments, got "${positionals[0]}"`)
        : Result.succeed(command === "serve" ? { _tag: "Serve", config } : { _tag: "CheckConfig", config })
    default:
      if (positionals.length !== 1) return usageError("hash-key needs exactly one key: roadcar hash-key <key>")
      return Result.succeed({ _tag: "HashKey", key: positionals[0]! })
  }
}

// =============================================================================
// Running
// =============================================================================

/**
 * What the commands read from the process (replaced in tests).
 *
 * @category options
 * @since 0.1.0
 */
export interface Environment {
  readonly env: GatewayConfig.Env
  readonly cwd: string
  /** The key for `hash-key -`. */
  readonly readStdin: () => string
}

const processEnvironment = (): Environment => ({
  env: process.env,
  cwd: process.cwd(),
  readStdin: () => Fs.readFileSync(0, "utf8")
})

const plural = (count: number, word: string) => `${count} ${word}${count === 1 ? "" : "s"}`

const printConfigError = (error: RoadcarConfig.ConfigError) =>
  Console.error(`roadcar: ${error.message}`).pipe(Effect.as(1))

const checkConfig = (flag: string | undefined, environment: Environment) =>
  Effect.gen(function* () {
    const { config, source } = yield* GatewayConfig.load({ flag, env: environment.env, cwd: environment.cwd })
    const problems = GatewayConfig.missingSecrets(config, environment.env)
    const settings = GatewayConfig.serverSettings(config, environment.env)
    // The same OTEL_* parse `serve` runs (Telemetry.layerFromEnv), so a value that stops serve fails here too.
    const telemetry = TelemetryEnv.parse(environment.env)
    const all = [
      ...problems,
      ...(Result.isFailure(settings) ? settings.failure.problems : []),
      ...(Result.isFailure(telemetry) ? [telemetry.failure.message] : [])
    ]
    if (all.length > 0) {
      yield* Console.error(
        `roadcar: invalid configuration in ${GatewayConfig.describeSource(source)}:\n${all.map((p) => `  - ${p}`).join("\n")}`
      )
      return 1
    }
    const models = Object.keys(config.models ?? {}).length || 1
    const upstreams = new Set([
      ...Object.keys(config.upstreams ?? {}),
      ...Object.values(config.models ?? { chat: { upstream: "simulated" } }).flatMap((model) => [
        model.upstream,
        ...(model.fallbacks ?? []).map((fallback) => fallback.upstream)
      ])
    ]).size
    yield* Console.log(
      `ok: ${plural(models, "model")}, ${plural(upstreams, "upstream")} (${GatewayConfig.describeSource(source)})`
    )
    return 0
  }).pipe(Effect.catchTag("ConfigError", printConfigError))

const serve = (flag: string | undefined, environment: Environment) =>
  Effect.gen(function* () {
    const { config, source } = yield* GatewayConfig.load({ flag, env: environment.env, cwd: environment.cwd })
    const logger = RequestLog.layerJsonStdout(config.logLevel ?? "Info")
    yield* Effect.logInfo("roadcar config loaded").pipe(
      Effect.annotateLogs({ source: GatewayConfig.describeSource(source) }),
      Effect.provide(logger)
    )
    // OpenTelemetry export turns on when OTEL_EXPORTER_OTLP_ENDPOINT (or another OTEL_* variable) asks for it;
    // it is provided outside the server, so on shutdown the gateway drains first, then the last spans flush.
    return yield* Layer.launch(
      GatewayServer.layer({ config, env: environment.env }).pipe(
        Layer.provide(Telemetry.layerFromEnv({ env: environment.env }))
      )
    ).pipe(Effect.provide(logger), Effect.as(0))
  }).pipe(
    Effect.catchTags({
      ConfigError: printConfigError,
      TelemetryEnvError: (error) => Console.error(`roadcar: ${error.message}`).pipe(Effect.as(1)),
      StoreError: (error) => Console.error(`roadcar: ${error.message}`).pipe(Effect.as(1)),
      ServeError: (error) =>
        Console.error(
          `roadcar: cannot start the server: ${error.cause instanceof Error ? error.cause.message : String(error.cause)}`
        ).pipe(Effect.as(1))
    })
  )

/**
 * Runs a command; succeeds with the process exit code.
 *
 * @category running
 * @since 0.1.0
 */
export const run = (command: Command, environment: Environment = processEnvironment()): Effect.Effect<number> => {
  switch (command._tag) {
    case "Help":
      return Console.log(usage).pipe(Effect.as(0))
    case "HashKey": {
      const key = command.key === "-" ? environment.readStdin().trim() : command.key
      if (key === "") return Console.error("roadcar: hash-key: the key is empty").pipe(Effect.as(2))
      return Console.log(ApiKeys.hash(key)).pipe(Effect.as(0))
    }
    case "CheckConfig":
      return checkConfig(command.config, environment)
    case "Serve":
      return serve(command.config, environment)
  }
}

/**
 * Parses and runs a command line; succeeds with the process exit code (2 for usage errors).
 *
 * @category running
 * @since 0.1.0
 */
export const main = (argv: ReadonlyArray<string>, environment?: Environment): Effect.Effect<number> => {
  const parsed = parse(argv)
  return Result.isFailure(parsed)
    ? Console.error(`roadcar: ${parsed.failure.message}\n\n${usage}`).pipe(Effect.as(2))
    : run(parsed.success, environment)
}

/**
 * The process exit code of `main`'s exit: its code; 0 after a signal (a drained shutdown); 1 on an
 * unexpected failure.
 *
 * @category running
 * @since 0.1.0
 */
export const teardown: Runtime.Teardown = (exit, onExit) =>
  onExit(
    Exit.isSuccess(exit)
      ? typeof exit.value === "number"
        ? exit.value
        : 0
      : Cause.hasInterruptsOnly(exit.cause)
        ? 0
        : 1
  )
