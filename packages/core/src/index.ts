/**
 * @roadcar/core: the production LLM pipeline.
 *
 * @since 0.1.0
 */
export * as ChatCompletion from "./ChatCompletion.ts"
export * as UpstreamError from "./UpstreamError.ts"
