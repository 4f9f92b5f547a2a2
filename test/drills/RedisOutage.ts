/**
 * Drill 3, process faults (continued): Redis stopped and restarted during load.
 *
 * Two `roadcar serve` child processes keep their rate limit, response cache and circuit breaker in a
 * `redis-server` of the drill's own (`OwnRedis`, password-protected), each under its own key prefix:
 * one with the rate limit store `fail-open`, one with it `fail-closed` (the cache and the breaker
 * always fail open). Load alternates between the two, half of it streamed. A second into the load,
 * Redis gets SIGTERM; it stays down 3 s and is started again on the same port, empty (no
 * persistence), while the load goes on. Each gateway is warmed up with a few requests first (a cold
 * one can take its own start-up stalls for a Redis timeout). The checks:
 *
 * - lost = 0: every request gets one complete answer or a clean OpenAI error JSON, never a hang;
 * - while Redis is down, the fail-open gateway answers every request (200) and the fail-closed one
 *   refuses every request with 503 `store_unavailable` (never a 5xx without a JSON body);
 * - before the SIGTERM both answer everything; after the restart both recover by themselves: every
 *   request from 2.5 s after it (the reconnection backoff is capped at 2 s) is answered, each gateway
 *   logs the outage and its end once (and no outage while Redis is up), and the stores are used
 *   again: keys of every store appear in the new, empty server and the rate-limit counter counts new
 *   requests one for one;
 * - nothing leaked: both gateways are alive with `/health` ok, hold one connection each to the new
 *   server, and no secret (the Redis password included) shows in their output or answers.
 */
import { randomBytes } from "node:crypto"
import { setTimeout as sleep } from "node:timers/promises"
import { Behaviour, FakeUpstream } from "@roadcar/testing"
import { type Check, check, type DrillResult, secondsSince } from "./Check.ts"
import { classify, type Outcome } from "./Classify.ts"
import * as Harness from "./Harness.ts"
import * as Load from "./Load.ts"
import * as OwnRedis from "./OwnRedis.ts"
import { bodyOf, config, expectation, outcomeText } from "./ProcessFaults.ts"
import * as SecretScan from "./SecretScan.ts"
import * as Security from "./Security.ts"
import { type Summary, summarize, Tally } from "./Stats.ts"

/** The rate limit store's fault policy of one of the two gateways. */
export type Policy = "fail-open" | "fail-closed"

const policies: ReadonlyArray<Policy> = ["fail-open", "fail-closed"]

/**
 * Where a request falls: `before`, answered before the SIGTERM; `stopping`, in flight at the SIGTERM
 * or started until 100 ms after Redis exited (Redis 7 leaves commands sent after a SIGTERM
 * unanswered until it exits, then resets the connection); `down`, started until the restart;
 * `restarting`, started in the 2.5 s after it (the gateways reconnect within their 2 s backoff cap);
 * `after`, started later.
 */
export type Phase = "before" | "stopping" | "down" | "restarting" | "after"

const phaseNames: ReadonlyArray<Phase> = ["before", "stopping", "down", "restarting", "after"]

/** What one gateway answered in one phase. */
export interface PhaseFigures {
  readonly requests: number
  /** 200 with a complete answer. */
  readonly answered: number
  /** 503 `store_unavailable` with an OpenAI error JSON. */
  readonly storeUnavailable: number
  /** Any other outcome, by outcome. */
  readonly other: Record<string, number>
  readonly latencyMs: Summary
}

/** One gateway's figures. */
export interface GatewayFigures {
  readonly policy: Policy
  readonly requests: number
  readonly outcomes: Record<string, number>
  readonly phases: Record<Phase, PhaseFigures>
  /**
   * What it logged about Redis, in order, ms since the load started: `unavailable` and `answers again`
   * (the connection's lines) and `Raised` / `Resolved` (its `store_unavailable` alert's lines).
   */
  readonly outageLog: ReadonlyArray<string>
  /** From the restart of Redis to the gateway's "answers again" line, ms (`undefined`: never). */
  readonly recoveredAfterMs: number | undefined
  /** Keys under its prefix in the restarted Redis, by store. */
  readonly keysAfterRestart: Record<string, number>
  /** Its rate-limit window counter in the restarted Redis before and after `probes` more requests. */
  readonly counter: { readonly before: number; readonly after: number; readonly probes: number }
  /** The warm-up: requests sent and answered, and what it logged about Redis (ms since the warm-up started). */
  readonly warmUp: { readonly requests: number; readonly answered: number; readonly outageLog: ReadonlyArray<string> }
  /** Alive and `GET /health` 200 at the end. */
  readonly healthy: boolean
}

/** Figures of the Redis drill. */
export interface RedisOutageFigures {
  readonly requests: number
  readonly lost: number
  readonly lostExamples: ReadonlyArray<string>
  /** When each step happened, ms since the load started. */
  readonly timeline: {
    readonly sigterm: number
    readonly exited: number
    readonly restarted: number
    /** The new server answered PING. */
    readonly up: number
    readonly loadEnd: number
  }
  readonly redisExit: number | string
  /** Connections to the restarted Redis at the end, but the drill's own. */
  readonly redisClients: number
  readonly gateways: Record<Policy, GatewayFigures>
}

/** How to run the Redis drill. */
export interface Options {
  readonly requests: number
  readonly ratePerSecond: number
  readonly concurrency: number
  /** From the start of the load to the SIGTERM (default 1 s). */
  readonly stopAfterMs?: number | undefined
  /** From the exit of Redis to its restart (default 3 s). */
  readonly downMs?: number | undefined
  /**
   * Requests sent to each gateway before the load (default 20). With 0 the gateways meet the load
   * cold, which shows a cold start's own stalls reported as a Redis outage (see the notes).
   */
  readonly warmUpRequests?: number | undefined
  /**
   * The gateways' `redis.commandTimeout` (default `"250 millis"`, the product's default). A gateway
   * whose process stalls longer than this (CPU starvation, a cold start) takes the stall for a Redis
   * timeout; the stop and restart themselves show as closed and refused connections, whatever it is.
   */
  readonly commandTimeout?: string | undefined
}

/** The 2 s reconnection backoff cap, its jitter and a margin. */
const recoveryAllowanceMs = 2_500
/** After Redis exited, the time the gateways take to see the closed connection. */
const settleMs = 100
/** Requests sent to each gateway at the end to watch its rate-limit counter. */
const probes = 5

const redisConfig = (
  upstreamUrl: string,
  secrets: Security.Secrets,
  redisUrlEnv: string,
  prefix: string,
  policy: Policy,
  commandTimeout: string
) => ({
  ...config(upstreamUrl, secrets),
  cache: { enabled: true },
  rateLimit: { rules: [{ by: "global", requests: { limit: 1_000_000, window: "1 minute" } }] },
  stores: { rateLimit: "redis", cache: "redis", breaker: "redis" },
  redis: { url: { env: redisUrlEnv }, prefix, commandTimeout, policies: { rateLimit: policy } }
})

const request = (url: string, index: number) =>
  fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: bodyOf(index),
    signal: AbortSignal.timeout(10_000)
  })

const isStoreUnavailable = (outcome: Outcome | undefined): boolean =>
  outcome?._tag === "CleanError" && outcome.status === 503 && outcome.code === "store_unavailable" && !outcome.midStream

const storeOf = (key: string, prefix: string): string => key.slice(prefix.length).split(":")[0] ?? "?"

/** The number in a `GET` reply (0 when the key is missing). */
const counterValue = (reply: OwnRedis.Reply): number => (typeof reply === "string" ? Number(reply) : 0)

/** A gateway's log line about Redis's availability: the outage or its end, as a warning or an alert. */
interface OutageEvent {
  readonly at: number
  readonly kind: "unavailable" | "answers again"
  /** `Raised` / `Resolved` for the alert's line (`alerts.log`), `undefined` for the connection's own line. */
  readonly alert: string | undefined
}

const outageEventOf = (line: string, at: number): OutageEvent | undefined => {
  if (!line.includes("Redis at")) return undefined
  let parsed: { message?: unknown; annotations?: Record<string, unknown> }
  try {
    parsed = JSON.parse(line) as typeof parsed
  } catch {
    return undefined
  }
  const message = parsed.message
  if (typeof message !== "string" || !message.startsWith("Redis at ")) return undefined
  const kind = message.includes(" is unavailable")
    ? "unavailable"
    : message.includes(" answers again")
      ? "answers again"
      : undefined
  if (kind === undefined) return undefined
  const alert = parsed.annotations?.["alert.state"]
  return { at, kind, alert: typeof alert === "string" ? alert : undefined }
}

/** Exactly one outage: its warning and its Raised alert, then its end and its Resolved alert. */
const oneOutage = (events: ReadonlyArray<OutageEvent>): boolean => {
  const names = events.map((event) => event.alert ?? event.kind)
  const count = (name: string) => names.filter((item) => item === name).length
  const last = (name: string) => names.lastIndexOf(name)
  return (
    ["unavailable", "Raised", "answers again", "Resolved"].every((name) => count(name) === 1) &&
    Math.max(last("unavailable"), last("Raised")) < Math.min(last("answers again"), last("Resolved"))
  )
}

const unavailableDetail = (phase: PhaseFigures): string =>
  `${phase.answered} answered, ${phase.storeUnavailable} 503 store_unavailable of ${phase.requests}${
    Object.keys(phase.other).length === 0 ? "" : `, other ${JSON.stringify(phase.other)}`
  } (latency p50 ${phase.latencyMs.p50} ms, max ${phase.latencyMs.max} ms)`

const notInstalled = (startedAt: number): DrillResult<RedisOutageFigures | undefined> => ({
  id: "redis",
  title: "Redis stopped and restarted during load",
  durationSeconds: secondsSince(startedAt),
  figures: undefined,
  checks: [
    check(
      "redis-server is installed",
      false,
      "redis-server is not on the PATH: install it (apt-get install redis-server)"
    )
  ],
  notes: []
})

/**
 * Redis stopped (SIGTERM) and restarted during load, under a fail-open and a fail-closed gateway.
 * Without `redis-server` on the PATH, the result has no figures and one failed check saying so.
 */
export const run = async (options: Options): Promise<DrillResult<RedisOutageFigures | undefined>> => {
  const startedAt = performance.now()
  if (!OwnRedis.installed()) return notInstalled(startedAt)
  const stopAfterMs = options.stopAfterMs ?? 1_000
  const downMs = options.downMs ?? 3_000
  const warmUpRequests = options.warmUpRequests ?? 20
  const commandTimeout = options.commandTimeout ?? "250 millis"
  const secrets = Security.makeSecrets()
  const redisPassword = `redis-drill-${randomBytes(20).toString("hex")}`
  const scanner = SecretScan.make({ ...Security.labelled(secrets), "Redis password": redisPassword })
  const redis = await OwnRedis.make({ password: redisPassword })
  const fake = await FakeUpstream.start({ behaviour: Behaviour.ok({ latencyMs: 100, chunkDelayMs: 20 }) })
  const redisUrlEnv = "ROADCAR_DRILL_REDIS_URL"
  const runId = randomBytes(4).toString("hex")
  const prefixOf = (policy: Policy) => `roadcar-drill-${runId}-${policy}:`
  // What each gateway logged about Redis's availability, with when it was printed.
  const events: Record<Policy, Array<OutageEvent>> = { "fail-open": [], "fail-closed": [] }
  const gateways = new Map<Policy, Harness.ChildGateway>()
  try {
    await redis.start()
    const started = await Promise.allSettled(
      policies.map(async (policy) => {
        const gateway = await Harness.spawnGateway(
          redisConfig(fake.url, secrets, redisUrlEnv, prefixOf(policy), policy, commandTimeout),
          await Harness.freePort(),
          {
            env: { [secrets.upstreamKeyEnv]: secrets.upstreamKey, [redisUrlEnv]: redis.url },
            onLine: (line) => {
              scanner.scan(line, "gateway output")
              const event = outageEventOf(line, performance.now())
              if (event !== undefined) events[policy].push(event)
            }
          }
        )
        gateways.set(policy, gateway)
      })
    )
    for (const result of started) if (result.status === "rejected") throw result.reason
    const gatewayOf = (index: number): Policy => (Math.floor(index / 2) % 2 === 0 ? "fail-open" : "fail-closed")
    const urlOf = (policy: Policy): string => gateways.get(policy)?.url ?? ""

    const total = options.requests

    // --- warm-up ------------------------------------------------------------------------------------
    // A replica in service is warm. A cold one under load stalls its event loop long enough for its
    // first Redis operations to overrun the command timeout and report an outage that is none (see
    // the notes), so each gateway gets a few requests first; what they logged meanwhile is kept apart.
    const warmUp: Record<Policy, { answered: number; log: Array<string> }> = {
      "fail-open": { answered: 0, log: [] },
      "fail-closed": { answered: 0, log: [] }
    }
    const warmUpStart = performance.now()
    for (const [offset, policy] of policies.entries()) {
      if (warmUpRequests === 0) break
      await Load.run({
        total: warmUpRequests,
        ratePerSecond: 100,
        concurrency: 4,
        run: async (index) => {
          const at = total + 1_000 + offset * warmUpRequests + index
          const outcome = await classify(() => request(urlOf(policy), at), expectation(at), scanner)
          if (outcome._tag === "Answered") warmUp[policy].answered++
        }
      })
    }
    await sleep(200)
    for (const policy of policies) {
      warmUp[policy].log = events[policy].map(
        (event) => `${event.alert ?? event.kind} at ${Math.round(event.at - warmUpStart)}`
      )
      events[policy].length = 0
    }

    // --- load, with Redis stopped and restarted -------------------------------------------------
    const outcomes: Array<Outcome | undefined> = new Array(total)
    const startedAtMs = new Float64Array(total)
    const finishedAtMs = new Float64Array(total)
    const loadStart = performance.now()
    const timeline = { sigterm: Number.NaN, exited: Number.NaN, restarted: Number.NaN, up: Number.NaN }
    const outage = (async () => {
      await sleep(stopAfterMs)
      timeline.sigterm = performance.now()
      const exit = await redis.stop("SIGTERM")
      timeline.exited = performance.now()
      await sleep(downMs)
      timeline.restarted = performance.now()
      await redis.start()
      timeline.up = performance.now()
      return exit
    })()
    const load = await Load.run({
      total,
      ratePerSecond: options.ratePerSecond,
      concurrency: options.concurrency,
      run: async (index) => {
        startedAtMs[index] = performance.now()
        outcomes[index] = await classify(() => request(urlOf(gatewayOf(index)), index), expectation(index), scanner)
        finishedAtMs[index] = performance.now()
      }
    })
    const loadEnd = performance.now()
    const redisExit = await outage

    // --- the restarted Redis, seen from outside ---------------------------------------------------
    const counters: Record<Policy, { before: number; after: number }> = {
      "fail-open": { before: 0, after: 0 },
      "fail-closed": { before: 0, after: 0 }
    }
    const keys: Record<Policy, Record<string, number>> = { "fail-open": {}, "fail-closed": {} }
    const probeOutcomes: Array<string> = []
    const probeBase = total + (total % 2)
    for (const policy of policies) {
      const prefix = prefixOf(policy)
      const counterKey = (await OwnRedis.scanKeys(redis, `${prefix}ratelimit:*`))[0]
      if (counterKey !== undefined) counters[policy].before = counterValue(await redis.command(["GET", counterKey]))
      for (let probe = 0; probe < probes; probe++) {
        // Even indexes past the load: JSON requests with prompts not seen before.
        const index = probeBase + 2 * (probe + (policy === "fail-open" ? 0 : probes))
        const outcome = await classify(() => request(urlOf(policy), index), expectation(index), scanner)
        if (outcome._tag !== "Answered") probeOutcomes.push(`${policy} probe: ${outcomeText(outcome)}`)
      }
      if (counterKey !== undefined) counters[policy].after = counterValue(await redis.command(["GET", counterKey]))
      const byStore = new Tally()
      for (const key of await OwnRedis.scanKeys(redis, `${prefix}*`)) byStore.add(storeOf(key, prefix))
      keys[policy] = byStore.toJSON()
    }
    const clientList = await redis.command(["CLIENT", "LIST"])
    const redisClients =
      typeof clientList === "string" ? clientList.split("\n").filter((line) => line.trim() !== "").length - 1 : -1
    const healthy: Record<Policy, boolean> = { "fail-open": false, "fail-closed": false }
    for (const policy of policies) {
      const gateway = gateways.get(policy)
      const alive = gateway !== undefined && gateway.child.exitCode === null && gateway.child.signalCode === null
      const health = await fetch(`${urlOf(policy)}/health`, { signal: AbortSignal.timeout(5_000) }).then(
        async (response) =>
          response.status === 200 && ((await response.json()) as { status?: unknown }).status === "ok",
        () => false
      )
      healthy[policy] = alive && health
    }

    // --- figures ----------------------------------------------------------------------------------
    const phaseOf = (at: number, finished: number): Phase =>
      finished < timeline.sigterm
        ? "before"
        : at < timeline.exited + settleMs
          ? "stopping"
          : at < timeline.restarted
            ? "down"
            : at < timeline.restarted + recoveryAllowanceMs
              ? "restarting"
              : "after"
    interface PhaseTally {
      requests: number
      answered: number
      storeUnavailable: number
      readonly other: Tally
      readonly latencies: Array<number>
    }
    const tallies = new Map<string, PhaseTally>()
    const tallyOf = (policy: Policy, phase: Phase): PhaseTally => {
      const key = `${policy} ${phase}`
      let tally = tallies.get(key)
      if (tally === undefined) {
        tally = { requests: 0, answered: 0, storeUnavailable: 0, other: new Tally(), latencies: [] }
        tallies.set(key, tally)
      }
      return tally
    }
    const outcomesBy: Record<Policy, Tally> = { "fail-open": new Tally(), "fail-closed": new Tally() }
    const lostExamples: Array<string> = []
    let lost = 0
    for (const [index, outcome] of outcomes.entries()) {
      const policy = gatewayOf(index)
      outcomesBy[policy].add(outcomeText(outcome))
      if (outcome === undefined || outcome._tag === "Lost") {
        lost++
        if (lostExamples.length < 10) lostExamples.push(`#${index} on ${policy}: ${outcomeText(outcome)}`)
      }
      const phase = phaseOf(startedAtMs[index] ?? 0, finishedAtMs[index] ?? 0)
      const tally = tallyOf(policy, phase)
      tally.requests++
      tally.latencies.push((finishedAtMs[index] ?? 0) - (startedAtMs[index] ?? 0))
      if (outcome?._tag === "Answered") tally.answered++
      else if (isStoreUnavailable(outcome)) tally.storeUnavailable++
      else tally.other.add(outcomeText(outcome))
    }
    const since = (at: number) => Math.round(at - loadStart)
    const gatewayFigures = (policy: Policy): GatewayFigures => {
      const recovery = events[policy].find((event) => event.kind === "answers again" && event.at >= timeline.restarted)
      return {
        policy,
        requests: outcomesBy[policy].total(),
        outcomes: outcomesBy[policy].toJSON(),
        phases: Object.fromEntries(
          phaseNames.map((phase) => {
            const tally = tallyOf(policy, phase)
            return [
              phase,
              {
                requests: tally.requests,
                answered: tally.answered,
                storeUnavailable: tally.storeUnavailable,
                other: tally.other.toJSON(),
                latencyMs: summarize(tally.latencies)
              } satisfies PhaseFigures
            ]
          })
        ) as Record<Phase, PhaseFigures>,
        outageLog: events[policy].map((event) => `${event.alert ?? event.kind} at ${since(event.at)}`),
        recoveredAfterMs: recovery === undefined ? undefined : Math.round(recovery.at - timeline.restarted),
        keysAfterRestart: keys[policy],
        counter: { ...counters[policy], probes },
        warmUp: { requests: warmUpRequests, answered: warmUp[policy].answered, outageLog: warmUp[policy].log },
        healthy: healthy[policy]
      }
    }
    const figures: RedisOutageFigures = {
      requests: total,
      lost,
      lostExamples,
      timeline: {
        sigterm: since(timeline.sigterm),
        exited: since(timeline.exited),
        restarted: since(timeline.restarted),
        up: since(timeline.up),
        loadEnd: since(loadEnd)
      },
      redisExit,
      redisClients,
      gateways: { "fail-open": gatewayFigures("fail-open"), "fail-closed": gatewayFigures("fail-closed") }
    }

    // --- checks -----------------------------------------------------------------------------------
    const open = figures.gateways["fail-open"]
    const closed = figures.gateways["fail-closed"]
    // Log lines about the real outage: from the SIGTERM to the end of the reconnection allowance.
    const duringOutage = (event: OutageEvent) =>
      event.at >= timeline.sigterm && event.at < timeline.restarted + recoveryAllowanceMs
    const all = (phase: PhaseFigures, count: number) => phase.requests > 0 && count === phase.requests
    const openAlwaysAnswered = phaseNames.every((phase) => open.phases[phase].answered === open.phases[phase].requests)
    const closedOnlyAnsweredOrRefused = phaseNames.every(
      (phase) => closed.phases[phase].answered + closed.phases[phase].storeUnavailable === closed.phases[phase].requests
    )
    const usedAgain = (gateway: GatewayFigures) =>
      (gateway.keysAfterRestart["ratelimit"] ?? 0) > 0 &&
      (gateway.keysAfterRestart["cache"] ?? 0) > 0 &&
      (gateway.keysAfterRestart["breaker"] ?? 0) > 0 &&
      gateway.counter.before > 0 &&
      gateway.counter.after === gateway.counter.before + probes
    const usedText = (gateway: GatewayFigures) =>
      `${gateway.policy}: keys ${JSON.stringify(gateway.keysAfterRestart)}, rate-limit counter ${gateway.counter.before} -> ${gateway.counter.after} over ${probes} more requests`
    const recoveredText = (gateway: GatewayFigures) =>
      `${gateway.policy}: ${gateway.phases.after.answered}/${gateway.phases.after.requests} answered, reconnected ${
        gateway.recoveredAfterMs === undefined ? "never" : `${gateway.recoveredAfterMs} ms`
      } after the restart`
    const checks: Array<Check> = [
      check(
        "Redis stopped by SIGTERM and started again on the same port during the load",
        Number.isFinite(timeline.up) && timeline.up < loadEnd && redisExit === 0,
        `SIGTERM at ${figures.timeline.sigterm} ms, exit ${redisExit} at ${figures.timeline.exited} ms, restarted at ${figures.timeline.restarted} ms (PING at ${figures.timeline.up} ms); the load ended at ${figures.timeline.loadEnd} ms (${load.started} requests, at most ${load.maxInFlight} in flight)`
      ),
      check(
        "lost = 0: every request answered completely or refused with a clean error JSON",
        lost === 0 && openAlwaysAnswered && closedOnlyAnsweredOrRefused,
        `lost ${lost}${lostExamples.length === 0 ? "" : ` (${lostExamples.slice(0, 3).join("; ")})`}; fail-open ${JSON.stringify(open.outcomes)}; fail-closed ${JSON.stringify(closed.outcomes)}`
      ),
      check(
        "before the SIGTERM, both gateways answered every request (warm-up included)",
        all(open.phases.before, open.phases.before.answered) &&
          all(closed.phases.before, closed.phases.before.answered) &&
          policies.every((policy) => warmUp[policy].answered === warmUpRequests),
        `fail-open ${open.phases.before.answered}/${open.phases.before.requests}, fail-closed ${closed.phases.before.answered}/${closed.phases.before.requests} answered before the SIGTERM; warm-up ${policies
          .map(
            (policy) =>
              `${warmUp[policy].answered}/${warmUpRequests}${warmUp[policy].log.length === 0 ? "" : ` (logged ${warmUp[policy].log.join(", ")})`}`
          )
          .join(" and ")}`
      ),
      check(
        "while Redis was down, the fail-open gateway answered every request (200)",
        all(open.phases.down, open.phases.down.answered),
        unavailableDetail(open.phases.down)
      ),
      check(
        "while Redis was down, the fail-closed gateway refused every request with 503 store_unavailable JSON",
        all(closed.phases.down, closed.phases.down.storeUnavailable),
        unavailableDetail(closed.phases.down)
      ),
      check(
        "after the restart both gateways recovered by themselves: every later request answered",
        all(open.phases.after, open.phases.after.answered) &&
          all(closed.phases.after, closed.phases.after.answered) &&
          probeOutcomes.length === 0,
        `from ${recoveryAllowanceMs} ms after the restart: ${recoveredText(open)}; ${recoveredText(closed)}${
          probeOutcomes.length === 0 ? "" : `; ${probeOutcomes.slice(0, 3).join("; ")}`
        }`
      ),
      check(
        "the stores are used again: keys of every store in the new, empty Redis, the rate-limit counter counts again",
        usedAgain(open) && usedAgain(closed),
        `${usedText(open)}; ${usedText(closed)}`
      ),
      check(
        "each gateway logged the outage once and alerted it once (Raised, then Resolved after the restart)",
        policies.every((policy) => oneOutage(events[policy].filter(duringOutage))),
        policies.map((policy) => `${policy}: ${figures.gateways[policy].outageLog.join(", ")}`).join("; ")
      ),
      check(
        "no outage reported while Redis was up",
        policies.every((policy) => !events[policy].some((event) => !duringOutage(event))),
        policies
          .map((policy) => {
            const outside = events[policy].filter((event) => !duringOutage(event))
            return `${policy}: ${outside.length === 0 ? "none" : outside.map((event) => `${event.alert ?? event.kind} at ${since(event.at)}`).join(", ")}`
          })
          .join("; ")
      ),
      check(
        "nothing leaked: both gateways alive with /health ok, one Redis connection each",
        open.healthy && closed.healthy && redisClients === policies.length,
        `fail-open ${open.healthy ? "healthy" : "NOT healthy"}, fail-closed ${closed.healthy ? "healthy" : "NOT healthy"}; ${redisClients} connections to the restarted Redis (pool size 1 each)`
      ),
      Security.scanCheck(scanner)
    ]
    return {
      id: "redis",
      title: "Redis stopped and restarted during load",
      durationSeconds: secondsSince(startedAt),
      figures,
      checks,
      notes: [
        `${total} requests at most ${options.ratePerSecond}/s and ${options.concurrency} in flight, half streamed, alternating between two gateways (rate limit, response cache and circuit breaker on Redis; rate limit fail-open on one, fail-closed on the other) in front of an upstream answering in 100 ms (streams: 20 ms between chunks). Command timeout ${commandTimeout}. Redis (password-protected, no persistence) got SIGTERM ${stopAfterMs} ms into the load and was started again ${downMs} ms after it exited, on the same port.`,
        `Phases: before (answered before the SIGTERM); stopping (in flight at the SIGTERM, or started until ${settleMs} ms after Redis exited: Redis 7 leaves commands sent after a SIGTERM unanswered until it exits, then resets the connection); down (started until the restart); restarting (started in the ${recoveryAllowanceMs} ms after it, in which the gateways reconnect: their backoff is capped at 2 s); after. In the stopping and restarting phases the fail-closed gateway may answer or refuse; the fail-open one must always answer.`,
        "The restarted Redis starts empty, so every key found in it at the end was written after the restart; the rate-limit counter (a fixed 1-minute window) is read before and after a few more requests to each gateway.",
        `Each gateway gets ${warmUpRequests} requests before the load (4 at a time). Without them (\`warmUpRequests: 0\`) a gateway meeting the load cold can see its first Redis operations overrun the command timeout while Redis is healthy (the gateway's own start-up stalls), log and alert an outage, and fail fast for up to 1 s: under fail-closed, a burst of 503 store_unavailable with Redis up. A machine starved of CPU (other work beside the drill) does the same mid-load: that is what the check "no outage reported while Redis was up" catches.`
      ]
    }
  } finally {
    for (const gateway of gateways.values()) await gateway.close()
    await fake.close()
    await redis.close()
  }
}
