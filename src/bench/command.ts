/**
 * What the benchmark-side commands (`npm run bench`, `npm run regress`) share: a usage error, the
 * option parse that answers it with exit code 2, and the entry point that turns the command's
 * promise into the process's exit code.
 */

/** A command-line mistake: its message and the usage text go to stderr, exit code 2. */
export class UsageError extends Error {}

/** Parses the options, or writes the usage error and returns undefined. */
export function parseOrUsage<T>(parse: () => T, usage: string): T | undefined {
  try {
    return parse();
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    if (error.message) process.stderr.write(`${error.message}\n`);
    process.stderr.write(`${usage}\n`);
    return undefined;
  }
}

/** Runs a command's main and sets the exit code (1 with the stack when it throws). */
export function runCommand(name: string, main: () => Promise<number>): void {
  main().then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      process.stderr.write(`${name} failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
      process.exitCode = 1;
    },
  );
}

export function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
