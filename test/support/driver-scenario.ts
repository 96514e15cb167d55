import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** What an application's scenario saw: the values it read, the SQLSTATEs of the errors it got. */
export interface Seen {
  values: string[];
  errors: string[];
}

/**
 * Runs one scenario of a driver test's application (a Java, Python, Go, PHP or Ruby program that
 * prints one JSON line last) with `env` added to this process's environment: what it saw.
 */
export async function runScenario(command: string, args: string[], env: Record<string, string>): Promise<Seen> {
  const { stdout } = await execFileAsync(command, args, { env: { ...process.env, ...env }, timeout: 60_000 });
  return JSON.parse(stdout.trim().split('\n').pop()!) as Seen;
}
