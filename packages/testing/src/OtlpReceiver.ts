/**
 * A real OTLP/HTTP receiver for tests: a `node:http` server on 127.0.0.1 that accepts what an
 * OpenTelemetry exporter posts to `/v1/traces`, `/v1/metrics` and `/v1/logs`, decodes it (JSON or
 * protobuf, plain or gzip) and keeps it as flat, assertable records.
 *
 * Point an exporter at `url` (its base URL), run the code under test, then read `spans` (with
 * parent links, kinds, attributes as plain objects, events, status and resource attributes),
 * `metrics` (one record per data point) or `logs`, or wait for them with `waitForSpans`. `setDown`
 * makes it behave like a collector that is down (503, a reset connection, or a hang) to prove that
 * telemetry never hurts requests. `make` is the Effect API (closed with its `Scope`), `layer`
 * provides it as a service, `start` is the Promise API. It is not a collector: it forwards nothing
 * and answers every accepted export with an empty success.
 *
 * @since 0.1.0
 */
import * as Http from "node:http"
import * as Zlib from "node:zlib"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ProtobufReader from "effect/protobuf/ProtobufReader"
import type * as Scope from "effect/Scope"

// =============================================================================
// Models
// =============================================================================

/**
 * An attribute value as received: OTLP `AnyValue` as plain JavaScript (64-bit integers beyond
 * `Number.MAX_SAFE_INTEGER` as `bigint`, bytes as `Uint8Array`, key-value lists as objects).
 *
 * @category models
 * @since 0.1.0
 */
export type AttributeValue =
  | string
  | number
  | bigint
  | boolean
  | Uint8Array
  | null
  | ReadonlyArray<AttributeValue>
  | { readonly [key: string]: AttributeValue }

/**
 * Attributes as a plain object.
 *
 * @category models
 * @since 0.1.0
 */
export type Attributes = { readonly [key: string]: AttributeValue }

/**
 * A span's kind, by its OpenTelemetry name.
 *
 * @category models
 * @since 0.1.0
 */
export type SpanKind = "unspecified" | "internal" | "server" | "client" | "producer" | "consumer"

/**
 * One received span, flattened: resource and instrumentation scope are copied onto it.
 *
 * @category models
 * @since 0.1.0
 */
export interface Span {
  /** 32 lowercase hex digits. */
  readonly traceId: string
  /** 16 lowercase hex digits. */
  readonly spanId: string
  /** `undefined` for a root span. */
  readonly parentSpanId: string | undefined
  readonly name: string
  readonly kind: SpanKind
  /** Epoch nanoseconds, as a decimal string. */
  readonly startTimeUnixNano: string
  readonly endTimeUnixNano: string
  readonly attributes: Attributes
  readonly events: ReadonlyArray<{
    readonly name: string
    readonly timeUnixNano: string
    readonly attributes: Attributes
  }>
  readonly links: ReadonlyArray<{ readonly traceId: string; readonly spanId: string; readonly attributes: Attributes }>
  readonly status: { readonly code: "unset" | "ok" | "error"; readonly message: string | undefined }
  readonly resource: Attributes
  readonly scope: { readonly name: string; readonly version: string | undefined }
}

/**
 * The OTLP metric data kinds.
 *
 * @category models
 * @since 0.1.0
 */
export type MetricType = "gauge" | "sum" | "histogram" | "exponentialHistogram" | "summary"

/**
 * One received metric data point, flattened: the metric's name, unit and type, the point's
 * attributes and values, and the resource attributes.
 *
 * **Details**
 *
 * `value` is set for gauges and sums; `count` and `sum` for histograms and summaries; `min`, `max`,
 * `bucketCounts` (one more than `explicitBounds`) for explicit-bucket histograms.
 *
 * @category models
 * @since 0.1.0
 */
export interface MetricPoint {
  readonly name: string
  readonly description: string
  readonly unit: string
  readonly type: MetricType
  readonly attributes: Attributes
  readonly resource: Attributes
  readonly timeUnixNano: string
  readonly value: number | undefined
  readonly monotonic: boolean | undefined
  readonly temporality: "unspecified" | "delta" | "cumulative" | undefined
  readonly count: number | undefined
  readonly sum: number | undefined
  readonly min: number | undefined
  readonly max: number | undefined
  readonly bucketCounts: ReadonlyArray<number> | undefined
  readonly explicitBounds: ReadonlyArray<number> | undefined
}

/**
 * One received log record, flattened.
 *
 * @category models
 * @since 0.1.0
 */
export interface LogRecord {
  readonly timeUnixNano: string
  readonly severityNumber: number
  readonly severityText: string
  readonly body: AttributeValue
  readonly attributes: Attributes
  /** `undefined` when the record is not tied to a span. */
  readonly traceId: string | undefined
  readonly spanId: string | undefined
  readonly resource: Attributes
}

/**
 * One HTTP request the receiver saw, accepted or not.
 *
 * @category models
 * @since 0.1.0
 */
export interface Request {
  readonly method: string
  readonly path: string
  /** Lowercased header names; values as sent (so do not log them). */
  readonly headers: Readonly<Record<string, string>>
  readonly contentType: string | undefined
  readonly contentEncoding: string | undefined
  /** Body bytes as received (before gunzip). */
  readonly bytes: number
  /** The status answered, or what was done instead when down. */
  readonly outcome: number | "reset" | "hang"
}

/**
 * How a receiver that is down treats exports: `unavailable` answers 503, `reset` destroys the
 * connection without an answer, `hang` reads the request and never answers.
 *
 * @category models
 * @since 0.1.0
 */
export type Down = "unavailable" | "reset" | "hang"

/**
 * Waiting for telemetry took longer than the timeout.
 *
 * @category errors
 * @since 0.1.0
 */
export class WaitTimeout extends Data.TaggedError("WaitTimeout")<{
  readonly signal: "spans" | "metrics" | "logs"
  readonly timeoutMs: number
  /** How many records had arrived. */
  readonly received: number
}> {
  override get message(): string {
    return `OtlpReceiver: waited ${this.timeoutMs}ms for ${this.signal}; ${this.received} received, none matched`
  }
}

/**
 * Options of {@link make}, {@link layer} and {@link start}.
 *
 * @category options
 * @since 0.1.0
 */
export interface Options {
  /** A fixed port (default: a free port chosen by the OS). The host is always 127.0.0.1. */
  readonly port?: number | undefined
  /** The largest body accepted, in bytes (default 16 MiB); beyond, 413. */
  readonly maxBodyBytes?: number | undefined
}

/**
 * A running receiver (Promise API).
 *
 * @category models
 * @since 0.1.0
 */
export interface Handle {
  /** `"http://127.0.0.1:<port>"`: the exporter's base URL (signals go to `/v1/...`). */
  readonly url: string
  readonly port: number
  readonly spans: () => ReadonlyArray<Span>
  readonly metrics: () => ReadonlyArray<MetricPoint>
  readonly logs: () => ReadonlyArray<LogRecord>
  readonly requests: () => ReadonlyArray<Request>
  /**
   * Resolves with every span received once `predicate` holds for them; rejects with {@link WaitTimeout}
   * after `timeoutMs` (default 5000), or with the signal's reason when `signal` aborts.
   */
  readonly waitForSpans: (
    predicate: (spans: ReadonlyArray<Span>) => boolean,
    timeoutMs?: number,
    signal?: AbortSignal
  ) => Promise<ReadonlyArray<Span>>
  readonly waitForMetrics: (
    predicate: (metrics: ReadonlyArray<MetricPoint>) => boolean,
    timeoutMs?: number,
    signal?: AbortSignal
  ) => Promise<ReadonlyArray<MetricPoint>>
  readonly waitForLogs: (
    predicate: (logs: ReadonlyArray<LogRecord>) => boolean,
    timeoutMs?: number,
    signal?: AbortSignal
  ) => Promise<ReadonlyArray<LogRecord>>
  /** `true` (= `"unavailable"`) or a {@link Down} mode; `false` accepts exports again. */
  readonly setDown: (down: boolean | Down) => void
  /** Forgets every span, metric, log record and request received so far. */
  readonly clear: () => void
  /** Stops listening and destroys every open connection (hanging ones included). */
  readonly close: () => Promise<void>
}

/**
 * A running receiver (Effect API).
 *
 * @category models
 * @since 0.1.0
 */
export interface Service {
  readonly url: string
  readonly port: number
  readonly spans: Effect.Effect<ReadonlyArray<Span>>
  readonly metrics: Effect.Effect<ReadonlyArray<MetricPoint>>
  readonly logs: Effect.Effect<ReadonlyArray<LogRecord>>
  readonly requests: Effect.Effect<ReadonlyArray<Request>>
  /**
   * Waits until `predicate` holds for the spans received, in wall-clock time (a receiver is real
   * I/O: `TestClock` does not move it); fails with {@link WaitTimeout} after `timeout` (default 5s).
   */
  readonly waitForSpans: (
    predicate: (spans: ReadonlyArray<Span>) => boolean,
    timeout?: Duration.Input
  ) => Effect.Effect<ReadonlyArray<Span>, WaitTimeout>
  readonly waitForMetrics: (
    predicate: (metrics: ReadonlyArray<MetricPoint>) => boolean,
    timeout?: Duration.Input
  ) => Effect.Effect<ReadonlyArray<MetricPoint>, WaitTimeout>
  readonly waitForLogs: (
    predicate: (logs: ReadonlyArray<LogRecord>) => boolean,
    timeout?: Duration.Input
  ) => Effect.Effect<ReadonlyArray<LogRecord>, WaitTimeout>
  readonly setDown: (down: boolean | Down) => Effect.Effect<void>
  readonly clear: Effect.Effect<void>
}

/**
 * The receiver as a service (see {@link layer}).
 *
 * @category services
 * @since 0.1.0
 */
export class OtlpReceiver extends Context.Service<OtlpReceiver, Service>()("@roadcar/testing/OtlpReceiver") {}

// =============================================================================
// Decoding: shared
// =============================================================================

interface Received {
  readonly spans: Array<Span>
  readonly metrics: Array<MetricPoint>
  readonly logs: Array<LogRecord>
}

const { Len } = ProtobufReader.WireType
type Reader = ProtobufReader.ProtobufReader

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString("hex")

const int64 = (value: bigint): number | bigint => {
  const number = Number(value)
  return Number.isSafeInteger(number) ? number : value
}

const toNumber = (value: unknown): number | undefined => {
  if (typeof value === "number") return value
  if (typeof value === "string" && value.trim() !== "") {
    const number = Number(value)
    return Number.isNaN(number) ? undefined : number
  }
  return undefined
}

const spanKinds: ReadonlyArray<SpanKind> = ["unspecified", "internal", "server", "client", "producer", "consumer"]
const kindOf = (value: unknown): SpanKind => {
  if (typeof value === "string") {
    const name = value.replace(/^SPAN_KIND_/, "").toLowerCase()
    return spanKinds.find((kind) => kind === name) ?? "unspecified"
  }
  return spanKinds[toNumber(value) ?? 0] ?? "unspecified"
}

const statusOf = (code: unknown, message: string | undefined): Span["status"] => {
  const name = typeof code === "string" ? code.replace(/^STATUS_CODE_/, "").toLowerCase() : undefined
  const number = toNumber(code)
  const resolved = name === "ok" || number === 1 ? "ok" : name === "error" || number === 2 ? "error" : "unset"
  return { code: resolved, message: message === "" ? undefined : message }
}

const temporalityOf = (value: unknown): MetricPoint["temporality"] => {
  if (typeof value === "string") {
    if (value.endsWith("DELTA")) return "delta"
    if (value.endsWith("CUMULATIVE")) return "cumulative"
    return "unspecified"
  }
  const number = toNumber(value)
  return number === 1 ? "delta" : number === 2 ? "cumulative" : "unspecified"
}

const emptyPoint = {
  value: undefined,
  monotonic: undefined,
  temporality: undefined,
  count: undefined,
  sum: undefined,
  min: undefined,
  max: undefined,
  bucketCounts: undefined,
  explicitBounds: undefined
} as const

// =============================================================================
// Decoding: protobuf (opentelemetry.proto.collector.*.v1 Export*ServiceRequest)
// =============================================================================

/** Walks the fields of a message; `field` reads the ones it knows (returning true), the rest are skipped. */
const fields = (r: Reader, field: (fieldNumber: number, tag: number) => boolean): void => {
  while (!r.isDone()) {
    const tag = r.tag()
    if (!field(ProtobufReader.fieldNumber(tag), tag)) r.skip(tag)
  }
}

/** One value of a repeated fixed64 or double field, packed (`Len`) or not. */
const repeatedNumbers = (r: Reader, tag: number, read: (r: Reader) => number, into: Array<number>): void => {
  if (ProtobufReader.wireType(tag) === Len) {
    const packed = r.delimited()
    while (!packed.isDone()) into.push(read(packed))
  } else {
    into.push(read(r))
  }
}

const readFixed64 = (r: Reader): number => Number(r.fixed64())
const readDouble = (r: Reader): number => r.double()

const pbAnyValue = (r: Reader): AttributeValue => {
  let value: AttributeValue = null
  fields(r, (field) => {
    switch (field) {
      case 1:
        value = r.string()
        return true
      case 2:
        value = r.bool()
        return true
      case 3:
        value = int64(r.int64())
        return true
      case 4:
        value = r.double()
        return true
      case 5: {
        const array = r.delimited()
        const values: Array<AttributeValue> = []
        fields(array, (inner) => {
          if (inner !== 1) return false
          values.push(pbAnyValue(array.delimited()))
          return true
        })
        value = values
        return true
      }
      case 6: {
        const list = r.delimited()
        const values: Record<string, AttributeValue> = {}
        fields(list, (inner) => {
          if (inner !== 1) return false
          const [key, item] = pbKeyValue(list.delimited())
          values[key] = item
          return true
        })
        value = values
        return true
      }
      case 7:
        value = r.bytes()
        return true
      default:
        return false
    }
  })
  return value
}

const pbKeyValue = (r: Reader): readonly [string, AttributeValue] => {
  let key = ""
  let value: AttributeValue = null
  fields(r, (field) => {
    if (field === 1) key = r.string()
    else if (field === 2) value = pbAnyValue(r.delimited())
    else return false
    return true
  })
  return [key, value]
}

/** Reads one `KeyValue` (a `Len` field) into `into`. */
const pbAttribute = (r: Reader, into: Record<string, AttributeValue>): true => {
  const [key, value] = pbKeyValue(r.delimited())
  into[key] = value
  return true
}

const pbResource = (r: Reader): Attributes => {
  const attributes: Record<string, AttributeValue> = {}
  fields(r, (field) => field === 1 && pbAttribute(r, attributes))
  return attributes
}

const pbScope = (r: Reader): Span["scope"] => {
  let name = ""
  let version: string | undefined
  fields(r, (field) => {
    if (field === 1) name = r.string()
    else if (field === 2) version = r.string()
    else return false
    return true
  })
  return { name, version: version === "" ? undefined : version }
}

/**
 * Decodes `Resource* { resource = 1; repeated Scope* = 2 }` and `Scope* { scope = 1; repeated item = 2 }`,
 * the envelope every signal shares; `item` decodes one record given the resource and scope.
 */
const pbEnvelope = <A>(
  bytes: Uint8Array,
  item: (r: Reader, resource: Attributes, scope: Span["scope"]) => ReadonlyArray<A>
): Array<A> => {
  const out: Array<A> = []
  const request = ProtobufReader.make(bytes)
  fields(request, (field) => {
    if (field !== 1) return false
    const resourceItems = request.delimited()
    let resource: Attributes = {}
    const scopes: Array<Reader> = []
    fields(resourceItems, (inner) => {
      if (inner === 1) resource = pbResource(resourceItems.delimited())
      else if (inner === 2) scopes.push(resourceItems.delimited())
      else return false
      return true
    })
    for (const scopeItems of scopes) {
      let scope: Span["scope"] = { name: "", version: undefined }
      const items: Array<Reader> = []
      fields(scopeItems, (inner) => {
        if (inner === 1) scope = pbScope(scopeItems.delimited())
        else if (inner === 2) items.push(scopeItems.delimited())
        else return false
        return true
      })
      for (const record of items) out.push(...item(record, resource, scope))
    }
    return true
  })
  return out
}

const pbEvent = (r: Reader): Span["events"][number] => {
  let name = ""
  let timeUnixNano = "0"
  const attributes: Record<string, AttributeValue> = {}
  fields(r, (field) => {
    if (field === 1) timeUnixNano = String(r.fixed64())
    else if (field === 2) name = r.string()
    else if (field === 3) return pbAttribute(r, attributes)
    else return false
    return true
  })
  return { name, timeUnixNano, attributes }
}

const pbLink = (r: Reader): Span["links"][number] => {
  let traceId = ""
  let spanId = ""
  const attributes: Record<string, AttributeValue> = {}
  fields(r, (field) => {
    if (field === 1) traceId = hex(r.bytes())
    else if (field === 2) spanId = hex(r.bytes())
    else if (field === 4) return pbAttribute(r, attributes)
    else return false
    return true
  })
  return { traceId, spanId, attributes }
}

const pbStatus = (r: Reader): Span["status"] => {
  let code = 0
  let message: string | undefined
  fields(r, (field) => {
    if (field === 2) message = r.string()
    else if (field === 3) code = r.int32()
    else return false
    return true
  })
  return statusOf(code, message)
}

const pbSpan = (r: Reader, resource: Attributes, scope: Span["scope"]): ReadonlyArray<Span> => {
  let traceId = ""
  let spanId = ""
  let parentSpanId: string | undefined
  let name = ""
  let kind = 0
  let startTimeUnixNano = "0"
  let endTimeUnixNano = "0"
  let status: Span["status"] = statusOf(0, undefined)
  const attributes: Record<string, AttributeValue> = {}
  const events: Array<Span["events"][number]> = []
  const links: Array<Span["links"][number]> = []
  fields(r, (field) => {
    switch (field) {
      case 1:
        traceId = hex(r.bytes())
        return true
      case 2:
        spanId = hex(r.bytes())
        return true
      case 4: {
        const parent = hex(r.bytes())
        parentSpanId = parent === "" ? undefined : parent
        return true
      }
      case 5:
        name = r.string()
        return true
      case 6:
        kind = r.int32()
        return true
      case 7:
        startTimeUnixNano = String(r.fixed64())
        return true
      case 8:
        endTimeUnixNano = String(r.fixed64())
        return true
      case 9:
        return pbAttribute(r, attributes)
      case 11:
        events.push(pbEvent(r.delimited()))
        return true
      case 13:
        links.push(pbLink(r.delimited()))
        return true
      case 15:
        status = pbStatus(r.delimited())
        return true
      default:
        return false
    }
  })
  return [
    {
      traceId,
      spanId,
      parentSpanId,
      name,
      kind: kindOf(kind),
      startTimeUnixNano,
      endTimeUnixNano,
      attributes,
      events,
      links,
      status,
      resource,
      scope
    }
  ]
}

interface PointFields {
  attributes: Record<string, AttributeValue>
  timeUnixNano: string
  value: number | undefined
  count: number | undefined
  sum: number | undefined
  min: number | undefined
  max: number | undefined
  bucketCounts: Array<number> | undefined
  explicitBounds: Array<number> | undefined
}

// Field numbers of each data point message: attributes, time, and the value fields it has.
const pointLayouts = {
  number: { attributes: 7, time: 3, asDouble: 4, asInt: 6 },
  histogram: { attributes: 9, time: 3, count: 4, sum: 5, buckets: 6, bounds: 7, min: 11, max: 12 },
  exponentialHistogram: { attributes: 1, time: 3, count: 4, sum: 5, min: 12, max: 13 },
  summary: { attributes: 7, time: 3, count: 4, sum: 5 }
} as const

type PointLayout = {
  readonly attributes: number
  readonly time: number
  readonly asDouble?: number
  readonly asInt?: number
  readonly count?: number
  readonly sum?: number
  readonly buckets?: number
  readonly bounds?: number
  readonly min?: number
  readonly max?: number
}

const pbPoint = (r: Reader, layout: PointLayout): PointFields => {
  const point: PointFields = {
    attributes: {},
    timeUnixNano: "0",
    value: undefined,
    count: undefined,
    sum: undefined,
    min: undefined,
    max: undefined,
    bucketCounts: undefined,
    explicitBounds: undefined
  }
  const bucketCounts: Array<number> = []
  const explicitBounds: Array<number> = []
  fields(r, (field, tag) => {
    if (field === layout.attributes) return pbAttribute(r, point.attributes)
    if (field === layout.time) point.timeUnixNano = String(r.fixed64())
    else if (field === layout.asDouble) point.value = r.double()
    else if (field === layout.asInt) point.value = Number(r.sfixed64())
    else if (field === layout.count) point.count = readFixed64(r)
    else if (field === layout.sum) point.sum = r.double()
    else if (field === layout.min) point.min = r.double()
    else if (field === layout.max) point.max = r.double()
    else if (field === layout.buckets) repeatedNumbers(r, tag, readFixed64, bucketCounts)
    else if (field === layout.bounds) repeatedNumbers(r, tag, readDouble, explicitBounds)
    else return false
    return true
  })
  if (layout.buckets !== undefined) {
    point.bucketCounts = bucketCounts
    point.explicitBounds = explicitBounds
  }
  return point
}

const pbMetric = (r: Reader, resource: Attributes): ReadonlyArray<MetricPoint> => {
  let name = ""
  let description = ""
  let unit = ""
  const data: Array<{ type: MetricType; reader: Reader }> = []
  fields(r, (field) => {
    if (field === 1) name = r.string()
    else if (field === 2) description = r.string()
    else if (field === 3) unit = r.string()
    else if (field === 5) data.push({ type: "gauge", reader: r.delimited() })
    else if (field === 7) data.push({ type: "sum", reader: r.delimited() })
    else if (field === 9) data.push({ type: "histogram", reader: r.delimited() })
    else if (field === 10) data.push({ type: "exponentialHistogram", reader: r.delimited() })
    else if (field === 11) data.push({ type: "summary", reader: r.delimited() })
    else return false
    return true
  })
  const points: Array<MetricPoint> = []
  for (const { type, reader } of data) {
    const layout: PointLayout =
      type === "gauge" || type === "sum"
        ? pointLayouts.number
        : type === "histogram"
          ? pointLayouts.histogram
          : type === "exponentialHistogram"
            ? pointLayouts.exponentialHistogram
            : pointLayouts.summary
    const raw: Array<PointFields> = []
    let temporality: number | undefined
    let monotonic: boolean | undefined
    fields(reader, (field) => {
      if (field === 1) raw.push(pbPoint(reader.delimited(), layout))
      else if (field === 2 && type !== "gauge" && type !== "summary") temporality = reader.int32()
      else if (field === 3 && type === "sum") monotonic = reader.bool()
      else return false
      return true
    })
    for (const point of raw) {
      points.push({
        ...emptyPoint,
        ...point,
        name,
        description,
        unit,
        type,
        resource,
        temporality: type === "gauge" || type === "summary" ? undefined : temporalityOf(temporality ?? 0),
        monotonic: type === "sum" ? (monotonic ?? false) : undefined
      })
    }
  }
  return points
}

const pbLogRecord = (r: Reader, resource: Attributes): ReadonlyArray<LogRecord> => {
  let timeUnixNano = "0"
  let observedTimeUnixNano = "0"
  let severityNumber = 0
  let severityText = ""
  let body: AttributeValue = null
  let traceId: string | undefined
  let spanId: string | undefined
  const attributes: Record<string, AttributeValue> = {}
  fields(r, (field) => {
    if (field === 1) timeUnixNano = String(r.fixed64())
    else if (field === 11) observedTimeUnixNano = String(r.fixed64())
    else if (field === 2) severityNumber = r.int32()
    else if (field === 3) severityText = r.string()
    else if (field === 5) body = pbAnyValue(r.delimited())
    else if (field === 6) return pbAttribute(r, attributes)
    else if (field === 9) traceId = hex(r.bytes()) || undefined
    else if (field === 10) spanId = hex(r.bytes()) || undefined
    else return false
    return true
  })
  return [
    {
      timeUnixNano: timeUnixNano === "0" ? observedTimeUnixNano : timeUnixNano,
      severityNumber,
      severityText,
      body,
      attributes,
      traceId,
      spanId,
      resource
    }
  ]
}

const decodeProtobuf = (signal: Signal, bytes: Uint8Array): Partial<Received> => {
  switch (signal) {
    case "traces":
      return { spans: pbEnvelope(bytes, pbSpan) }
    case "metrics":
      return { metrics: pbEnvelope(bytes, (r, resource) => pbMetric(r, resource)) }
    case "logs":
      return { logs: pbEnvelope(bytes, (r, resource) => pbLogRecord(r, resource)) }
  }
}

// =============================================================================
// Decoding: JSON (OTLP/JSON: lowerCamelCase keys, hex ids, int64 as string or number)
// =============================================================================

type Json = unknown

const isObject = (value: Json): value is Record<string, Json> =>
  typeof value === "object" && value !== null && !Array.isArray(value)
const objectAt = (value: Json, key: string): Record<string, Json> =>
  isObject(value) && isObject(value[key]) ? value[key] : {}
const arrayAt = (value: Json, key: string): ReadonlyArray<Json> => {
  const found = isObject(value) ? value[key] : undefined
  return Array.isArray(found) ? found : []
}
const stringAt = (value: Json, key: string): string | undefined => {
  const found = isObject(value) ? value[key] : undefined
  return typeof found === "string" ? found : undefined
}
const numberAt = (value: Json, key: string): number | undefined => (isObject(value) ? toNumber(value[key]) : undefined)
const timeAt = (value: Json, key: string): string => {
  const found = isObject(value) ? value[key] : undefined
  return typeof found === "string" || typeof found === "number" ? String(found) : "0"
}
const idAt = (value: Json, key: string): string | undefined => {
  const id = stringAt(value, key)?.toLowerCase()
  return id === undefined || id === "" ? undefined : id
}

const jsonAnyValue = (value: Json): AttributeValue => {
  if (!isObject(value)) return null
  if (typeof value["stringValue"] === "string") return value["stringValue"]
  if (typeof value["boolValue"] === "boolean") return value["boolValue"]
  if (value["intValue"] !== undefined && value["intValue"] !== null) {
    const raw = value["intValue"]
    if (typeof raw === "number") return raw
    if (typeof raw === "string") return int64(BigInt(raw))
  }
  if (value["doubleValue"] !== undefined && value["doubleValue"] !== null) return toNumber(value["doubleValue"]) ?? null
  if (isObject(value["arrayValue"])) return arrayAt(value["arrayValue"], "values").map(jsonAnyValue)
  if (isObject(value["kvlistValue"])) return jsonAttributes(arrayAt(value["kvlistValue"], "values"))
  if (typeof value["bytesValue"] === "string") return new Uint8Array(Buffer.from(value["bytesValue"], "base64"))
  return null
}

const jsonAttributes = (list: ReadonlyArray<Json>): Attributes => {
  const attributes: Record<string, AttributeValue> = {}
  for (const entry of list) {
    const key = stringAt(entry, "key")
    if (key !== undefined) attributes[key] = jsonAnyValue(isObject(entry) ? entry["value"] : undefined)
  }
  return attributes
}

const jsonEnvelope = <A>(
  body: Json,
  resourceKey: string,
  scopeKey: string,
  itemKey: string,
  item: (record: Json, resource: Attributes, scope: Span["scope"]) => A
): Array<A> =>
  arrayAt(body, resourceKey).flatMap((resourceItems) => {
    const resource = jsonAttributes(arrayAt(objectAt(resourceItems, "resource"), "attributes"))
    return arrayAt(resourceItems, scopeKey).flatMap((scopeItems) => {
      const scopeJson = objectAt(scopeItems, "scope")
      const scope = { name: stringAt(scopeJson, "name") ?? "", version: stringAt(scopeJson, "version") || undefined }
      return arrayAt(scopeItems, itemKey).map((record) => item(record, resource, scope))
    })
  })

const jsonSpan = (span: Json, resource: Attributes, scope: Span["scope"]): Span => {
  const status = objectAt(span, "status")
  return {
    traceId: idAt(span, "traceId") ?? "",
    spanId: idAt(span, "spanId") ?? "",
    parentSpanId: idAt(span, "parentSpanId"),
    name: stringAt(span, "name") ?? "",
    kind: kindOf(isObject(span) ? span["kind"] : undefined),
    startTimeUnixNano: timeAt(span, "startTimeUnixNano"),
    endTimeUnixNano: timeAt(span, "endTimeUnixNano"),
    attributes: jsonAttributes(arrayAt(span, "attributes")),
    events: arrayAt(span, "events").map((event) => ({
      name: stringAt(event, "name") ?? "",
      timeUnixNano: timeAt(event, "timeUnixNano"),
      attributes: jsonAttributes(arrayAt(event, "attributes"))
    })),
    links: arrayAt(span, "links").map((link) => ({
      traceId: idAt(link, "traceId") ?? "",
      spanId: idAt(link, "spanId") ?? "",
      attributes: jsonAttributes(arrayAt(link, "attributes"))
    })),
    status: statusOf(status["code"], stringAt(status, "message")),
    resource,
    scope
  }
}

const jsonMetric = (metric: Json, resource: Attributes): ReadonlyArray<MetricPoint> => {
  const base = {
    name: stringAt(metric, "name") ?? "",
    description: stringAt(metric, "description") ?? "",
    unit: stringAt(metric, "unit") ?? "",
    resource
  }
  const types: ReadonlyArray<MetricType> = ["gauge", "sum", "histogram", "exponentialHistogram", "summary"]
  return types.flatMap((type) => {
    if (!isObject(metric) || !isObject(metric[type])) return []
    const data = metric[type]
    const temporality =
      type === "gauge" || type === "summary" ? undefined : temporalityOf(data["aggregationTemporality"])
    return arrayAt(data, "dataPoints").map(
      (point): MetricPoint => ({
        ...emptyPoint,
        ...base,
        type,
        temporality,
        monotonic: type === "sum" ? data["isMonotonic"] === true : undefined,
        attributes: jsonAttributes(arrayAt(point, "attributes")),
        timeUnixNano: timeAt(point, "timeUnixNano"),
        value:
          type === "gauge" || type === "sum" ? (numberAt(point, "asDouble") ?? numberAt(point, "asInt")) : undefined,
        count: numberAt(point, "count"),
        sum: numberAt(point, "sum"),
        min: numberAt(point, "min"),
        max: numberAt(point, "max"),
        bucketCounts:
          type === "histogram" ? arrayAt(point, "bucketCounts").map((count) => toNumber(count) ?? 0) : undefined,
        explicitBounds:
          type === "histogram" ? arrayAt(point, "explicitBounds").map((bound) => toNumber(bound) ?? 0) : undefined
      })
    )
  })
}

const jsonLogRecord = (record: Json, resource: Attributes): LogRecord => {
  const time = timeAt(record, "timeUnixNano")
  return {
    timeUnixNano: time === "0" ? timeAt(record, "observedTimeUnixNano") : time,
    severityNumber: numberAt(record, "severityNumber") ?? 0,
    severityText: stringAt(record, "severityText") ?? "",
    body: jsonAnyValue(isObject(record) ? record["body"] : undefined),
    attributes: jsonAttributes(arrayAt(record, "attributes")),
    traceId: idAt(record, "traceId"),
    spanId: idAt(record, "spanId"),
    resource
  }
}

const decodeJson = (signal: Signal, text: string): Partial<Received> => {
  const body: Json = JSON.parse(text)
  switch (signal) {
    case "traces":
      return { spans: jsonEnvelope(body, "resourceSpans", "scopeSpans", "spans", jsonSpan) }
    case "metrics":
      return {
        metrics: jsonEnvelope(body, "resourceMetrics", "scopeMetrics", "metrics", (metric, resource) =>
          jsonMetric(metric, resource)
        ).flat()
      }
    case "logs":
      return {
        logs: jsonEnvelope(body, "resourceLogs", "scopeLogs", "logRecords", (record, resource) =>
          jsonLogRecord(record, resource)
        )
      }
  }
}

// =============================================================================
// Server
// =============================================================================

type Signal = "traces" | "metrics" | "logs"

const signals: Readonly<Record<string, Signal>> = {
  "/v1/traces": "traces",
  "/v1/metrics": "metrics",
  "/v1/logs": "logs"
}

const defaultTimeoutMs = 5000

const startServer = (options: Options): Promise<Handle> => {
  const maxBodyBytes = options.maxBodyBytes ?? 16 * 1024 * 1024
  let received: Received = { spans: [], metrics: [], logs: [] }
  let requestLog: Array<Request> = []
  let down: Down | undefined
  const listeners = new Set<() => void>()
  let closing: Promise<void> | undefined

  const notify = () => {
    for (const listener of [...listeners]) listener()
  }

  const waitFor =
    <A>(kind: WaitTimeout["signal"], read: () => ReadonlyArray<A>) =>
    (
      predicate: (items: ReadonlyArray<A>) => boolean,
      timeoutMs = defaultTimeoutMs,
      signal?: AbortSignal
    ): Promise<ReadonlyArray<A>> =>
      new Promise((resolve, reject) => {
        const check = (): boolean => {
          const items = read()
          if (!predicate(items)) return false
          cleanup()
          resolve(items)
          return true
        }
        const timer = setTimeout(() => {
          cleanup()
          reject(new WaitTimeout({ signal: kind, timeoutMs, received: read().length }))
        }, timeoutMs)
        const abort = () => {
          cleanup()
          reject(signal?.reason)
        }
        const cleanup = () => {
          clearTimeout(timer)
          listeners.delete(check)
          signal?.removeEventListener("abort", abort)
        }
        listeners.add(check)
        signal?.addEventListener("abort", abort)
        check()
      })

  const answer = (res: Http.ServerResponse, status: number, contentType: string, body: string | Uint8Array) => {
    res.writeHead(status, { "content-type": contentType, "content-length": Buffer.byteLength(body) })
    res.end(body)
  }

  const handle = (req: Http.IncomingMessage, res: Http.ServerResponse, body: Buffer, tooLarge: boolean) => {
    const path = new URL(req.url ?? "/", "http://127.0.0.1").pathname
    const headers: Record<string, string> = {}
    for (const [name, value] of Object.entries(req.headers)) {
      if (value !== undefined) headers[name] = Array.isArray(value) ? value.join(", ") : value
    }
    const contentType = headers["content-type"]?.split(";")[0]?.trim().toLowerCase()
    const contentEncoding = headers["content-encoding"]?.trim().toLowerCase()
    const log = (outcome: Request["outcome"]) =>
      requestLog.push({
        method: req.method ?? "",
        path,
        headers,
        contentType,
        contentEncoding,
        bytes: body.length,
        outcome
      })
    const reply = (status: number, message: string) => {
      log(status)
      answer(res, status, "application/json", JSON.stringify(status === 200 ? {} : { message }))
    }

    if (down === "reset") {
      log("reset")
      return req.socket.destroy()
    }
    if (down === "hang") return log("hang")
    if (down === "unavailable") return reply(503, "the receiver is down")
    const signal = signals[path]
    if (signal === undefined) return reply(404, `no OTLP signal at ${path}`)
    if (req.method !== "POST") return reply(405, "OTLP exports are POST requests")
    if (tooLarge) return reply(413, `bodies are limited to ${maxBodyBytes} bytes`)
    if (contentType !== "application/json" && contentType !== "application/x-protobuf") {
      return reply(415, "content-type must be application/json or application/x-protobuf")
    }

    let decoded: Partial<Received>
    try {
      const bytes =
        contentEncoding === "gzip"
          ? Zlib.gunzipSync(body)
          : contentEncoding === "deflate"
            ? Zlib.inflateSync(body)
            : contentEncoding === undefined || contentEncoding === "identity"
              ? body
              : undefined
      if (bytes === undefined) return reply(415, "content-encoding must be gzip, deflate or identity")
      decoded =
        contentType === "application/json"
          ? decodeJson(signal, bytes.toString("utf8"))
          : decodeProtobuf(signal, new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength))
    } catch (error) {
      return reply(400, `cannot decode the body: ${error instanceof Error ? error.message : String(error)}`)
    }
    received = {
      spans: [...received.spans, ...(decoded.spans ?? [])],
      metrics: [...received.metrics, ...(decoded.metrics ?? [])],
      logs: [...received.logs, ...(decoded.logs ?? [])]
    }
    log(200)
    // An empty Export*ServiceResponse: `{}` in JSON, zero bytes in protobuf.
    if (contentType === "application/json") answer(res, 200, contentType, "{}")
    else answer(res, 200, contentType, new Uint8Array(0))
    notify()
  }

  const server = Http.createServer((req, res) => {
    req.on("error", () => {})
    res.on("error", () => {})
    const parts: Array<Buffer> = []
    let size = 0
    let tooLarge = false
    req.on("data", (part: Buffer) => {
      size += part.length
      if (size > maxBodyBytes) tooLarge = true
      else parts.push(part)
    })
    req.on("end", () => {
      try {
        handle(req, res, Buffer.concat(parts), tooLarge)
      } catch {
        res.destroy()
      }
    })
  })
  server.on("clientError", (_error, socket) => socket.destroy())

  const close = (): Promise<void> => {
    if (closing !== undefined) return closing
    closing = new Promise<void>((resolve) => {
      // One more turn of the event loop, so that no handle of this server is left once it resolves.
      server.close(() => setTimeout(resolve, 0))
      server.closeAllConnections()
    })
    return closing
  }

  return new Promise((resolve, reject) => {
    server.once("error", reject)
    server.listen(options.port ?? 0, "127.0.0.1", () => {
      server.off("error", reject)
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      resolve({
        url: `http://127.0.0.1:${port}`,
        port,
        spans: () => received.spans,
        metrics: () => received.metrics,
        logs: () => received.logs,
        requests: () => [...requestLog],
        waitForSpans: waitFor("spans", () => received.spans),
        waitForMetrics: waitFor("metrics", () => received.metrics),
        waitForLogs: waitFor("logs", () => received.logs),
        setDown: (mode) => {
          down = mode === false ? undefined : mode === true ? "unavailable" : mode
        },
        clear: () => {
          received = { spans: [], metrics: [], logs: [] }
          requestLog = []
        },
        close
      })
    })
  })
}

// =============================================================================
// Constructors
// =============================================================================

const toMillis = (timeout: Duration.Input | undefined): number =>
  timeout === undefined ? defaultTimeoutMs : Duration.toMillis(Duration.fromInputUnsafe(timeout))

const waitEffect =
  <A>(
    wait: (
      predicate: (items: ReadonlyArray<A>) => boolean,
      timeoutMs?: number,
      signal?: AbortSignal
    ) => Promise<ReadonlyArray<A>>
  ) =>
  (
    predicate: (items: ReadonlyArray<A>) => boolean,
    timeout?: Duration.Input
  ): Effect.Effect<ReadonlyArray<A>, WaitTimeout> =>
    Effect.callback<ReadonlyArray<A>, WaitTimeout>((resume, signal) => {
      wait(predicate, toMillis(timeout), signal).then(
        (items) => resume(Effect.succeed(items)),
        (error: unknown) => {
          if (error instanceof WaitTimeout) resume(Effect.fail(error))
        }
      )
    })

const toService = (handle: Handle): Service => ({
  url: handle.url,
  port: handle.port,
  spans: Effect.sync(handle.spans),
  metrics: Effect.sync(handle.metrics),
  logs: Effect.sync(handle.logs),
  requests: Effect.sync(handle.requests),
  waitForSpans: waitEffect(handle.waitForSpans),
  waitForMetrics: waitEffect(handle.waitForMetrics),
  waitForLogs: waitEffect(handle.waitForLogs),
  setDown: (down) => Effect.sync(() => handle.setDown(down)),
  clear: Effect.sync(handle.clear)
})

/**
 * Starts a receiver on 127.0.0.1 and a free port; it is closed (connections destroyed) when the
 * `Scope` closes.
 *
 * **Gotchas**
 *
 * Starting dies (a defect) only if the server cannot listen, i.e. a fixed `port` that is taken.
 *
 * @example
 * ```ts
 * import { Effect, Layer } from "effect"
 * import { FetchHttpClient } from "effect/http"
 * import { OtlpSerialization, OtlpTracer } from "effect/observability"
 * import { OtlpReceiver } from "@roadcar/testing"
 *
 * const program = Effect.gen(function*() {
 *   const receiver = yield* OtlpReceiver.make()
 *   const exporter = OtlpTracer.layer({ url: `${receiver.url}/v1/traces`, resource: { serviceName: "demo" } }).pipe(
 *     Layer.provide([OtlpSerialization.layerProtobuf, FetchHttpClient.layer])
 *   )
 *   yield* Effect.void.pipe(Effect.withSpan("hello"), Effect.provide(exporter)) // flushed when it closes
 *   const spans = yield* receiver.spans
 *   return spans.map((span) => `${span.name} ${span.resource["service.name"]}`)
 * })
 * await Effect.runPromise(Effect.scoped(program)) // => ["hello demo"]
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = (options: Options = {}): Effect.Effect<Service, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.promise(() => startServer(options)),
    (handle) => Effect.promise(() => handle.close())
  ).pipe(Effect.map(toService))

/**
 * A layer providing {@link OtlpReceiver}, closed with the layer's scope.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (options: Options = {}): Layer.Layer<OtlpReceiver> => Layer.effect(OtlpReceiver, make(options))

/**
 * Starts a receiver, Promise-style, for tests without Effect. Call `close()` when done.
 *
 * @example
 * ```ts
 * import { OtlpReceiver } from "@roadcar/testing"
 *
 * const receiver = await OtlpReceiver.start()
 * const response = await fetch(`${receiver.url}/v1/traces`, {
 *   method: "POST",
 *   headers: { "content-type": "application/json" },
 *   body: JSON.stringify({ resourceSpans: [] })
 * })
 * await receiver.close()
 * response.status // => 200
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const start = (options: Options = {}): Promise<Handle> => startServer(options)

// =============================================================================
// Helpers
// =============================================================================

/**
 * Draws spans as an indented tree (children under their parent, in start order), one line per
 * span: `name [kind]`, then `error` for a failed span and the names of its events (all of them, or
 * those `events` keeps). Spans whose parent was not received are drawn as roots.
 *
 * @example
 * ```ts
 * import { OtlpReceiver } from "@roadcar/testing"
 * declare const spans: ReadonlyArray<OtlpReceiver.Span>
 * OtlpReceiver.formatTree(spans, { events: (name) => name.startsWith("roadcar.") })
 * // => "roadcar.pipeline [internal]\n  roadcar.rate_limit [internal]\n  roadcar.cache [internal] roadcar.cache.miss\n..."
 * ```
 *
 * @category testing
 * @since 0.1.0
 */
export const formatTree = (
  spans: ReadonlyArray<Span>,
  options: { readonly events?: boolean | ((name: string) => boolean) | undefined } = {}
): string => {
  const keep = options.events ?? true
  const keepEvent = typeof keep === "function" ? keep : () => keep
  const ids = new Set(spans.map((span) => span.spanId))
  const ordered = [...spans].sort((a, b) => {
    const difference = BigInt(a.startTimeUnixNano) - BigInt(b.startTimeUnixNano)
    return difference < 0n ? -1 : difference > 0n ? 1 : 0
  })
  const children = new Map<string | undefined, Array<Span>>()
  for (const span of ordered) {
    const parent = span.parentSpanId !== undefined && ids.has(span.parentSpanId) ? span.parentSpanId : undefined
    children.set(parent, [...(children.get(parent) ?? []), span])
  }
  const lines: Array<string> = []
  const draw = (parent: string | undefined, depth: number) => {
    for (const span of children.get(parent) ?? []) {
      const notes = [
        `${span.name} [${span.kind}]`,
        ...(span.status.code === "error" ? ["error"] : []),
        ...span.events.map((event) => event.name).filter(keepEvent)
      ]
      lines.push(`${"  ".repeat(depth)}${notes.join(" ")}`)
      draw(span.spanId, depth + 1)
    }
  }
  draw(undefined, 0)
  return lines.join("\n")
}
