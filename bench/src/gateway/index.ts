/**
 * The gateway part: requests per second, latency and CPU time per request through the gateway, beside
 * the fake upstream called directly and a bare Node.js proxy, and a breakdown of where the gateway's
 * time goes.
 *
 * Every target runs in its own child process (`targets.ts`); the load generator (autocannon) runs in
 * this one. Scenarios: upstream latency 0 ms and 200 ms, 50 and 200 connections, JSON and streaming;
 * in each, every target is loaded for the same duration with the same connections, in a rotating
 * order, `repeats` times. Ratios (gateway ÷ bare proxy) and added latency (gateway − upstream) are
 * computed per repeat, then their median is reported. The breakdown ("layers") loads, in one
 * scenario, proxies that each add one layer of what the gateway is made of: `fetch` instead of
 * `http.request`, Effect's HTTP server and client (`fetch` and undici), the gateway with its optional
 * stages off, and the gateway.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import os from "node:os"
import { join } from "node:path"
import { type Bar, barChart } from "../chart.ts"
import type { Part, RunOptions } from "../part.ts"
import { machine, type Section, type Table, writeAsset } from "../report.ts"
import { formatNumber, formatRatio, median } from "../stats.ts"
import { type Child, openFileLimit, spawnChild, spawnGateway } from "./children.ts"
import { gatewayConfig } from "./config.ts"
import { answerText } from "./fixtures.ts"
import { type Runnable, type RunRecord, rounds } from "./measure.ts"
import { readyUrl, startTargets } from "./targets.ts"
import { verifyTarget } from "./verify.ts"

// =============================================================================
// Settings
// =============================================================================

/** One load scenario. */
export interface Scenario {
  readonly id: string
  readonly label: string
  readonly upstreamLatencyMs: number
  readonly connections: number
  readonly stream: boolean
}

const scenario = (upstreamLatencyMs: number, stream: boolean, connections: number): Scenario => ({
  id: `${upstreamLatencyMs}ms-${stream ? "stream" : "json"}-${connections}c`,
  label: `${upstreamLatencyMs} ms upstream, ${stream ? "streaming" : "JSON"}, ${connections} connection${connections === 1 ? "" : "s"}`,
  upstreamLatencyMs,
  connections,
  stream
})

/**
 * Every scenario, in the order run: one connection (nothing queues: the latency the gateway adds on
 * its own), then 50 and 200 connections at 0 ms and 200 ms upstream latency, JSON and streaming.
 */
export const scenarios: ReadonlyArray<Scenario> = [
  scenario(0, false, 1),
  scenario(0, true, 1),
  ...[0, 200].flatMap((latency) =>
    [false, true].flatMap((stream) => [50, 200].map((connections) => scenario(latency, stream, connections)))
  )
]

interface Settings {
  readonly scenarios: ReadonlyArray<Scenario>
  readonly repeats: number
  /** Seconds per run (one-connection scenarios: `singleSeconds`). */
  readonly durationSeconds: number
  readonly singleSeconds: number
  readonly warmupSeconds: number
  /** The breakdown: its warm-up is longer, its targets have not run the scenarios before. */
  readonly layers: { readonly repeats: number; readonly durationSeconds: number; readonly warmupSeconds: number }
}

const full: Settings = {
  scenarios,
  repeats: 3,
  durationSeconds: 2,
  singleSeconds: 1.5,
  warmupSeconds: 1,
  layers: { repeats: 3, durationSeconds: 2, warmupSeconds: 3 }
}

const quickSettings: Settings = {
  scenarios: [scenario(0, false, 50), scenario(200, true, 50)],
  repeats: 1,
  durationSeconds: 0.8,
  singleSeconds: 0.8,
  warmupSeconds: 0.3,
  layers: { repeats: 1, durationSeconds: 0.5, warmupSeconds: 0.3 }
}

/** The scenario of the breakdown and of the headline target (as in the issue's reference figures). */
const layersScenario = scenario(0, false, 50)

// =============================================================================
// Summaries
// =============================================================================

/** Medians over the repeats of one target in one scenario. */
export interface Summary {
  readonly target: string
  readonly rps: number
  readonly p50: number
  readonly p99: number
  readonly cpuUs: number
  readonly upstreamCpuUs: number
  /** Median over repeats of (target req/s ÷ bare proxy req/s in the same repeat). */
  readonly ratioToBareProxy: number
  /** Median over repeats of (target p50 / p99 − upstream-direct p50 / p99 in the same repeat), ms. */
  readonly addedP50: number
  readonly addedP99: number
  readonly responses: number
  readonly failures: number
}

const byRepeat = (records: ReadonlyArray<RunRecord>, target: string) =>
  new Map(records.filter((r) => r.target === target).map((r) => [r.repeat, r]))

/** Summarises each target's runs against the same-repeat runs of `bare` and `direct`. */
export const summarise = (
  records: ReadonlyArray<RunRecord>,
  targets: ReadonlyArray<string>,
  bare: string,
  direct: string | undefined
): ReadonlyArray<Summary> => {
  const bareRuns = byRepeat(records, bare)
  const directRuns = direct === undefined ? new Map<number, RunRecord>() : byRepeat(records, direct)
  return targets.map((target) => {
    const runs = records.filter((r) => r.target === target)
    const paired = (other: Map<number, RunRecord>, f: (run: RunRecord, other: RunRecord) => number) =>
      median(runs.flatMap((run) => (other.has(run.repeat) ? [f(run, other.get(run.repeat)!)] : [])))
    return {
      target,
      rps: median(runs.map((r) => r.rps)),
      p50: median(runs.map((r) => r.latencyMs.p50)),
      p99: median(runs.map((r) => r.latencyMs.p99)),
      cpuUs: median(runs.map((r) => r.targetCpuUsPerRequest)),
      upstreamCpuUs: median(runs.map((r) => r.upstreamCpuUsPerRequest)),
      ratioToBareProxy: paired(bareRuns, (run, other) => run.rps / other.rps),
      addedP50: paired(directRuns, (run, other) => run.latencyMs.p50 - other.latencyMs.p50),
      addedP99: paired(directRuns, (run, other) => run.latencyMs.p99 - other.latencyMs.p99),
      responses: runs.reduce((sum, r) => sum + r.responses, 0),
      failures: runs.reduce((sum, r) => sum + r.non2xx + r.errors, 0)
    }
  })
}

// =============================================================================
// Running
// =============================================================================

interface ScenarioResult {
  readonly scenario: Scenario
  readonly records: ReadonlyArray<RunRecord>
}

interface Layer {
  readonly id: string
  readonly label: string
  /** Starts the target in front of the upstream at `upstreamUrl`. */
  readonly start: (upstreamUrl: string) => Promise<{ readonly url: string; readonly child: Child }>
}

const script = (name: string) => new URL(`./${name}`, import.meta.url).pathname

const startChild = async (name: string, args: ReadonlyArray<string>) => {
  const child = spawnChild({ name, args })
  return { url: await child.receive(readyUrl), child }
}

const startGateway = async (config: Readonly<Record<string, unknown>>) => {
  const child = await spawnGateway(config)
  return { url: child.url, child }
}

/** The gateway's config with its optional stages off: no keys, rate limit, budget, cache or log. */
const stagesOff = (upstreamUrl: string): Readonly<Record<string, unknown>> => {
  const { keys: _keys, rateLimit: _rateLimit, budgets: _budgets, ...rest } = gatewayConfig(upstreamUrl)
  return { ...rest, logLevel: "None", cache: { enabled: false } }
}

/** The breakdown's extra targets (the bare proxy and the default gateway are the part's own). */
const layers: ReadonlyArray<Layer> = [
  {
    id: "bare-proxy-fetch",
    label: "bare Node.js proxy, upstream call with fetch",
    start: (url) => startChild("bare-proxy-fetch", [script("bareProxyChild.ts"), url, "fetch"])
  },
  {
    id: "effect-proxy-fetch",
    label: "Effect HTTP server + HttpClient (FetchHttpClient), no stages",
    start: (url) => startChild("effect-proxy-fetch", [script("effectProxyChild.ts"), url, "fetch"])
  },
  {
    id: "effect-proxy-undici",
    label: "Effect HTTP server + HttpClient (NodeHttpClient.layerUndici), no stages",
    start: (url) => startChild("effect-proxy-undici", [script("effectProxyChild.ts"), url, "undici"])
  },
  {
    id: "gateway-stages-off",
    label: "gateway, optional stages off (no keys, rate limit, budget, cache, log)",
    start: (url) => startGateway(stagesOff(url))
  }
]

const layerOrder = [
  "bare-proxy",
  "bare-proxy-fetch",
  "effect-proxy-fetch",
  "effect-proxy-undici",
  "gateway-stages-off",
  "gateway"
]

const countLines = (file: string, needle: string): number => {
  try {
    const text = readFileSync(file, "utf8")
    let count = 0
    for (let at = text.indexOf(needle); at !== -1; at = text.indexOf(needle, at + needle.length)) count++
    return count
  } catch {
    return 0
  }
}

// =============================================================================
// Report
// =============================================================================

const n = (value: number) => formatNumber(value)
const ms = (value: number) => formatNumber(value, 3)
const signed = (value: number) => (Number.isFinite(value) ? `${value >= 0 ? "+" : ""}${ms(value)}` : "n/a")

const targetLabels: Record<string, string> = {
  upstream: "fake upstream, directly",
  "bare-proxy": "bare Node.js proxy (http.request)",
  gateway: "Roadcar gateway, every stage on",
  ...Object.fromEntries(layers.map((layer) => [layer.id, layer.label]))
}

const label = (id: string) => targetLabels[id] ?? id

const buildSection = (
  results: ReadonlyArray<ScenarioResult>,
  layerRecords: ReadonlyArray<RunRecord>,
  settings: Settings,
  context: {
    readonly options: RunOptions
    readonly seconds: number
    readonly loads: ReadonlyArray<number>
    readonly logLines: number
    readonly gatewayResponses: number
    readonly fdLimit: number | undefined
  }
): Section => {
  const summaries = results.map((result) => ({
    scenario: result.scenario,
    rows: summarise(result.records, ["upstream", "bare-proxy", "gateway"], "bare-proxy", "upstream")
  }))
  const find = (id: string) => summaries.find((s) => s.scenario.id === id)
  const gatewayOf = (id: string) => find(id)?.rows.find((row) => row.target === "gateway")
  const headline = gatewayOf(layersScenario.id)
  const slow = summaries.filter((s) => s.scenario.upstreamLatencyMs === 200)
  const slowGateway = slow.map((s) => ({ scenario: s.scenario, row: s.rows.find((row) => row.target === "gateway")! }))
  const worstAddedP99 = Math.max(...slowGateway.map((s) => s.row.addedP99))
  const single = summaries
    .filter((s) => s.scenario.connections === 1)
    .map((s) => ({ scenario: s.scenario, row: s.rows.find((row) => row.target === "gateway")! }))

  const layerSummaries = summarise(
    layerRecords,
    layerOrder.filter((id) => layerRecords.some((r) => r.target === id)),
    "bare-proxy",
    undefined
  )
  const layerCpu = (id: string) => layerSummaries.find((row) => row.target === id)?.cpuUs ?? Number.NaN

  const targets: Table = {
    title: "Targets",
    columns: ["target", "measured", "result"],
    rows: [
      [
        `gateway ≥ 80% of the bare proxy's req/s, every stage on (${layersScenario.label})`,
        headline === undefined
          ? "n/a"
          : `${n(headline.rps)} req/s, ${formatRatio(headline.ratioToBareProxy)} the bare proxy's (median of same-repeat ratios)`,
        headline === undefined ? "n/a" : headline.ratioToBareProxy >= 0.8 ? "met" : "missed"
      ],
      [
        "p99 added latency < 2 ms at 200 ms upstream latency (gateway p99 − upstream p99, same repeat)",
        slowGateway.length === 0
          ? "n/a"
          : slowGateway
              .map((s) => `${signed(s.row.addedP99)} ms (${s.scenario.label.replace("200 ms upstream, ", "")})`)
              .join("; "),
        slowGateway.length === 0 ? "n/a" : worstAddedP99 < 2 ? "met" : "missed"
      ],
      ...single.map((s) => [
        `for reference: added latency with nothing queued (${s.scenario.label})`,
        `p50 ${signed(s.row.addedP50)} ms, p99 ${signed(s.row.addedP99)} ms`,
        s.row.addedP99 < 2 ? "under 2 ms" : "over 2 ms"
      ])
    ]
  }

  const main: Table = {
    title: "Throughput and latency (medians over repeats; ratio and added latency paired within each repeat)",
    columns: [
      "scenario",
      "target",
      "req/s",
      "÷ bare proxy",
      "p50 ms",
      "p99 ms",
      "added p50 ms",
      "added p99 ms",
      "CPU µs/request (target process)",
      "non-2xx + errors"
    ],
    rows: summaries.flatMap((s) =>
      s.rows.map((row) => [
        s.scenario.label,
        label(row.target),
        n(row.rps),
        formatRatio(row.ratioToBareProxy),
        ms(row.p50),
        ms(row.p99),
        row.target === "upstream" ? "" : signed(row.addedP50),
        row.target === "upstream" ? "" : signed(row.addedP99),
        n(row.cpuUs),
        String(row.failures)
      ])
    )
  }

  const layersTable: Table = {
    title: `Where the gateway's time goes (${layersScenario.label}; each row adds one layer)`,
    columns: ["target", "req/s", "÷ bare proxy", "CPU µs/request", "CPU ÷ bare proxy", "p99 ms"],
    rows: layerSummaries.map((row) => [
      label(row.target),
      n(row.rps),
      formatRatio(row.ratioToBareProxy),
      n(row.cpuUs),
      formatRatio(row.cpuUs / layerCpu("bare-proxy")),
      ms(row.p99)
    ])
  }

  const throughputBars: ReadonlyArray<Bar> = summaries
    .filter((s) => s.scenario.upstreamLatencyMs === 0)
    .flatMap((s) =>
      s.rows.map((row) => ({
        label: `${s.scenario.stream ? "stream" : "JSON"} ${s.scenario.connections}c: ${row.target}`,
        value: row.rps,
        highlight: row.target === "gateway"
      }))
    )
  const layerBars: ReadonlyArray<Bar> = layerSummaries.map((row) => ({
    label: label(row.target),
    value: row.cpuUs,
    highlight: row.target.startsWith("gateway")
  }))
  const charts = [
    {
      title: "Requests per second, 0 ms upstream",
      file: writeAsset(
        "gateway-throughput.svg",
        barChart("Requests per second, 0 ms upstream (higher is better)", "req/s", throughputBars),
        context.options.outDir
      )
    },
    {
      title: "CPU time per request by layer",
      file: writeAsset(
        "gateway-layers.svg",
        barChart(`CPU µs per request, ${layersScenario.label} (lower is better)`, "µs", layerBars),
        context.options.outDir
      )
    }
  ]

  const loadText = `${formatNumber(Math.min(...context.loads), 2)}–${formatNumber(Math.max(...context.loads), 2)}`
  const summary = [
    `Every target is a child process on 127.0.0.1; the load generator (autocannon, in the parent process) sends \`POST /v1/chat/completions\` with a distinct prompt per request (so the gateway's cache misses and stores on every request) for ${settings.durationSeconds} s per run (${settings.singleSeconds} s with one connection), the same connections for every target, targets in a rotating order, ${settings.repeats} repeat(s) per scenario, after a warm-up. The fake upstream (\`@roadcar/testing\`) answers ${answerText.split(" ").length} words (12 content chunks when streamed) after the scenario's latency. Latency percentiles come from every response's own time (fractional ms), not autocannon's whole-millisecond histogram.`,
    `The gateway is \`roadcar serve\` with every stage on: an API key checked per request, a per-key rate limit on requests and tokens (generous), a per-key token budget, the response cache (10,000 entries, every request a miss), the circuit breaker, 3 attempts, the default timeouts, the alerting monitor, and the JSON request log at Info written to a file (${n(context.logLines)} request lines for ${n(context.gatewayResponses)} measured gateway responses plus warm-ups). The bare proxy parses the body, forwards it with \`http.request\` over a keep-alive agent and pipes the answer back: the ceiling for any Node.js gateway.`,
    headline === undefined
      ? ""
      : `Headline (${layersScenario.label}): the gateway serves ${n(headline.rps)} req/s, ${formatRatio(headline.ratioToBareProxy)} the bare proxy's, at ${n(headline.cpuUs)} µs of CPU per request against the bare proxy's ${n(layerCpu("bare-proxy"))} µs. At 200 ms upstream latency the gateway adds ${slowGateway.map((s) => `${signed(s.row.addedP99)} ms`).join(", ")} to the p99 (${slowGateway.map((s) => s.scenario.label.replace("200 ms upstream, ", "")).join("; ")}).`,
    layerSummaries.length === 0
      ? ""
      : `Where the time goes (layers table, same run): calling the upstream with \`fetch\` instead of \`http.request\` already costs ${formatRatio(layerCpu("bare-proxy-fetch") / layerCpu("bare-proxy"))} the bare proxy's CPU per request; the thinnest proxy on Effect's HTTP server and \`HttpClient\` costs ${formatRatio(layerCpu("effect-proxy-undici") / layerCpu("bare-proxy"))} on undici (the gateway's client; ${formatRatio(layerCpu("effect-proxy-fetch") / layerCpu("bare-proxy"))} with \`FetchHttpClient\`); the gateway with its optional stages off ${formatRatio(layerCpu("gateway-stages-off") / layerCpu("bare-proxy"))}, and with every stage ${formatRatio(layerCpu("gateway") / layerCpu("bare-proxy"))}.`,
    `Load average (1 min) during the part: ${loadText} on ${os.cpus().length} cores: the machine was shared, so compare the ratios of the same run, not absolute figures.`
  ].filter((line) => line !== "")

  const notes = [
    "CPU µs/request is the CPU time (user + system) of the target's own process over the run (`process.cpuUsage()` reported by a preloaded probe), divided by its 2xx responses. For the upstream row it is the upstream's; the fake upstream's own CPU per request is the same under every target.",
    '"÷ bare proxy" and "added" latencies are computed within each repeat (the gateway against the bare proxy / the upstream run right before or after it) and their median is shown; req/s and latencies are medians over repeats.',
    "With 200 ms of upstream latency, req/s is bound by connections ÷ latency for every target; those scenarios measure the latency the gateway adds, not throughput.",
    "At 200 ms every connection waits the same 200 ms, so autocannon's closed-loop connections fall into step: the answers for all N connections arrive within a millisecond or two, and the process in front of the upstream works through them one after another. The last one waits for about N × that process's CPU time per request (half that at the median), and that is what the added p50 and p99 show for every proxy, the bare one included (50 connections × its ~0.1–0.2 ms ≈ 5–10 ms). Under this load the 2 ms target therefore needs a CPU time per request under 2 ms ÷ connections (40 µs at 50 connections), which no Node proxy here reaches; the one-connection rows show what the gateway adds when nothing queues.",
    "The layers table loads, in one scenario, a bare proxy calling the upstream with `fetch` (undici inside Node), the thinnest proxy on Effect's HTTP server and `HttpClient` (with `NodeHttpClient.layerUndici`, the gateway's default client, and with `FetchHttpClient`), the gateway with its optional stages off, and the gateway.",
    `Open-file limit of the gateway process: ${context.fdLimit ?? "unknown"}.`,
    "Re-run: `pnpm bench gateway`; profile the gateway under load: `pnpm --filter @roadcar/bench gateway:profile 10 json 50`."
  ]

  return {
    part: "gateway",
    title: "Gateway: throughput and latency",
    date: new Date().toISOString(),
    machine: machine(),
    seconds: context.seconds,
    summary,
    tables: [targets, main, layersTable],
    charts,
    notes,
    data: {
      settings,
      loadAverage: { min: Math.min(...context.loads), max: Math.max(...context.loads) },
      scenarios: summaries,
      layers: layerSummaries,
      runs: results.map((r) => ({ scenario: r.scenario.id, records: r.records })),
      layerRuns: layerRecords
    }
  }
}

// =============================================================================
// Part
// =============================================================================

const warmUp = async (
  targets: ReadonlyArray<Runnable>,
  upstream: Child,
  seconds: number,
  formats: ReadonlyArray<boolean> = [false, true]
) => {
  for (const target of targets) {
    for (const stream of formats) {
      await rounds([target], upstream, { connections: 50, durationSeconds: seconds, stream }, { repeats: 1 })
    }
  }
}

const check = async (target: Runnable, options: { readonly gateway?: boolean; readonly keys?: boolean }) => {
  const problem = await verifyTarget(target.url, options)
  if (problem !== undefined) throw new Error(`${target.id}: ${problem}`)
}

const runPart = async (options: RunOptions): Promise<Section> => {
  const settings = options.quick ? quickSettings : full
  const started = performance.now()
  const logDir = mkdtempSync(join(os.tmpdir(), "roadcar-bench-log-"))
  const logFile = join(logDir, "gateway.log")
  const loads: Array<number> = []
  const targets = await startTargets({ logFile })
  const extra: Array<Runnable> = []
  try {
    for (const target of targets.all) await check(target, { gateway: target.id === "gateway" })
    const fdLimit = openFileLimit(targets.gateway.child.pid)
    options.log(`warm-up (${settings.warmupSeconds} s per target and format)`)
    await warmUp(targets.all, targets.upstream.child, settings.warmupSeconds)

    const results: Array<ScenarioResult> = []
    for (const [index, s] of settings.scenarios.entries()) {
      options.log(`-- ${s.label}`)
      await targets.setBehaviour({ _tag: "Ok", latencyMs: s.upstreamLatencyMs, text: answerText })
      const records = await rounds(
        targets.all,
        targets.upstream.child,
        {
          connections: s.connections,
          durationSeconds: s.connections === 1 ? settings.singleSeconds : settings.durationSeconds,
          stream: s.stream
        },
        { repeats: settings.repeats, offset: index, log: options.log }
      )
      loads.push(...records.map((r) => r.load1))
      results.push({ scenario: s, records })
    }

    options.log(`-- layers: ${layersScenario.label}`)
    await targets.setBehaviour({ _tag: "Ok", text: answerText })
    // Started together (each is its own process), then checked one by one.
    const launched = await Promise.allSettled(
      layers.map(
        async (layer): Promise<Runnable> => ({
          id: layer.id,
          label: layer.label,
          ...(await layer.start(targets.upstream.url))
        })
      )
    )
    for (const result of launched) if (result.status === "fulfilled") extra.push(result.value)
    const failed = launched.find((result) => result.status === "rejected")
    if (failed !== undefined) throw failed.reason
    for (const target of extra) {
      await check(target, { gateway: target.id.startsWith("gateway"), keys: target.id !== "gateway-stages-off" })
    }
    await warmUp(extra, targets.upstream.child, settings.layers.warmupSeconds, [false])
    const layerRecords = await rounds(
      [targets.bareProxy, ...extra, targets.gateway],
      targets.upstream.child,
      { connections: layersScenario.connections, durationSeconds: settings.layers.durationSeconds, stream: false },
      { repeats: settings.layers.repeats, log: options.log }
    )
    loads.push(...layerRecords.map((r) => r.load1))
    await Promise.all(extra.map((target) => target.child.stop()))
    extra.length = 0
    await targets.stop()
    const gatewayResponses =
      results.reduce(
        (sum, r) => sum + r.records.filter((x) => x.target === "gateway").reduce((a, x) => a + x.responses, 0),
        0
      ) + layerRecords.filter((x) => x.target === "gateway").reduce((a, x) => a + x.responses, 0)
    return buildSection(results, layerRecords, settings, {
      options,
      seconds: (performance.now() - started) / 1000,
      loads,
      logLines: countLines(logFile, '"message":"request"'),
      gatewayResponses,
      fdLimit
    })
  } finally {
    await Promise.all(extra.map((target) => target.child.stop(2_000)))
    await targets.stop()
    rmSync(logDir, { recursive: true, force: true })
  }
}

/** The gateway part. */
export const part: Part = {
  name: "gateway",
  description: "throughput, latency and CPU per request through the gateway beside a bare Node proxy",
  run: runPart
}
