import * as Schema from "effect/Schema"

/**
 * A shared store (Redis) could not answer and its fault policy is to refuse the request
 * (`fail-closed`): the gateway answers 503.
 *
 * **Details**
 *
 * Stores with a `fail-open` policy never raise it: they admit the request unrecorded, log and alert.
 *
 * @category errors
 * @since 0.1.0
 */
export class StoreUnavailable extends Schema.TaggedError<StoreUnavailable>()("StoreUnavailable", {
  /** Which store, e.g. `budget` or `rate limit`. */
  store: Schema.String,
  detail: Schema.String
}) {
  override get message(): string {
    return `the shared ${this.store} store is unavailable, so the request was refused: ${this.detail}`
  }
}

/**
 * Whether a value is a `StoreUnavailable` (by tag, so it survives being carried as another error's cause).
 *
 * @category guards
 * @since 0.1.0
 */
export const isStoreUnavailable = (value: unknown): value is StoreUnavailable =>
  typeof value === "object" && value !== null && (value as { readonly _tag?: unknown })._tag === "StoreUnavailable"
