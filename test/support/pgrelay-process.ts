import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { relayDocument } from './relay.js';
import type { SharedCluster } from './shared-cluster.js';

/**
 * pgrelay as a separate process (`node dist/main.js start --config FILE`), for tests that measure
 * the process itself (its RSS from /proc) or signal it. Started from the built dist/: `npm test`
 * builds first; `ensureBuilt()` rebuilds when dist/ is older than src/ (a local run).
 */
export interface PgrelayProcess {
  readonly pid: number;
  readonly port: number;
  /** the config file it was started with (rewrite it, then SIGHUP, to test a reload) */
  readonly configPath: string;
  /** a connection string through this pgrelay (with the real password) */
  url(options?: { user?: string; password?: string; database?: string }): string;
  /** resident set size now, in bytes (VmRSS from /proc/<pid>/status) */
  rssBytes(): number;
  /** everything the process wrote so far (stdout and stderr) */
  output(): string;
  /** SIGTERM, then waits for the exit (SIGKILL after `graceMs`) */
  stop(graceMs?: number): Promise<void>;
}

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const MAIN = join(ROOT, 'dist', 'main.js');

/** Builds dist/ when it is missing or older than any source file. */
export function ensureBuilt(): void {
  if (distIsFresh()) return;
  try {
    execFileSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: 'pipe' });
  } catch (error) {
    // tsc emits even with type errors elsewhere in the tree; what matters is a fresh dist/main.js
    if (!distIsFresh()) throw new Error(`npm run build failed: ${(error as { stdout?: Buffer }).stdout?.toString() ?? String(error)}`);
  }
}

function distIsFresh(): boolean {
  let built: number;
  try {
    built = statSync(MAIN).mtimeMs;
  } catch {
    return false;
  }
  return newestMtime(join(ROOT, 'src')) <= built;
}

function newestMtime(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(path) : statSync(path).mtimeMs);
  }
  return newest;
}

type ClusterLike = Pick<SharedCluster, 'nodes' | 'user' | 'password' | 'database'>;

/**
 * Starts pgrelay in front of `cluster` with `overrides` (YAML keys, as for startRelay) and resolves
 * once it printed `pgrelay ready …`. Register `stop` as cleanup right away.
 */
export async function startPgrelayProcess(cluster: ClusterLike, overrides: Record<string, unknown> = {}, options: { readyTimeoutMs?: number } = {}): Promise<PgrelayProcess> {
  ensureBuilt();
  const dir = mkdtempSync(join(tmpdir(), 'pgrelay-process-'));
  const configPath = join(dir, 'pgrelay.yaml');
  writeFileSync(configPath, stringify(relayDocument(cluster, { log: { level: 'warn', format: 'json' }, ...overrides })));
  const child = spawn(process.execPath, [MAIN, 'start', '--config', configPath], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<void>((resolveExit) => child.once('exit', () => resolveExit()));

  const stop = async (graceMs = 15_000): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  };

  let port: number;
  try {
    port = await waitForReady(child, () => output, options.readyTimeoutMs ?? 30_000);
  } catch (error) {
    await stop(1000);
    throw error;
  }
  return {
    pid: child.pid!,
    port,
    configPath,
    url: (o = {}) => `postgres://${encodeURIComponent(o.user ?? cluster.user)}:${encodeURIComponent(o.password ?? cluster.password)}@127.0.0.1:${port}/${o.database ?? cluster.database}`,
    rssBytes: () => rssOf(child.pid!),
    output: () => output,
    stop,
  };
}

function waitForReady(child: ChildProcess, output: () => string, timeoutMs: number): Promise<number> {
  return new Promise((resolveReady, reject) => {
    const check = () => {
      const match = /^pgrelay ready postgres:\/\/[^@\s]+@[^:\s]+:(\d+)\/\S+$/m.exec(output());
      if (!match) return;
      done();
      resolveReady(Number(match[1]));
    };
    const onExit = (code: number | null, signal: string | null) => {
      done();
      reject(new Error(`pgrelay exited (${signal ?? code}) before it was ready:\n${output()}`));
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`pgrelay was not ready within ${timeoutMs} ms:\n${output()}`));
    }, timeoutMs);
    const done = () => {
      clearTimeout(timer);
      child.stdout!.off('data', check);
      child.off('exit', onExit);
    };
    child.stdout!.on('data', check);
    child.once('exit', onExit);
    check();
  });
}

/** VmRSS of a process, in bytes. */
export function rssOf(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  if (!match) throw new Error(`no VmRSS for process ${pid}`);
  return Number(match[1]) * 1024;
}
