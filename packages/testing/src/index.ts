/**
 * `@roadcar/testing`: a fault-injecting fake upstream (OpenAI and Anthropic wire formats, JSON and SSE)
 * and small helpers for tests.
 *
 * @since 0.1.0
 */

/**
 * The attempt log's entry: what arrived and what the fake upstream did.
 *
 * @since 0.1.0
 */
export * as Attempt from "./Attempt.ts"

/**
 * What the fake upstream does with one request.
 *
 * @since 0.1.0
 */
export * as Behaviour from "./Behaviour.ts"

/**
 * The fake upstream server: `make` (Effect), `layer`, `start` (Promise).
 *
 * @since 0.1.0
 */
export * as FakeUpstream from "./FakeUpstream.ts"

/**
 * A real OTLP/HTTP receiver (JSON and protobuf): `make` (Effect), `layer`, `start` (Promise).
 *
 * @since 0.1.0
 */
export * as OtlpReceiver from "./OtlpReceiver.ts"

/**
 * How behaviours are chosen per attempt.
 *
 * @since 0.1.0
 */
export * as Script from "./Script.ts"

/**
 * Reading server-sent events in tests.
 *
 * @since 0.1.0
 */
export * as Sse from "./Sse.ts"
