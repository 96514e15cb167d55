import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { vi } from 'vitest';
import { killProcessesIn } from '../../src/local/node-processes.js';

/**
 * `pgrelay demo` in a process of its own, as a user runs it (the built CLI: `npm test` builds
 * dist/ first; after changing src/, `npm run build` before running such a test alone).
 */
const MAIN = fileURLToPath(new URL('../../dist/main.js', import.meta.url));
/** Generous: the machine is shared with other test runs. */
export const DEMO_READY_TIMEOUT_MS = 150_000;
export const DEMO_EXIT_TIMEOUT_MS = 60_000;

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface DemoProcess {
  child: ChildProcess;
  /** everything it printed so far (stdout and stderr) */
  readonly output: string;
  exited: Promise<Exit>;
  /** the URL of its `pgrelay ready` line */
  url: string;
  /** its cluster directory, from its progress line ('' when not printed) */
  baseDir: string;
  /** its admin base URL, from its progress line */
  adminUrl: string;
  /** the admin token it generated and printed (`export PGRELAY_ADMIN_TOKEN=…`) */
  adminToken: string;
  /** Ctrl-C: resolves with how it exited, rejects if it still runs after DEMO_EXIT_TIMEOUT_MS */
  interrupt(): Promise<Exit>;
  /** cleanup after a failed test: stop it if it still runs, then whatever it left behind */
  cleanup(): Promise<void>;
}

/** Starts `pgrelay demo ARGS…` and waits for its ready line. */
export async function startDemo(args: string[]): Promise<DemoProcess> {
  if (!fs.existsSync(MAIN)) throw new Error(`${MAIN} is missing: run \`npm run build\` first (npm test does)`);
  const child = spawn(process.execPath, [MAIN, 'demo', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<Exit>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  let output = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  const demo: DemoProcess = {
    child,
    get output() {
      return output;
    },
    exited,
    url: '',
    baseDir: '',
    adminUrl: '',
    adminToken: '',
    interrupt: async () => {
      child.kill('SIGINT');
      return Promise.race([
        exited,
        new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`pgrelay demo still running ${DEMO_EXIT_TIMEOUT_MS} ms after SIGINT:\n${output}`)), DEMO_EXIT_TIMEOUT_MS)),
      ]);
    },
    cleanup: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const stopped = await Promise.race([exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), DEMO_EXIT_TIMEOUT_MS))]);
        if (!stopped) child.kill('SIGKILL');
      }
      if (demo.baseDir && fs.existsSync(demo.baseDir)) {
        await killProcessesIn(demo.baseDir);
        fs.rmSync(demo.baseDir, { recursive: true, force: true });
      }
    },
  };
  demo.url = await Promise.race([
    vi.waitFor(
      () => {
        const match = /^pgrelay ready (postgres:\/\/\S+)$/m.exec(output);
        if (!match) throw new Error(`no ready line yet:\n${output}`);
        return match[1]!;
      },
      { timeout: DEMO_READY_TIMEOUT_MS, interval: 100 },
    ),
    exited.then(({ code, signal }): never => {
      throw new Error(`pgrelay demo exited (code ${code}, signal ${signal}) before its ready line:\n${output}`);
    }),
  ]);
  demo.baseDir = /^ {2}… cluster files in (\/\S+) /m.exec(output)?.[1] ?? '';
  demo.adminUrl = /admin (http:\/\/127\.0\.0\.1:\d+)\/status/.exec(output)?.[1] ?? '';
  demo.adminToken = /export PGRELAY_ADMIN_TOKEN=([A-Za-z0-9_-]+)/.exec(output)?.[1] ?? '';
  return demo;
}
