/**
 * Drill 5, security: the secrets a gateway holds never show in what it emits, and keys are enforced.
 *
 * `makeSecrets` creates a gateway key, a key restricted to one model and an upstream `apiKey` (from an
 * environment variable), each with a recognisable random value. The soak scans every log line, every
 * response header and body, and `/metrics` for them (`SecretScan`); `authChecks` proves an unknown,
 * missing or malformed key gets 401, a restricted key gets 403 on other models (and from `/v1/models`
 * only its own), and the error bodies do not echo the presented key. Span attributes join the scan
 * once the OpenTelemetry exporter lands (see `scanSpans` below).
 */
import { randomBytes } from "node:crypto"
import { ApiKeys } from "@roadcar/gateway"
import { type Check, check } from "./Check.ts"
import { errorBodyOf } from "./Classify.ts"
import type * as SecretScan from "./SecretScan.ts"

/** The drill's secrets; `upstreamKeyEnv` names the environment variable holding `upstreamKey`. */
export interface Secrets {
  /** May use every model. */
  readonly gatewayKey: string
  /** May use `chat` only. */
  readonly limitedKey: string
  readonly upstreamKey: string
  readonly upstreamKeyEnv: string
}

/** The model a restricted key may use, and one it may not. */
export const models = { allowed: "chat", other: "other" } as const

/** Fresh random secrets; sets `upstreamKeyEnv` in `process.env` so a gateway can read it. */
export const makeSecrets = (): Secrets => {
  const secrets: Secrets = {
    gatewayKey: `sk-roadcar-drill-${randomBytes(20).toString("hex")}`,
    limitedKey: `sk-roadcar-limited-${randomBytes(20).toString("hex")}`,
    upstreamKey: `sk-upstream-drill-${randomBytes(20).toString("hex")}`,
    upstreamKeyEnv: "ROADCAR_DRILL_UPSTREAM_KEY"
  }
  process.env[secrets.upstreamKeyEnv] = secrets.upstreamKey
  return secrets
}

/** The secrets by label, for `SecretScan.make`. */
export const labelled = (secrets: Secrets): Record<string, string> => ({
  "gateway key": secrets.gatewayKey,
  "restricted gateway key": secrets.limitedKey,
  "upstream apiKey": secrets.upstreamKey
})

/** The `keys` section of a config for these secrets (only their SHA-256 digests). */
export const keysConfig = (secrets: Secrets) => [
  { name: "drill", sha256: ApiKeys.hash(secrets.gatewayKey) },
  { name: "drill-limited", sha256: ApiKeys.hash(secrets.limitedKey), models: [models.allowed] }
]

/** A chat request body. */
const chat = (model: string) => JSON.stringify({ model, messages: [{ role: "user", content: "auth check" }] })

interface Probe {
  readonly status: number
  readonly code: string
  readonly text: string
}

const probe = async (url: string, path: string, init: RequestInit, scanner: SecretScan.Scanner): Promise<Probe> => {
  const response = await fetch(`${url}${path}`, init)
  const text = await response.text()
  scanner.scan(text, "auth error body")
  let code = ""
  try {
    code = errorBodyOf(JSON.parse(text))?.code ?? ""
  } catch {
    code = ""
  }
  return { status: response.status, code, text }
}

const post = (authorization: string | undefined, model: string): RequestInit => ({
  method: "POST",
  headers: {
    "content-type": "application/json",
    ...(authorization === undefined ? {} : { authorization })
  },
  body: chat(model)
})

/**
 * 401 for unknown, missing and malformed keys; 403 for a restricted key on another model; the
 * restricted key's own model and `/v1/models` list work. Error bodies never echo a presented key.
 */
export const authChecks = async (
  url: string,
  secrets: Secrets,
  scanner: SecretScan.Scanner
): Promise<{ readonly checks: ReadonlyArray<Check>; readonly figures: Record<string, string> }> => {
  const unknownKey = `sk-roadcar-unknown-${randomBytes(20).toString("hex")}`
  const unknown = await probe(url, "/v1/chat/completions", post(`Bearer ${unknownKey}`, models.allowed), scanner)
  const missing = await probe(url, "/v1/chat/completions", post(undefined, models.allowed), scanner)
  const malformed = await probe(url, "/v1/chat/completions", post(`Basic ${unknownKey}`, models.allowed), scanner)
  const nearMiss = await probe(
    url,
    "/v1/chat/completions",
    post(`Bearer ${secrets.gatewayKey.slice(0, -1)}x`, models.allowed),
    scanner
  )
  const forbidden = await probe(
    url,
    "/v1/chat/completions",
    post(`Bearer ${secrets.limitedKey}`, models.other),
    scanner
  )
  const allowed = await fetch(`${url}/v1/chat/completions`, post(`Bearer ${secrets.limitedKey}`, models.allowed))
  await allowed.text()
  const listed = await fetch(`${url}/v1/models`, { headers: { authorization: `Bearer ${secrets.limitedKey}` } })
  const list = (await listed.json()) as { data?: ReadonlyArray<{ id?: string }> }
  const ids = (list.data ?? []).map((model) => model.id).join(",")
  const modelsUnknown = await probe(url, "/v1/models", { headers: { authorization: `Bearer ${unknownKey}` } }, scanner)
  const echoed = [unknown, malformed, nearMiss, modelsUnknown].some(
    (result) => result.text.includes(unknownKey) || result.text.includes(secrets.gatewayKey.slice(0, -1))
  )
  const show = (result: Probe) => `${result.status} ${result.code}`
  return {
    figures: {
      unknownKey: show(unknown),
      missingKey: show(missing),
      malformedAuthorization: show(malformed),
      nearMissKey: show(nearMiss),
      restrictedKeyOtherModel: show(forbidden),
      restrictedKeyOwnModel: String(allowed.status),
      restrictedKeyModelList: ids,
      unknownKeyModelList: show(modelsUnknown)
    },
    checks: [
      check(
        "unknown, missing, malformed and near-miss keys get 401",
        [unknown, missing, malformed, nearMiss, modelsUnknown].every((result) => result.status === 401),
        `unknown ${show(unknown)}, missing ${show(missing)}, malformed ${show(malformed)}, one character off ${show(nearMiss)}, /v1/models with an unknown key ${show(modelsUnknown)}`
      ),
      check(
        "a key restricted to some models gets 403 on the others",
        // The own-model request goes through the chaotic upstreams, so it may fail upstream (502/503/504):
        // what matters here is that the key is let through (not 401 or 403).
        forbidden.status === 403 && allowed.status !== 401 && allowed.status !== 403 && ids === models.allowed,
        `other model ${show(forbidden)}; own model ${allowed.status}; /v1/models lists "${ids}"`
      ),
      check("auth error bodies never echo the presented key", !echoed, echoed ? "a presented key was echoed" : "none")
    ]
  }
}

/**
 * The secret-scan check over everything scanned so far.
 *
 * Hook for span attributes: once the OpenTelemetry exporter lands, start an `OtlpReceiver` from
 * `@roadcar/testing`, point the soak gateway's exporter at it, and pass every received span's
 * attributes (as JSON) to `scanner.scan(text, "span attributes")` before calling this.
 */
export const scanCheck = (scanner: SecretScan.Scanner): Check => {
  const scanned = scanner.scanned()
  const summary = Object.entries(scanned.items)
    .map(([where, count]) => `${count} ${where}`)
    .join(", ")
  const findings = scanner.findings()
  return check(
    "no API key or upstream secret in any log line, header, body or metric",
    scanner.findingCount() === 0,
    findings.length === 0
      ? `scanned ${summary}`
      : `${scanner.findingCount()} findings, e.g. ${findings
          .slice(0, 3)
          .map((finding) => `${finding.secret} in ${finding.where}: ${finding.excerpt}`)
          .join("; ")}`
  )
}
