/**
 * Reads and validates a chat request body: JSON only, bounded in size, checked against the model
 * contract with errors that name the field.
 *
 * `read` rejects a body that is not declared as JSON (415) or is larger than the limit (413; a
 * declared `Content-Length` over the limit is refused before reading, and the limit is enforced while
 * reading, so nothing unbounded is buffered), then parses it (400 `invalid_json`). `decodeChatRequest`
 * validates it with `ChatCompletion.ChatRequest`, rejecting unknown fields, and reports the first
 * problem with its path as `param` (`messages[0].role`) and a "did you mean" for likely typos.
 *
 * @since 0.1.0
 */
import { ChatCompletion, RoadcarConfig } from "@roadcar/core"
import * as ByteSize from "effect/ByteSize"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as HttpIncomingMessage from "effect/http/HttpIncomingMessage"
import type * as HttpServerRequest from "effect/http/HttpServerRequest"
import * as Schema from "effect/Schema"
import * as SchemaIssue from "effect/SchemaIssue"
import * as GatewayError from "./GatewayError.ts"

// =============================================================================
// Reading
// =============================================================================

/**
 * Whether a `Content-Type` declares JSON (`application/json`, `application/*+json`, any parameters).
 *
 * @category guards
 * @since 0.1.0
 */
export const isJsonContentType = (contentType: string | undefined): boolean => {
  if (contentType === undefined) return false
  const type = contentType.split(";")[0]?.trim().toLowerCase() ?? ""
  return type === "application/json" || /^application\/[a-z0-9.+-]+\+json$/.test(type)
}

const decoder = new TextDecoder("utf-8", { fatal: true })

/**
 * Reads the body as JSON, within `limitBytes`.
 *
 * @category constructors
 * @since 0.1.0
 */
export const read = (
  request: HttpServerRequest.HttpServerRequest,
  limitBytes: number
): Effect.Effect<unknown, GatewayError.GatewayError> =>
  Effect.gen(function* () {
    const contentType = request.headers["content-type"]
    if (!isJsonContentType(contentType)) return yield* GatewayError.unsupportedMediaType(contentType)
    const declared = request.headers["content-length"]
    if (declared !== undefined && Number(declared) > limitBytes) {
      return yield* GatewayError.payloadTooLarge(limitBytes)
    }
    const bytes = yield* request.arrayBuffer.pipe(
      Effect.provideService(HttpIncomingMessage.MaxBodySize, ByteSize.bytes(limitBytes)),
      Effect.mapError((error) =>
        error.reason._tag === "RequestParseError" && error.reason.reason === "BodyTooLarge"
          ? GatewayError.payloadTooLarge(limitBytes)
          : GatewayError.invalidJson("the body could not be read")
      )
    )
    if (bytes.byteLength > limitBytes) return yield* GatewayError.payloadTooLarge(limitBytes)
    let text: string
    try {
      text = decoder.decode(bytes)
    } catch {
      return yield* GatewayError.invalidJson("the body is not valid UTF-8")
    }
    if (text.trim() === "") return yield* GatewayError.invalidJson("the body is empty")
    try {
      return JSON.parse(text) as unknown
    } catch (error) {
      return yield* GatewayError.invalidJson(error instanceof Error ? error.message : String(error))
    }
  })

// =============================================================================
// Validation
// =============================================================================

/**
 * A field path as OpenAI writes it: `messages[0].role`.
 *
 * @category constructors
 * @since 0.1.0
 */
export const pathText = (path: ReadonlyArray<PropertyKey>): string =>
  path.reduce<string>(
    (text, key) => (typeof key === "number" ? `${text}[${key}]` : text === "" ? String(key) : `${text}.${String(key)}`),
    ""
  )

const requestFields = Object.keys(ChatCompletion.ChatRequest.fields)
const messageFields = Object.keys(ChatCompletion.ChatMessage.fields)

const fieldsAt = (path: ReadonlyArray<PropertyKey>): ReadonlyArray<string> => {
  if (path.length === 0) return requestFields
  if (path.length === 2 && path[0] === "messages" && typeof path[1] === "number") return messageFields
  return []
}

const unknownField = "\u0000unknown field"

const leafHook: SchemaIssue.LeafHook = (issue) =>
  issue._tag === "UnexpectedKey" ? unknownField : SchemaIssue.defaultLeafHook(issue)

const formatter = SchemaIssue.makeFormatterStandardSchemaV1({ leafHook })

const truncate = (text: string, max: number): string => (text.length > max ? `${text.slice(0, max - 3)}...` : text)

/**
 * The deepest nesting a request body may have: deeper JSON is refused with a 400 before it reaches
 * code that walks it recursively (cache keys, serialisation to the upstream).
 *
 * @category constants
 * @since 0.1.0
 */
export const maxNesting = 128

// The nesting depth of a JSON value, counted without recursion; stops counting past `limit`.
const nestingDepth = (value: unknown, limit: number): number => {
  let deepest = 0
  const stack: Array<readonly [unknown, number]> = [[value, 0]]
  while (stack.length > 0) {
    const [current, depth] = stack.pop()!
    if (current === null || typeof current !== "object") continue
    const level = depth + 1
    if (level > deepest) deepest = level
    if (deepest > limit) return deepest
    for (const child of Array.isArray(current) ? current : Object.values(current)) stack.push([child, level])
  }
  return deepest
}

/**
 * Validates a parsed body as a chat request (unknown fields are errors).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { RequestBody } from "@roadcar/gateway"
 *
 * const error = Effect.runSync(Effect.flip(RequestBody.decodeChatRequest({ model: "chat", messages: [{ role: "bot" }] })))
 * error.param // => "messages[0].role"
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const decodeChatRequest = (
  body: unknown
): Effect.Effect<ChatCompletion.ChatRequest, GatewayError.GatewayError> =>
  Effect.suspend(() => {
    if (nestingDepth(body, maxNesting) > maxNesting) {
      return Effect.fail(
        GatewayError.invalidRequest(
          `The request body is nested more than ${maxNesting} levels deep; flatten it (e.g. the tool's JSON schema).`,
          null
        )
      )
    }
    const exit = Schema.decodeUnknownExit(ChatCompletion.ChatRequest)(body, {
      onExcessProperty: "error",
      reportInput: true
    })
    if (Exit.isSuccess(exit)) return Effect.succeed(exit.value)
    const issue = exit.cause.reasons.find((reason) => reason._tag === "Fail")?.error.issue
    const first = issue === undefined ? undefined : formatter(issue).issues[0]
    if (first === undefined) return Effect.fail(GatewayError.invalidRequest("The request body is invalid.", null))
    const path = (first.path ?? []).map((segment) =>
      typeof segment === "object" && segment !== null && "key" in segment ? (segment.key as PropertyKey) : segment
    )
    const param = path.length > 0 ? pathText(path) : null
    if (first.message === unknownField) {
      const name = String(path.at(-1))
      const guess = RoadcarConfig.suggest(name, fieldsAt(path.slice(0, -1)))
      return Effect.fail(
        GatewayError.invalidRequest(
          `Unrecognized request argument supplied: ${truncate(param ?? name, 120)}${guess ? ` (did you mean "${guess}"?)` : ""}.`,
          param
        )
      )
    }
    const message = first.message.replace(/^Expected/, "expected")
    return Effect.fail(
      GatewayError.invalidRequest(
        truncate(param === null ? `Invalid request body: ${message}.` : `Invalid value for ${param}: ${message}.`, 500),
        param
      )
    )
  })
