/**
 * The long slow-loris probe, run as its own process by the full drill (`node test/drills/slowLorisProbe.ts
 * <seconds>`): starts a `roadcar serve` child on the simulated model, keeps slow-loris sockets
 * trickling for up to `<seconds>`, checks every 2 s that a normal request is still answered, and prints
 * one JSON line: the `SlowLoris.Summary` plus the normal requests served. Running apart keeps its
 * sockets out of the main drill process's handle counts.
 */
import * as Harness from "./Harness.ts"
import * as SlowLoris from "./SlowLoris.ts"

const seconds = Number(process.argv[2] ?? 340)
const sockets = Number(process.argv[3] ?? 4)

const gateway = await Harness.spawnGateway(
  { logLevel: "Warn", models: { chat: { upstream: "simulated" } } },
  await Harness.freePort()
)
try {
  const running = SlowLoris.start(gateway.port, { sockets, maxMs: seconds * 1000 })
  const served = { requests: 0, answered: 0 }
  let serving = true
  const probe = (async () => {
    while (serving) {
      served.requests++
      const ok = await fetch(`${gateway.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "chat", messages: [{ role: "user", content: "still there?" }] }),
        signal: AbortSignal.timeout(5_000)
      }).then(
        (response) => response.text().then(() => response.status === 200),
        () => false
      )
      if (ok) served.answered++
      await new Promise((resolve) => setTimeout(resolve, 2_000))
    }
  })()
  const summary = await running.stop()
  serving = false
  await probe
  process.stdout.write(`${JSON.stringify({ ...summary, served })}\n`)
} finally {
  await gateway.close()
}
