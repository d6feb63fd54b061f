import { parseArgs, type ParseArgsConfig } from "node:util";

/**
 * A mistake in how a command was called (unknown flag, missing argument): main prints its one line
 * and the command's usage hint, and exits 2, as POSIX tools do.
 */
export class UsageError extends Error {}

/**
 * An expected failure of a well-formed command (nothing listening, no such key, a render that
 * failed): main prints the sentence and exits 1, without a stack trace.
 */
export class CliError extends Error {}

/** `--help`/`-h` anywhere before a `--` asks for the command's usage instead of running it. */
export function wantsHelp(argv: string[]): boolean {
  const end = argv.indexOf("--");
  return (end === -1 ? argv : argv.slice(0, end)).some((a) => a === "--help" || a === "-h");
}

/** node:util's parseArgs, with its errors (unknown option, missing value) turned into one-line UsageErrors. */
export function parseFlags<T extends NonNullable<ParseArgsConfig["options"]>>(
  args: string[],
  options: T,
  allowPositionals = false,
) {
  try {
    return parseArgs({ args, options, allowPositionals, strict: true });
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (typeof code === "string" && code.startsWith("ERR_PARSE_ARGS_"))
      throw new UsageError((e as Error).message.split("\n")[0]!.replace(/\. To specify a positional.*$/, "."));
    throw e;
  }
}
