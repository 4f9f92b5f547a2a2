/**
 * Scans everything the gateway emits (log lines, response headers and bodies, `/metrics`) for secrets.
 *
 * A scanner knows the secrets by label (`gateway key`, `upstream apiKey`) and looks for each whole
 * value and for a 12-character piece of its random part, so a truncated or partly masked leak is found
 * too. Findings name the label and where it was seen, with the secret itself masked: the report never
 * repeats a secret.
 */

/** One secret seen where it must not be. */
export interface Finding {
  readonly secret: string
  readonly where: string
  /** Up to 80 characters around the hit, the secret masked as `[secret]`. */
  readonly excerpt: string
}

/** How much was scanned, by source. */
export interface Scanned {
  readonly items: Record<string, number>
  readonly bytes: Record<string, number>
}

/** A scanner for a fixed set of secrets. */
export interface Scanner {
  /** Scans one piece of output from `where` (`log`, `metrics`, `error body`, `header`, ...). */
  readonly scan: (text: string, where: string) => void
  /** The first 50 findings. */
  readonly findings: () => ReadonlyArray<Finding>
  /** Every finding, counted. */
  readonly findingCount: () => number
  readonly scanned: () => Scanned
}

const maxFindings = 50

/**
 * A scanner for `secrets` (label → value). Each value must be at least 24 characters long, so that
 * its pieces cannot appear by chance.
 */
export const make = (secrets: Readonly<Record<string, string>>): Scanner => {
  const needles: Array<{ readonly label: string; readonly value: string; readonly mask: string }> = []
  for (const [label, value] of Object.entries(secrets)) {
    if (value.length < 24) throw new RangeError(`SecretScan.make: the secret "${label}" is shorter than 24 characters`)
    needles.push({ label, value, mask: value })
    // A piece of the random tail: catches truncated ("sk-...abcd") and partly masked leaks.
    needles.push({ label: `${label} (fragment)`, value: value.slice(-16, -4), mask: value.slice(-16, -4) })
  }
  const findings: Array<Finding> = []
  let findingCount = 0
  const items: Record<string, number> = {}
  const bytes: Record<string, number> = {}
  const masked = (text: string): string =>
    needles.reduce((result, needle) => result.split(needle.mask).join("[secret]"), text)
  return {
    scan: (text, where) => {
      items[where] = (items[where] ?? 0) + 1
      bytes[where] = (bytes[where] ?? 0) + text.length
      for (const needle of needles) {
        const at = text.indexOf(needle.value)
        if (at === -1) continue
        findingCount++
        if (findings.length < maxFindings) {
          findings.push({
            secret: needle.label,
            where,
            excerpt: masked(text.slice(Math.max(0, at - 40), at + needle.value.length + 40))
          })
        }
        break
      }
    },
    findings: () => findings,
    findingCount: () => findingCount,
    scanned: () => ({ items: { ...items }, bytes: { ...bytes } })
  }
}

/** Scans a response's headers as `name: value` lines. */
export const scanHeaders = (scanner: Scanner, headers: Headers): void => {
  const lines: Array<string> = []
  headers.forEach((value, name) => {
    lines.push(`${name}: ${value}`)
  })
  scanner.scan(lines.join("\n"), "response headers")
}
