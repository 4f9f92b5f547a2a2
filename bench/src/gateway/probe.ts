/**
 * A preload for the benchmark's child processes (`node --import probe.ts ...`): answers the parent's
 * questions over the IPC channel with the process's own CPU time and memory, so the gateway, the bare
 * proxy and the fake upstream are measured from inside without changing their code.
 *
 * A message `{ type: "probe", id, gc? }` is answered with `{ type: "probe", id, ...Sample }`; with
 * `gc: true` two full, memory-reducing garbage collections run first (V8's `last-resort` flavour,
 * which also hands pooled heap pages back, so RSS can fall back). The channel is unreferenced: it never
 * keeps a child alive on its own. Without an IPC channel the preload does nothing.
 */
import v8 from "node:v8"
import vm from "node:vm"

/** What a child reports. */
export interface Sample {
  /** `process.cpuUsage()`: user and system CPU time in µs since the process started. */
  readonly cpu: { readonly user: number; readonly system: number }
  readonly memory: {
    readonly rss: number
    readonly heapTotal: number
    readonly heapUsed: number
    readonly external: number
    readonly arrayBuffers: number
  }
  /** Active libuv resources by type (`TCPSocketWrap`, `Timeout`, ...). */
  readonly resources: Readonly<Record<string, number>>
}

/** A question from the parent. */
export interface Question {
  readonly type: "probe"
  readonly id: number
  readonly gc?: boolean | undefined
}

const isQuestion = (message: unknown): message is Question =>
  typeof message === "object" &&
  message !== null &&
  (message as { type?: unknown }).type === "probe" &&
  typeof (message as { id?: unknown }).id === "number"

/** The sample of this process, now. */
export const sample = (): Sample => {
  const resources: Record<string, number> = {}
  for (const name of process.getActiveResourcesInfo()) resources[name] = (resources[name] ?? 0) + 1
  const memory = process.memoryUsage()
  return {
    cpu: process.cpuUsage(),
    memory: {
      rss: memory.rss,
      heapTotal: memory.heapTotal,
      heapUsed: memory.heapUsed,
      external: memory.external,
      arrayBuffers: memory.arrayBuffers
    },
    resources
  }
}

type Collect = (options: { readonly type: "major"; readonly execution: "sync"; readonly flavor: "last-resort" }) => void

let collect: Collect | undefined

const fullGc = () => {
  if (collect === undefined) {
    v8.setFlagsFromString("--expose-gc")
    collect = vm.runInNewContext("gc") as Collect
  }
  collect({ type: "major", execution: "sync", flavor: "last-resort" })
  collect({ type: "major", execution: "sync", flavor: "last-resort" })
}

if (process.send !== undefined) {
  process.on("message", (message: unknown) => {
    if (!isQuestion(message)) return
    if (message.gc === true) fullGc()
    process.send?.({ type: "probe", id: message.id, ...sample() })
  })
  process.channel?.unref()
}
