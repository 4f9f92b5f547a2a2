/**
 * A horizontal bar chart as a standalone SVG file (no dependencies), for the report's figures.
 */

/** One bar: its label, value and an optional whisker range (p25..p75). */
export interface Bar {
  readonly label: string
  readonly value: number
  readonly low?: number | undefined
  readonly high?: number | undefined
  /** Highlighted bars (Roadcar's) are drawn in a darker colour. */
  readonly highlight?: boolean | undefined
}

const escapeXml = (text: string) => text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;")

/** The SVG text of a bar chart; `unit` is appended to each value label. */
export const barChart = (title: string, unit: string, bars: ReadonlyArray<Bar>): string => {
  // About 6.6 px per character at 12 px sans-serif.
  const labelWidth = Math.max(200, Math.ceil(Math.max(0, ...bars.map((bar) => bar.label.length)) * 6.6) + 16)
  const plotWidth = 420
  const rowHeight = 24
  const top = 40
  const width = labelWidth + plotWidth + 90
  const height = top + bars.length * rowHeight + 20
  const max = Math.max(1e-9, ...bars.map((bar) => Math.max(bar.value, bar.high ?? 0)))
  const x = (value: number) => labelWidth + (Math.max(0, value) / max) * plotWidth
  const rows = bars.map((bar, i) => {
    const y = top + i * rowHeight
    const whisker =
      bar.low !== undefined && bar.high !== undefined
        ? `<line x1="${x(bar.low).toFixed(1)}" x2="${x(bar.high).toFixed(1)}" y1="${y + 9}" y2="${y + 9}" stroke="#333" stroke-width="1"/>`
        : ""
    return [
      `<text x="${labelWidth - 8}" y="${y + 13}" text-anchor="end">${escapeXml(bar.label)}</text>`,
      `<rect x="${labelWidth}" y="${y + 2}" width="${(x(bar.value) - labelWidth).toFixed(1)}" height="14" fill="${bar.highlight ? "#1f5fa8" : "#9bb7d6"}"/>`,
      whisker,
      `<text x="${(x(Math.max(bar.value, bar.high ?? 0)) + 6).toFixed(1)}" y="${y + 13}">${bar.value.toFixed(1)} ${escapeXml(unit)}</text>`
    ].join("")
  })
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="22" font-size="14" font-weight="bold">${escapeXml(title)}</text>`,
    ...rows,
    "</svg>",
    ""
  ].join("\n")
}
