/**
 * What every scenario shares. A failure is recorded in its result instead of
 * ending the run, so the other scenarios still measure; and whatever happens,
 * the generators it opened are ended and its server is stopped and reaped
 * before the next scenario starts a fresh one.
 *
 * @module
 */
import type { LoadWorker } from "./generators.ts";
import type { Problems } from "./load_messages.ts";
import type { ServerChild } from "./proc.ts";
import { progress } from "./report.ts";
import { stopServer } from "./servers.ts";

/** The fields every scenario result has. */
export interface Outcome extends Problems {
  id: string;
  serverExitCode: number | null;
  failed?: string;
}

/** Records why the scenario failed and says so on stderr. */
export function markFailed(result: Outcome, error: unknown): void {
  result.failed = (error as Error).message;
  progress(`${result.id}: FAILED: ${result.failed}`);
}

/**
 * Runs `body` against a started server and copies the problems it returns
 * into `result`. The body puts each generator it opens in `generators`, so
 * that they are ended even when it throws.
 */
export async function measureOn(
  server: ServerChild,
  result: Outcome,
  body: (generators: LoadWorker[]) => Promise<Problems>,
): Promise<void> {
  const generators: LoadWorker[] = [];
  try {
    const problems = await body(generators);
    result.errors = problems.errors;
    result.mismatches = problems.mismatches;
    result.errorSamples = problems.errorSamples;
    result.mismatchSamples = problems.mismatchSamples;
  } catch (error) {
    markFailed(result, error);
  } finally {
    for (const g of generators) g.terminate();
    result.serverExitCode = await stopServer(server);
  }
}
