/**
 * The bare proxy as a child process: `node --import probe.ts bareProxyChild.ts <upstream url> [http|fetch]` serves
 * on 127.0.0.1 (`PORT`, default a free port) and tells the parent its URL over IPC
 * (`{ type: "ready", url }`). SIGTERM closes it.
 */
import { type Client, start } from "./bareProxy.ts"

const upstreamUrl = process.argv[2]
if (upstreamUrl === undefined) throw new Error("usage: bareProxyChild.ts <upstream url>")
const client: Client = process.argv[3] === "fetch" ? "fetch" : "http"
const proxy = await start(upstreamUrl, Number(process.env["PORT"] ?? "0"), client)
process.on("SIGTERM", () => {
  void proxy.close().then(() => process.exit(0))
})
process.send?.({ type: "ready", url: proxy.url })
