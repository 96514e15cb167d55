/**
 * The RDS "convert a single-AZ instance to Multi-AZ" workflow, as a user runs it: `pgrelay demo
 * --replicas 0 --standby 0` (a lone primary) in a process of its own, then `pgrelay cluster
 * add-standby` against its admin port. Afterwards pg_stat_replication shows the standby `sync`,
 * a commit waits for it (a frozen standby holds commits in SyncRep), commit latency through pgrelay
 * is measured and printed before and after (the Multi-AZ cost), and a `kill -9` of the primary
 * makes pgrelay fail over to the new standby without losing an acknowledged write. Ctrl-C then
 * leaves nothing behind.
 *
 * Runs dist/main.js: `npm test` builds first; after changing src/, `npm run build` before running
 * this file alone.
 */
import fs from 'node:fs';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { StatusDocument } from '../../src/admin/status.js';
import { findProcessesIn, readPostmasterPid, signalProcesses } from '../../src/local/node-processes.js';
import { DEMO_EXIT_TIMEOUT_MS, DEMO_READY_TIMEOUT_MS, startDemo, type DemoProcess } from '../support/demo-process.js';
import { Load } from '../support/failover-load.js';

const MAIN = fileURLToPath(new URL('../../dist/main.js', import.meta.url));
const WAIT = { timeout: 60_000, interval: 100 };
const COMMITS = 200;

let demo: DemoProcess;
let url: string;
let adminUrl: string;
let adminToken: string;
let baseDir = '';
let primaryPort: number;
const clients: pg.Client[] = [];

beforeAll(async () => {
  demo = await startDemo(['--replicas', '0', '--standby', '0', '--port', '0', '--admin-port', '0']);
  ({ url, adminUrl, adminToken, baseDir } = demo);
  expect(adminToken).toMatch(/^[A-Za-z0-9_-]{32}$/);
  primaryPort = Number(/^ {2}primary +primary +127\.0\.0\.1:(\d+)$/m.exec(demo.output)![1]);
}, DEMO_READY_TIMEOUT_MS + 10_000);

afterAll(async () => {
  await Promise.all(clients.map((c) => c.end().catch(() => {})));
  await demo?.cleanup(); // only when a test failed before Ctrl-C
}, 2 * DEMO_EXIT_TIMEOUT_MS);

async function connect(connectionString: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString });
  client.on('error', () => {}); // reported through the next query
  clients.push(client);
  await client.connect();
  return client;
}

/** Straight to a node of the demo's cluster as its superuser (postgres/postgres). */
async function superQuery<T>(port: number, sql: string): Promise<T[]> {
  const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', password: 'postgres', database: 'postgres' });
  await client.connect();
  try {
    return (await client.query(sql)).rows as T[];
  } finally {
    await client.end();
  }
}

async function status(): Promise<StatusDocument> {
  return (await (await fetch(`${adminUrl}/status`)).json()) as StatusDocument;
}

/** `pgrelay cluster …` against the demo's admin port. */
async function cli(...args: string[]): Promise<{ code: number | null; output: string }> {
  const child = spawn(process.execPath, [MAIN, 'cluster', ...args, '--admin', adminUrl], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PGRELAY_ADMIN_TOKEN: adminToken } });
  let text = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
  const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
  return { code, output: text };
}

interface Latency {
  medianMs: number;
  p99Ms: number;
}

/**
 * COMMITS single-row INSERT commits through pgrelay, one after another, by each client in turn
 * (interleaved, so that every client sees the same moments of a busy machine); latencies in ms.
 */
async function commitLatencies(phase: string, ...writers: pg.Client[]): Promise<Latency[]> {
  for (let i = 0; i < 20; i++) for (const client of writers) await client.query('INSERT INTO rds_commits (phase) VALUES ($1)', [`${phase} warm-up`]);
  const latencies = writers.map(() => [] as number[]);
  for (let i = 0; i < COMMITS; i++) {
    for (const [w, client] of writers.entries()) {
      const started = performance.now();
      await client.query('INSERT INTO rds_commits (phase) VALUES ($1)', [phase]);
      latencies[w]!.push(performance.now() - started);
    }
  }
  return latencies.map((list) => {
    list.sort((a, b) => a - b);
    return { medianMs: list[Math.floor(list.length / 2)]!, p99Ms: list[Math.ceil(list.length * 0.99) - 1]! };
  });
}

function describeLatency(label: string, latency: Latency): string {
  return `  ${label.padEnd(58)} median ${latency.medianMs.toFixed(2).padStart(6)} ms   p99 ${latency.p99Ms.toFixed(2).padStart(6)} ms\n`;
}

describe('single-AZ to Multi-AZ with pgrelay demo and pgrelay cluster add-standby', () => {
  let writer: pg.Client;
  let singleAz: Latency;

  it('starts single-AZ: a lone primary, no replication', async () => {
    expect(demo.output).toContain('pgrelay demo: building a local cluster (a lone primary: single-AZ)\n');
    expect(demo.output).not.toMatch(/^ {2}(standby|replica)\d/m);
    expect(demo.output).toContain(`  pgrelay cluster add-standby --admin ${adminUrl}`);
    expect((await status()).nodes.map((n) => n.name)).toEqual(['primary']);
    expect(await superQuery(primaryPort, 'SELECT application_name FROM pg_stat_replication')).toEqual([]);
    const cluster = (await (await fetch(`${adminUrl}/admin/cluster`)).json()) as { nodes: { name: string }[]; running: unknown };
    expect(cluster).toMatchObject({ nodes: [{ name: 'primary', role: 'primary', port: primaryPort }], running: null });

    writer = await connect(url);
    await writer.query('CREATE TABLE rds_commits (id bigserial PRIMARY KEY, phase text NOT NULL)');
    [singleAz] = await commitLatencies('single-AZ', writer);
  });

  it('add-standby: standby1 becomes sync in pg_stat_replication, commits wait for it, and the commit latency before and after is printed', async () => {
    const result = await cli('add-standby');
    console.log(`[rds] pgrelay cluster add-standby:\n${result.output}`);
    expect(result.code, result.output).toBe(0);
    const steps = ['check', 'slot', 'snapshot', 'start', 'streaming', 'catch-up', 'synchronous', 'pgrelay'];
    const positions = steps.map((step) => result.output.search(new RegExp(`^ {2}\\[ *[\\d.]+ s\\] ${step} `, 'm')));
    expect(positions.every((p) => p >= 0), JSON.stringify(positions)).toBe(true);
    expect([...positions].sort((a, b) => a - b)).toEqual(positions);
    expect(result.output).toMatch(/\] snapshot +snapshot done: [\d.]+ MB copied in [\d.]+ s \([\d.]+ [kMG]?B\/s\)$/m);
    expect(result.output).toContain("primary reloaded with synchronous_standby_names = 'FIRST 1 (standby1)'");
    expect(result.output).toMatch(/^done in [\d.]+ s: standby1 \(127\.0\.0\.1:\d+\) is the synchronous standby: every commit waits for it, and it is the failover target/m);

    expect(await superQuery(primaryPort, 'SELECT application_name, state, sync_state FROM pg_stat_replication')).toEqual([{ application_name: 'standby1', state: 'streaming', sync_state: 'sync' }]);
    const standby1 = (await status()).nodes.find((n) => n.name === 'standby1')!;
    expect(standby1).toMatchObject({ role: 'standby', configured_role: 'standby', health: 'up' });

    // a commit waits for the standby: frozen, it holds the commit in SyncRep until it thaws
    const standbyDir = `${baseDir}/standby1/data`;
    const standbyProcesses = findProcessesIn(standbyDir);
    expect(standbyProcesses.length).toBeGreaterThan(0);
    signalProcesses(standbyProcesses, 'SIGSTOP');
    const held = writer.query('INSERT INTO rds_commits (phase) VALUES ($1)', ['held']);
    try {
      await vi.waitFor(async () => expect(await superQuery(primaryPort, "SELECT wait_event FROM pg_stat_activity WHERE wait_event = 'SyncRep'")).toEqual([{ wait_event: 'SyncRep' }]), WAIT);
    } finally {
      signalProcesses(findProcessesIn(standbyDir), 'SIGCONT');
    }
    await held;

    // after, and at the same moments a client whose commits do not wait for the standby
    // (synchronous_commit = local): on a shared machine the before/after pair also measures
    // whatever else ran meanwhile. pgrelay refuses that setting (routing.min_synchronous_commit:
    // such a commit could be lost on failover), so that client talks to the primary directly.
    const throughRelay = await connect(url);
    await expect(throughRelay.query('SET synchronous_commit = local')).rejects.toMatchObject({ code: '42501' });
    const localCommits = await connect(`postgres://app:app@127.0.0.1:${primaryPort}/app`);
    await localCommits.query('SET synchronous_commit = local');
    const [multiAz, multiAzLocal] = await commitLatencies('Multi-AZ', writer, localCommits);
    console.log(
      `[rds] commit latency through pgrelay, ${COMMITS} single-row INSERT commits one after another per client:\n` +
        describeLatency('before: single-AZ (lone primary)', singleAz) +
        describeLatency('after: Multi-AZ, commits wait for standby1', multiAz!) +
        describeLatency('after, interleaved: synchronous_commit = local (no wait), straight to the primary', multiAzLocal!) +
        `  Multi-AZ cost: median ${(multiAz!.medianMs - singleAz.medianMs).toFixed(2)} ms against before, ` +
        `${(multiAz!.medianMs - multiAzLocal!.medianMs).toFixed(2)} ms against the interleaved local commits`,
    );
    expect(multiAz!.medianMs).toBeGreaterThan(0);
  }, 180_000);

  it('kill -9 of the primary: pgrelay fails over to standby1 and no acknowledged write is lost', async () => {
    // thawed, standby1 passes its health checks again before the primary is killed
    await vi.waitFor(async () => expect((await status()).nodes.find((n) => n.name === 'standby1')).toMatchObject({ health: 'up', role: 'standby' }), WAIT);
    const standbyPort = (await status()).nodes.find((n) => n.name === 'standby1')!.port;
    const setup = await connect(url);
    await setup.query(Load.createTableSql('rds_failover'));
    const load = new Load(url, 'rds_failover');
    let stopped = false;
    try {
      load.start(4, 2);
      await vi.waitFor(() => expect(load.acks.length).toBeGreaterThan(200), WAIT);
      const pid = readPostmasterPid(`${baseDir}/primary/data`)!;
      process.kill(pid, 'SIGKILL');
      const killedAt = performance.now();
      await vi.waitFor(async () => expect((await status()).primary).toBe('standby1'), WAIT);
      await vi.waitFor(() => expect(load.acksAfter(killedAt).filter((a) => a.port === standbyPort).length).toBeGreaterThan(20), WAIT);
      await load.stop();
      stopped = true;
      const after = await status();
      expect(after.last_failover).toMatchObject({ kind: 'failover', from: 'primary', to: 'standby1', dataLoss: false });
      // every acknowledged write is on the new primary, straight from the server
      const onStandby = await connect(`postgres://app:app@127.0.0.1:${standbyPort}/app`);
      const ids = new Set((await onStandby.query<{ id: string }>('SELECT id FROM rds_failover')).rows.map((r) => Number(r.id)));
      const lost = load.acks.filter((a) => !ids.has(a.id));
      const commits = (await onStandby.query<{ phase: string; n: number }>('SELECT phase, count(*)::int AS n FROM rds_commits GROUP BY phase ORDER BY phase')).rows;
      console.log(
        `[rds] failover to standby1: ${load.acks.length} acknowledged writes (${load.acksAfter(killedAt).length} after the kill), ${lost.length} lost; ` +
          `writer errors ${load.errorsOf('writer').length} (in flight at the kill), reader errors ${load.errorsOf('reader').length}; last_failover ${JSON.stringify(after.last_failover)}`,
      );
      expect(lost).toEqual([]);
      expect(commits).toEqual([
        { phase: 'Multi-AZ', n: 2 * COMMITS },
        { phase: 'Multi-AZ warm-up', n: 2 * 20 },
        { phase: 'held', n: 1 },
        { phase: 'single-AZ', n: COMMITS },
        { phase: 'single-AZ warm-up', n: 20 },
      ]);
      const [recovery] = (await onStandby.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r')).rows;
      expect(recovery!.r).toBe(false);
    } finally {
      if (!stopped) await load.stop();
    }
  }, 180_000);

  it('after the failover, add-standby gives the new primary a synchronous standby, and the dead former primary can be removed', async () => {
    const result = await cli('add-standby');
    console.log(`[rds] pgrelay cluster add-standby after the failover:\n${result.output}`);
    expect(result.code, result.output).toBe(0);
    const newStandby = /^done in [\d.]+ s: (\w+) \(/m.exec(result.output)?.[1];
    expect(newStandby, result.output).toBeDefined();
    const nodes = (await status()).nodes;
    const primary = nodes.find((n) => n.name === 'standby1')!;
    expect(primary.role).toBe('primary');
    // the snapshot was taken from the new primary, and the new standby is its synchronous one
    expect(await superQuery(primary.port, 'SELECT application_name, state, sync_state FROM pg_stat_replication')).toEqual([{ application_name: newStandby, state: 'streaming', sync_state: 'sync' }]);
    await vi.waitFor(async () => expect((await status()).nodes.find((n) => n.name === newStandby)).toMatchObject({ role: 'standby', health: 'up' }), WAIT);

    const removed = await cli('remove', 'primary');
    expect(removed.code, removed.output).toBe(0);
    expect((await status()).nodes.map((n) => n.name)).not.toContain('primary');
    expect(fs.existsSync(`${baseDir}/primary`)).toBe(false);
  }, 180_000);

  it('stops on Ctrl-C and leaves no process or file behind', async () => {
    const result = await demo.interrupt();
    expect(result).toEqual({ code: 0, signal: null });
    expect(findProcessesIn(baseDir)).toEqual([]);
    expect(fs.existsSync(baseDir)).toBe(false);
  }, DEMO_EXIT_TIMEOUT_MS + 10_000);
});
