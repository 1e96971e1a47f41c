/**
 * Every server subprocess and load-generator worker that is alive, so that
 * the way out (normal end, watchdog, Ctrl-C) can end all of them by PID and
 * reap them: a leftover server would hold its port and skew the next run.
 *
 * @module
 */
import type { ServerChild } from "./proc.ts";

/** Everything alive that must be ended on the way out. */
export const live = {
  servers: new Set<ServerChild>(),
  workers: new Set<Worker>(),
};

/** Terminates every worker and stops (and reaps) every server still alive. */
export async function cleanUp(): Promise<void> {
  for (const worker of live.workers) worker.terminate();
  live.workers.clear();
  await Promise.all([...live.servers].map((s) => s.stop(1000)));
  live.servers.clear();
}
