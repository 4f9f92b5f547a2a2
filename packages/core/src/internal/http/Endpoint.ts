/**
 * Resolves a provider's `baseUrl` into the endpoint it posts to and the server it names in telemetry.
 *
 * @since 0.1.0
 */

/**
 * Where an upstream lives: the full endpoint URL and its `server.address` / `server.port`.
 *
 * @category models
 * @since 0.1.0
 */
export interface Endpoint {
  readonly url: string
  readonly server: { readonly address: string; readonly port: number }
}

/**
 * Joins `baseUrl` and `path` (one slash between them, query string kept), or `undefined` when
 * `baseUrl` is not an absolute http(s) URL.
 *
 * @example
 * ```ts
 * resolve("http://127.0.0.1:11434/v1/", "/chat/completions")?.url // => "http://127.0.0.1:11434/v1/chat/completions"
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const resolve = (baseUrl: string, path: string): Endpoint | undefined => {
  let base: URL
  try {
    base = new URL(baseUrl)
  } catch {
    return undefined
  }
  if (base.protocol !== "http:" && base.protocol !== "https:") return undefined
  base.pathname = `${base.pathname.replace(/\/+$/, "")}/${path.replace(/^\/+/, "")}`
  const port = base.port.length > 0 ? Number(base.port) : base.protocol === "https:" ? 443 : 80
  return { url: base.toString(), server: { address: base.hostname, port } }
}
