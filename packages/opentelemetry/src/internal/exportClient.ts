/**
 * The HTTP client one OTLP signal exports with: fetch, a time limit per request, and a bound on the
 * requests in flight, so a slow or hung collector holds at most `maxConcurrent` batches and each for
 * at most `timeout` per attempt. A request over the bound fails at once (a transport error: Effect's
 * exporter retries it a few times, then drops the batch and pauses that signal for a minute).
 *
 * @internal
 */
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FetchHttpClient from "effect/http/FetchHttpClient"
import * as HttpClient from "effect/http/HttpClient"
import * as HttpClientError from "effect/http/HttpClientError"
import * as Layer from "effect/Layer"

/** @internal */
export interface Options {
  readonly timeout: Duration.Duration
  readonly maxConcurrent: number
}

/** @internal */
export const layer = (options: Options): Layer.Layer<HttpClient.HttpClient> =>
  Layer.effect(
    HttpClient.HttpClient,
    Effect.map(HttpClient.HttpClient, (client) => {
      let inFlight = 0
      return client.pipe(
        HttpClient.timeout(options.timeout),
        HttpClient.transform((response, request) =>
          Effect.suspend(() => {
            if (inFlight >= options.maxConcurrent) {
              return Effect.fail(
                new HttpClientError.HttpClientError({
                  reason: new HttpClientError.TransportError({
                    request,
                    description: `${inFlight} exports already in flight`
                  })
                })
              )
            }
            inFlight++
            return Effect.ensuring(
              response,
              Effect.sync(() => {
                inFlight--
              })
            )
          })
        )
      )
    })
  ).pipe(Layer.provide(FetchHttpClient.layer))
