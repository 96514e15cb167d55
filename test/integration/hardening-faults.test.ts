import fc from 'fast-check';
import pg from 'pg';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { LocalCluster } from '../../src/local/cluster.js';
import { dataRow, errorFields, RawClient, serialize, type BackendMessage } from '../support/protocol-client.js';
import { startRelay, type Relay } from '../support/relay.js';
import { useCleanups } from '../support/cleanups.js';

// Server faults under a live pgrelay, on a cluster of its own (primary + two async replicas):
// a replica that crashes in the middle of a result, a replica that goes silent (SIGSTOP), a
// replica that restarts, and clients that vanish in the middle of transactions. pgrelay's
// health and lag monitoring log in as the superuser, so every pg_stat_activity row of the app
// user is a pgrelay data-path server connection.
const BOUND_MS = 60_000;
const POOL_SIZE = 6;
const cleanups = useCleanups();
let cluster: LocalCluster;
let relay: Relay;

beforeAll(async () => {
  cluster = await LocalCluster.create({ replicas: 2, standby: false });
  cleanups.push(() => cluster.stop());
  await cluster.query('primary', 'CREATE TABLE leak_t (id serial PRIMARY KEY, client int NOT NULL, note text)');
  relay = await startRelay(cluster, {
    pool: { size: POOL_SIZE, checkout_timeout_ms: 30_000, connect_timeout_ms: 3000 },
    routing: { balance: 'round_robin', max_lag_ms: 60_000, consistency: 'eventual' },
    health: { interval_ms: 500, timeout_ms: 1000, failures: 3, user: cluster.superuser, password: cluster.superuserPassword },
  });
  cleanups.push(() => relay.stop());
  await waitAllUp();
});

const login = () => ({ user: cluster.user, password: cluster.password, database: cluster.database });
const nameOfPort = (port: number) => cluster.nodes.find((n) => n.port === port)?.name ?? `port ${port}`;

async function waitAllUp(): Promise<void> {
  await vi.waitFor(
    () => {
      for (const node of cluster.nodes) expect(relay.app.topology.node(node.name), node.name).toMatchObject({ up: true });
    },
    { timeout: BOUND_MS, interval: 100 },
  );
}

/** A one-shot client through pgrelay; registered for cleanup. */
async function connect(): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: relay.url() });
  client.on('error', () => undefined);
  cleanups.push(() => client.end());
  await client.connect();
  return client;
}

/** Reads that must all succeed; returns the node names that served them. */
async function reads(client: pg.Client, n: number): Promise<string[]> {
  const served: string[] = [];
  for (let i = 0; i < n; i++) served.push(nameOfPort((await client.query<{ port: number }>('SELECT inet_server_port() AS port')).rows[0]!.port));
  return served;
}

function errorsIn(messages: BackendMessage[]): Map<string, string>[] {
  return messages.filter((m) => m.type === 'E').map((m) => errorFields(m.body));
}

/** Waits for the first DataRow of a result; fails (instead of waiting forever) on an error. */
async function firstRow(client: RawClient): Promise<BackendMessage> {
  for (;;) {
    const m = await client.next();
    if (m.type === 'D') return m;
    if (m.type === 'E' || m.type === 'Z') throw new Error(`no row: ${m.type} ${m.type === 'E' ? JSON.stringify([...errorFields(m.body)]) : ''}`);
  }
}

/** A DataRow of the crash query (pid, port, g): three integer fields filling the body exactly. */
function checkRow(body: Buffer): void {
  expect(body.readInt16BE(0)).toBe(3);
  let at = 2;
  for (let i = 0; i < 3; i++) {
    const length = body.readInt32BE(at);
    at += 4;
    expect(body.toString('latin1', at, at + length)).toMatch(/^\d+$/);
    at += length;
  }
  expect(at).toBe(body.length);
}

/** Messages until ReadyForQuery or until pgrelay closes the connection (bounded); rows are checked, not kept. */
async function untilReadyOrClosed(client: RawClient): Promise<{ messages: BackendMessage[]; closed: boolean }> {
  const messages: BackendMessage[] = [];
  const deadline = Date.now() + BOUND_MS;
  for (;;) {
    if (Date.now() > deadline) throw new Error('no ReadyForQuery and no close from pgrelay');
    let m: BackendMessage;
    try {
      let timer: NodeJS.Timeout | undefined;
      const next = await Promise.race([client.next(), new Promise<'wait'>((resolve) => (timer = setTimeout(() => resolve('wait'), 1000)))]);
      clearTimeout(timer);
      if (next === 'wait') continue;
      m = next;
    } catch {
      return { messages, closed: true };
    }
    if (m.type === 'D') checkRow(m.body);
    else messages.push(m);
    if (m.type === 'Z') return { messages, closed: false };
  }
}

describe('a replica that crashes in the middle of a result', () => {
  let victim: string;

  it('gives the client a clear 08006 error, and its next reads go elsewhere', async () => {
    const client = await RawClient.connect(relay.port, login());
    cleanups.push(async () => client.destroy());
    client.send(serialize.query('SELECT pg_backend_pid() AS pid, inet_server_port() AS port, g FROM generate_series(1, 50000000) g'));
    const first = await firstRow(client);
    const [pid, port] = dataRow(first.body).map(Number) as [number, number];
    victim = nameOfPort(port);
    expect(['replica1', 'replica2']).toContain(victim);
    // the node crashes: its postmaster and the backend streaming this result die at once
    await cluster.signalNode(victim, 'SIGKILL');
    process.kill(pid, 'SIGKILL');
    const { messages, closed } = await untilReadyOrClosed(client);
    // every row that reached the client is intact (checkRow); what follows depends on where the
    // stream broke: between messages the client gets ERROR 08006 and ReadyForQuery and stays
    // connected; inside a message nothing can follow the partial message, so its connection ends
    // (as if the server had died under it: "server closed the connection unexpectedly")
    const errors = errorsIn(messages);
    if (closed) {
      expect(messages.map((m) => m.type)).toEqual([]);
    } else {
      expect(messages.map((m) => m.type)).toEqual(['E', 'Z']);
      expect([errors[0]!.get('S'), errors[0]!.get('C')]).toEqual(['ERROR', '08006']);
      expect(errors[0]!.get('M')).toContain(`node ${victim}`);
      const next = await client.query('SELECT inet_server_port()');
      expect(errorsIn(next)).toEqual([]);
      expect(Number(dataRow(next.find((m) => m.type === 'D')!.body)[0])).not.toBe(port);
    }
    console.log(`[hardening] crash mid-result on ${victim}: ${closed ? 'broke inside a message: client connection closed, no bytes after the partial message' : `ERROR 08006 "${errors[0]!.get('M')}", client kept`}`);
    client.destroy();
    // a new client's reads: none fails, none lands on the dead node
    const other = await connect();
    const served = await reads(other, 20);
    expect(served).not.toContain(victim);
    await vi.waitFor(() => expect(relay.app.topology.node(victim)!.up).toBe(false), { timeout: BOUND_MS });
  });

  it('takes the node back once it runs again: its pool recovers', async () => {
    await cluster.startNode(victim);
    await vi.waitFor(() => expect(relay.app.topology.node(victim)!.up).toBe(true), { timeout: BOUND_MS, interval: 100 });
    const client = await connect();
    await vi.waitFor(async () => expect(await reads(client, 6)).toContain(victim), { timeout: BOUND_MS, interval: 200 });
    const served = await reads(client, 30);
    expect(new Set(served)).toEqual(new Set(['replica1', 'replica2']));
  });
});

describe('a replica that goes silent (SIGSTOP)', () => {
  it('does not hang the reads in flight on it forever, and new reads move away', async () => {
    const silent = 'replica2';
    // enough sleepers that round robin puts some on each replica
    const sleepers = await Promise.all(Array.from({ length: 4 }, () => connect()));
    const outcomes = sleepers.map((c) =>
      c.query<{ port: number }>('SELECT pg_sleep(6), inet_server_port() AS port').then(
        (r) => ({ ok: true as const, node: nameOfPort(r.rows[0]!.port), at: performance.now() }),
        (e: { code?: string; message: string }) => ({ ok: false as const, code: e.code, message: e.message, at: performance.now() }),
      ),
    );
    await vi.waitFor(
      async () => {
        const rows = await cluster.query(silent, "SELECT 1 FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(6)%' AND state = 'active'", [], { superuser: true, database: 'postgres' });
        expect(rows.length).toBeGreaterThan(0);
      },
      { timeout: BOUND_MS, interval: 50 },
    );
    const stoppedAt = performance.now();
    await cluster.signalNode(silent, 'SIGSTOP');
    cleanups.push(() => cluster.signalNode(silent, 'SIGCONT'));

    await vi.waitFor(() => expect(relay.app.topology.node(silent)!.up).toBe(false), { timeout: BOUND_MS, interval: 100 });
    const downAfterMs = performance.now() - stoppedAt;
    // while it is stopped, new reads succeed elsewhere
    const reader = await connect();
    expect(await reads(reader, 20)).not.toContain(silent);

    let timer: NodeJS.Timeout | undefined;
    const settled = await Promise.race([Promise.all(outcomes), new Promise<'hung'>((resolve) => (timer = setTimeout(() => resolve('hung'), BOUND_MS)))]);
    clearTimeout(timer);
    expect(settled, 'reads in flight on the silent replica are still hanging').not.toBe('hung');
    const results = settled as Awaited<(typeof outcomes)[number]>[];
    const failed = results.filter((r) => !r.ok);
    console.log(
      `[hardening] SIGSTOP ${silent}: marked down after ${downAfterMs.toFixed(0)} ms; in-flight reads: ` +
        results.map((r) => (r.ok ? `ok on ${r.node}` : `${r.code} after ${(r.at - stoppedAt).toFixed(0)} ms ("${r.message}")`)).join('; '),
    );
    // the reads in flight there had no byte of their answer yet: they ran again on another node
    expect(failed).toEqual([]);
    for (const r of results) if (r.ok) expect(r.node).not.toBe(silent);
  }, 180_000);

  it('uses the replica again after SIGCONT', async () => {
    await cluster.signalNode('replica2', 'SIGCONT');
    await vi.waitFor(() => expect(relay.app.topology.node('replica2')!.up).toBe(true), { timeout: BOUND_MS, interval: 100 });
    const client = await connect();
    await vi.waitFor(async () => expect(await reads(client, 6)).toContain('replica2'), { timeout: BOUND_MS, interval: 200 });
  });
});

interface Scenario {
  /** where the client disappears */
  ending: 'commit' | 'rollback' | 'vanish-idle-in-transaction' | 'vanish-mid-statement' | 'vanish-mid-message' | 'vanish-mid-result' | 'vanish-mid-read' | 'vanish-after-error';
  inserts: number;
}

describe('clients that vanish in the middle of transactions', () => {
  it('leaks no server connection and leaves no transaction open: abandoned work is rolled back', async () => {
    const appConnections = async () => {
      const byNode: Record<string, { state: string; n: number }[]> = {};
      for (const node of cluster.nodes) {
        byNode[node.name] = await cluster.query(node.name, "SELECT coalesce(state, '') AS state, count(*)::int AS n FROM pg_stat_activity WHERE usename = $1 GROUP BY 1 ORDER BY 1", [cluster.user], { superuser: true, database: 'postgres' });
      }
      return byNode;
    };
    const poolStats = (node: string) => relay.app.pools.ofNode(node).reduce((s, p) => ({ idle: s.idle + p.stats().idle, busy: s.busy + p.stats().active + p.stats().connecting }), { idle: 0, busy: 0 });
    // clients of the tests above stay connected (idle) until the end of the file
    const clientsBefore = relay.app.frontend.clientCount;
    const before = await appConnections();
    console.log(`[hardening] app-user server connections before: ${JSON.stringify(before)}`);

    const seed = Date.now() % 1_000_000;
    const scenarios = fc.sample(
      fc.record({
        ending: fc.constantFrom<Scenario['ending']>('commit', 'rollback', 'vanish-idle-in-transaction', 'vanish-mid-statement', 'vanish-mid-message', 'vanish-mid-result', 'vanish-mid-read', 'vanish-after-error'),
        inserts: fc.integer({ min: 1, max: 3 }),
      }),
      { numRuns: 80, seed },
    );
    const committed = new Set<number>();
    const attempted = new Set<number>();
    const run = async (scenario: Scenario, index: number) => {
      const client = await RawClient.connect(relay.port, login());
      try {
        const exec = async (sql: string) => {
          const answer = await client.query(sql);
          const error = errorsIn(answer)[0];
          if (error) throw new Error(`${error.get('C')} ${error.get('M')}`);
          return answer;
        };
        if (scenario.ending === 'vanish-mid-read') {
          client.send(serialize.query('SELECT g FROM generate_series(1, 5000000) g'));
          await firstRow(client);
          return;
        }
        await exec('BEGIN');
        const mine: number[] = [];
        for (let i = 0; i < scenario.inserts; i++) {
          const answer = await exec(`INSERT INTO leak_t (client, note) VALUES (${index}, '${scenario.ending}') RETURNING id`);
          mine.push(Number(dataRow(answer.find((m) => m.type === 'D')!.body)[0]));
        }
        for (const id of mine) attempted.add(id);
        switch (scenario.ending) {
          case 'commit':
            await exec('COMMIT');
            for (const id of mine) committed.add(id);
            return;
          case 'rollback':
            await exec('ROLLBACK');
            return;
          case 'vanish-idle-in-transaction':
            return;
          case 'vanish-mid-statement':
            client.send(serialize.query('SELECT pg_sleep(0.5)'));
            await new Promise((resolve) => setTimeout(resolve, 50));
            return;
          case 'vanish-mid-message': {
            const q = serialize.query(`INSERT INTO leak_t (client, note) VALUES (${index}, 'half')`);
            client.send(q.subarray(0, q.length - 7));
            return;
          }
          case 'vanish-mid-result':
            client.send(serialize.query('SELECT g FROM generate_series(1, 5000000) g'));
            await firstRow(client);
            return;
          case 'vanish-after-error':
            expect(errorsIn(await client.query('SELECT 1/0'))).toHaveLength(1);
            return;
        }
      } finally {
        client.destroy();
      }
    };
    for (let wave = 0; wave < scenarios.length; wave += 16) {
      const started = performance.now();
      await Promise.all(scenarios.slice(wave, wave + 16).map((s, i) => run(s, wave + i)));
      console.log(`[hardening] wave ${wave / 16 + 1}: ${(performance.now() - started).toFixed(0)} ms`);
    }

    await vi.waitFor(() => expect(relay.app.frontend.clientCount).toBe(clientsBefore), { timeout: BOUND_MS });
    await vi.waitFor(
      async () => {
        const after = await appConnections();
        for (const node of cluster.nodes) {
          const { idle, busy } = poolStats(node.name);
          expect(busy, `${node.name}: connections lent by pgrelay's pools`).toBe(0);
          // the server's view: exactly pgrelay's idle pool connections, none in a transaction
          expect(after[node.name], node.name).toEqual(idle > 0 ? [{ state: 'idle', n: idle }] : []);
          expect(idle).toBeLessThanOrEqual(POOL_SIZE);
        }
      },
      { timeout: BOUND_MS, interval: 200 },
    );
    // the database holds exactly the committed rows: every abandoned transaction was rolled back
    const rows = await cluster.query<{ id: number }>('primary', 'SELECT id FROM leak_t ORDER BY id');
    expect(new Set(rows.map((r) => r.id))).toEqual(committed);
    const endings = scenarios.reduce<Record<string, number>>((acc, s) => ({ ...acc, [s.ending]: (acc[s.ending] ?? 0) + 1 }), {});
    console.log(`[hardening] ${scenarios.length} vanishing clients (seed ${seed}): ${JSON.stringify(endings)}; ${committed.size} rows committed, ${attempted.size - committed.size} rolled back; after: ${JSON.stringify(await appConnections())}`);
    expect(attempted.size).toBeGreaterThan(committed.size);

    // and once pgrelay stops, no connection of the app user is left on any node
    const stopping = performance.now();
    await relay.stop();
    console.log(`[hardening] pgrelay stopped in ${(performance.now() - stopping).toFixed(0)} ms`);
    await vi.waitFor(
      async () => {
        const after = await appConnections();
        for (const node of cluster.nodes) expect(after[node.name], node.name).toEqual([]);
      },
      { timeout: BOUND_MS, interval: 200 },
    );
  }, 300_000);
});
