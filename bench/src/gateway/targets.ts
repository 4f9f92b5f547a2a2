/**
 * The three targets of the throughput benchmark, each a child process on 127.0.0.1: the fake
 * upstream itself, the bare proxy in front of it, and the gateway in front of it.
 *
 * `startTargets` starts them (the upstream first, then the proxy and the gateway pointed at it),
 * `setBehaviour` changes what the upstream does (its latency) for every target at once, and `stop`
 * stops them all.
 */
import type { Behaviour } from "@roadcar/testing"
import { type Child, type GatewayChild, spawnChild, spawnGateway } from "./children.ts"
import { type GatewayConfig, gatewayConfig } from "./config.ts"

/** The URL in a child's `{ type: "ready", url }` message. */
export const readyUrl = (message: unknown): string | undefined =>
  typeof message === "object" &&
  message !== null &&
  (message as { type?: unknown }).type === "ready" &&
  typeof (message as { url?: unknown }).url === "string"
    ? (message as { url: string }).url
    : undefined

/** Which target. */
export type TargetId = "upstream" | "bare-proxy" | "gateway"

/** A target: where to send the load, and the process that serves it. */
export interface Target {
  readonly id: TargetId
  readonly label: string
  readonly url: string
  readonly child: Child
}

/** The started targets. */
export interface Targets {
  readonly upstream: Target
  readonly bareProxy: Target
  readonly gateway: Target & { readonly child: GatewayChild }
  readonly all: ReadonlyArray<Target>
  /** Installs a behaviour on the fake upstream (acknowledged before it resolves). */
  readonly setBehaviour: (behaviour: Behaviour.Behaviour) => Promise<void>
  readonly stop: () => Promise<void>
}

const script = (name: string) => new URL(`./${name}`, import.meta.url).pathname

/** Starts the fake upstream, then the bare proxy and the gateway in front of it. */
export const startTargets = async (
  options: {
    readonly logFile?: string | undefined
    readonly config?: ((upstreamUrl: string) => GatewayConfig) | undefined
  } = {}
): Promise<Targets> => {
  const started: Array<Child> = []
  try {
    const upstreamChild = spawnChild({ name: "upstream", args: [script("upstreamChild.ts")] })
    started.push(upstreamChild)
    const upstreamUrl = await upstreamChild.receive(readyUrl)
    const proxyChild = spawnChild({ name: "bare-proxy", args: [script("bareProxyChild.ts"), upstreamUrl] })
    started.push(proxyChild)
    // The proxy and the gateway start side by side.
    const [proxyReady, gatewayStarted] = await Promise.allSettled([
      proxyChild.receive(readyUrl),
      spawnGateway((options.config ?? gatewayConfig)(upstreamUrl), { logFile: options.logFile })
    ])
    if (gatewayStarted.status === "fulfilled") started.push(gatewayStarted.value)
    if (proxyReady.status === "rejected") throw proxyReady.reason
    if (gatewayStarted.status === "rejected") throw gatewayStarted.reason
    const proxyUrl = proxyReady.value
    const gatewayChild = gatewayStarted.value
    const upstream: Target = {
      id: "upstream",
      label: "fake upstream, directly",
      url: upstreamUrl,
      child: upstreamChild
    }
    const bareProxy: Target = { id: "bare-proxy", label: "bare Node.js proxy", url: proxyUrl, child: proxyChild }
    const gateway = { id: "gateway" as const, label: "Roadcar gateway", url: gatewayChild.url, child: gatewayChild }
    let nextId = 0
    return {
      upstream,
      bareProxy,
      gateway,
      all: [upstream, bareProxy, gateway],
      setBehaviour: async (behaviour) => {
        const id = nextId++
        const acknowledged = upstreamChild.receive((message) =>
          typeof message === "object" &&
          message !== null &&
          (message as { type?: unknown }).type === "behaviour-set" &&
          (message as { id?: unknown }).id === id
            ? true
            : undefined
        )
        upstreamChild.send({ type: "behaviour", id, behaviour })
        await acknowledged
      },
      stop: async () => {
        await Promise.all([gatewayChild.stop(), proxyChild.stop()])
        await upstreamChild.stop()
      }
    }
  } catch (error) {
    await Promise.all(started.map((child) => child.stop(1_000)))
    throw error
  }
}
