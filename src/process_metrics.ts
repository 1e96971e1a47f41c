/**
 * Metrics of the process as a whole (memory, file descriptors), under the
 * names Prometheus client libraries use, so that existing dashboards and
 * alerts apply. They describe one process, whatever runs in it: with
 * `--workers`, the workers are threads of it, so these are never summed
 * over workers.
 *
 * @module
 */

/** Descriptors in use and the most the process may hold (its soft limit). */
export interface DescriptorCounts {
  open: number;
  max: number | undefined;
}

/**
 * The process metrics in the Prometheus text format, each with its HELP
 * and TYPE: resident memory and V8's heap and external memory, always; open
 * and maximum file descriptors where `/proc` can be read (Linux, and Deno
 * lets a program read `/proc` only when it runs with every permission).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { renderProcessMetrics } from "./process_metrics.ts";
 * const text = renderProcessMetrics();
 * const rss = Number(text.match(/^process_resident_memory_bytes (\d+)$/m)?.[1]);
 * assert.ok(rss > 1024 * 1024);
 * assert.match(text, /^# TYPE nodejs_heap_size_used_bytes gauge$/m);
 * ```
 */
export function renderProcessMetrics(): string {
  const memory = Deno.memoryUsage();
  const descriptors = countDescriptors();
  const lines = [
    ...gauge(
      "process_resident_memory_bytes",
      "Resident memory of the whole process in bytes (every worker included). Alert when near the container's memory limit.",
      memory.rss,
    ),
    ...(descriptors === undefined ? [] : [
      ...gauge(
        "process_open_fds",
        "File descriptors the process holds open (sockets included). Alert when near process_max_fds.",
        descriptors.open,
      ),
      ...(descriptors.max === undefined ? [] : gauge(
        "process_max_fds",
        "The most file descriptors the process may open (its soft limit).",
        descriptors.max,
      )),
    ]),
    ...gauge(
      "nodejs_heap_size_total_bytes",
      "Size of the main thread's V8 heap in bytes.",
      memory.heapTotal,
    ),
    ...gauge(
      "nodejs_heap_size_used_bytes",
      "Bytes in use in the main thread's V8 heap.",
      memory.heapUsed,
    ),
    ...gauge(
      "nodejs_external_memory_bytes",
      "Memory held by the main thread's V8 objects outside its heap (buffers), in bytes.",
      memory.external,
    ),
  ];
  return lines.join("\n") + "\n";
}

function gauge(name: string, help: string, value: number): string[] {
  return [`# HELP ${name} ${help}`, `# TYPE ${name} gauge`, `${name} ${value}`];
}

/**
 * Counts the entries of `/proc/self/fd` and reads the soft limit from
 * `/proc/self/limits`. Undefined where that cannot be done: not Linux, not
 * permitted (asked first, so that a terminal never sees a permission
 * prompt), or no descriptor left to read with.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { countDescriptors } from "./process_metrics.ts";
 * const counts = countDescriptors();
 * // Tests run without every permission, where /proc is closed to them.
 * assert.ok(counts === undefined || counts.open > 0);
 * ```
 */
export function countDescriptors(): DescriptorCounts | undefined {
  if (Deno.build.os !== "linux") return undefined;
  const asked = { name: "read", path: "/proc/self" } as const;
  if (Deno.permissions.querySync(asked).state !== "granted") return undefined;
  try {
    // Reading the directory takes one descriptor of its own: not counted.
    const open = [...Deno.readDirSync("/proc/self/fd")].length - 1;
    const limits = Deno.readTextFileSync("/proc/self/limits");
    const soft = limits.match(/^Max open files\s+(\d+)/m)?.[1];
    return { open, max: soft === undefined ? undefined : Number(soft) };
  } catch {
    // NotCapable without --allow-all; EMFILE when descriptors ran out.
    return undefined;
  }
}
