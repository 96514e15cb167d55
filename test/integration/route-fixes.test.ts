import pg from 'pg';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { dataRow, errorFields, RawClient, serialize, STEADY, type BackendMessage } from '../support/protocol-client.js';
import { startRelay, type Relay } from '../support/relay.js';
import { queryNode, sharedCluster } from '../support/shared-cluster.js';
import { usePgClients } from '../support/pg-clients.js';

// Where units run and what clients are told (issue 16): a pin is a primary connection, never a
// replica's; checked on the servers themselves (inet_server_port()).
const shared = sharedCluster();
const primary = shared.nodes.find((n) => n.role === 'primary')!;
const replicas = shared.nodes.filter((n) => n.role !== 'primary');
const relays: Relay[] = [];
const connect = usePgClients();
const sqls: postgres.Sql[] = [];

async function relayWith(overrides: Record<string, unknown> = {}): Promise<Relay> {
  const relay = await startRelay(shared, { ...STEADY, routing: { consistency: 'eventual' }, ...overrides });
  relays.push(relay);
  return relay;
}

async function serverPort(client: pg.Client): Promise<number> {
  return Number((await client.query('SELECT inet_server_port() AS p')).rows[0].p);
}

async function pinnedSessions(relay: Relay): Promise<number> {
  return (await relay.app.metrics.pinnedSessions.get()).values[0]?.value ?? 0;
}

beforeAll(async () => {
  await queryNode(shared, primary.name, 'DROP TABLE IF EXISTS route_fix; CREATE TABLE route_fix (id serial PRIMARY KEY, v int)');
  // a COMMIT that takes a while: a deferred trigger sleeps for rows with v = 41
  await queryNode(
    shared,
    primary.name,
    `CREATE OR REPLACE FUNCTION route_fix_slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF NEW.v = 41 THEN PERFORM pg_sleep(2); END IF; RETURN NULL; END $$;
     CREATE CONSTRAINT TRIGGER route_fix_slow AFTER INSERT ON route_fix DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION route_fix_slow()`,
  );
  for (const replica of replicas) {
    await vi.waitFor(async () => expect(await queryNode(shared, replica.name, "SELECT to_regclass('route_fix') IS NOT NULL AS ok")).toEqual([{ ok: true }]), { timeout: 30_000, interval: 100 });
  }
});

afterAll(async () => {
  await Promise.all(sqls.map((s) => s.end({ timeout: 1 }).catch(() => undefined)));
  await Promise.all(relays.map((r) => r.stop()));
  await queryNode(shared, primary.name, 'DROP TABLE IF EXISTS route_fix; DROP FUNCTION IF EXISTS route_fix_slow()');
});

/** Terminates the backend on the primary running a statement that contains `tag`. */
async function terminateWhenRunning(tag: string): Promise<void> {
  await vi.waitFor(
    async () => {
      const rows = await queryNode<{ ok: boolean }>(
        shared,
        primary.name,
        "SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()",
        [tag],
        true,
      );
      expect(rows.some((r) => r.ok)).toBe(true);
    },
    { timeout: 20_000, interval: 25 },
  );
}

describe('a pin is a primary connection', () => {
  const pinning: [string, string[]][] = [
    ['a session advisory lock', ['SELECT pg_advisory_lock(91601)']],
    ['set_config(…, false)', ["SELECT set_config('app.route_fix', '1', false)"]],
    ['SQL PREPARE', ['PREPARE route_fix_p AS SELECT 1']],
    ['DECLARE … WITH HOLD', ['BEGIN', 'DECLARE route_fix_c CURSOR WITH HOLD FOR SELECT 1', 'COMMIT']],
  ];
  for (const [what, statements] of pinning) {
    it(`${what} pins the client to the primary: its later writes succeed`, async () => {
      const relay = await relayWith();
      const client = await connect(relay);
      // a read first: the client's connection is a replica's until the pin (other files share these
      // replicas and may hold their replay back for a moment: then reads fall back to the primary)
      await vi.waitFor(async () => expect(replicas.map((r) => r.port)).toContain(await serverPort(client)), { timeout: 15_000, interval: 100 });
      for (const sql of statements) await client.query(sql);
      expect((await pinnedSessions(relay))).toBe(1);
      expect(await serverPort(client)).toBe(primary.port);
      const inserted = await client.query('INSERT INTO route_fix (v) VALUES (1) RETURNING id');
      expect(inserted.rowCount).toBe(1);
    });
  }

  it('a pinning statement inside a read-only transaction on a replica is refused (0A000); the transaction is aborted, the client is not pinned', async () => {
    const relay = await relayWith();
    const client = await connect(relay);
    await client.query('BEGIN READ ONLY');
    expect(replicas.map((r) => r.port)).toContain(await serverPort(client));
    const error = await client.query('SELECT pg_advisory_lock(91602)').then(
      () => undefined,
      (e: { code?: string; message: string }) => e,
    );
    expect(error?.code).toBe('0A000');
    expect(error?.message).toMatch(/read-only transaction on a replica/);
    // in order, as the server's error: the transaction is aborted
    await expect(client.query('SELECT 1')).rejects.toMatchObject({ code: '25P02' });
    await client.query('ROLLBACK');
    expect((await pinnedSessions(relay))).toBe(0);
    expect((await client.query('INSERT INTO route_fix (v) VALUES (2)')).rowCount).toBe(1);
    // the lock was never taken anywhere
    const locks = await queryNode(shared, primary.name, "SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND objid = 91602");
    expect(locks).toEqual([{ n: 0 }]);
  });

  it('pool.mode session: a client whose first statement is a read holds a primary connection; its writes succeed (postgres.js)', async () => {
    const relay = await relayWith({ pool: { mode: 'session', size: 2, checkout_timeout_ms: 30_000 } });
    const sql = postgres(relay.url(), { max: 1, onnotice: () => undefined });
    sqls.push(sql);
    const [first] = await sql`SELECT inet_server_port() AS p`;
    expect(Number(first!.p)).toBe(primary.port);
    const rows = await sql`INSERT INTO route_fix (v) VALUES (3) RETURNING v`;
    expect(rows.map((r) => r.v)).toEqual([3]);
  });
});

describe('an extended-protocol unit is routed by all of its statements', () => {
  const login = () => ({ user: shared.user, password: shared.password, database: shared.database });
  /** the unit's answers: rows as their first value, errors as E + SQLSTATE */
  const summary = (messages: BackendMessage[]) => messages.filter((m) => m.type === 'D' || m.type === 'E' || m.type === 'Z').map((m) => (m.type === 'E' ? `E ${errorFields(m.body).get('C')}` : m.type === 'D' ? dataRow(m.body)[0] : m.type));
  const read = () => [serialize.parse({ text: 'SELECT inet_server_port()::text' }), serialize.bind({}), serialize.execute({})];
  const write = (v: number) => [serialize.parse({ text: `INSERT INTO route_fix (v) VALUES (${v}) RETURNING inet_server_port()::text` }), serialize.bind({}), serialize.execute({})];

  it('a read then a write in one Sync, sent in one packet: the unit runs on the primary', async () => {
    const relay = await relayWith();
    const raw = await RawClient.connect(relay.port, login());
    try {
      // a read alone goes to a replica
      raw.send(Buffer.concat([...read(), serialize.sync()]));
      const alone = summary(await raw.until('Z'));
      expect(replicas.map((r) => String(r.port))).toContain(alone[0]);
      raw.send(Buffer.concat([...read(), ...write(21), serialize.sync()]));
      expect(summary(await raw.until('Z'))).toEqual([String(primary.port), String(primary.port), 'Z']);
    } finally {
      raw.destroy();
    }
    expect(await queryNode(shared, primary.name, 'SELECT count(*)::int AS n FROM route_fix WHERE v = 21')).toEqual([{ n: 1 }]);
  });

  it('the write comes in a later packet than the read: the read waits for the rest of its unit, and the whole unit runs on the primary', async () => {
    const relay = await relayWith();
    const raw = await RawClient.connect(relay.port, login());
    try {
      // a unit of reads that comes in pieces goes to a replica (the rest of the unit a moment
      // later, in a packet of its own)
      raw.send(Buffer.concat(read()));
      await new Promise((resolve) => setTimeout(resolve, 100));
      raw.send(serialize.sync());
      const reads = summary(await raw.until('Z'));
      expect(replicas.map((r) => String(r.port))).toContain(reads[0]);
      raw.send(Buffer.concat(read()));
      await new Promise((resolve) => setTimeout(resolve, 100));
      raw.send(Buffer.concat([...write(22), serialize.sync()]));
      expect(summary(await raw.until('Z'))).toEqual([String(primary.port), String(primary.port), 'Z']);
    } finally {
      raw.destroy();
    }
    expect(await queryNode(shared, primary.name, 'SELECT count(*)::int AS n FROM route_fix WHERE v = 22')).toEqual([{ n: 1 }]);
  });

  it('a read, then a named statement of a write prepared earlier, in one Sync (Bind of the named statement)', async () => {
    const relay = await relayWith();
    const raw = await RawClient.connect(relay.port, login());
    try {
      raw.send(Buffer.concat([serialize.parse({ name: 'w', text: 'INSERT INTO route_fix (v) VALUES (23) RETURNING inet_server_port()::text' }), serialize.sync()]));
      expect(summary(await raw.until('Z'))).toEqual(['Z']);
      raw.send(Buffer.concat([...read(), serialize.bind({ statement: 'w' }), serialize.execute({}), serialize.sync()]));
      expect(summary(await raw.until('Z'))).toEqual([String(primary.port), String(primary.port), 'Z']);
    } finally {
      raw.destroy();
    }
  });

  it('after a write through the unnamed statement, a read through it still goes to a replica (node-postgres, parameters)', async () => {
    const relay = await relayWith();
    const client = await connect(relay);
    for (let i = 0; i < 3; i++) {
      expect(Number((await client.query('INSERT INTO route_fix (v) VALUES ($1) RETURNING inet_server_port() AS p', [25])).rows[0].p)).toBe(primary.port);
      expect(replicas.map((r) => r.port)).toContain(Number((await client.query('SELECT inet_server_port() AS p WHERE $1::int = 1', [1])).rows[0].p));
    }
  });

  it('postgres.js pipelining: a read and a write issued together each run where they belong', async () => {
    const relay = await relayWith();
    const sql = postgres(relay.url(), { max: 1, onnotice: () => undefined });
    sqls.push(sql);
    const [r, w] = await Promise.all([sql`SELECT inet_server_port() AS p`, sql`INSERT INTO route_fix (v) VALUES (24) RETURNING inet_server_port() AS p`]);
    expect(replicas.map((n) => n.port)).toContain(Number(r[0]!.p));
    expect(Number(w[0]!.p)).toBe(primary.port);
  });
});

describe('a server connection lost under a commit or a write in flight', () => {
  const failure = (p: Promise<unknown>) => p.then(() => undefined, (e: { code?: string; message: string }) => e);

  it('a COMMIT in flight: 08007 (outcome unknown), never "rolled back"; the transaction is over for the client', async () => {
    const relay = await relayWith();
    const client = await connect(relay);
    const tag = `route_fix_commit_${Date.now()}`;
    await client.query('BEGIN');
    await client.query('INSERT INTO route_fix (v) VALUES (41)');
    const result = failure(client.query(`/* ${tag} */ COMMIT`));
    await terminateWhenRunning(tag);
    const error = await result;
    expect(error?.code).toBe('08007');
    expect(error?.message).not.toMatch(/rolled back/);
    // the transaction ended (either way): the client goes on outside it
    expect((await client.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
  });

  it('an autocommit write in flight: 08007 (it may have committed)', async () => {
    const relay = await relayWith();
    const client = await connect(relay);
    const tag = `route_fix_write_${Date.now()}`;
    const result = failure(client.query(`INSERT INTO route_fix (v) SELECT 42 FROM pg_sleep(2) /* ${tag} */`));
    await terminateWhenRunning(tag);
    expect(await result).toMatchObject({ code: '08007' });
    expect((await client.query('SELECT 2 AS two')).rows).toEqual([{ two: 2 }]);
  });

  it('a statement of an open transaction in flight (no COMMIT sent): 08006, the transaction did not commit; then ROLLBACK', async () => {
    const relay = await relayWith();
    const client = await connect(relay);
    const tag = `route_fix_tx_${Date.now()}`;
    await client.query('BEGIN');
    const result = failure(client.query(`INSERT INTO route_fix (v) SELECT 43 FROM pg_sleep(2) /* ${tag} */`));
    await terminateWhenRunning(tag);
    const error = await result;
    expect(error?.code).toBe('08006');
    expect(error?.message).toMatch(/the transaction did not commit/);
    await expect(client.query('SELECT 1')).rejects.toMatchObject({ code: '25P02' });
    await client.query('ROLLBACK');
    expect(await queryNode(shared, primary.name, 'SELECT count(*)::int AS n FROM route_fix WHERE v = 43')).toEqual([{ n: 0 }]);
  });
});
