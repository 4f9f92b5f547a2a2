/**
 * @roadcar/gateway: the OpenAI-compatible gateway server and the `roadcar` CLI.
 *
 * @since 0.1.0
 */
export * as ApiKeys from "./ApiKeys.ts"
export * as ChatRoute from "./ChatRoute.ts"
export * as Cli from "./Cli.ts"
export * as Gateway from "./Gateway.ts"
export * as GatewayConfig from "./GatewayConfig.ts"
export * as GatewayError from "./GatewayError.ts"
export * as GatewayServer from "./GatewayServer.ts"
export * as RequestBody from "./RequestBody.ts"
export * as Sse from "./Sse.ts"
