/**
 * `pgrelay demo` (what `npm start` runs), as a user runs it: the built CLI in a process of its own,
 * psql through the printed URL, Ctrl-C (SIGINT), and nothing left behind. Runs dist/main.js, which
 * `npm test` builds first (pretest); after changing src/, `npm run build` before running this file alone.
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { killProcessesIn } from '../../src/local/node-processes.js';

const MAIN = fileURLToPath(new URL('../../dist/main.js', import.meta.url));
const run = promisify(execFile);
/** Generous: the machine is shared with other test runs. */
const READY_TIMEOUT_MS = 150_000;
const EXIT_TIMEOUT_MS = 60_000;

/** Pids whose working directory lies under `dir` (a postmaster and all its backends live in its data directory). */
function processesUnder(dir: string): number[] {
  const pids: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cwd = fs.readlinkSync(`/proc/${entry}/cwd`);
      if (cwd === dir || cwd.startsWith(`${dir}/`)) pids.push(Number(entry));
    } catch {
      // gone, or a zombie
    }
  }
  return pids;
}

/** `pgrep -u postgres -f DIR`: the postmasters started with a data directory under DIR. */
function pgrepPostgres(dir: string): number[] {
  const result = spawnSync('pgrep', ['-u', 'postgres', '-f', dir], { encoding: 'utf8' });
  return result.stdout
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map(Number);
}

function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^[ZX]$/.test(stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3));
  } catch {
    return false;
  }
}

/** psql as a user runs it: no ~/.psqlrc, stop at the first error, unaligned tuples only. */
async function psql(url: string, ...commands: string[]): Promise<string[]> {
  const args = [url, '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', ...commands.flatMap((c) => ['-c', c])];
  const { stdout } = await run('psql', args, { env: { PATH: process.env.PATH, PGCONNECT_TIMEOUT: '20' }, timeout: 60_000 });
  return stdout.split('\n').filter((l) => l !== '');
}

describe('pgrelay demo', () => {
  let demo: ChildProcess;
  let output = '';
  let exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  let url: string;
  let baseDir: string;

  beforeAll(async () => {
    if (!fs.existsSync(MAIN)) throw new Error(`${MAIN} is missing: run \`npm run build\` first (npm test does)`);
    demo = spawn(process.execPath, [MAIN, 'demo', '--port', '0', '--admin-port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    exited = new Promise((resolve) => demo.once('exit', (code, signal) => resolve({ code, signal })));
    demo.stdout!.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    demo.stderr!.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));

    const ready = await Promise.race([
      vi.waitFor(
        () => {
          const match = /^pgrelay ready (postgres:\/\/\S+)$/m.exec(output);
          if (!match) throw new Error(`no ready line yet:\n${output}`);
          return match[1]!;
        },
        { timeout: READY_TIMEOUT_MS, interval: 100 },
      ),
      exited.then(({ code, signal }) => {
        throw new Error(`pgrelay demo exited (code ${code}, signal ${signal}) before its ready line:\n${output}`);
      }),
    ]);
    url = ready;
    baseDir = /^ {2}… cluster files in (\/\S+) /m.exec(output)?.[1] ?? '';
  }, READY_TIMEOUT_MS + 10_000);

  afterAll(async () => {
    // Only when a test failed before Ctrl-C: stop the demo, then whatever it left behind.
    if (demo && demo.exitCode === null && demo.signalCode === null) {
      demo.kill('SIGTERM');
      const stopped = await Promise.race([exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), EXIT_TIMEOUT_MS))]);
      if (!stopped) demo.kill('SIGKILL');
    }
    if (baseDir && fs.existsSync(baseDir)) {
      await killProcessesIn(baseDir);
      fs.rmSync(baseDir, { recursive: true, force: true });
    }
  }, 2 * EXIT_TIMEOUT_MS);

  it('prints a progress line per step, the node table and the ready line with the real port', () => {
    for (const step of ['initdb primary', 'start primary', 'create roles and database', 'base backup standby1', 'base backup replica1', 'base backup replica2', 'synchronous standby standby1', 'wait for streaming']) {
      expect(output).toContain(`  … ${step}\n`);
    }
    expect(output).toMatch(/^ {2}primary +primary +127\.0\.0\.1:\d+$/m);
    expect(output).toMatch(/^ {2}standby1 +standby \(sync\) +127\.0\.0\.1:\d+$/m);
    expect(output).toMatch(/^ {2}replica1 +replica \(async\) +127\.0\.0\.1:\d+$/m);
    expect(output).toMatch(/^ {2}replica2 +replica \(async\) +127\.0\.0\.1:\d+$/m);
    const port = Number(new URL(url).port);
    expect(url).toBe(`postgres://app:app@127.0.0.1:${port}/app`);
    expect(port).toBeGreaterThan(0); // --port 0: the port the OS picked, not 0
    expect(baseDir, 'the demo names its cluster directory').not.toBe('');
    expect(fs.statSync(baseDir).isDirectory()).toBe(true);
    expect(pgrepPostgres(baseDir)).toHaveLength(4);
  });

  it('answers on the admin port it prints', async () => {
    const admin = /admin (http:\/\/127\.0\.0\.1:(\d+))\/status/.exec(output);
    expect(admin).not.toBeNull();
    expect(Number(admin![2])).toBeGreaterThan(0);
    const status = await fetch(`${admin![1]}/status`);
    expect(status.status).toBe(200);
    const body = JSON.stringify(await status.json());
    for (const node of ['primary', 'standby1', 'replica1', 'replica2']) expect(body).toContain(`"${node}"`);
  });

  it('runs SELECT 1, CREATE TABLE, INSERT through psql and reads the rows back', async () => {
    expect(await psql(url, 'SELECT 1')).toEqual(['1']);
    expect(await psql(url, 'CREATE TABLE demo_items (id int PRIMARY KEY, name text NOT NULL)')).toEqual([]);
    expect(await psql(url, "INSERT INTO demo_items VALUES (1, 'one'), (2, 'two'), (3, 'three')")).toEqual([]);
    // Inside a transaction (which runs on the primary): sees the write at once.
    expect(await psql(url, 'BEGIN', 'SELECT id, name FROM demo_items ORDER BY id', 'COMMIT')).toEqual(['1|one', '2|two', '3|three']);
    // A plain read may go to a replica, which has the rows once it has replayed them.
    await vi.waitFor(async () => expect(await psql(url, 'SELECT id, name FROM demo_items ORDER BY id')).toEqual(['1|one', '2|two', '3|three']), {
      timeout: 30_000,
      interval: 200,
    });
    // The write went to the real primary (straight to it, not through pgrelay).
    const primaryPort = /^ {2}primary +primary +127\.0\.0\.1:(\d+)$/m.exec(output)![1];
    expect(await psql(`postgres://app:app@127.0.0.1:${primaryPort}/app`, 'SELECT pg_is_in_recovery(), count(*) FROM demo_items')).toEqual(['f|3']);
  });

  it('stops pgrelay and the whole cluster on Ctrl-C and leaves no process or file behind', async () => {
    expect(processesUnder(baseDir).length).toBeGreaterThanOrEqual(4);
    const pid = demo.pid!;
    demo.kill('SIGINT');
    const result = await Promise.race([
      exited,
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`pgrelay demo still running ${EXIT_TIMEOUT_MS} ms after SIGINT:\n${output}`)), EXIT_TIMEOUT_MS)),
    ]);
    expect(result).toEqual({ code: 0, signal: null });
    expect(alive(pid)).toBe(false);
    expect(output).toMatch(/pgrelay demo: stopped, nothing left running\n$/);
    expect(processesUnder(baseDir)).toEqual([]);
    expect(pgrepPostgres(baseDir)).toEqual([]);
    expect(fs.existsSync(baseDir)).toBe(false);
    // and pgrelay's port is closed
    await expect(psql(url, 'SELECT 1')).rejects.toThrow();
  });
});
