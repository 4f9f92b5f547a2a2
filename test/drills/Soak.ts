/**
 * Drill 1, the chaos soak, with drill 2's memory-and-handles check around it and drill 5's secret
 * scan through it.
 *
 * Two fake upstreams (primary and fallback) each fail about 30% of attempts with a seeded random mix:
 * 429 with and without Retry-After, 5xx, resets, hangs, slow answers, cut and stalled streams,
 * malformed chunks. An in-process gateway with small timeouts sits in front; plain `fetch` clients
 * send a bounded number of requests at a bounded rate and concurrency, alternating JSON and streamed.
 * Every request is classified (`Classify`), its latency recorded, and its upstream attempts counted
 * from the fakes' attempt logs (each prompt carries the request's number). Every log line, header,
 * body and the final `/metrics` text goes through the secret scanner.
 */
import { Behaviour, FakeUpstream, OtlpReceiver, Script } from "@roadcar/testing"
import { type Check, check, type DrillResult, secondsSince } from "./Check.ts"
import { classify, type Outcome } from "./Classify.ts"
import * as Harness from "./Harness.ts"
import * as Load from "./Load.ts"
import * as SecretScan from "./SecretScan.ts"
import * as Security from "./Security.ts"
import { type Summary, summarize, Tally } from "./Stats.ts"

// =============================================================================
// Configuration
// =============================================================================

/** The gateway's limits in the soak (the figures are judged against them). */
export const limits = {
  attemptsPerStep: 3,
  steps: 2,
  attemptTimeoutMs: 300,
  deadlineMs: 2_000
} as const

/** The fault mix of each fake upstream: [probability, behaviour], about 30% of attempts in all. */
export const faults = (): ReadonlyArray<readonly [number, Behaviour.Behaviour]> => [
  [0.03, Behaviour.rateLimited({ retryAfterSeconds: 1 })],
  [0.03, Behaviour.rateLimited({ retryAfterMs: 40 })],
  [0.03, Behaviour.rateLimited()],
  [0.03, Behaviour.status(500)],
  [0.01, Behaviour.status(502)],
  [0.02, Behaviour.status(503)],
  [0.01, Behaviour.delayed(100, Behaviour.status(503))],
  [0.03, Behaviour.reset()],
  [0.02, Behaviour.hang()],
  [0.01, Behaviour.slowFirstChunk(600)],
  [0.02, Behaviour.cutAfter(1)],
  [0.01, Behaviour.cutAfter(0)],
  [0.02, Behaviour.stallAfter(1)],
  [0.02, Behaviour.malformedChunk(1)],
  [0.01, Behaviour.malformedJson()]
]

/** The share of faulty attempts in {@link faults}. */
export const faultRate = (): number => faults().reduce((sum, [weight]) => sum + weight, 0)

/** The soak gateway's config: `chat` = primary with a fallback; `other` for the 403 check. */
export const config = (primaryUrl: string, backupUrl: string, secrets: Security.Secrets) => ({
  logLevel: "Debug",
  upstreams: {
    primary: {
      provider: "openai-compatible",
      model: "fake-model",
      baseUrl: `${primaryUrl}/v1`,
      apiKey: { env: secrets.upstreamKeyEnv }
    },
    backup: {
      provider: "openai-compatible",
      model: "fake-model",
      baseUrl: `${backupUrl}/v1`,
      apiKey: { env: secrets.upstreamKeyEnv }
    }
  },
  models: {
    [Security.models.allowed]: { upstream: "primary", fallbacks: [{ upstream: "backup" }] },
    [Security.models.other]: { upstream: "backup" }
  },
  retry: { attempts: limits.attemptsPerStep, baseDelay: "10 millis", maxDelay: "50 millis", jitter: true },
  timeouts: {
    attempt: `${limits.attemptTimeoutMs} millis`,
    firstChunk: `${limits.attemptTimeoutMs} millis`,
    chunkGap: "200 millis",
    total: `${limits.deadlineMs} millis`
  },
  breaker: { consecutiveFailures: 8, openDuration: "500 millis", maxOpenDuration: "2 seconds" },
  cache: { enabled: false },
  keys: Security.keysConfig(secrets)
})

// =============================================================================
// Figures
// =============================================================================

/** What the soak measured (`bench/results/drills.json` → `soak`). */
export interface Figures {
  readonly requests: number
  readonly answered: number
  /** Answered by the fallback upstream (a subset of `answered`). */
  readonly fallback: number
  readonly cleanErrors: number
  readonly lost: number
  readonly json: {
    readonly requests: number
    readonly answered: number
    readonly cleanErrors: number
    readonly lost: number
  }
  readonly stream: {
    readonly requests: number
    readonly answered: number
    readonly cleanErrors: number
    /** Clean errors sent as an error event after the stream had started. */
    readonly midStreamErrors: number
    readonly lost: number
  }
  readonly lostReasons: Record<string, number>
  readonly lostExamples: ReadonlyArray<string>
  readonly cleanErrorsByCode: Record<string, number>
  readonly fallbackReasons: Record<string, number>
  readonly latencyMs: Summary
  readonly deadlineMs: number
  readonly overDeadline: number
  readonly attempts: {
    readonly bound: number
    readonly max: number
    readonly mean: number
    readonly histogram: Record<string, number>
    readonly overBound: number
    /** Answered requests whose `x-roadcar-attempts` differs from the attempts the fakes saw. */
    readonly headerMismatches: number
  }
  readonly upstreamAttempts: { readonly primary: Record<string, number>; readonly backup: Record<string, number> }
  readonly faultRate: number
  readonly ratePerSecond: number
  readonly achievedPerSecond: number
  readonly concurrency: number
  readonly maxInFlight: number
  readonly durationSeconds: number
  readonly logLines: number
  readonly requestLogLines: number
}

/** Memory and handles around the soak (drill 2, first half). */
export interface MemoryFigures {
  readonly gcExposed: boolean
  readonly before: Harness.Memory
  /** After the first half of the soak (settled, GC): what the second half is compared with. */
  readonly middle: Harness.Memory
  readonly after: Harness.Memory
  readonly peakRssMiB: number
  readonly handlesBefore: Record<string, number>
  readonly handlesAfter: Record<string, number>
  readonly settleSeconds: number
}

/** Options of {@link run}. */
export interface Options {
  readonly requests: number
  readonly ratePerSecond: number
  readonly concurrency: number
  readonly seed?: number | undefined
  /** Measure memory and handles before and after (drill 2). */
  readonly measureMemory?: boolean | undefined
  readonly onProgress?: ((message: string) => void) | undefined
}

/** What {@link run} returns: the soak, the memory drill around it, and the security drill through it. */
export interface Run {
  readonly soak: DrillResult<Figures>
  readonly memory: DrillResult<MemoryFigures> | undefined
  readonly security: DrillResult<Record<string, unknown>>
}

// =============================================================================
// Run
// =============================================================================

const words = "alpha beta gamma delta epsilon zeta eta theta"
const promptOf = (index: number, prefix = "q"): string => `${prefix}${index} ${words}`
const indexOf = (body: unknown): number | undefined => {
  const messages = typeof body === "object" && body !== null ? (body as { messages?: unknown }).messages : undefined
  if (!Array.isArray(messages)) return undefined
  const content = (messages[messages.length - 1] as { content?: unknown } | undefined)?.content
  const match = typeof content === "string" ? /^q(\d+) /.exec(content) : null
  return match === null ? undefined : Number(match[1])
}

/** Runs the soak (with memory and security around and through it). */
export const run = async (options: Options): Promise<Run> => {
  const seed = options.seed ?? 20_261_203
  const secrets = Security.makeSecrets()
  const scanner = SecretScan.make(Security.labelled(secrets))
  const primary = await FakeUpstream.start({ behaviour: Script.random({ seed, faults: faults() }) })
  const backup = await FakeUpstream.start({ behaviour: Script.random({ seed: seed + 1, faults: faults() }) })
  let logLines = 0
  let requestLogLines = 0
  // The gateway's traces go to a real OTLP receiver in this process; its spans are scanned for secrets
  // and forgotten as they arrive (every second, and the last ones after shutdown), so the receiver
  // holds none of them when the gateway's memory is measured in this same process.
  const receiver = await OtlpReceiver.start()
  let spansScanned = 0
  const scanSpans = () => {
    const spans = receiver.spans()
    receiver.clear()
    for (const span of spans) scanner.scan(JSON.stringify(span), "span")
    spansScanned += spans.length
  }
  const gateway = await Harness.startInProcess(config(primary.url, backup.url, secrets), {
    telemetryEndpoint: receiver.url,
    onLogLine: (line) => {
      logLines++
      if (line.startsWith('{"message":"request"')) requestLogLines++
      scanner.scan(line, "log line")
    }
  })
  try {
    const total = options.requests
    const outcomes: Array<Outcome | undefined> = new Array(total)
    const latencies = new Float64Array(total)
    const attempts = new Uint16Array(total)
    const faultsSeen = { primary: new Tally(), backup: new Tally() }
    const drain = () => {
      for (const [name, fake] of [
        ["primary", primary],
        ["backup", backup]
      ] as const) {
        const log = fake.attempts()
        fake.clearAttempts()
        for (const attempt of log) {
          faultsSeen[name].add(attempt.fault)
          const index = indexOf(attempt.body)
          if (index !== undefined && index < total) attempts[index] = (attempts[index] ?? 0) + 1
        }
      }
    }
    const send = (index: number, prefix = "q") => {
      const stream = index % 2 === 1
      const prompt = promptOf(index, prefix)
      const body = stream
        ? {
            model: Security.models.allowed,
            stream: true,
            stream_options: { include_usage: true },
            messages: [{ role: "user", content: prompt }]
          }
        : { model: Security.models.allowed, messages: [{ role: "user", content: prompt }] }
      return classify(
        () =>
          fetch(`${gateway.url}/v1/chat/completions`, {
            method: "POST",
            headers: {
              "content-type": "application/json",
              authorization: `Bearer ${secrets.gatewayKey}`,
              "x-request-id": `drill-${index}`
            },
            body: JSON.stringify(body),
            signal: AbortSignal.timeout(limits.deadlineMs + 10_000)
          }),
        { stream, content: `echo: ${prompt}`, usage: stream },
        scanner
      )
    }

    // Warm up (JIT, connection pools), then measure the baseline.
    const warmup = Math.min(200, total)
    await Load.run({
      total: warmup,
      ratePerSecond: 1_000,
      concurrency: 20,
      run: (index) => send(index, "w").then(() => {})
    })
    drain()
    scanSpans()
    // Idle keep-alive sockets close after 5 s: the baseline is taken without them.
    if (options.measureMemory === true) await new Promise((resolve) => setTimeout(resolve, 5_500))
    const gcExposed = await Harness.collectGarbage()
    const memoryBefore = Harness.memory()
    const handlesBefore = await Harness.activeResourcesPeak()
    let peakRss = memoryBefore.rssMiB

    const started = performance.now()
    const requestLinesBefore = requestLogLines
    const drainTimer = setInterval(() => {
      drain()
      scanSpans()
      peakRss = Math.max(peakRss, Harness.memory().rssMiB)
    }, 1_000)
    const runPart = (from: number, count: number) =>
      Load.run({
        total: count,
        ratePerSecond: options.ratePerSecond,
        concurrency: options.concurrency,
        run: async (offset) => {
          const index = from + offset
          const sent = performance.now()
          outcomes[index] = await send(index)
          latencies[index] = performance.now() - sent
        },
        onProgress: (done) =>
          options.onProgress?.(
            `soak: ${from + done}/${total} after ${secondsSince(started)} s, rss ${Harness.memory().rssMiB} MiB`
          )
      })
    // Measuring memory, the soak runs in two halves with a settle and a GC between them: after a peak,
    // the allocator keeps pages that RSS still counts (so RSS after the soak stays above the start by
    // about what the peak was), and a leak shows as RSS growing from the first half to the second.
    let load: Load.Result
    let memoryMiddle: Harness.Memory | undefined
    if (options.measureMemory === true && total >= 2) {
      const half = Math.floor(total / 2)
      const first = await runPart(0, half)
      await Harness.settleHandles(handlesBefore, 20_000)
      await Harness.collectGarbage()
      memoryMiddle = Harness.memory()
      const second = await runPart(half, total - half)
      load = {
        started: first.started + second.started,
        done: first.done + second.done,
        seconds: first.seconds + second.seconds,
        maxInFlight: Math.max(first.maxInFlight, second.maxInFlight)
      }
    } else {
      load = await runPart(0, total)
    }
    clearInterval(drainTimer)
    const durationSeconds = secondsSince(started)
    await new Promise((resolve) => setTimeout(resolve, 200)) // the last request lines
    drain()
    scanSpans()
    const soakRequestLines = requestLogLines - requestLinesBefore

    // Security: auth checks and the metrics text, while the gateway is up.
    const auth = await Security.authChecks(gateway.url, secrets, scanner)
    const metricsText = await fetch(`${gateway.url}/metrics`).then((response) => response.text())
    scanner.scan(metricsText, "metrics text")

    // Memory: settle back with the servers still up, then compare.
    let memory: DrillResult<MemoryFigures> | undefined
    if (options.measureMemory === true) {
      const memoryStarted = performance.now()
      const settleSeconds = await Harness.settleHandles(handlesBefore, 20_000)
      await Harness.collectGarbage()
      const memoryAfter = Harness.memory()
      const handlesAfter = Harness.activeResources()
      memory = memoryResult(
        {
          gcExposed,
          before: memoryBefore,
          middle: memoryMiddle ?? memoryBefore,
          after: memoryAfter,
          peakRssMiB: peakRss,
          handlesBefore,
          handlesAfter,
          settleSeconds
        },
        Math.round((secondsSince(memoryStarted) + durationSeconds) * 10) / 10
      )
    }

    const figures = soakFigures({
      outcomes,
      latencies,
      attempts,
      faultsSeen,
      load,
      options,
      durationSeconds,
      logLines,
      requestLogLines: soakRequestLines
    })
    // Close the gateway (it drains, then flushes its last spans) and scan every span it exported.
    await gateway.close()
    scanSpans()
    await receiver.close()
    return {
      soak: soakResult(figures, durationSeconds),
      memory,
      security: {
        id: "security",
        title: "Security: secrets never leak, keys are enforced",
        durationSeconds,
        figures: {
          scanned: scanner.scanned(),
          spansScanned,
          findings: scanner.findingCount(),
          auth: auth.figures
        },
        checks: [Security.scanCheck(scanner), ...auth.checks],
        notes: [
          "Secrets: a gateway key, a key restricted to `chat`, and the upstreams' `apiKey` from the environment variable ROADCAR_DRILL_UPSTREAM_KEY, each `sk-...-<40 random hex>`; the scan looks for each whole value and for a 12-character piece of its random part.",
          `Spans: the gateway exported its traces over OTLP to a real receiver; all ${spansScanned} spans (names, attributes, events, resource) were scanned as they arrived and after shutdown.`
        ]
      }
    }
  } finally {
    await gateway.close()
    await receiver.close()
    await primary.close()
    await backup.close()
  }
}

// =============================================================================
// Judging
// =============================================================================

interface Raw {
  readonly outcomes: ReadonlyArray<Outcome | undefined>
  readonly latencies: Float64Array
  readonly attempts: Uint16Array
  readonly faultsSeen: { readonly primary: Tally; readonly backup: Tally }
  readonly load: Load.Result
  readonly options: Options
  readonly durationSeconds: number
  readonly logLines: number
  readonly requestLogLines: number
}

const soakFigures = (raw: Raw): Figures => {
  const bound = limits.attemptsPerStep * limits.steps
  const lostReasons = new Tally()
  const cleanErrorsByCode = new Tally()
  const fallbackReasons = new Tally()
  const histogram = new Tally()
  const lostExamples: Array<string> = []
  const json = { requests: 0, answered: 0, cleanErrors: 0, lost: 0 }
  const stream = { requests: 0, answered: 0, cleanErrors: 0, midStreamErrors: 0, lost: 0 }
  let answered = 0
  let fallback = 0
  let cleanErrors = 0
  let lost = 0
  let maxAttempts = 0
  let attemptSum = 0
  let overBound = 0
  let headerMismatches = 0
  let overDeadline = 0
  for (const [index, outcome] of raw.outcomes.entries()) {
    const kind = index % 2 === 1 ? stream : json
    kind.requests++
    const count = raw.attempts[index] ?? 0
    histogram.add(String(count))
    attemptSum += count
    maxAttempts = Math.max(maxAttempts, count)
    if (count > bound) overBound++
    if ((raw.latencies[index] ?? 0) > limits.deadlineMs + 500) overDeadline++
    if (outcome === undefined) {
      lost++
      kind.lost++
      lostReasons.add("not_sent")
      continue
    }
    switch (outcome._tag) {
      case "Answered":
        answered++
        kind.answered++
        if (outcome.fallback !== undefined) {
          fallback++
          fallbackReasons.add(outcome.fallback)
        }
        if (outcome.attemptsHeader !== undefined && outcome.attemptsHeader !== count) headerMismatches++
        break
      case "CleanError":
        cleanErrors++
        kind.cleanErrors++
        if (outcome.midStream) stream.midStreamErrors++
        cleanErrorsByCode.add(`${outcome.midStream ? "stream event" : outcome.status} ${outcome.code}`)
        break
      case "Lost":
        lost++
        kind.lost++
        lostReasons.add(outcome.reason)
        if (lostExamples.length < 10) lostExamples.push(`#${index} ${outcome.reason}: ${outcome.detail}`)
        break
    }
  }
  return {
    requests: raw.outcomes.length,
    answered,
    fallback,
    cleanErrors,
    lost,
    json,
    stream,
    lostReasons: lostReasons.toJSON(),
    lostExamples,
    cleanErrorsByCode: cleanErrorsByCode.toJSON(),
    fallbackReasons: fallbackReasons.toJSON(),
    latencyMs: summarize(raw.latencies),
    deadlineMs: limits.deadlineMs,
    overDeadline,
    attempts: {
      bound,
      max: maxAttempts,
      mean: Math.round((attemptSum / Math.max(1, raw.outcomes.length)) * 100) / 100,
      histogram: histogram.toJSON(),
      overBound,
      headerMismatches
    },
    upstreamAttempts: { primary: raw.faultsSeen.primary.toJSON(), backup: raw.faultsSeen.backup.toJSON() },
    faultRate: Math.round(faultRate() * 100) / 100,
    ratePerSecond: raw.options.ratePerSecond,
    achievedPerSecond: Math.round(raw.load.done / raw.load.seconds),
    concurrency: raw.options.concurrency,
    maxInFlight: raw.load.maxInFlight,
    durationSeconds: raw.durationSeconds,
    logLines: raw.logLines,
    requestLogLines: raw.requestLogLines
  }
}

const soakResult = (figures: Figures, durationSeconds: number): DrillResult<Figures> => {
  const checks: Array<Check> = [
    check(
      "lost = 0",
      figures.lost === 0,
      figures.lost === 0
        ? `${figures.requests} requests: ${figures.answered} answered (${figures.fallback} by fallback), ${figures.cleanErrors} clean errors`
        : `${figures.lost} lost: ${JSON.stringify(figures.lostReasons)}; ${figures.lostExamples.slice(0, 3).join(" | ")}`
    ),
    check(
      "every request accounted for",
      figures.answered + figures.cleanErrors + figures.lost === figures.requests,
      `${figures.answered} + ${figures.cleanErrors} + ${figures.lost} = ${figures.requests}`
    ),
    check(
      "upstream attempts per request never above attempts x steps",
      figures.attempts.overBound === 0 && figures.attempts.max <= figures.attempts.bound,
      `max ${figures.attempts.max}, bound ${figures.attempts.bound} (${limits.attemptsPerStep} x ${limits.steps}); mean ${figures.attempts.mean}`
    ),
    check(
      "p99 latency within the configured deadline",
      figures.latencyMs.p99 <= figures.deadlineMs,
      `p50 ${figures.latencyMs.p50} ms, p99 ${figures.latencyMs.p99} ms, max ${figures.latencyMs.max} ms; deadline ${figures.deadlineMs} ms; ${figures.overDeadline} over deadline + 500 ms`
    ),
    check(
      "every request got exactly one request log line",
      figures.requestLogLines === figures.requests,
      `${figures.requestLogLines} request lines for ${figures.requests} requests`
    )
  ]
  return {
    id: "soak",
    title: "Chaos soak",
    durationSeconds,
    figures,
    checks,
    notes: [
      `Gateway: \`chat\` = primary with one fallback (\`backup\`), both on fake upstreams; \`retry.attempts\` ${limits.attemptsPerStep} (10-50 ms backoff with jitter, a longer Retry-After wins), \`timeouts\` attempt and first chunk ${limits.attemptTimeoutMs} ms, chunk gap 200 ms, total ${limits.deadlineMs} ms; breaker opens after 8 failures in a row for 0.5-2 s; cache off; two API keys; logs at Debug.`,
      `Faults, each fake, per attempt: ${faults()
        .map(([weight, behaviour]) => `${Math.round(weight * 100)}% ${describeBehaviour(behaviour)}`)
        .join(", ")}; the rest healthy.`,
      `Clean errors: ${figures.stream.midStreamErrors} streams failed after their first chunk, which cannot be retried (the client already has part of the answer): they end with an error event and no [DONE], which OpenAI clients raise as an error. ${figures.cleanErrorsByCode["503 circuit_open"] ?? 0} were \`503 circuit_open\`: both upstreams' breakers open at once after failure streaks. The rest: every attempt on both upstreams failed.`
    ]
  }
}

const describeBehaviour = (behaviour: Behaviour.Behaviour): string => {
  switch (behaviour._tag) {
    case "RateLimited":
      return behaviour.retryAfterSeconds !== undefined
        ? `429 Retry-After ${behaviour.retryAfterSeconds} s`
        : behaviour.retryAfterMs !== undefined
          ? `429 retry-after-ms ${behaviour.retryAfterMs}`
          : "429 without Retry-After"
    case "Status":
      return String(behaviour.status)
    case "Delayed":
      return `${describeBehaviour(behaviour.behaviour)} after ${behaviour.ms} ms`
    case "SlowFirstChunk":
      return `first byte after ${behaviour.ms} ms`
    case "CutAfter":
      return `cut after ${behaviour.chunks} chunk(s)`
    case "StallAfter":
      return `stall after ${behaviour.chunks} chunk(s)`
    case "MalformedChunk":
      return `malformed chunk ${behaviour.atChunk}`
    case "MalformedJson":
      return "malformed JSON"
    default:
      return behaviour._tag.toLowerCase()
  }
}

const memoryResult = (figures: MemoryFigures, durationSeconds: number): DrillResult<MemoryFigures> => {
  const grown = Harness.grownHandles(figures.handlesBefore, figures.handlesAfter)
  const heapGrowth = figures.after.heapUsedMiB - figures.before.heapUsedMiB
  const externalGrowth = figures.after.externalMiB - figures.before.externalMiB
  return {
    id: "memory",
    title: "Memory and handles around the soak",
    durationSeconds,
    figures,
    checks: [
      check("node runs with --expose-gc", figures.gcExposed, figures.gcExposed ? "gc() called" : "no gc()"),
      check(
        "open handles settle back to the start",
        grown.length === 0,
        grown.length === 0
          ? `${Harness.handleTotal(figures.handlesBefore)} before, ${Harness.handleTotal(figures.handlesAfter)} after (settled in ${figures.settleSeconds} s)`
          : `grew: ${grown.join(", ")}`
      ),
      check(
        "heap after GC within 32 MiB of the start",
        heapGrowth <= 32,
        `heap used ${figures.before.heapUsedMiB} -> ${figures.after.heapUsedMiB} MiB (${heapGrowth >= 0 ? "+" : ""}${Math.round(heapGrowth * 10) / 10})`
      ),
      check(
        "memory outside the V8 heap (buffers) after GC within 16 MiB of the start",
        externalGrowth <= 16,
        `external ${figures.before.externalMiB} -> ${figures.middle.externalMiB} after the first half -> ${figures.after.externalMiB} MiB after the second`
      )
    ],
    notes: [
      `RSS after GC: ${figures.before.rssMiB} MiB at the start, ${figures.middle.rssMiB} after the first half, ${figures.after.rssMiB} after the second (peak ${figures.peakRssMiB}). Reported, not a check: the soak's gateway shares this process with the load generator, its 100,000 outcomes, the fake upstreams and the OTLP receiver decoding every span, and after a peak of several hundred MiB the allocator keeps pages that RSS still counts (by about how high the peak went). What would leak is checked instead: the V8 heap (JavaScript objects), the memory outside it (buffers) and the open handles (sockets, timers), each after a GC; the heap's growth is the harness's own record of the requests (about 130 bytes each).`
    ]
  }
}
