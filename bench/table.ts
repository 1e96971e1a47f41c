/**
 * The bench's plain-text tables: a header, a rule, and a row per result,
 * each column as wide as its widest cell.
 *
 * @module
 */

/**
 * The table of `header` and `rows`: the first `textColumns` columns are
 * aligned left, the figures after them right.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { table } from "./table.ts";
 *
 * assert.equal(
 *   table(["server", "lines/s"], [["node", "12"], ["lineserver", "345"]], 1),
 *   [
 *     "server      lines/s",
 *     "----------  -------",
 *     "node             12",
 *     "lineserver      345",
 *   ].join("\n"),
 * );
 * ```
 */
export function table(
  header: string[],
  rows: string[][],
  textColumns = 2,
): string {
  const widths = header.map((h, i) =>
    Math.max(h.length, ...rows.map((r) => r[i].length))
  );
  const line = (cells: string[]) =>
    cells.map((c, i) =>
      i < textColumns ? c.padEnd(widths[i]) : c.padStart(widths[i])
    ).join("  ").trimEnd();
  return [
    line(header),
    line(widths.map((w) => "-".repeat(w))),
    ...rows.map(line),
  ]
    .join("\n");
}
