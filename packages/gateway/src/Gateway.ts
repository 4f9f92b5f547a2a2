/**
 * The running gateway's state, shared by its routes: config, server settings, keys, and one
 * pipeline per public model.
 *
 * `make` builds it from a validated config with `Roadcar.make` (upstreams and pipelines) on the stage
 * services in context; `layer` provides it together with those stages (`Roadcar.layerStages`) and an
 * `HttpClient` for the providers. It also answers the questions routes ask of it: who is calling
 * (`authorize`: virtual keys, or loopback only when none are configured) and whether each model can
 * be served (`readiness`: at least one upstream whose circuit is not open).
 *
 * @since 0.1.0
 */

import {
  type AlertSink,
  Breaker,
  type Monitor,
  type Pipeline,
  Roadcar,
  type RoadcarConfig,
  type Upstream
} from "@roadcar/core"
import { RedisFromConfig } from "@roadcar/redis"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import type * as HttpClient from "effect/http/HttpClient"
import type * as HttpServerRequest from "effect/http/HttpServerRequest"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as ApiKeys from "./ApiKeys.ts"
import type { ServerSettings } from "./GatewayConfig.ts"
import * as GatewayError from "./GatewayError.ts"

/**
 * The gateway's state.
 *
 * @category models
 * @since 0.1.0
 */
export interface Service {
  readonly config: RoadcarConfig.RoadcarConfig
  readonly settings: ServerSettings
  readonly keys: ApiKeys.ApiKeys
  /** Public model name → its pipeline, in config order. */
  readonly models: ReadonlyMap<string, Pipeline.Pipeline>
  readonly upstreams: ReadonlyMap<string, Upstream.Upstream>
  readonly breaker: Breaker.Breaker["Service"]
}

/**
 * The gateway service.
 *
 * @category services
 * @since 0.1.0
 */
export class Gateway extends Context.Service<Gateway, Service>()("@roadcar/gateway/Gateway") {}

/**
 * Builds the gateway's state from a validated config (needs the stage services and an `HttpClient`).
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = (
  config: RoadcarConfig.RoadcarConfig,
  settings: ServerSettings
): Effect.Effect<
  Service,
  RoadcarConfig.ConfigError,
  HttpClient.HttpClient | Breaker.Breaker | Monitor.Monitor | Scope.Scope
> =>
  Effect.gen(function* () {
    const roadcar = yield* Roadcar.make(config)
    const breaker = yield* Breaker.Breaker
    return {
      config,
      settings,
      keys: ApiKeys.make(config.keys ?? []),
      models: roadcar.models,
      upstreams: roadcar.upstreams,
      breaker
    }
  })

/**
 * The gateway with its stages (breaker, monitor, rate limit, cache as the config says), on the
 * `HttpClient` of `httpClient`. The stages stay visible to the caller.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (options: {
  readonly config: RoadcarConfig.RoadcarConfig
  readonly settings: ServerSettings
  readonly httpClient: Layer.Layer<HttpClient.HttpClient>
  readonly alertSink?: Layer.Layer<AlertSink.AlertSink> | undefined
}): Layer.Layer<Gateway | Roadcar.Stages, RoadcarConfig.ConfigError | Roadcar.StoreError> =>
  Layer.effect(Gateway, make(options.config, options.settings)).pipe(
    Layer.provide(options.httpClient),
    Layer.provideMerge(
      Roadcar.layerStages(options.config, {
        sink: options.alertSink,
        stores: RedisFromConfig.storeLayers(options.config)
      }).pipe(Layer.provide(options.httpClient))
    )
  )

// =============================================================================
// Authorization
// =============================================================================

/**
 * The public models a key may use, in config order (every model for an anonymous loopback caller).
 *
 * @category accessors
 * @since 0.1.0
 */
export const usableModels = (gateway: Service, key: ApiKeys.Key | undefined): ReadonlyArray<string> =>
  [...gateway.models.keys()].filter((model) => ApiKeys.allows(key, model))

/**
 * Who is calling: the matched key, or `undefined` for an anonymous loopback caller of a gateway
 * without keys. Fails with 401 for a missing or unknown key, or a non-loopback caller without keys.
 *
 * @category combinators
 * @since 0.1.0
 */
export const authorize = (
  keys: ApiKeys.ApiKeys,
  request: HttpServerRequest.HttpServerRequest
): Effect.Effect<ApiKeys.Key | undefined, GatewayError.GatewayError> =>
  Effect.suspend(() => {
    if (!keys.configured) {
      return ApiKeys.isLoopback(Option.getOrUndefined(request.remoteAddress))
        ? Effect.succeed(undefined)
        : Effect.fail(
            GatewayError.unauthorized(
              'This gateway has no API keys configured, so it only serves loopback callers (127.0.0.1, ::1). To serve other hosts, add keys to the config: run `roadcar hash-key <key>` and list the digest under "keys": [{ "name": "...", "sha256": "..." }].',
              "no_keys_configured"
            )
          )
    }
    const token = ApiKeys.bearerToken(request.headers["authorization"])
    if (token === undefined) {
      return Effect.fail(
        GatewayError.unauthorized(
          "Missing API key: send it as `Authorization: Bearer <key>`.",
          request.headers["authorization"] === undefined ? "missing_api_key" : "invalid_authorization_header"
        )
      )
    }
    const key = keys.authenticate(token)
    return key === undefined
      ? Effect.fail(GatewayError.unauthorized("Invalid API key: it is not one of this gateway's keys."))
      : Effect.succeed(key)
  })

// =============================================================================
// Readiness
// =============================================================================

/**
 * Whether each public model can be served: it has an upstream whose circuit is not open.
 *
 * @category models
 * @since 0.1.0
 */
export interface Readiness {
  readonly ready: boolean
  readonly models: Readonly<
    Record<string, { readonly ready: boolean; readonly upstreams: Readonly<Record<string, string>> }>
  >
}

/**
 * Reads every model's upstream circuits.
 *
 * @category combinators
 * @since 0.1.0
 */
export const readiness = (gateway: Service): Effect.Effect<Readiness> =>
  Effect.gen(function* () {
    const models: Record<string, { ready: boolean; upstreams: Record<string, string> }> = {}
    let ready = true
    for (const [model, pipeline] of gateway.models) {
      const upstreams: Record<string, string> = {}
      let modelReady = false
      for (const upstream of pipeline.upstreams) {
        const state = yield* gateway.breaker.state(upstream.name)
        upstreams[upstream.name] = state._tag
        if (state._tag !== "Open") modelReady = true
      }
      models[model] = { ready: modelReady, upstreams }
      ready = ready && modelReady
    }
    return { ready, models }
  })
