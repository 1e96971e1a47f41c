/**
 * The bench's command line: every option with its default, the `--quick`
 * defaults, and the usage text. Every number is range-checked, because a
 * zero-second window or a million connections would run but measure nothing.
 *
 * @module
 */

/** What one run measures and how long it takes. */
export interface Options {
  quick: boolean;
  jsonOnly: boolean;
  scenarios: Set<string>;
  durationS: number;
  warmupS: number;
  clientWorkers: number;
  idleConnections: number;
  server: string;
  /** Extra `deno run` flags for the calculator server (e.g. `--v8-flags=--prof,...`). */
  denoFlags: string[];
}

/** Parses `args`; prints the usage text and exits with code 2 on a bad option. */
export function parseOptions(args: string[]): Options {
  const options: Options = {
    quick: args.includes("--quick"),
    jsonOnly: args.includes("--json-only"),
    scenarios: new Set(["a", "b", "c", "d", "w"]),
    durationS: 6,
    warmupS: 1,
    clientWorkers: 2,
    idleConnections: 5000,
    server: "server.ts",
    denoFlags: [],
  };
  if (options.quick) {
    options.durationS = 1;
    options.warmupS = 0.3;
    options.idleConnections = 1000;
  }
  const value = (name: string) => {
    const at = args.indexOf(name);
    if (at < 0) return undefined;
    if (at + 1 >= args.length) usage(`Missing value for ${name}`);
    return args[at + 1];
  };
  const number = (name: string, min: number, max: number) => {
    const text = value(name);
    if (text === undefined) return undefined;
    const n = Number(text);
    if (!(n >= min && n <= max)) {
      usage(`Bad value for ${name}: received "${text}"`);
    }
    return n;
  };
  const list = value("--scenario");
  if (list !== undefined) {
    options.scenarios = new Set(list.split(",").map((s) => s.trim()));
    for (const s of options.scenarios) {
      if (!"abcdw".includes(s) || s.length !== 1) {
        usage(`Unknown scenario: received "${s}"`);
      }
    }
  }
  options.durationS = number("--duration", 0.2, 30) ?? options.durationS;
  options.warmupS = number("--warmup", 0, 10) ?? options.warmupS;
  options.clientWorkers = number("--client-workers", 1, 16) ??
    options.clientWorkers;
  options.idleConnections = number("--idle-connections", 1, 20000) ??
    options.idleConnections;
  options.server = value("--server") ?? options.server;
  options.denoFlags = value("--deno-flags")?.split(" ").filter((f) => f) ??
    [];
  const known = new Set([
    "--quick",
    "--json-only",
    "--scenario",
    "--duration",
    "--warmup",
    "--client-workers",
    "--idle-connections",
    "--server",
    "--deno-flags",
  ]);
  for (let i = 0; i < args.length; i++) {
    if (!known.has(args[i])) usage(`Unknown option: received "${args[i]}"`);
    if (!["--quick", "--json-only"].includes(args[i])) i++;
  }
  return options;
}

function usage(problem: string): never {
  console.error(
    `${problem}\nusage: deno task bench [--quick] [--json-only] ` +
      `[--scenario a,b,c,d,w] [--duration S] [--warmup S] ` +
      `[--client-workers N] [--idle-connections N] [--server FILE] ` +
      `[--deno-flags "FLAGS"]`,
  );
  Deno.exit(2);
}
