/**
 * @roadcar/core: the production LLM pipeline.
 *
 * @since 0.1.0
 */
export * as AlertSink from "./AlertSink.ts"
export * as AlertWebhook from "./AlertWebhook.ts"
export * as Breaker from "./Breaker.ts"
export * as Budget from "./Budget.ts"
export * as ChatCompletion from "./ChatCompletion.ts"
export * as LanguageModelUpstream from "./LanguageModelUpstream.ts"
export * as Metrics from "./Metrics.ts"
export * as Monitor from "./Monitor.ts"
export * as Pipeline from "./Pipeline.ts"
export * as PipelineLanguageModel from "./PipelineLanguageModel.ts"
export * as Anthropic from "./providers/Anthropic.ts"
export * as OpenAiCompatible from "./providers/OpenAiCompatible.ts"
export * as RateLimit from "./RateLimit.ts"
export * as RequestLog from "./RequestLog.ts"
export * as ResponseCache from "./ResponseCache.ts"
export * as Retry from "./Retry.ts"
export * as Roadcar from "./Roadcar.ts"
export * as RoadcarConfig from "./RoadcarConfig.ts"
export * as Simulated from "./Simulated.ts"
export * as StoreUnavailable from "./StoreUnavailable.ts"
export * as Timeouts from "./Timeouts.ts"
export * as Upstream from "./Upstream.ts"
export * as UpstreamError from "./UpstreamError.ts"
