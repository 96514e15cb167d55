/**
 * `pgrelay demo` (what `npm start` runs), as a user runs it: the built CLI in a process of its own,
 * psql through the printed URL, Ctrl-C (SIGINT), and nothing left behind. Runs dist/main.js, which
 * `npm test` builds first (pretest); after changing src/, `npm run build` before running this file alone.
 */
import { execFile, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { DEMO_EXIT_TIMEOUT_MS, DEMO_READY_TIMEOUT_MS, startDemo, type DemoProcess } from '../support/demo-process.js';

const run = promisify(execFile);

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
  let demo: DemoProcess;
  let url: string;
  let baseDir: string;

  beforeAll(async () => {
    demo = await startDemo(['--port', '0', '--admin-port', '0']);
    ({ url, baseDir } = demo);
  }, DEMO_READY_TIMEOUT_MS + 10_000);

  // only when a test failed before Ctrl-C
  afterAll(() => demo?.cleanup(), 2 * DEMO_EXIT_TIMEOUT_MS);

  it('prints a progress line per step, the node table and the ready line with the real port', () => {
    for (const step of ['initdb primary', 'start primary', 'create roles and database', 'base backup standby1', 'base backup replica1', 'base backup replica2', 'synchronous standby standby1', 'wait for streaming']) {
      expect(demo.output).toContain(`  … ${step}\n`);
    }
    expect(demo.output).toMatch(/^ {2}primary +primary +127\.0\.0\.1:\d+$/m);
    expect(demo.output).toMatch(/^ {2}standby1 +standby \(sync\) +127\.0\.0\.1:\d+$/m);
    expect(demo.output).toMatch(/^ {2}replica1 +replica \(async\) +127\.0\.0\.1:\d+$/m);
    expect(demo.output).toMatch(/^ {2}replica2 +replica \(async\) +127\.0\.0\.1:\d+$/m);
    const port = Number(new URL(url).port);
    expect(url).toBe(`postgres://app:app@127.0.0.1:${port}/app`);
    expect(port).toBeGreaterThan(0); // --port 0: the port the OS picked, not 0
    expect(baseDir, 'the demo names its cluster directory').not.toBe('');
    expect(fs.statSync(baseDir).isDirectory()).toBe(true);
    expect(pgrepPostgres(baseDir)).toHaveLength(4);
  });

  it('answers on the admin port it prints', async () => {
    const admin = /admin (http:\/\/127\.0\.0\.1:(\d+))\/status/.exec(demo.output);
    expect(admin).not.toBeNull();
    expect(Number(admin![2])).toBeGreaterThan(0);
    const status = await fetch(`${admin![1]}/status`);
    expect(status.status).toBe(200);
    const body = JSON.stringify(await status.json());
    for (const node of ['primary', 'standby1', 'replica1', 'replica2']) expect(body).toContain(`"${node}"`);
  });

  it('prints an admin token of its own: state-changing admin requests need it', async () => {
    expect(demo.adminToken).toMatch(/^[A-Za-z0-9_-]{32}$/);
    const reload = (authorization?: string) =>
      fetch(`${demo.adminUrl}/admin/reload`, { method: 'POST', headers: { 'content-type': 'application/json', ...(authorization ? { authorization } : {}) } });
    expect((await reload()).status).toBe(401);
    expect((await reload('Bearer wrong-token-wrong-token')).status).toBe(401);
    // accepted: the demo has no config file to re-read, which is the answer past the token check
    const accepted = await reload(`Bearer ${demo.adminToken}`);
    expect(accepted.status).toBe(409);
    expect(JSON.stringify(await accepted.json())).toContain('not started from a config file');
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
    const primaryPort = /^ {2}primary +primary +127\.0\.0\.1:(\d+)$/m.exec(demo.output)![1];
    expect(await psql(`postgres://app:app@127.0.0.1:${primaryPort}/app`, 'SELECT pg_is_in_recovery(), count(*) FROM demo_items')).toEqual(['f|3']);
  });

  it('stops pgrelay and the whole cluster on Ctrl-C and leaves no process or file behind', async () => {
    expect(processesUnder(baseDir).length).toBeGreaterThanOrEqual(4);
    const pid = demo.child.pid!;
    const result = await demo.interrupt();
    expect(result).toEqual({ code: 0, signal: null });
    expect(alive(pid)).toBe(false);
    expect(demo.output).toMatch(/pgrelay demo: stopped, nothing left running\n$/);
    expect(processesUnder(baseDir)).toEqual([]);
    expect(pgrepPostgres(baseDir)).toEqual([]);
    expect(fs.existsSync(baseDir)).toBe(false);
    // and pgrelay's port is closed
    await expect(psql(url, 'SELECT 1')).rejects.toThrow();
  });
});
