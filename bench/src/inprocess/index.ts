/**
 * The in-process part: Roadcar's overhead per call beside the raw call, bare Effect, cockatiel, the
 * Vercel AI SDK and LangChain.js, on the success path and on a fail-twice-then-succeed path.
 *
 * Builds every candidate, checks each one does its job (the answer comes back, the attempts are
 * made, the cache misses), measures them interleaved with their raw call (`measure.ts`), and turns
 * the medians into the report section: tables, targets, a chart.
 */
import { type Bar, barChart } from "../chart.ts"
import type { Part, RunOptions } from "../part.ts"
import { machine, type Section, type Table, writeAsset } from "../report.ts"
import { formatNumber, formatRatio } from "../stats.ts"
import { generateTextCandidate } from "./aiSdk.ts"
import { wrapped } from "./cockatiel.ts"
import { retryTimeoutFallback, timeoutAlone } from "./effectBare.ts"
import { fakeChatModelCandidate } from "./langchain.ts"
import { type Candidate, defaults, type Measured, measure, quick } from "./measure.ts"
import { rawAsyncCandidate, rawEffectCandidate } from "./raw.ts"
import * as Roadcar from "./roadcar.ts"

/** Reference figures from the issue (2-core machine, Node 24, success path, median overhead per call). */
const reference: Record<string, string> = {
  cockatiel: "~12",
  "cockatiel-no-abort": "~5",
  langchain: "~78",
  "ai-sdk": "~80",
  "effect-retry-timeout-fallback": "~14",
  "effect-timeout": "7–12"
}

const effectEntry: Candidate = {
  ...rawEffectCandidate,
  id: "effect-entry",
  label: "Effect.runPromise(Effect.succeed) vs the raw async call",
  baseline: rawAsyncCandidate
}

const buildCandidates = async (): Promise<ReadonlyArray<Candidate>> => {
  const roadcar = await Promise.all(Roadcar.variants.map(Roadcar.candidate))
  const byId = new Map(roadcar.map((c) => [c.id, c]))
  return [
    byId.get("roadcar")!,
    byId.get("roadcar-traced")!,
    byId.get("roadcar-monitor-noop")!,
    byId.get("roadcar-logs-off")!,
    retryTimeoutFallback("success"),
    timeoutAlone,
    effectEntry,
    wrapped({ abortOnReturn: true, path: "success" }),
    wrapped({ abortOnReturn: false, path: "success" }),
    fakeChatModelCandidate,
    generateTextCandidate,
    byId.get("roadcar-fail-twice")!,
    retryTimeoutFallback("fail-twice"),
    wrapped({ abortOnReturn: true, path: "fail-twice" })
  ]
}

const find = (measured: ReadonlyArray<Measured>, id: string): Measured => {
  const found = measured.find((m) => m.id === id)
  if (found === undefined) throw new Error(`no measurement for ${id}`)
  return found
}

const us = (value: number) => formatNumber(value)

const overheadTable = (
  title: string,
  rows: ReadonlyArray<Measured>,
  against: ReadonlyArray<{ readonly name: string; readonly overhead: number }>,
  withReference: boolean
): Table => ({
  title,
  columns: [
    "candidate",
    "compared with",
    "µs/call",
    "raw µs/call",
    "overhead µs (median)",
    "overhead p25–p75",
    "CPU overhead µs",
    ...against.map((a) => `overhead ÷ ${a.name}`),
    ...(withReference ? ["reference overhead µs"] : [])
  ],
  rows: rows.map((m) => [
    m.label,
    m.baseline ?? "",
    us(m.medianUs),
    us(m.medianBaselineUs),
    us(m.medianOverheadUs),
    `${us(m.p25OverheadUs)}–${us(m.p75OverheadUs)}`,
    us(m.medianOverheadCpuUs),
    ...against.map((a) => formatRatio(m.medianOverheadUs / a.overhead)),
    ...(withReference ? [reference[m.id] ?? ""] : [])
  ])
})

const verdict = (met: boolean) => (met ? "met" : "missed")

// "4.2x faster than" / "3.1x slower than": how Roadcar's overhead compares with another's.
const versus = (roadcarUs: number, otherUs: number): string =>
  roadcarUs <= otherUs
    ? `${formatRatio(otherUs / roadcarUs)} faster than`
    : `${formatRatio(roadcarUs / otherUs)} slower than`

/** Builds the section from the measurements. */
const section = (measured: ReadonlyArray<Measured>, options: RunOptions, seconds: number, rounds: number): Section => {
  const roadcar = find(measured, "roadcar")
  const cockatiel = find(measured, "cockatiel")
  const cockatielNoAbort = find(measured, "cockatiel-no-abort")
  const langchain = find(measured, "langchain")
  const aiSdk = find(measured, "ai-sdk")
  const success = measured.filter((m) => m.path === "success")
  const failTwice = measured.filter((m) => m.path === "fail-twice")
  const roadcarFailTwice = find(measured, "roadcar-fail-twice")

  const targets: Table = {
    title: "Targets (success path, median overheads of this run)",
    columns: ["target", "measured", "result"],
    rows: [
      [
        "Roadcar full pipeline no slower than cockatiel's four-policy wrap",
        `${us(roadcar.medianOverheadUs)} µs vs ${us(cockatiel.medianOverheadUs)} µs (${formatRatio(roadcar.medianOverheadUs / cockatiel.medianOverheadUs)})`,
        verdict(roadcar.medianOverheadUs <= cockatiel.medianOverheadUs)
      ],
      [
        "at least 5x faster than LangChain.js",
        `${us(roadcar.medianOverheadUs)} µs vs ${us(langchain.medianOverheadUs)} µs (${versus(roadcar.medianOverheadUs, langchain.medianOverheadUs)} LangChain.js)`,
        verdict(langchain.medianOverheadUs >= 5 * roadcar.medianOverheadUs)
      ],
      [
        "at least 5x faster than the Vercel AI SDK",
        `${us(roadcar.medianOverheadUs)} µs vs ${us(aiSdk.medianOverheadUs)} µs (${versus(roadcar.medianOverheadUs, aiSdk.medianOverheadUs)} the AI SDK)`,
        verdict(aiSdk.medianOverheadUs >= 5 * roadcar.medianOverheadUs)
      ],
      [
        "stretch: no slower than cockatiel with abortOnReturn: false",
        `${us(roadcar.medianOverheadUs)} µs vs ${us(cockatielNoAbort.medianOverheadUs)} µs (${formatRatio(roadcar.medianOverheadUs / cockatielNoAbort.medianOverheadUs)})`,
        verdict(roadcar.medianOverheadUs <= cockatielNoAbort.medianOverheadUs)
      ]
    ]
  }

  const bars: ReadonlyArray<Bar> = success
    .filter((m) => m.id !== "effect-entry")
    .map((m) => ({
      label: m.label,
      value: m.medianOverheadUs,
      low: m.p25OverheadUs,
      high: m.p75OverheadUs,
      highlight: m.id.startsWith("roadcar")
    }))
  const chart = writeAsset(
    "inprocess.svg",
    barChart("Overhead per call, success path (µs, median, p25–p75)", "µs", bars),
    options.outDir
  )

  return {
    part: "inprocess",
    title: "In-process: overhead per call",
    date: new Date().toISOString(),
    machine: machine(),
    seconds,
    summary: [
      `Each candidate wraps a call that resolves at once with a fixed ChatResponse. Calls are awaited one after another in batches of ~${options.quick ? quick.batchMs : defaults.batchMs} ms; every batch of a candidate runs right next to a batch of its raw call (order alternating, a young-generation GC before each batch), over ${rounds} rounds. The overhead of a round is the candidate's time per call minus its raw call's; the tables show medians over the rounds and ratios of those medians. "CPU overhead" is the same in process CPU time (all threads, so the garbage collector's helpers count), which other processes on a shared machine disturb less than wall time.`,
      "Raw calls: `raw-async` is an async function returning the response (what cockatiel, the AI SDK and LangChain wrap); `raw-effect` is `Effect.runPromise(Effect.succeed(response))` (what Roadcar and bare Effect run; its own cost over the async call is the `effect-entry` row).",
      `Roadcar's full pipeline: ${us(roadcar.medianOverheadUs)} µs of overhead per call on the success path, ${versus(roadcar.medianOverheadUs, cockatiel.medianOverheadUs)} cockatiel's four-policy wrap, ${versus(roadcar.medianOverheadUs, langchain.medianOverheadUs)} LangChain.js, ${versus(roadcar.medianOverheadUs, aiSdk.medianOverheadUs)} the AI SDK; ${us(roadcarFailTwice.medianOverheadUs)} µs with two failed attempts before the answer.`
    ],
    tables: [
      targets,
      overheadTable(
        "Success path",
        success,
        [
          { name: "cockatiel", overhead: cockatiel.medianOverheadUs },
          { name: "Roadcar", overhead: roadcar.medianOverheadUs }
        ],
        true
      ),
      overheadTable(
        "Fail twice, then succeed (3 attempts, zero backoff)",
        failTwice,
        [{ name: "Roadcar", overhead: roadcarFailTwice.medianOverheadUs }],
        false
      )
    ],
    charts: [{ title: "Overhead per call, success path", file: chart }],
    notes: [
      'Roadcar full pipeline: `Pipeline.make` with `RateLimit.layerMemory` (one per-key rule on requests and tokens, generous), `ResponseCache.layer` (capacity 1,024 < the 8,192 distinct requests cycled: every call misses and stores), `Breaker.layerMemory()`, `Monitor.layer()` + `AlertSink.layerLog`, 3 attempts with zero backoff, 30 s attempt and 60 s total timeouts; no tracer installed (Effect\'s in-memory default: the pipeline then opens no spans of its own, as nobody could see them), metrics in the default registry; the request log line is formatted as JSON (`RequestLog.formatJson`) and recorded as a span event, not written to stdout. Layers and pipeline are built once; each call is `Effect.runPromiseWith(context)(pipeline.complete(request, { key }))`. The "tracer installed" row adds a tracer that creates every span (pipeline, rate limit, cache, step, attempt) as an exporter would receive them: what tracing costs per call.',
      "`Monitor.layerNoop` and no-logger rows show what the alerting monitor and the request log line cost within that figure.",
      'Bare Effect: `call.pipe(Effect.timeout("30 seconds"), Effect.retry({ times: 2 }), Effect.catch(() => fallback))`.',
      "cockatiel: `wrap(retry(handleAll, { maxAttempts: 2 }), circuitBreaker(handleAll, { halfOpenAfter: 30s, breaker: new ConsecutiveBreaker(5) }), timeout(30s, { strategy: Aggressive, abortOnReturn }), bulkhead(1000))`. On the fail-twice path its retry waits `setTimeout(0)` (≥ 1 ms) per retry even with zero backoff; Effect's zero-delay retry yields once to the scheduler instead.",
      "Vercel AI SDK: `generateText({ model: new MockLanguageModelV4(...), prompt, maxRetries: 2 })`. LangChain.js: `new FakeListChatModel(...).withRetry({ stopAfterAttempt: 3 }).withFallbacks([fallback])`. Neither is measured on the fail-twice path: both back off for seconds (2 s and 1 s) with no option for zero.",
      "Errors on the fail-twice path are built once and reused: the figures are the cost of the protection, not of building errors.",
      options.quick ? "**Quick run** (`--quick`): a smoke test of the harness; do not read the figures." : ""
    ].filter((note) => note !== ""),
    data: { settings: options.quick ? quick : defaults, measured }
  }
}

/** The in-process part. */
export const part: Part = {
  name: "inprocess",
  description:
    "overhead per call of the full pipeline beside the raw call, bare Effect, cockatiel, the AI SDK, LangChain.js",
  run: async (options) => {
    const started = performance.now()
    const settings = options.quick ? quick : defaults
    options.log("in-process: building candidates")
    const candidates = await buildCandidates()
    try {
      for (const candidate of [rawAsyncCandidate, rawEffectCandidate, ...candidates]) {
        const problem = await candidate.verify()
        if (problem !== undefined) throw new Error(`${candidate.id} does not behave: ${problem}`)
      }
      options.log(`in-process: ${candidates.length} candidates checked; measuring ${settings.rounds} rounds`)
      const measured = await measure(candidates, settings, options.log)
      return section(measured, options, (performance.now() - started) / 1000, settings.rounds)
    } finally {
      for (const candidate of candidates) await candidate.close?.()
    }
  }
}
