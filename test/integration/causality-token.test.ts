import { execFile } from 'node:child_process';
import pg from 'pg';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it, onTestFinished, vi } from 'vitest';
import { formatLsn, parseLsn } from '../../src/cluster/lsn.js';
import { LocalCluster } from '../../src/local/cluster.js';
import { startRelay, type Relay } from '../support/relay.js';
import { setApplyDelay } from '../support/apply-delay.js';

// The causality token (issue #17): `SHOW pgrelay.last_write_lsn` answered by pgrelay, and reads
// that carry `/* pgrelay:after_lsn=X/Y */`. A cluster of our own whose two async replicas apply
// commits 200 ms late (recovery_min_apply_delay): a read on a replica right after a write misses
// it, unless the read waits for a replica that has replayed the token's position.

const APPLY_DELAY = '200ms';

let cluster: LocalCluster;
const ports: Record<string, number> = {};
let nextId = 1;

beforeAll(async () => {
  cluster = await LocalCluster.create({ replicas: 2, standby: false });
  for (const name of ['primary', 'replica1', 'replica2']) ports[name] = cluster.node(name).port;
  await cluster.query('primary', 'CREATE TABLE tok (id bigint PRIMARY KEY, v text)');
  for (const name of ['replica1', 'replica2']) {
    await cluster.waitForReplay(name);
    await setApplyDelay(cluster, name, APPLY_DELAY);
  }
}, 120_000);

afterAll(async () => {
  await cluster?.stop();
});

async function relayWith(routing: Record<string, unknown> = {}): Promise<Relay> {
  const relay = await startRelay(cluster, { routing: { consistency: 'session', ...routing } });
  onTestFinished(() => relay.stop());
  await vi.waitFor(() => expect(relay.app.topology.node('replica1')!.fresh && relay.app.topology.node('replica2')!.fresh).toBe(true), { timeout: 10_000, interval: 50 });
  return relay;
}

async function client(url: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url });
  c.on('error', () => undefined);
  onTestFinished(() => c.end().catch(() => undefined));
  await c.connect();
  return c;
}

async function primaryLsn(): Promise<bigint> {
  const [row] = await cluster.query<{ lsn: string }>('primary', 'SELECT pg_current_wal_insert_lsn()::text AS lsn', [], { superuser: true, database: 'postgres' });
  return parseLsn(row!.lsn);
}

const SHOW = 'SHOW pgrelay.last_write_lsn';

/** Units pgrelay sent to any server so far (pgrelay_queries_total). */
async function unitsSent(relay: Relay): Promise<number> {
  return (await relay.app.metrics.queries.get()).values.reduce((sum, v) => sum + v.value, 0);
}

describe('SHOW pgrelay.last_write_lsn', () => {
  it('answers 0/0 before a write, then a position at or past the write, through the simple and the extended protocol (node-postgres)', async () => {
    const relay = await relayWith();
    const c = await client(relay.url());
    const simple = await c.query(SHOW);
    expect(simple.command).toBe('SHOW');
    expect(simple.fields.map((f) => [f.name, f.dataTypeID])).toEqual([['last_write_lsn', 25]]);
    expect(simple.rows).toEqual([{ last_write_lsn: '0/0' }]);
    // the same shape PostgreSQL gives a SHOW (a text column), asked of a server directly
    const direct = await client(`postgres://${cluster.user}:${cluster.password}@127.0.0.1:${ports.primary}/${cluster.database}`);
    expect((await direct.query('SHOW synchronous_commit')).fields.map((f) => f.dataTypeID)).toEqual([25]);

    const before = await primaryLsn();
    await c.query('INSERT INTO tok (id, v) VALUES ($1, $2)', [nextId++, 'a']);
    const after = await primaryLsn();
    const token = (await c.query<{ last_write_lsn: string }>(SHOW)).rows[0]!.last_write_lsn;
    expect(token).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
    expect(parseLsn(token)).toBeGreaterThan(before);
    expect(parseLsn(token)).toBeLessThanOrEqual(await primaryLsn());
    expect(after).toBeGreaterThan(before);

    // extended protocol: unnamed (Parse/Bind/Describe portal/Execute/Sync) and named, case-insensitive
    const unnamed = await c.query({ text: SHOW, queryMode: 'extended' } as pg.QueryConfig);
    expect(unnamed.command).toBe('SHOW');
    expect(unnamed.rows).toEqual([{ last_write_lsn: token }]);
    const unitsBefore = await unitsSent(relay);
    for (let i = 0; i < 3; i++) {
      const named = await c.query<{ last_write_lsn: string }>({ name: 'token', text: 'show PGRELAY.Last_Write_LSN' });
      expect(named.rows).toEqual([{ last_write_lsn: token }]);
    }
    const quoted = await c.query<{ last_write_lsn: string }>('/* c */ SHOW "pgrelay.last_write_lsn";');
    expect(quoted.rows[0]!.last_write_lsn).toBe(token);
    // nothing of it went to a server
    expect(await unitsSent(relay)).toBe(unitsBefore);
    // the session goes on
    expect((await c.query<{ n: number }>('SELECT count(*)::int AS n FROM tok')).rows[0]!.n).toBeGreaterThan(0);
  }, 60_000);

  it('works inside a transaction (answered in order with the server\'s answers) and the transaction commits', async () => {
    const relay = await relayWith();
    const c = await client(relay.url());
    const id = nextId++;
    await c.query('INSERT INTO tok (id, v) VALUES ($1, $2)', [id, 'first']);
    const token = (await c.query<{ last_write_lsn: string }>(SHOW)).rows[0]!.last_write_lsn;
    await c.query('BEGIN');
    await c.query('UPDATE tok SET v = $2 WHERE id = $1', [id, 'second']);
    // inside the transaction: the last *acknowledged* write's position (the UPDATE has not committed)
    expect((await c.query<{ last_write_lsn: string }>(SHOW)).rows[0]!.last_write_lsn).toBe(token);
    expect((await c.query<{ last_write_lsn: string }>({ text: SHOW, queryMode: 'extended' } as pg.QueryConfig)).rows[0]!.last_write_lsn).toBe(token);
    expect((await c.query<{ v: string }>('SELECT v FROM tok WHERE id = $1', [id])).rows[0]!.v).toBe('second');
    await c.query('COMMIT');
    const later = (await c.query<{ last_write_lsn: string }>(SHOW)).rows[0]!.last_write_lsn;
    expect(parseLsn(later)).toBeGreaterThan(parseLsn(token));
    // a failed transaction: the server answers, as PostgreSQL does (25P02)
    await c.query('BEGIN');
    await expect(c.query('SELECT 1/0')).rejects.toMatchObject({ code: '22012' });
    await expect(c.query(SHOW)).rejects.toMatchObject({ code: '25P02' });
    await c.query('ROLLBACK');
    expect((await c.query<{ last_write_lsn: string }>(SHOW)).rows[0]!.last_write_lsn).toBe(later);
  }, 60_000);

  it('postgres.js (extended protocol for everything, prepared statements, pipelined in a transaction)', async () => {
    const relay = await relayWith();
    const sql = postgres(relay.url(), { max: 1, onnotice: () => undefined });
    onTestFinished(() => sql.end({ timeout: 1 }).catch(() => undefined));
    expect(await sql`SHOW pgrelay.last_write_lsn`).toMatchObject([{ last_write_lsn: '0/0' }]);
    const id = nextId++;
    await sql`INSERT INTO tok (id, v) VALUES (${id}, 'pjs')`;
    const [first] = await sql<{ last_write_lsn: string }[]>`SHOW pgrelay.last_write_lsn`;
    expect(parseLsn(first!.last_write_lsn)).toBeGreaterThan(0n);
    const [again] = await sql<{ last_write_lsn: string }[]>`SHOW pgrelay.last_write_lsn`;
    expect(again!.last_write_lsn).toBe(first!.last_write_lsn);
    expect((await sql.unsafe(SHOW))[0]).toEqual({ last_write_lsn: first!.last_write_lsn });
    // SQL DEALLOCATE of the statement held by pgrelay: answered once, then the name is unknown (26000, from the server)
    const c = await client(relay.url());
    await c.query({ name: 'tok_show', text: SHOW });
    expect((await c.query('DEALLOCATE tok_show')).command).toBe('DEALLOCATE');
    await expect(c.query('DEALLOCATE tok_show')).rejects.toMatchObject({ code: '26000' });
    const inside = await sql.begin(async (tx) => {
      const [a, b, c] = await Promise.all([tx`SELECT v FROM tok WHERE id = ${id}`, tx`SHOW pgrelay.last_write_lsn`, tx`SELECT 2 AS two`]);
      return { a, b, c };
    });
    expect(inside.a).toEqual([{ v: 'pjs' }]);
    expect(inside.b).toEqual([{ last_write_lsn: first!.last_write_lsn }]);
    expect(inside.c).toEqual([{ two: 2 }]);
  }, 60_000);

  it('psql: the token read with \\gset and carried into a hinted read in one script', async () => {
    const relay = await relayWith({ fence_wait_ms: 1000 });
    const id = nextId++;
    const script = [
      'SHOW pgrelay.last_write_lsn;',
      `INSERT INTO tok (id, v) VALUES (${id}, 'psql');`,
      'SHOW pgrelay.last_write_lsn \\gset',
      `SELECT '/* pgrelay:after_lsn=' || :'last_write_lsn' || ' */ SELECT v, inet_server_port() <> ${ports.primary} AS on_replica FROM tok WHERE id = ${id}' AS q \\gset`,
      ':q;',
      '',
    ].join('\n');
    const out = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      const child = execFile('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '--no-align', '--tuples-only', relay.url()], { timeout: 60_000 }, (error, stdout, stderr) =>
        resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      );
      child.stdin!.end(script);
    });
    expect(out.stderr).toBe('');
    expect(out.code).toBe(0);
    // the first SHOW (before any write), then the hinted read: the row, from a replica that has it
    expect(out.stdout.trim().split('\n')).toEqual(['0/0', 'psql|t']);
  }, 60_000);

  it('SHOW pgrelay.unknown is 42704 as in PostgreSQL, and the session goes on', async () => {
    const relay = await relayWith();
    const c = await client(relay.url());
    await expect(c.query('SHOW pgrelay.unknown')).rejects.toMatchObject({ code: '42704' });
    await expect(c.query({ text: 'SHOW pgrelay.unknown', queryMode: 'extended' } as pg.QueryConfig)).rejects.toMatchObject({ code: '42704' });
    expect((await c.query(SHOW)).rows).toEqual([{ last_write_lsn: '0/0' }]);
  }, 60_000);
});

describe('/* pgrelay:after_lsn=X/Y */', () => {
  it('a malformed position is 22P02, as pg_lsn input, through both protocols; the session goes on', async () => {
    const relay = await relayWith();
    const c = await client(relay.url());
    for (const bad of ['0/XYZ', '16B3748', '1/2/3', '123456789/0']) {
      const text = `/* pgrelay:after_lsn=${bad} */ SELECT count(*) FROM tok`;
      await expect(c.query(text)).rejects.toMatchObject({ code: '22P02', message: `invalid input syntax for type pg_lsn: "${bad}"` });
      await expect(c.query({ text: `${text} WHERE id = $1`, values: [1] })).rejects.toMatchObject({ code: '22P02' });
    }
    // in a transaction: the transaction fails as it would in PostgreSQL
    await c.query('BEGIN');
    await expect(c.query('SELECT 1 /* pgrelay:after_lsn=nope */')).rejects.toMatchObject({ code: '22P02' });
    await expect(c.query('SELECT 1')).rejects.toMatchObject({ code: '25P02' });
    await c.query('ROLLBACK');
    expect((await c.query<{ one: number }>('SELECT 1 AS one /* pgrelay:after_lsn=0/1 */')).rows).toEqual([{ one: 1 }]);
  }, 60_000);

  it('a write on connection A, its token read with SHOW, a read on connection B (another pgrelay) with after_lsn sees the row: never stale', async () => {
    // replicas apply 200 ms late: B's read waits (fence_wait_ms) for a replica past the token
    const relayA = await relayWith({ fence_wait_ms: 1000 });
    const relayB = await relayWith({ fence_wait_ms: 1000 });
    const a = await client(relayA.url());
    const b = await client(relayB.url());
    const ITERATIONS = 40;
    let misses = 0;
    const on = new Map<number, number>();
    for (let i = 0; i < ITERATIONS; i++) {
      const id = nextId++;
      await a.query('INSERT INTO tok (id, v) VALUES ($1, $2)', [id, 'causal']);
      const token = (await a.query<{ last_write_lsn: string }>(SHOW)).rows[0]!.last_write_lsn;
      const row = (await b.query<{ n: number; port: number }>(`/* pgrelay:after_lsn=${token} */ SELECT count(*)::int AS n, inet_server_port() AS port FROM tok WHERE id = $1`, [id])).rows[0]!;
      if (row.n !== 1) misses++;
      on.set(row.port, (on.get(row.port) ?? 0) + 1);
    }
    const onReplicas = (on.get(ports.replica1!) ?? 0) + (on.get(ports.replica2!) ?? 0);
    console.log(`[causality] after_lsn across pgrelays: ${ITERATIONS} reads, ${misses} misses, ${onReplicas} on replicas, ${on.get(ports.primary!) ?? 0} on the primary`);
    expect(misses).toBe(0);
    // the reads waited for a replica that has the write rather than going to the primary
    expect(onReplicas).toBeGreaterThanOrEqual(ITERATIONS * 0.8);
  }, 120_000);

  it('the same read on B without the token reads a replica that does not have the row yet (so the test above can fail)', async () => {
    const relayA = await relayWith();
    const relayB = await relayWith();
    const a = await client(relayA.url());
    const b = await client(relayB.url());
    let misses = 0;
    for (let i = 0; i < 20; i++) {
      const id = nextId++;
      await a.query('INSERT INTO tok (id, v) VALUES ($1, $2)', [id, 'stale']);
      const row = (await b.query<{ n: number }>('SELECT count(*)::int AS n FROM tok WHERE id = $1', [id])).rows[0]!;
      if (row.n !== 1) misses++;
    }
    expect(misses).toBeGreaterThan(0);
  }, 60_000);

  it('the position comes from each text, not from its shape: a later token waits, an earlier one does not', async () => {
    const relay = await relayWith({ fence_wait_ms: 1000 });
    const b = await client(relay.url());
    const classifier = relay.app.classifier;
    const read = (token: string) => b.query<{ port: number }>(`/* pgrelay:after_lsn=${token} */ SELECT inet_server_port() AS port FROM tok LIMIT 1`);
    // an old position: any replica has it, the read runs there at once
    expect((await read('0/1')).rows[0]!.port).not.toBe(ports.primary);
    const missesBefore = classifier.stats.misses;
    // a position the primary has not reached: no replica has it; the read waits fence_wait_ms, then runs on the primary
    const future = formatLsn((await primaryLsn()) + 1_000_000_000n);
    const started = performance.now();
    expect((await read(future)).rows[0]!.port).toBe(ports.primary);
    expect(performance.now() - started).toBeGreaterThanOrEqual(990);
    // and the old one again, right after: not the decision made for the same shape a moment ago
    expect((await read('0/2')).rows[0]!.port).not.toBe(ports.primary);
    // all three texts are one shape for the classifier: parsed once
    expect(classifier.stats.misses).toBe(missesBefore);
  }, 60_000);
});
