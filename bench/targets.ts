/**
 * lineserver's targets: their limits, the checks `report.ts` makes of them,
 * their names in the last line of the report, and the tally of what was met
 * and what was missed. A missed target is reported, not a failure.
 *
 * @module
 */

/** Rounds for the JSON; a non-finite number becomes null (JSON has no NaN). */
export const round = (n: number, digits = 3): number | null =>
  Number.isFinite(n) ? Number(n.toFixed(digits)) : null;

/** lineserver's targets. */
export const TARGETS = {
  /** Under the 1000- and 5000-connection closed loop. */
  maxOverMedian: 5,
  leastServedOverMedian: 0.5,
  /** lineserver lines/s over the Node peer's. */
  requestResponse: 1.2,
  pipelined: 3,
  thousandConnections: 1,
  idleKiBPerConnection: 6,
  peakRssMiB: 80,
};

/**
 * The idle-memory target is for this many connections held, the count
 * docs/performance.md reports: with fewer, the server's fixed memory is
 * spread over fewer connections and the figure per connection is larger, so
 * it is not judged against the target.
 */
export const IDLE_TARGET_CONNECTIONS = 5000;

/**
 * A target check: the value, the limit, which side of it is good, and
 * whether it was met (null: not measured, or not comparable).
 */
export function check(value: number, limit: number, atLeast: boolean) {
  return {
    value: round(value),
    limit,
    atLeast,
    met: Number.isFinite(value)
      ? (atLeast ? value >= limit : value <= limit)
      : null,
  };
}

export type Check = ReturnType<typeof check>;

type FairnessChecks = { maxOverMedian: Check; leastServedOverMedian: Check };

/** lineserver's targets as `summarize` checks them. */
export interface TargetChecks {
  fairness1000: FairnessChecks | null;
  fairness5000: FairnessChecks | null;
  overNodePeer: {
    requestResponse50: Check;
    pipelined50: Check;
    closedLoop1000: Check;
  };
  /** The same per second of server CPU (no target: for the reader). */
  overNodePeerPerServerCpu: {
    requestResponse50: number | null;
    pipelined50: number | null;
    closedLoop1000: number | null;
  };
  idleKiBPerConnection: (Check & { connections: number }) | null;
  peakRssMiB1000: Check;
  /** Scenario m, per load: growth under the streamers, and RSS after the rest. */
  memory?: MemoryTargetChecks[];
}

/** One memory load's two checks. */
export interface MemoryTargetChecks {
  load: string;
  growthMiB: Check;
  afterRestMiB: Check & { restS: number };
}

/** Every target by the name the last line of the report gives it. */
function namedTargets(
  targets: TargetChecks,
): [string, Check | null | undefined][] {
  const o = targets.overNodePeer;
  return [
    ["max/median at 1000 conns", targets.fairness1000?.maxOverMedian],
    [
      "least-served/median at 1000 conns",
      targets.fairness1000?.leastServedOverMedian,
    ],
    ["max/median at 5000 conns", targets.fairness5000?.maxOverMedian],
    [
      "least-served/median at 5000 conns",
      targets.fairness5000?.leastServedOverMedian,
    ],
    ["lines/s over Node peer, 50 conns request/response", o.requestResponse50],
    ["lines/s over Node peer, 50 conns pipelined x32", o.pipelined50],
    ["lines/s over Node peer, 1000 conns", o.closedLoop1000],
    [
      `idle KiB/conn at ${IDLE_TARGET_CONNECTIONS} conns`,
      targets.idleKiBPerConnection,
    ],
    ["peak RSS MiB under 1000 conns", targets.peakRssMiB1000],
    ...(targets.memory ?? []).flatMap((m): [string, Check][] => [
      [`RSS growth MiB, ${m.load}`, m.growthMiB],
      [`RSS MiB ${m.afterRestMiB.restS} s after ${m.load}`, m.afterRestMiB],
    ]),
  ];
}

/**
 * The targets met, missed (with value and limit) and not measured, by name.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { check, tally } from "./targets.ts";
 *
 * const met = check(1, 5, false);
 * const low = check(0.85, 1.2, true);
 * const none = check(NaN, 3, true);
 * const result = tally({
 *   fairness1000: { maxOverMedian: met, leastServedOverMedian: met },
 *   fairness5000: null,
 *   overNodePeer: {
 *     requestResponse50: low,
 *     pipelined50: none,
 *     closedLoop1000: met,
 *   },
 *   overNodePeerPerServerCpu: {
 *     requestResponse50: null,
 *     pipelined50: null,
 *     closedLoop1000: null,
 *   },
 *   idleKiBPerConnection: null,
 *   peakRssMiB1000: met,
 * });
 * assert.equal(result.met.length, 4);
 * assert.deepEqual(result.missed, [
 *   "lines/s over Node peer, 50 conns request/response 0.85 (target >= 1.2)",
 * ]);
 * assert.equal(result.notMeasured.length, 4);
 * ```
 */
export function tally(targets: TargetChecks): {
  met: string[];
  missed: string[];
  notMeasured: string[];
} {
  const met: string[] = [];
  const missed: string[] = [];
  const notMeasured: string[] = [];
  for (const [name, c] of namedTargets(targets)) {
    if (!c || c.met === null) notMeasured.push(name);
    else if (c.met) met.push(name);
    else {
      missed.push(
        `${name} ${c.value} (target ${c.atLeast ? ">=" : "<="} ${c.limit})`,
      );
    }
  }
  return { met, missed, notMeasured };
}

export function verdict(c: Check | null | undefined): string {
  if (!c || c.value === null) return "- (not measured)";
  const target = `target ${c.atLeast ? ">=" : "<="} ${c.limit}`;
  if (c.met === null) return `${c.value} [${target}: not judged]`;
  return `${c.value} [${target}: ${c.met ? "met" : "MISSED"}]`;
}
