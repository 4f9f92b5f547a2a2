/**
 * The Redis connection behind Roadcar's shared stores, with the fault handling they share.
 *
 * `RedisConnection` opens `poolSize` node-redis connections (commands spread round robin) and gives
 * the stores an `effect/persistence` `Redis` service over them plus `run`, which every store
 * operation goes through: it waits at most the command timeout, fails at once while Redis is known
 * to be down (disconnected, or for `failFastFor` after a timeout), and tracks outages: one warning
 * and one `store_unavailable` alert (to the `AlertSink` in context, if any) when Redis becomes
 * unavailable, one log line and a `Resolved` alert when it answers again. The connections never
 * give up reconnecting, queue nothing while disconnected (node-redis's offline queue is off), bound
 * their command queue, and time out commands already sent. The layer does not wait for Redis at
 * startup longer than the connect timeout: a replica starts with Redis down and the stores apply
 * their fault policies until it is up.
 *
 * @since 0.1.0
 */
import { NodeRedis } from "@effect/platform-node/NodeRedis"
import { type Alert, AlertSink } from "@roadcar/core/AlertSink"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redis from "effect/persistence/Redis"
import * as Redacted from "effect/Redacted"
import { createClient } from "redis"
import * as RedisConfig from "./RedisConfig.ts"

// Two turns of the event loop: the poll phase between them reads what the sockets hold, and the
// fibers that reading resumes run before the second turn ends (Effect schedules them with
// `setImmediate` too).
const ioTurns: Effect.Effect<void> = Effect.callback<void>((resume) => {
  let handle = setImmediate(() => {
    handle = setImmediate(() => resume(Effect.void))
  })
  return Effect.sync(() => clearImmediate(handle))
})

type Client = ReturnType<typeof createClient>
type ClientOptions = NonNullable<Parameters<typeof createClient>[0]>

/**
 * How `run` treats one store operation.
 *
 * @category options
 * @since 0.1.0
 */
export interface RunOptions<E> {
  /** The store's name, for logs (`rate limit`, `budget`, `response cache`, `circuit breaker`). */
  readonly store: string
  /** Which failures mean Redis did not answer (others, such as an open circuit, are answers). */
  readonly isFault: (error: E) => boolean
  /** The failure for an operation Redis did not answer in time, or that was not tried because Redis is down. */
  readonly unavailable: (detail: string) => E
}

/**
 * The connection service.
 *
 * @category services
 * @since 0.1.0
 */
export class RedisConnection extends Context.Service<
  RedisConnection,
  {
    readonly config: RedisConfig.Resolved
    /** Commands and Lua scripts over the connections (no deadline of its own: go through `run`). */
    readonly redis: Redis.Redis["Service"]
    /** Runs one store operation with the command timeout, failing fast while Redis is down. */
    readonly run: <A, E, R>(self: Effect.Effect<A, E, R>, options: RunOptions<E>) => Effect.Effect<A, E, R>
    /** Whether Redis is considered available now: connected, and no outage open (one ends after three successes in a row). */
    readonly available: Effect.Effect<boolean>
  }
>()("@roadcar/redis/RedisConnection") {}

const describeCause = (cause: unknown): string => {
  if (cause instanceof Redis.RedisError) return describeCause(cause.cause)
  if (cause instanceof Error) return cause.message || cause.name
  if (typeof cause === "object" && cause !== null && "message" in cause) return String(cause.message)
  return String(cause)
}

/**
 * A short description of a store failure, for logs (its message, or its cause's).
 *
 * @category constructors
 * @since 0.1.0
 */
export const describeFailure = (error: unknown): string => {
  if (typeof error === "object" && error !== null) {
    const withCause = error as { readonly cause?: unknown; readonly reason?: { readonly cause?: unknown } }
    const cause = withCause.reason?.cause ?? withCause.cause
    if (cause !== undefined) return describeCause(cause)
  }
  return describeCause(error)
}

// Exponential backoff from 50 ms to 2 s with jitter; never gives up (a replica outlives an outage).
const reconnectStrategy = (retries: number): number =>
  Math.min(2 ** retries * 50, 2000) + Math.floor(Math.random() * 100)

/**
 * Opens the connections and builds the service.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = Effect.fnUntraced(function* (options: RedisConfig.Options = {}) {
  const config = RedisConfig.resolve(options)
  const scope = yield* Effect.scope
  const sink = yield* Effect.serviceOption(AlertSink)
  const context = yield* Effect.context<never>()
  const runFork = Effect.runForkWith(context)
  const timeoutMillis = Math.max(1, Math.round(Duration.toMillis(config.commandTimeout)))
  const commandTimeoutText = `${timeoutMillis}ms`

  const clientOptions: ClientOptions = {
    url: Redacted.value(config.url),
    // Commands fail at once while disconnected instead of queueing for the reconnection.
    disableOfflineQueue: true,
    commandsQueueMaxLength: config.maxQueuedCommands,
    // A command already sent is also abandoned (its late reply is discarded) a second after the store
    // operation's own deadline, so commands never pile up behind a server that stopped answering. Not
    // sooner: this timer, too, fires before a waiting reply is read when this process stalls, and the
    // operation's deadline (which gives the socket a last look) is the one that decides.
    commandOptions: { timeout: timeoutMillis + 1_000, rejectInFlight: true },
    socket: {
      connectTimeout: Math.max(1, Math.round(Duration.toMillis(config.connectTimeout))),
      reconnectStrategy
    }
  }
  const clients: ReadonlyArray<Client> = yield* Effect.try({
    try: () => Array.from({ length: config.poolSize }, () => createClient(clientOptions)),
    catch: (cause) => new Redis.RedisError({ cause })
  })

  // --- outages ---------------------------------------------------------------------------------

  let outage: { readonly since: number; failures: number } | undefined
  let failFastUntil = 0
  // An outage ends after this many operations in a row succeed: a Redis that fails some operations and
  // answers others (out of memory for writes, a read-only replica after a failover) is one outage, not
  // a warning and an alert, then their resolution, per request.
  const successesToRecover = 3
  let successesInRow = 0

  const sendAlert = (alert: Alert) =>
    Option.isSome(sink)
      ? sink.value.send(alert).pipe(
          Effect.timeout("5 seconds"),
          Effect.catchCause((cause) => Effect.logWarning("Redis: the alert sink failed or timed out", cause)),
          Effect.forkIn(scope),
          Effect.asVoid
        )
      : Effect.void

  const policies = `rate limit ${config.policies.rateLimit}, budget ${config.policies.budget}, response cache and circuit breaker fail-open`

  const markDown = (store: string, detail: string) =>
    Effect.gen(function* () {
      successesInRow = 0
      if (outage) {
        outage.failures++
        return
      }
      const now = yield* Clock.currentTimeMillis
      outage = { since: now, failures: 1 }
      const message = `Redis at ${config.address} is unavailable (${store}: ${detail}); the stores apply their fault policies: ${policies}.`
      yield* Effect.logWarning(message).pipe(Effect.annotateLogs({ redis: config.address }))
      yield* sendAlert({
        _tag: "Raised",
        rule: "store_unavailable",
        subject: `redis ${config.address}`,
        message,
        figures: { failures: 1 },
        exampleTraceIds: [],
        at: now
      })
    })

  // Service resumes at the first success (no more failing fast); the outage is declared over after
  // `successesToRecover` in a row.
  const markUp = Effect.gen(function* () {
    failFastUntil = 0
    const ended = outage
    if (ended === undefined) return
    if (++successesInRow < successesToRecover) return
    outage = undefined
    const now = yield* Clock.currentTimeMillis
    const message = `Redis at ${config.address} answers again after ${Math.round((now - ended.since) / 1000)}s (${ended.failures} failed operations).`
    yield* Effect.logInfo(message).pipe(Effect.annotateLogs({ redis: config.address }))
    yield* sendAlert({
      _tag: "Resolved",
      rule: "store_unavailable",
      subject: `redis ${config.address}`,
      message,
      figures: { failures: ended.failures, downMs: now - ended.since },
      exampleTraceIds: [],
      at: now
    })
  })

  const ready = yield* Deferred.make<void>()
  for (const client of clients) {
    // node-redis rethrows `error` events without a listener; every failed (re)connection lands here.
    client.on("error", (cause: unknown) => {
      runFork(markDown("connection", describeCause(cause)))
    })
    client.on("ready", () => {
      Deferred.doneUnsafe(ready, Exit.void)
      runFork(markUp)
    })
  }
  yield* Effect.addFinalizer(() =>
    Effect.sync(() => {
      for (const client of clients) if (client.isOpen) client.destroy()
    })
  )
  for (const client of clients) {
    // Resolves once connected; a connection that is never made keeps retrying in the background.
    client.connect().catch(() => undefined)
  }
  const connected = yield* Deferred.await(ready).pipe(Effect.timeoutOption(config.connectTimeout))
  if (Option.isNone(connected)) {
    yield* Effect.logWarning(
      `Redis at ${config.address} is not reachable at startup; starting anyway, the stores apply their fault policies until it is (${policies}).`
    )
  }

  // --- commands --------------------------------------------------------------------------------

  let next = 0
  const pick = (): Client => {
    for (let i = 0; i < clients.length; i++) {
      const client = clients[(next + i) % clients.length]!
      if (client.isReady) {
        next = (next + i + 1) % clients.length
        return client
      }
    }
    return clients[0]!
  }
  const sendWith =
    (choose: () => Client) =>
    <A = unknown>(command: string, ...args: ReadonlyArray<string>): Effect.Effect<A, Redis.RedisError> =>
      Effect.tryPromise({
        try: () => choose().sendCommand([command, ...args]) as Promise<A>,
        catch: (cause) => new Redis.RedisError({ cause })
      })

  const redis = yield* Redis.make({
    send: sendWith(pick),
    // Roadcar's stores use no pub/sub.
    subscribe: () => Effect.fail(new Redis.RedisError({ cause: new Error("pub/sub is not used by Roadcar's stores") })),
    // Dedicated connections (for blocking commands) do not reconnect: a dropped one leaves the pool.
    connect: Effect.tryPromise({
      try: async () => {
        const connection = clients[0]!.duplicate({ socket: { reconnectStrategy: false } })
        connection.on("error", () => undefined)
        await connection.connect()
        return connection
      },
      catch: (cause) => new Redis.RedisError({ cause })
    }).pipe(
      Effect.map((connection) => ({
        send: sendWith(() => connection),
        close: Effect.sync(() => {
          if (connection.isOpen) connection.destroy()
        })
      }))
    )
  })

  // `self` within the command timeout, else `onTimeout`; but a stall of this process is never taken for
  // a slow Redis. After the process stalls (a long GC, a CPU-starved container), Node runs the expired
  // timer before it reads the reply waiting on the socket: so when the time is up, the socket gets two
  // more turns of the event loop, and when the timer itself fired late (the process was not running),
  // the command gets one more command timeout. Only then is Redis declared down (fail-closed stores
  // refusing); a frozen Redis still fails within two command timeouts.
  const withDeadline = <A, E, R>(
    self: Effect.Effect<A, E, R>,
    onTimeout: Effect.Effect<never, E>
  ): Effect.Effect<A, E, R> =>
    Effect.flatMap(Effect.forkChild(self, { startImmediately: true }), (fiber) => {
      const done = fiber.pollUnsafe()
      if (done !== undefined) return done
      return Effect.clockWith((clock) => {
        const startedAt = clock.currentTimeMillisUnsafe()
        const wait = (again: boolean): Effect.Effect<A, E> =>
          Effect.flatMap(Effect.timeoutOption(Fiber.await(fiber), config.commandTimeout), (exit) =>
            Option.isSome(exit)
              ? exit.value
              : Effect.flatMap(ioTurns, () => {
                  const late = fiber.pollUnsafe()
                  if (late !== undefined) return late
                  const stalled = clock.currentTimeMillisUnsafe() - startedAt > timeoutMillis * 1.5
                  return again && stalled ? wait(false) : Effect.andThen(Fiber.interrupt(fiber), onTimeout)
                })
          )
        return wait(true)
      }).pipe(Effect.onInterrupt(() => Fiber.interrupt(fiber)))
    })

  const run = <A, E, R>(self: Effect.Effect<A, E, R>, runOptions: RunOptions<E>): Effect.Effect<A, E, R> =>
    Effect.flatMap(Clock.currentTimeMillis, (now) => {
      if (now < failFastUntil) {
        return Effect.fail(
          runOptions.unavailable(`Redis at ${config.address} did not answer within ${commandTimeoutText} just before`)
        )
      }
      if (!clients.some((client) => client.isReady)) {
        const detail = `not connected to Redis at ${config.address}`
        return Effect.andThen(markDown(runOptions.store, detail), Effect.fail(runOptions.unavailable(detail)))
      }
      // The deadline's own failure is counted once, by the deadline, not again when the operation exits.
      let timedOut = false
      return withDeadline(
        self,
        Effect.gen(function* () {
          timedOut = true
          const detail = `Redis at ${config.address} did not answer within ${commandTimeoutText}`
          failFastUntil = (yield* Clock.currentTimeMillis) + Duration.toMillis(config.failFastFor)
          yield* markDown(runOptions.store, detail)
          return yield* Effect.fail(runOptions.unavailable(detail))
        })
      ).pipe(
        Effect.onExit((exit) => {
          if (Exit.isSuccess(exit)) return markUp
          const failure = exit.cause.reasons.find((reason) => reason._tag === "Fail")
          if (failure === undefined || timedOut) return Effect.void
          if (!runOptions.isFault(failure.error)) return markUp
          return Effect.flatMap(Clock.currentTimeMillis, (end) => {
            // A failure that took the whole deadline is a timeout too, whoever noticed it first.
            if (end - now >= timeoutMillis) failFastUntil = end + Duration.toMillis(config.failFastFor)
            return markDown(runOptions.store, describeFailure(failure.error))
          })
        })
      )
    })

  const nodeRedis = NodeRedis.of({
    client: clients[0]!,
    use: (f) =>
      Effect.tryPromise({
        try: () => f(clients[0]!),
        catch: (cause) => new Redis.RedisError({ cause })
      })
  })

  return {
    connection: RedisConnection.of({
      config,
      redis,
      run,
      available: Effect.sync(() => outage === undefined && clients.some((client) => client.isReady))
    }),
    nodeRedis
  }
})

/**
 * Provides the connection, and the `effect/persistence` `Redis` and `NodeRedis` services over it
 * (for programs that want Redis for their own use).
 *
 * **Details**
 *
 * Fails only on an invalid URL; Redis being down at startup is not an error (see the module notes).
 * Closing the layer closes the connections.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (
  options: RedisConfig.Options = {}
): Layer.Layer<RedisConnection | Redis.Redis | NodeRedis, Redis.RedisError> =>
  Layer.effectContext(
    Effect.map(make(options), ({ connection, nodeRedis }) =>
      Context.make(RedisConnection, connection).pipe(
        Context.add(Redis.Redis, connection.redis),
        Context.add(NodeRedis, nodeRedis)
      )
    )
  )
