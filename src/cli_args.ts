/**
 * What the two commands (`server.ts`, `client.ts`) share in reading their
 * arguments: the token loop that says every problem the same way, seconds
 * given as text, and the one-line error that ends with the usage hint.
 *
 * @module
 */
import { parseArgs } from "node:util";

/** Ends every usage error line. */
export const HINT = "run with --help for usage";

/** Longest timeout accepted, in seconds: timers cannot wait longer than 2^31-1 ms. */
export const MAX_TIMEOUT_SECONDS = 2_147_483;

/** A problem with the arguments, said in one line. */
export class UsageError extends Error {}

/** A bad usage, as the commands report it. */
export interface UsageErrorRequest {
  kind: "error";
  /** The problem and {@linkcode HINT}. */
  message: string;
}

/** What the token loop needs to know of the options. */
export interface ArgSpecs {
  /** The options that take a value, each with what it expects (said when the value is missing). */
  values: Readonly<Record<string, { readonly expected: string }>>;
  /** The options that are flags. */
  flags: readonly string[];
  /** Whether positional arguments are allowed (else each is an error). */
  positionals: boolean;
}

/**
 * The options given, each once, by name (the text of a value option, `true`
 * for a flag), and the positional arguments. A leading `--` is skipped
 * (`deno task start -- --version` passes it on). parseArgs (not strict)
 * splits the arguments into tokens, and each is checked here, so that
 * every problem is said the same way: an option's value, even one that
 * looks like an option (`--port -1`, `--port --host`), reaches the option's
 * own check.
 */
export function readArgs(
  args: string[],
  specs: ArgSpecs,
): { given: Map<string, string | true>; positionals: string[] } {
  const { tokens } = parseArgs({
    args: args[0] === "--" ? args.slice(1) : args,
    strict: false,
    allowPositionals: true,
    tokens: true,
    options: Object.fromEntries([
      ...Object.keys(specs.values).map((name) => [name, { type: "string" }]),
      ...specs.flags.map((name) => [name, { type: "boolean" }]),
    ]) as Record<string, { type: "string" | "boolean" }>,
  });
  const given = new Map<string, string | true>();
  const positionals: string[] = [];
  for (const token of tokens) {
    if (token.kind === "positional") {
      if (!specs.positionals) {
        throw new UsageError(`Unexpected argument: ${token.value}`);
      }
      positionals.push(token.value);
      continue;
    }
    if (token.kind === "option-terminator") continue;
    const { name, rawName, value } = token;
    const spec = Object.hasOwn(specs.values, name)
      ? specs.values[name]
      : undefined;
    const flag = specs.flags.includes(name);
    if (spec === undefined && !flag) {
      throw new UsageError(`Unknown option: ${rawName}`);
    }
    if (flag && value !== undefined) {
      invalidValue(name, "no value (it is a flag)", value);
    }
    if (spec !== undefined) {
      // `--port --host x`: the value is missing, not "--host".
      const missing = value === undefined ||
        (!token.inlineValue && value.startsWith("--"));
      if (missing) {
        throw new UsageError(
          `Invalid value for --${name}: expected ${spec.expected}, received ${
            value === undefined ? "nothing" : `the option ${value}`
          }`,
        );
      }
    }
    const earlier = given.get(name);
    if (earlier !== undefined) {
      throw new UsageError(
        `Option --${name} is given twice${
          earlier === true
            ? ""
            : `: received ${JSON.stringify(earlier)} and ${
              JSON.stringify(value)
            }`
        }; give it once`,
      );
    }
    given.set(name, value ?? true);
  }
  return { given, positionals };
}

/** Throws the usage error for a value option's bad value. */
export function invalidValue(
  option: string,
  expected: string,
  received: string,
): never {
  throw new UsageError(
    `Invalid value for --${option}: expected ${expected}, received ${
      JSON.stringify(received)
    }`,
  );
}

/**
 * Seconds as text (fractions allowed, up to {@linkcode MAX_TIMEOUT_SECONDS})
 * as milliseconds, or undefined if the text is none. A positive value never
 * means "off": 0.0001 s is 1 ms, not 0.
 */
export function secondsToMs(text: string): number | undefined {
  const value = /^(?:\d+(?:\.\d*)?|\.\d+)$/.test(text) ? Number(text) : NaN;
  if (!(value >= 0 && value <= MAX_TIMEOUT_SECONDS)) return undefined;
  return value === 0 ? 0 : Math.max(1, Math.round(value * 1000));
}

/** Runs `parse`; a {@linkcode UsageError} it throws becomes the error request. */
export function catchUsageError<T>(parse: () => T): T | UsageErrorRequest {
  try {
    return parse();
  } catch (error) {
    if (error instanceof UsageError) {
      return { kind: "error", message: `${error.message}; ${HINT}` };
    }
    throw error;
  }
}
