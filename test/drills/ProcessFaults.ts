/**
 * Drill 3, process faults, against `roadcar serve` child processes in front of a fake upstream.
 *
 * - `sigterm`: SIGTERM while requests are in flight: every request the gateway had accepted is
 *   answered completely, later ones are refused at the connection level (never a partial answer),
 *   and the process exits 0 after draining.
 * - `sigkill`: two replicas behind a tiny round-robin balancer (a new connection per request; it
 *   moves on when a connection is refused, as a proxy's passive health check does); one replica is
 *   killed with SIGKILL mid-load: only requests in flight on it are lost, as connection errors, and
 *   every later request is served by the other.
 * - Redis stopped and restarted during load (the third process fault) has its own module,
 *   `RedisOutage.ts`; it reuses this module's config, request bodies and expectations.
 */
import * as Http from "node:http"
import { Readable } from "node:stream"
import { Behaviour, FakeUpstream } from "@roadcar/testing"
import { type Check, check, type DrillResult, secondsSince } from "./Check.ts"
import { classify, type Outcome } from "./Classify.ts"
import * as Harness from "./Harness.ts"
import * as Load from "./Load.ts"
import * as SecretScan from "./SecretScan.ts"
import * as Security from "./Security.ts"
import { Tally } from "./Stats.ts"

/** A gateway config for one fake upstream, generous timeouts and a 10 s drain. */
export const config = (upstreamUrl: string, secrets: Security.Secrets) => ({
  upstreams: {
    fake: {
      provider: "openai-compatible",
      model: "fake-model",
      baseUrl: `${upstreamUrl}/v1`,
      apiKey: { env: secrets.upstreamKeyEnv }
    }
  },
  models: { chat: { upstream: "fake" } },
  timeouts: { attempt: "5 seconds", firstChunk: "5 seconds", chunkGap: "5 seconds", total: "10 seconds" },
  cache: { enabled: false },
  server: { drainTimeout: "10 seconds" }
})

const words = "one two three four five six seven eight"
const promptOf = (index: number) => `p${index} ${words}`
const indexOf = (body: unknown): number | undefined => {
  const messages = typeof body === "object" && body !== null ? (body as { messages?: unknown }).messages : undefined
  const content = Array.isArray(messages) ? (messages[0] as { content?: unknown } | undefined)?.content : undefined
  const match = typeof content === "string" ? /^p(\d+) /.exec(content) : null
  return match === null ? undefined : Number(match[1])
}

/** The body of request `index`: odd ones stream (with the usage chunk), even ones ask for JSON. */
export const bodyOf = (index: number): string =>
  JSON.stringify({
    model: "chat",
    ...(index % 2 === 1 ? { stream: true, stream_options: { include_usage: true } } : {}),
    messages: [{ role: "user", content: promptOf(index) }]
  })

const request = (url: string, index: number) =>
  fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: bodyOf(index),
    signal: AbortSignal.timeout(30_000)
  })

/** A connection error with its code, as `fetch` reports one (`TypeError: fetch failed`, cause `{ code }`). */
class ConnectionError extends TypeError {
  constructor(cause: NodeJS.ErrnoException) {
    super("fetch failed", { cause })
  }
}

/**
 * POSTs over a new connection (no keep-alive), as a `fetch`-like `Response`, so that a dead replica is
 * always seen as a refused connection, never as a pooled socket that died under a request.
 */
const requestOverNewConnection = (url: string, index: number): Promise<Response> =>
  new Promise((resolve, reject) => {
    const body = bodyOf(index)
    const outgoing = Http.request(`${url}/v1/chat/completions`, {
      method: "POST",
      agent: false,
      headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) },
      timeout: 30_000
    })
    outgoing.on("error", (error: NodeJS.ErrnoException) => reject(new ConnectionError(error)))
    outgoing.on("timeout", () => outgoing.destroy(Object.assign(new Error("timeout"), { code: "ETIMEDOUT" })))
    outgoing.on("response", (incoming) => {
      const headers = new Headers()
      for (const [name, value] of Object.entries(incoming.headers)) {
        if (typeof value === "string") headers.set(name, value)
        else if (Array.isArray(value)) for (const item of value) headers.append(name, item)
      }
      resolve(
        new Response(Readable.toWeb(incoming) as ReadableStream<Uint8Array>, {
          status: incoming.statusCode ?? 0,
          headers
        })
      )
    })
    outgoing.end(body)
  })

/** What a complete answer to request `index` holds (the fake upstream echoes the prompt). */
export const expectation = (index: number) => ({
  stream: index % 2 === 1,
  content: `echo: ${promptOf(index)}`,
  usage: index % 2 === 1
})

/** An outcome in a few words, for tallies and violation lists. */
export const outcomeText = (outcome: Outcome | undefined): string =>
  outcome === undefined
    ? "not sent"
    : outcome._tag === "Answered"
      ? "answered"
      : outcome._tag === "CleanError"
        ? `clean error ${outcome.status} ${outcome.code}`
        : `lost: ${outcome.reason}`

// =============================================================================
// SIGTERM
// =============================================================================

/** Figures of the SIGTERM drill. */
export interface SigtermFigures {
  readonly requests: number
  readonly sentBeforeSigterm: number
  readonly inFlightAtSigterm: number
  /** Requests that reached the upstream, i.e. that the gateway had accepted. */
  readonly accepted: number
  readonly acceptedAnswered: number
  readonly refused: number
  readonly refusedBy: Record<string, number>
  readonly outcomes: Record<string, number>
  readonly exitCode: number | string
  readonly drainSeconds: number
  readonly violations: ReadonlyArray<string>
}

/** SIGTERM during load. */
export const sigterm = async (options: {
  readonly requests: number
  readonly ratePerSecond: number
  readonly concurrency: number
}): Promise<DrillResult<SigtermFigures>> => {
  const startedAt = performance.now()
  const secrets = Security.makeSecrets()
  const scanner = SecretScan.make(Security.labelled(secrets))
  const fake = await FakeUpstream.start({ behaviour: Behaviour.ok({ latencyMs: 300, chunkDelayMs: 60 }) })
  const gateway = await Harness.spawnGateway(config(fake.url, secrets), await Harness.freePort(), {
    env: { [secrets.upstreamKeyEnv]: secrets.upstreamKey },
    onLine: (line) => scanner.scan(line, "gateway output")
  })
  try {
    const total = options.requests
    const outcomes: Array<Outcome | undefined> = new Array(total)
    const startedAtMs = new Float64Array(total)
    const finishedAtMs = new Float64Array(total)
    const killAfter = Math.floor(total / 2)
    let sigtermAt = Number.POSITIVE_INFINITY
    let sentBefore = 0
    let inFlightAtSigterm = 0
    let inFlight = 0
    let exitAt = Number.POSITIVE_INFINITY
    void gateway.exited.then(() => {
      exitAt = performance.now()
    })
    await Load.run({
      total,
      ratePerSecond: options.ratePerSecond,
      concurrency: options.concurrency,
      run: async (index) => {
        if (index === killAfter && sigtermAt === Number.POSITIVE_INFINITY) {
          sigtermAt = performance.now()
          sentBefore = index
          inFlightAtSigterm = inFlight
          gateway.kill("SIGTERM")
        }
        startedAtMs[index] = performance.now()
        inFlight++
        outcomes[index] = await classify(() => request(gateway.url, index), expectation(index), scanner)
        inFlight--
        finishedAtMs[index] = performance.now()
      }
    })
    const exitCode = await gateway.exited
    const seen = new Set<number>()
    for (const attempt of fake.attempts()) {
      const index = indexOf(attempt.body)
      if (index !== undefined) seen.add(index)
    }
    const tally = new Tally()
    const refusedBy = new Tally()
    const violations: Array<string> = []
    let acceptedAnswered = 0
    let refused = 0
    for (const [index, outcome] of outcomes.entries()) {
      tally.add(outcomeText(outcome))
      if (seen.has(index)) {
        if (outcome?._tag === "Answered") acceptedAnswered++
        else if (violations.length < 10) violations.push(`#${index} reached the upstream but: ${outcomeText(outcome)}`)
      } else if (outcome?._tag === "Lost" && outcome.reason === "connection_error") {
        refused++
        refusedBy.add(/\(([A-Z_]+)\)$/.exec(outcome.detail)?.[1] ?? outcome.detail.slice(0, 60))
      } else if (outcome?._tag !== "Answered" && violations.length < 10) {
        violations.push(`#${index} never reached the upstream and got: ${outcomeText(outcome)}`)
      }
    }
    const lastFinished = Math.max(...Array.from(finishedAtMs).filter((at, index) => seen.has(index) && at > 0))
    const figures: SigtermFigures = {
      requests: total,
      sentBeforeSigterm: sentBefore,
      inFlightAtSigterm,
      accepted: seen.size,
      acceptedAnswered,
      refused,
      refusedBy: refusedBy.toJSON(),
      outcomes: tally.toJSON(),
      exitCode,
      drainSeconds: Math.round((Math.min(exitAt, performance.now()) - sigtermAt) / 100) / 10,
      violations
    }
    const checks: Array<Check> = [
      check("exits 0 after SIGTERM", exitCode === 0, `exit ${exitCode} ${figures.drainSeconds} s after SIGTERM`),
      check(
        "every accepted request is answered completely",
        acceptedAnswered === seen.size && violations.length === 0,
        `${acceptedAnswered}/${seen.size} requests that reached the upstream answered (${inFlightAtSigterm} in flight at SIGTERM; the last finished ${Math.round(lastFinished - sigtermAt)} ms after it)${
          violations.length === 0 ? "" : `; ${violations.slice(0, 3).join("; ")}`
        }`
      ),
      check(
        "requests after SIGTERM are refused at the connection, never half answered",
        refused + acceptedAnswered + (tally.get("answered") - acceptedAnswered) === total,
        `${refused} refused ${JSON.stringify(figures.refusedBy)}, outcomes ${JSON.stringify(figures.outcomes)}`
      ),
      Security.scanCheck(scanner)
    ]
    return {
      id: "sigterm",
      title: "SIGTERM during load",
      durationSeconds: secondsSince(startedAt),
      figures,
      checks,
      notes: [
        `${total} requests at most ${options.ratePerSecond}/s and ${options.concurrency} in flight, half streamed, against an upstream answering in 300 ms (streams: 60 ms between chunks); SIGTERM after request ${killAfter}.`,
        "Refused means the request never reached the gateway's handler (the upstream never saw it): ECONNREFUSED once the listener is closed; ECONNRESET when a request was written on a keep-alive connection at the instant the gateway closed it as idle (the usual HTTP/1.1 race: a client may retry such a request safely, as it was never read)."
      ]
    }
  } finally {
    await gateway.close()
    await fake.close()
  }
}

// =============================================================================
// SIGKILL of one replica
// =============================================================================

/** Figures of the SIGKILL drill. */
export interface SigkillFigures {
  readonly requests: number
  readonly answered: number
  readonly lost: number
  readonly lostReasons: Record<string, number>
  readonly inFlightOnKilledAtKill: number
  /** From `kill()` to the exit of the replica, ms. */
  readonly dyingMs: number
  readonly servedBy: Record<string, number>
  readonly startedAfterKill: number
  readonly answeredAfterKill: number
  /** Requests the balancer sent to the killed replica, found refused, and resent to the other. */
  readonly rerouted: number
  readonly killedExit: number | string
  readonly violations: ReadonlyArray<string>
}

/** Two replicas, one killed with SIGKILL mid-load. */
export const sigkill = async (options: {
  readonly requests: number
  readonly ratePerSecond: number
  readonly concurrency: number
}): Promise<DrillResult<SigkillFigures>> => {
  const startedAt = performance.now()
  const secrets = Security.makeSecrets()
  const fake = await FakeUpstream.start({ behaviour: Behaviour.ok({ latencyMs: 200, chunkDelayMs: 50 }) })
  const env = { [secrets.upstreamKeyEnv]: secrets.upstreamKey }
  interface Replica {
    readonly name: string
    readonly gateway: Harness.ChildGateway
    down: boolean
  }
  const start = async (name: string): Promise<Replica> => ({
    name,
    gateway: await Harness.spawnGateway(config(fake.url, secrets), await Harness.freePort(), { env }),
    down: false
  })
  const victim = await start("a")
  const replicas: ReadonlyArray<Replica> = [victim, await start("b")]
  try {
    const total = options.requests
    const outcomes: Array<Outcome | undefined> = new Array(total)
    const target: Array<string> = new Array(total)
    const startedAtMs = new Float64Array(total)
    const finishedAtMs = new Float64Array(total)
    const killAfter = Math.floor(total * 0.4)
    let killedAt = Number.POSITIVE_INFINITY
    let rerouted = 0
    // When each request was last sent to the victim (0: never).
    const sentToVictimAt = new Float64Array(total)
    let turn = 0
    let diedAt = Number.POSITIVE_INFINITY
    void victim.gateway.exited.then(() => {
      diedAt = performance.now()
    })
    // The balancer: round-robin over replicas not known to be down; a refused connection marks a
    // replica down and the request goes to the next one (it never reached the first).
    const send = async (index: number): Promise<Response> => {
      for (let tries = 0; tries < replicas.length; tries++) {
        const healthy = replicas.filter((replica) => !replica.down)
        const replica = healthy[turn++ % Math.max(1, healthy.length)]
        if (replica === undefined) break
        target[index] = replica.name
        if (replica === victim) sentToVictimAt[index] = performance.now()
        try {
          return await requestOverNewConnection(replica.gateway.url, index)
        } catch (error) {
          const code =
            error instanceof Error && error.cause instanceof Error ? (error.cause as NodeJS.ErrnoException).code : ""
          if (code !== "ECONNREFUSED") throw error
          replica.down = true
          if (replica === victim) sentToVictimAt[index] = 0
          rerouted++
        }
      }
      throw new Error("no replica left")
    }
    await Load.run({
      total,
      ratePerSecond: options.ratePerSecond,
      concurrency: options.concurrency,
      run: async (index) => {
        if (index === killAfter && killedAt === Number.POSITIVE_INFINITY) {
          killedAt = performance.now()
          victim.gateway.kill("SIGKILL")
        }
        startedAtMs[index] = performance.now()
        outcomes[index] = await classify(() => send(index), expectation(index))
        finishedAtMs[index] = performance.now()
      }
    })
    const killedExit = await victim.gateway.exited
    // In flight on the victim when it died: sent to it before its exit was seen, not finished when
    // the signal was sent (SIGKILL takes effect a moment after `kill()` returns).
    const inFlightOnKilledAtKill = new Set<number>()
    for (let index = 0; index < total; index++) {
      const sent = sentToVictimAt[index] ?? 0
      if (sent > 0 && sent <= diedAt && (finishedAtMs[index] ?? 0) >= killedAt) inFlightOnKilledAtKill.add(index)
    }
    const lostReasons = new Tally()
    const servedBy = new Tally()
    const violations: Array<string> = []
    let answered = 0
    let lost = 0
    let startedAfterKill = 0
    let answeredAfterKill = 0
    for (const [index, outcome] of outcomes.entries()) {
      const after = (startedAtMs[index] ?? 0) > diedAt
      if (after) startedAfterKill++
      if (outcome?._tag === "Answered") {
        answered++
        servedBy.add(target[index] ?? "?")
        if (after) answeredAfterKill++
        continue
      }
      lost++
      lostReasons.add(outcome?._tag === "Lost" ? outcome.reason : outcomeText(outcome))
      const connectionLevel =
        outcome?._tag === "Lost" && (outcome.reason === "connection_error" || outcome.reason === "body_cut")
      if ((!inFlightOnKilledAtKill.has(index) || !connectionLevel) && violations.length < 10) {
        violations.push(`#${index} on ${target[index]} ${after ? "after" : "before"} the kill: ${outcomeText(outcome)}`)
      }
    }
    const figures: SigkillFigures = {
      requests: total,
      answered,
      lost,
      lostReasons: lostReasons.toJSON(),
      inFlightOnKilledAtKill: inFlightOnKilledAtKill.size,
      dyingMs: Math.round(diedAt - killedAt),
      servedBy: servedBy.toJSON(),
      startedAfterKill,
      answeredAfterKill,
      rerouted,
      killedExit,
      violations
    }
    return {
      id: "sigkill",
      title: "SIGKILL of one of two replicas during load",
      durationSeconds: secondsSince(startedAt),
      figures,
      checks: [
        check("the replica died of SIGKILL", killedExit === "SIGKILL", `exit ${killedExit}`),
        check(
          "only requests in flight on the killed replica are lost, as connection errors",
          violations.length === 0 && lost <= inFlightOnKilledAtKill.size,
          `${lost} lost ${JSON.stringify(figures.lostReasons)} of ${inFlightOnKilledAtKill.size} in flight on it when it died (${figures.dyingMs} ms after kill())${
            violations.length === 0 ? "" : `; ${violations.slice(0, 3).join("; ")}`
          }`
        ),
        check(
          "the other replica serves every later request",
          answeredAfterKill === startedAfterKill,
          `${answeredAfterKill}/${startedAfterKill} requests started after the replica died answered; ${rerouted} refused by the dead replica and resent; served by ${JSON.stringify(figures.servedBy)}`
        )
      ],
      notes: [
        `${total} requests at most ${options.ratePerSecond}/s and ${options.concurrency} in flight, half streamed, against an upstream answering in 200 ms (streams: 50 ms between chunks); replica a killed after request ${killAfter}.`,
        "In flight on the killed replica = sent to it before its exit was seen and not finished when the signal was sent (SIGKILL takes effect a few ms after kill() returns; connections the kernel accepted meanwhile die with it). The balancer opens a new connection per request, so a dead replica shows as a refused connection and the request goes to the other replica; it never resends a request that may have been read."
      ]
    }
  } finally {
    for (const replica of replicas) await replica.gateway.close()
    await fake.close()
  }
}
