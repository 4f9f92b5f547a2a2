/**
 * How the fake upstream chooses a `Behaviour` for each attempt.
 *
 * A `Script` is plain tagged data: always the same behaviour, a sequence, time phases ("down for 2
 * seconds, then healthy"), one script per model, or seeded random faults for soak tests. Wherever a
 * script is accepted, a bare `Behaviour` means "always this". Scripts hold no state: `compile` turns one
 * into a chooser with its own counters, clock origin and random generator, which the fake upstream does
 * each time a script is installed.
 *
 * @since 0.1.0
 */
import * as Behaviour from "./Behaviour.ts"

// =============================================================================
// Models
// =============================================================================

/**
 * The same behaviour for every attempt.
 *
 * @category models
 * @since 0.1.0
 */
export interface Always {
  readonly _tag: "Always"
  readonly behaviour: Behaviour.Behaviour
}

/**
 * The k-th attempt (0-based) gets `behaviours[k]`; later attempts follow `afterwards`.
 *
 * @category models
 * @since 0.1.0
 */
export interface Sequence {
  readonly _tag: "Sequence"
  readonly behaviours: ReadonlyArray<Behaviour.Behaviour>
  readonly afterwards: Script
}

/**
 * Consecutive wall-clock phases from the moment the script is installed (or `from`, epoch ms); after
 * the last phase, `afterwards`.
 *
 * @category models
 * @since 0.1.0
 */
export interface Phases {
  readonly _tag: "Phases"
  readonly phases: ReadonlyArray<Phase>
  readonly afterwards: Script
  readonly from?: number | undefined
}

/**
 * One wall-clock phase of a `Phases` script.
 *
 * @category models
 * @since 0.1.0
 */
export interface Phase {
  readonly forMs: number
  readonly script: Script
}

/**
 * One script per requested model; other models (and `GET /v1/models`, whose model is `""`) follow
 * `otherwise`.
 *
 * @category models
 * @since 0.1.0
 */
export interface ByModel {
  readonly _tag: "ByModel"
  readonly models: Readonly<Record<string, Script>>
  readonly otherwise: Script
}

/**
 * Seeded random faults: each attempt draws from a deterministic generator.
 *
 * @category models
 * @since 0.1.0
 */
export interface Random {
  readonly _tag: "Random"
  readonly seed: number
  readonly faults: ReadonlyArray<readonly [weight: number, behaviour: Behaviour.Behaviour]>
}

/**
 * Every way of choosing behaviours.
 *
 * @category models
 * @since 0.1.0
 */
export type Script = Always | Sequence | Phases | ByModel | Random

/**
 * What every script-taking function accepts: a script, or a bare behaviour meaning "always".
 *
 * @category models
 * @since 0.1.0
 */
export type Input = Script | Behaviour.Behaviour

/**
 * Turns a bare behaviour into `always(behaviour)`; returns scripts unchanged.
 *
 * @category constructors
 * @since 0.1.0
 */
export const from = (input: Input): Script => (Behaviour.isBehaviour(input) ? always(input) : input)

// =============================================================================
// Constructors
// =============================================================================

/**
 * Every attempt gets `behaviour`.
 *
 * @category constructors
 * @since 0.1.0
 */
export const always = (behaviour: Behaviour.Behaviour): Always => ({ _tag: "Always", behaviour })

/**
 * The k-th attempt gets the k-th behaviour; once they are used up, attempts follow `afterwards` (default:
 * healthy).
 *
 * @example
 * ```ts
 * import { Behaviour, Script } from "@roadcar/testing"
 * // 500 once, then healthy
 * Script.sequence([Behaviour.status(500)])
 * // two 429s, then 503 forever
 * Script.sequence([Behaviour.rateLimited(), Behaviour.rateLimited()], Behaviour.status(503))
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const sequence = (
  behaviours: ReadonlyArray<Behaviour.Behaviour>,
  afterwards: Input = Behaviour.ok()
): Sequence => ({
  _tag: "Sequence",
  behaviours,
  afterwards: from(afterwards)
})

/**
 * Consecutive wall-clock phases, each lasting `forMs`, starting when the script is installed (or at
 * `from`, epoch ms); after the last phase, `afterwards` (default: healthy).
 *
 * @example
 * ```ts
 * import { Behaviour, Script } from "@roadcar/testing"
 * // 429 for 100ms, then resets for 100ms, then healthy
 * Script.phases([
 *   { forMs: 100, script: Behaviour.rateLimited() },
 *   { forMs: 100, script: Behaviour.reset() }
 * ])
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const phases = (
  list: ReadonlyArray<{ readonly forMs: number; readonly script: Input }>,
  options: { readonly afterwards?: Input | undefined; readonly from?: number | undefined } = {}
): Phases => {
  for (const phase of list) {
    if (!Number.isFinite(phase.forMs) || phase.forMs < 0) {
      throw new RangeError(`Script.phases: expected forMs >= 0, got ${phase.forMs}`)
    }
  }
  return {
    _tag: "Phases",
    phases: list.map((phase) => ({ forMs: phase.forMs, script: from(phase.script) })),
    afterwards: from(options.afterwards ?? Behaviour.ok()),
    ...(options.from !== undefined ? { from: options.from } : {})
  }
}

/**
 * Down for a while, then recovers: `during` (default `Behaviour.status(503)`) for `ms` from the moment
 * the script is installed (or `from`, epoch ms), then `afterwards` (default: healthy).
 *
 * @example
 * ```ts
 * import { Behaviour, Script } from "@roadcar/testing"
 * Script.downFor(200) // 503 for 200ms, then healthy
 * Script.downFor(200, { during: Behaviour.reset(), afterwards: Behaviour.ok({ latencyMs: 20 }) })
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const downFor = (
  ms: number,
  options: {
    readonly afterwards?: Input | undefined
    readonly during?: Input | undefined
    readonly from?: number | undefined
  } = {}
): Phases => phases([{ forMs: ms, script: options.during ?? Behaviour.status(503) }], options)

/**
 * One script per requested model (the request body's `model`); other models follow `otherwise`
 * (default: healthy). Each model's script keeps its own counters, so a sequence counts that model's
 * attempts only.
 *
 * @example
 * ```ts
 * import { Behaviour, Script } from "@roadcar/testing"
 * Script.byModel({ "gpt-primary": Behaviour.status(503), "gpt-backup": Behaviour.ok() })
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const byModel = (models: Readonly<Record<string, Input>>, otherwise: Input = Behaviour.ok()): ByModel => {
  const scripts: Record<string, Script> = {}
  for (const [model, input] of Object.entries(models)) scripts[model] = from(input)
  return { _tag: "ByModel", models: scripts, otherwise: from(otherwise) }
}

/**
 * Seeded random faults for soak tests. Each attempt draws once from a deterministic generator seeded
 * with `seed`: the same seed and the same order of attempts give the same behaviours.
 *
 * **Details**
 *
 * Weights are probabilities: `[[0.1, Behaviour.rateLimited()], [0.05, Behaviour.reset()]]` gives 10%
 * 429s, 5% resets and 85% healthy answers. If the weights add up to 1 or more they are relative
 * weights and no attempt is healthy unless you list `Behaviour.ok()`.
 *
 * @example
 * ```ts
 * import { Behaviour, Script } from "@roadcar/testing"
 * Script.random({ seed: 42, faults: [[0.2, Behaviour.rateLimited({ retryAfterMs: 10 })], [0.1, Behaviour.status(503)]] })
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const random = (options: {
  readonly seed: number
  readonly faults: ReadonlyArray<readonly [weight: number, behaviour: Behaviour.Behaviour]>
}): Random => {
  for (const [weight] of options.faults) {
    if (!Number.isFinite(weight) || weight < 0)
      throw new RangeError(`Script.random: expected weight >= 0, got ${weight}`)
  }
  return { _tag: "Random", seed: options.seed, faults: options.faults }
}

// =============================================================================
// Choosing
// =============================================================================

/**
 * What a compiled script is asked about each attempt.
 *
 * @category models
 * @since 0.1.0
 */
export interface AttemptInfo {
  /** The requested model (`""` when the request names none). */
  readonly model: string
  /** Epoch ms of the attempt. */
  readonly now: number
}

/**
 * A compiled script: call it once per attempt, in order.
 *
 * @category models
 * @since 0.1.0
 */
export type Chooser = (attempt: AttemptInfo) => Behaviour.Behaviour

/**
 * Compiles a script into a stateful chooser whose clock starts at `startedAt` (epoch ms). The fake
 * upstream does this whenever a script is installed; it is exported to preview a script in a test.
 *
 * @example
 * ```ts
 * import { Behaviour, Script } from "@roadcar/testing"
 * const choose = Script.compile(Script.sequence([Behaviour.status(500)]), 0)
 * choose({ model: "m", now: 0 })._tag // => "Status"
 * choose({ model: "m", now: 0 })._tag // => "Ok"
 * ```
 *
 * @category combinators
 * @since 0.1.0
 */
export const compile = (input: Input, startedAt: number): Chooser => {
  const script = from(input)
  switch (script._tag) {
    case "Always":
      return () => script.behaviour
    case "Sequence": {
      let next = 0
      const afterwards = compile(script.afterwards, startedAt)
      return (attempt) => {
        const behaviour = script.behaviours[next]
        if (behaviour === undefined) return afterwards(attempt)
        next++
        return behaviour
      }
    }
    case "Phases": {
      const origin = script.from ?? startedAt
      let end = origin
      const compiled = script.phases.map((phase) => {
        const start = end
        end += phase.forMs
        return { end, choose: compile(phase.script, start) }
      })
      const afterwards = compile(script.afterwards, end)
      return (attempt) => {
        if (attempt.now >= origin) {
          for (const phase of compiled) if (attempt.now < phase.end) return phase.choose(attempt)
          return afterwards(attempt)
        }
        // Before the first phase starts (a `from` in the future): healthy.
        return Behaviour.ok()
      }
    }
    case "ByModel": {
      const compiled = new Map<string, Chooser>()
      for (const [model, sub] of Object.entries(script.models)) compiled.set(model, compile(sub, startedAt))
      const otherwise = compile(script.otherwise, startedAt)
      return (attempt) => (compiled.get(attempt.model) ?? otherwise)(attempt)
    }
    case "Random": {
      const next = mulberry32(script.seed)
      const total = script.faults.reduce((sum, [weight]) => sum + weight, 0)
      const scale = Math.max(total, 1)
      return () => {
        let draw = next() * scale
        for (const [weight, behaviour] of script.faults) {
          if (draw < weight) return behaviour
          draw -= weight
        }
        // Rounding can leave a sliver past the last weight: it belongs to the last fault when weights are relative.
        const last = script.faults[script.faults.length - 1]
        return total >= 1 && last !== undefined ? last[1] : Behaviour.ok()
      }
    }
  }
}

/** A small, fast, seeded 32-bit PRNG (mulberry32) returning numbers in [0, 1). */
const mulberry32 = (seed: number): (() => number) => {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
