/**
 * The fake upstream as a child process: `node --import probe.ts upstreamChild.ts` starts
 * `FakeUpstream` from `@roadcar/testing` on 127.0.0.1 (`PORT`, default a free port) and tells the
 * parent its URL over IPC (`{ type: "ready", url }`).
 *
 * The parent changes what it does with `{ type: "behaviour", id, behaviour }` (a `Behaviour`, plain
 * data), acknowledged with `{ type: "behaviour-set", id }`. The attempt log is emptied every second so
 * a long run does not grow it. SIGTERM closes the server (every connection destroyed) and exits.
 */
import { type Behaviour, FakeUpstream } from "@roadcar/testing"
import { answerText } from "./fixtures.ts"

/** A behaviour change from the parent. */
export interface SetBehaviour {
  readonly type: "behaviour"
  readonly id: number
  readonly behaviour: Behaviour.Behaviour
}

const isSetBehaviour = (message: unknown): message is SetBehaviour =>
  typeof message === "object" && message !== null && (message as { type?: unknown }).type === "behaviour"

const fake = await FakeUpstream.start({
  port: Number(process.env["PORT"] ?? "0"),
  behaviour: { _tag: "Ok", text: answerText }
})
setInterval(() => fake.clearAttempts(), 1_000).unref()

process.on("message", (message: unknown) => {
  if (!isSetBehaviour(message)) return
  fake.setBehaviour(message.behaviour)
  process.send?.({ type: "behaviour-set", id: message.id })
})
process.on("SIGTERM", () => {
  void fake.close().then(() => process.exit(0))
})
process.send?.({ type: "ready", url: fake.url })
