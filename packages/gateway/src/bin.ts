#!/usr/bin/env node
/**
 * The `roadcar` executable: `node src/bin.ts <command>` (Node 24 runs the TypeScript directly).
 *
 * Runs `Cli.main` as the process's main fiber: SIGTERM / SIGINT interrupt it, `serve` drains in-flight
 * requests, and `Cli.teardown` turns the result into the exit code.
 *
 * @since 0.1.0
 */
import { NodeRuntime } from "@effect/platform-node"
import * as Cli from "./Cli.ts"

NodeRuntime.runMain(Cli.main(process.argv.slice(2)), { disableErrorReporting: true, teardown: Cli.teardown })
