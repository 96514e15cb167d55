/**
 * The RDS "create a read replica" workflow, live: a single-AZ cluster (a lone primary) with pgbench
 * (8 clients, read/write) and 4 read-only clients running through pgrelay the whole time; two read
 * replicas are added from snapshots (one through the admin API, one through the `pgrelay cluster`
 * CLI), each gets reads once caught up (inet_server_port() of reads through pgrelay), then one is
 * removed under the same load. pgbench must report zero failed transactions and no client may see
 * an error. Then two adds that fail (the new node crashes during catch-up; the primary is down)
 * must leave nothing behind. This file builds its own cluster (it adds, removes and stops nodes).
 *
 * The CLI runs from dist/: `npm test` builds first; after changing src/, `npm run build` before
 * running this file alone.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { registerClusterRoutes } from '../../src/demo-cluster-routes.js';
import type { StatusDocument } from '../../src/admin/status.js';
import { LocalCluster } from '../../src/local/cluster.js';
import type { ClusterWorkflows, WorkflowEvent } from '../../src/local/rds-workflows.js';
import { ADMIN_TOKEN, adminRequest, startRelay, type Relay } from '../support/relay.js';
import { useCleanups } from '../support/cleanups.js';

const MAIN = fileURLToPath(new URL('../../dist/main.js', import.meta.url));
const WAIT = { timeout: 90_000, interval: 100 };

const cleanups = useCleanups();
/** RDS_TEST_TRACE=1 prints each streamed event as it arrives. */
const trace = (text: string) => process.env.RDS_TEST_TRACE && process.stderr.write(`[rds trace] ${text}\n`);
let cluster: LocalCluster;
let relay: Relay;
let workflows: ClusterWorkflows;

beforeAll(async () => {
  if (!fs.existsSync(MAIN)) throw new Error(`${MAIN} is missing: run \`npm run build\` first (npm test does)`);
  cluster = await LocalCluster.create({ replicas: 0, standby: false });
  cleanups.push(() => cluster.stop());
  // failover off: the last test stops the primary, and no failover attempt may race the request
  relay = await startRelay(cluster, { pool: { size: 16 }, routing: { max_lag_ms: 1000 }, failover: { mode: 'off' } });
  cleanups.push(() => relay.stop());
  workflows = registerClusterRoutes(relay.app.admin, relay.app, cluster);
  await pgbench(['-i', '-s', '1', '-q', cluster.url('primary')]).done;
});

interface Received extends WorkflowEvent {
  /** performance.now() when the test received the line */
  receivedAt: number;
}

/** Calls the admin API and collects the streamed events (or the refusal). */
async function adminCall(method: 'POST' | 'DELETE', path: string, body?: unknown): Promise<{ status: number; events: Received[]; error?: string }> {
  const response = await adminRequest(relay.adminUrl, method, path, body);
  if (!(response.headers.get('content-type') ?? '').startsWith('application/x-ndjson')) {
    return { status: response.status, events: [], error: ((await response.json()) as { error: string }).error };
  }
  const events: Received[] = [];
  const decoder = new TextDecoder();
  let pending = '';
  for await (const chunk of response.body!) {
    pending += decoder.decode(chunk, { stream: true });
    for (let newline = pending.indexOf('\n'); newline >= 0; newline = pending.indexOf('\n')) {
      events.push({ ...(JSON.parse(pending.slice(0, newline)) as WorkflowEvent), receivedAt: performance.now() });
      trace(JSON.stringify(events.at(-1)));
      pending = pending.slice(newline + 1);
    }
  }
  return { status: response.status, events };
}

function pgbench(args: string[]): { child: ChildProcess; done: Promise<{ code: number | null; output: string }> } {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, PGCONNECT_TIMEOUT: '20' };
  const child = spawn('pgbench', args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  const done = new Promise<{ code: number | null; output: string }>((resolve) => child.once('close', (code) => resolve({ code, output })));
  return { child, done };
}

async function status(): Promise<StatusDocument> {
  return (await (await fetch(`${relay.adminUrl}/status`)).json()) as StatusDocument;
}

async function slotsOnPrimary(): Promise<string[]> {
  const rows = await cluster.query<{ slot_name: string }>('primary', 'SELECT slot_name FROM pg_replication_slots ORDER BY slot_name', [], { superuser: true });
  return rows.map((r) => r.slot_name);
}

describe('add a read replica from a snapshot, twice, and remove one, under pgbench', () => {
  it('adds replica1 (admin API) and replica2 (CLI) and removes replica1: both got reads once caught up, pgbench had zero failed transactions, no reader saw an error', async () => {
    const reads: { port: number; sentAt: number }[] = [];
    const readErrors: unknown[] = [];
    let reading = true;
    const readers = await Promise.all(
      Array.from({ length: 4 }, async () => {
        const client = new pg.Client({ connectionString: relay.url() });
        client.on('error', (error) => readErrors.push(error));
        cleanups.push(() => client.end());
        await client.connect();
        // wrapped: an async function returning the loop's promise would adopt it (and wait for it)
        return {
          loop: (async () => {
            while (reading) {
              const sentAt = performance.now();
              try {
                const { rows } = await client.query<{ port: number }>('SELECT inet_server_port() AS port');
                reads.push({ port: rows[0]!.port, sentAt });
              } catch (error) {
                readErrors.push(error);
                return;
              }
            }
          })(),
        };
      }),
    );
    const served = (port: number, after: number) => reads.filter((r) => r.sentAt > after && r.port === port).length;
    // pgbench runs until SIGALRM (its -T timer's own signal: it then stops and reports as at the end of -T)
    const bench = pgbench(['-c', '8', '-j', '2', '-T', '600', '-n', '-b', 'tpcb-like@1', '-b', 'select-only@1', relay.url()]);
    cleanups.push(async () => bench.child.kill('SIGKILL'));
    let benchResult: { code: number | null; output: string } | undefined;
    try {
      // single-AZ: the reads go to the primary
      const primaryPort = cluster.node('primary').port;
      await vi.waitFor(() => expect(served(primaryPort, 0)).toBeGreaterThan(50), WAIT);

      // 1. through the admin API
      const first = await adminCall('POST', '/admin/cluster/replicas');
      expect(first.status).toBe(200);
      const done1 = first.events.at(-1)!;
      expect(done1, JSON.stringify(first.events, null, 1)).toMatchObject({ step: 'done', ok: true, node: 'replica1', role: 'replica' });
      const steps = first.events.map((e) => e.step);
      for (const step of ['check', 'slot', 'snapshot', 'start', 'streaming', 'catch-up', 'pgrelay']) expect(steps).toContain(step);
      expect(steps.indexOf('catch-up')).toBeLessThan(steps.indexOf('pgrelay'));
      const snapshot = first.events.filter((e) => e.step === 'snapshot' && e.totalBytes !== undefined);
      expect(snapshot.length).toBeGreaterThan(0);
      expect(snapshot.at(-1)!.bytes).toBe(snapshot.at(-1)!.totalBytes);
      expect(snapshot.at(-1)!.totalBytes!).toBeGreaterThan(10 * 1024 * 1024); // pgbench scale 1 and the catalogs
      expect(snapshot.at(-1)!.bytesPerSecond!).toBeGreaterThan(0);
      const caughtUp = first.events.filter((e) => e.step === 'catch-up').at(-1)!;
      expect(caughtUp.message).toMatch(/^caught up: /);
      expect(caughtUp.lagMs === null || caughtUp.lagMs! <= 1000).toBe(true);
      const replica1 = cluster.node('replica1');
      expect(done1.port).toBe(replica1.port);
      await vi.waitFor(() => expect(served(replica1.port, done1.receivedAt)).toBeGreaterThan(50), WAIT);
      console.log(`[rds] add-replica replica1: ${first.events.map((e) => `\n  ${(e.elapsedMs / 1000).toFixed(1)} s ${e.step}: ${e.message}`).join('')}`);

      // 2. through the CLI, as a user runs it
      const cli = spawn(process.execPath, [MAIN, 'cluster', 'add-replica', '--admin', relay.adminUrl], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PGRELAY_ADMIN_TOKEN: ADMIN_TOKEN } });
      cleanups.push(async () => cli.kill('SIGKILL'));
      let cliOutput = '';
      cli.stdout!.setEncoding('utf8').on('data', (chunk: string) => (cliOutput += chunk));
      cli.stderr!.setEncoding('utf8').on('data', (chunk: string) => (cliOutput += chunk));
      const cliCode = await new Promise<number | null>((resolve) => cli.once('close', resolve));
      const cliDoneAt = performance.now();
      console.log(`[rds] pgrelay cluster add-replica:\n${cliOutput}`);
      expect(cliCode, cliOutput).toBe(0);
      expect(cliOutput).toMatch(/^pgrelay cluster add-replica \(http:\/\/127\.0\.0\.1:\d+\)$/m);
      expect(cliOutput).toMatch(/\] snapshot +snapshot done: [\d.]+ MB copied in [\d.]+ s \([\d.]+ [kMG]?B\/s\)$/m);
      expect(cliOutput).toMatch(/\] catch-up +caught up: /m);
      expect(cliOutput).toMatch(/\] pgrelay +replica2 joins pgrelay's routing table without a restart \(nodes \+replica2\)$/m);
      expect(cliOutput).toMatch(/^done in [\d.]+ s: replica2 \(127\.0\.0\.1:\d+\) is a read replica and serves reads/m);
      const replica2 = cluster.node('replica2');
      await vi.waitFor(() => expect(served(replica2.port, cliDoneAt) > 50 && served(replica1.port, cliDoneAt) > 50).toBe(true), WAIT);

      // the health checker and the lag monitor picked both up on the reload
      const withBoth = await status();
      expect(withBoth.nodes.map((n) => n.name)).toEqual(['primary', 'replica1', 'replica2']);
      for (const name of ['replica1', 'replica2']) {
        const node = withBoth.nodes.find((n) => n.name === name)!;
        expect(node).toMatchObject({ health: 'up', up: true, role: 'replica', fresh: true });
        expect(node.lag_seconds).not.toBeNull();
        expect(node.units.reads).toBeGreaterThan(0);
      }
      expect(await slotsOnPrimary()).toEqual(['replica1', 'replica2']);

      // 3. remove replica1 while the readers and pgbench go on
      const removal = await adminCall('DELETE', '/admin/cluster/nodes/replica1');
      expect(removal.status).toBe(200);
      expect(removal.events.at(-1), JSON.stringify(removal.events, null, 1)).toMatchObject({ step: 'done', ok: true, node: 'replica1' });
      console.log(`[rds] remove replica1: ${removal.events.map((e) => `\n  ${(e.elapsedMs / 1000).toFixed(1)} s ${e.step}: ${e.message}`).join('')}`);
      expect(removal.events.map((e) => e.step)).toEqual(expect.arrayContaining(['drain', 'stop', 'slot', 'cleanup', 'done']));
      const left = removal.events.find((e) => e.step === 'drain')!;
      expect(left.message).toMatch(/^replica1 leaves pgrelay's routing table \(nodes -replica1\)/);
      const afterRemoval = performance.now();
      await vi.waitFor(() => expect(served(replica2.port, afterRemoval)).toBeGreaterThan(50), WAIT);
      // no read routed after replica1 left the routing table ran there
      expect(served(replica1.port, left.receivedAt)).toBe(0);
      expect(cluster.nodes.map((n) => n.name)).toEqual(['primary', 'replica2']);
      expect(fs.existsSync(`${cluster.baseDir}/replica1`)).toBe(false);
      expect(await slotsOnPrimary()).toEqual(['replica2']);
      expect(relay.app.pools.ofNode('replica1')).toEqual([]);
    } finally {
      reading = false;
      await Promise.all(readers.map((r) => r.loop));
      bench.child.kill('SIGALRM');
      benchResult = await bench.done;
    }
    console.log(`[rds] pgbench through pgrelay across both adds and the remove:\n${benchResult.output}`);
    expect(benchResult.code, benchResult.output).toBe(0);
    expect(benchResult.output).not.toMatch(/aborted|error/i);
    expect(benchResult.output).toMatch(/^number of failed transactions: 0 \(0\.000%\)$/m);
    expect(Number(/^number of transactions actually processed: (\d+)$/m.exec(benchResult.output)?.[1])).toBeGreaterThan(100);
    expect(readErrors).toEqual([]);
    await vi.waitFor(() => expect(relay.app.frontend.clientCount).toBe(4), WAIT);
  }, 300_000);

  it('a node that crashes during catch-up is undone: out of the config, stopped, its slot dropped, its files deleted', async () => {
    const nodesBefore = relay.app.currentConfig.nodes.map((n) => n.name);
    const events: WorkflowEvent[] = [];
    const run = workflows.start('add-replica', { name: 'crashing' }, (event) => {
      events.push(event);
      // the new node has started and streams: kill -9 it before its catch-up is measured
      if (event.step === 'streaming' && event.port !== undefined) process.kill(cluster.postmasterPid('crashing')!, 'SIGKILL');
    });
    const last = await run.done;
    console.log(`[rds] add-replica crashing (kill -9 once it streams): ${events.map((e) => `\n  ${(e.elapsedMs / 1000).toFixed(1)} s ${e.step}: ${e.message}`).join('')}`);
    expect(last, JSON.stringify(events, null, 1)).toMatchObject({ step: 'failed', ok: false, node: 'crashing' });
    expect(last.error).toMatch(/^crashing \(127\.0\.0\.1:\d+\) does not answer: |^primary does not stream to crashing/);
    expect(events.map((e) => e.step)).toContain('rollback');
    expect(relay.app.currentConfig.nodes.map((n) => n.name)).toEqual(nodesBefore);
    expect(relay.app.topology.node('crashing')).toBeUndefined();
    expect(cluster.nodes.map((n) => n.name)).toEqual(['primary', 'replica2']);
    expect(fs.existsSync(`${cluster.baseDir}/crashing`)).toBe(false);
    expect(await slotsOnPrimary()).toEqual(['replica2']);
    expect(workflows.running).toBeUndefined();
  }, 120_000);

  it('refuses what it can judge up front, and fails clearly when the primary is down, leaving nothing behind', async () => {
    expect(await adminCall('POST', '/admin/cluster/replicas', { name: 'replica2' })).toMatchObject({ status: 409, error: 'a node named replica2 already exists' });
    expect(await adminCall('POST', '/admin/cluster/standby', { name: 'Standby-A' })).toMatchObject({ status: 400, error: expect.stringMatching(/^invalid node name "Standby-A"/) });
    expect(await adminCall('DELETE', '/admin/cluster/nodes/primary')).toMatchObject({ status: 409, error: expect.stringMatching(/^primary is the primary/) });
    expect(await adminCall('DELETE', '/admin/cluster/nodes/nope')).toMatchObject({ status: 404, error: expect.stringMatching(/^no node named "nope"/) });

    const nodesBefore = relay.app.currentConfig.nodes.map((n) => n.name);
    const entries = fs.readdirSync(cluster.baseDir).sort();
    await cluster.stopNode('primary');
    const add = await adminCall('POST', '/admin/cluster/replicas');
    expect(add.status).toBe(200);
    expect(add.events.at(-1)).toMatchObject({ step: 'failed', ok: false, node: 'replica1' });
    expect(add.events.at(-1)!.error).toMatch(/^the primary primary \(127\.0\.0\.1:\d+\) is unreachable: /);
    expect(relay.app.currentConfig.nodes.map((n) => n.name)).toEqual(nodesBefore);
    expect(cluster.nodes.map((n) => n.name)).toEqual(['primary', 'replica2']);
    expect(fs.readdirSync(cluster.baseDir).sort()).toEqual(entries);
  }, 60_000);
});
