import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { errorFields, RawClient, serialize, startProtocolRelay, type BackendMessage } from '../support/protocol-client.js';
import type { Relay } from '../support/relay.js';
import { queryNode, sharedCluster } from '../support/shared-cluster.js';
import { usePgClients } from '../support/pg-clients.js';

// What one client does to the state of a server backend never shows through to another client
// that is served by the same backend afterwards (transaction pooling): sequence values
// (currval/lastval are per backend), settings made with set_config(…, false), and the prepared
// statements pgrelay keeps on the backend for other clients (DEALLOCATE in any form).
const shared = sharedCluster();
const primary = shared.nodes.find((n) => n.role === 'primary')!.name;
const relays: Relay[] = [];
const connect = usePgClients();
const sqls: postgres.Sql[] = [];

async function relayWith(overrides: Record<string, unknown>): Promise<Relay> {
  const relay = await startProtocolRelay(shared, overrides);
  relays.push(relay);
  return relay;
}

function poolStats(relay: Relay) {
  return relay.app.pools.get(primary, shared.user, shared.database).stats();
}

beforeAll(async () => {
  await queryNode(shared, primary, 'DROP SEQUENCE IF EXISTS corr_seq; CREATE SEQUENCE corr_seq');
});

afterAll(async () => {
  await Promise.all(sqls.map((s) => s.end({ timeout: 1 }).catch(() => undefined)));
  await Promise.all(relays.map((r) => r.stop()));
  await queryNode(shared, primary, 'DROP SEQUENCE IF EXISTS corr_seq');
});

describe('sequence state is per backend', () => {
  it("after its first currval or lastval a client keeps its backend: its later currval and lastval answer its own nextval, whoever else draws", async () => {
    const relay = await relayWith({ pool: { size: 2, checkout_timeout_ms: 30_000 } });
    const a = await connect(relay);
    const b = postgres(relay.url(), { max: 1, onnotice: () => undefined });
    sqls.push(b);
    // one statement: nextval and currval meet in one backend, and currval pins the client there
    const [first] = (await a.query("SELECT nextval('corr_seq') AS n, currval('corr_seq') AS c")).rows;
    expect(first.c).toBe(first.n);
    for (let i = 0; i < 3; i++) {
      const mine = Number((await a.query("SELECT nextval('corr_seq') AS v")).rows[0].v);
      // b draws in between on the other server connection (nextval alone does not pin b)
      const theirs = Number((await b`SELECT nextval('corr_seq') AS v`)[0]!.v);
      expect(theirs).toBeGreaterThan(mine);
      expect(Number((await a.query("SELECT currval('corr_seq') AS v")).rows[0].v)).toBe(mine);
      expect(Number((await a.query('SELECT lastval() AS v')).rows[0].v)).toBe(mine);
    }
    // a holds its backend (pinned); b's nextval gave its connection back
    expect(poolStats(relay)).toMatchObject({ active: 1, idle: 1 });
  });

  it('nextval alone does not pin: a client drawing ids gives its server connection back', async () => {
    const relay = await relayWith({ pool: { size: 1, checkout_timeout_ms: 30_000 } });
    const a = await connect(relay);
    const b = await connect(relay);
    // with a pool of one, b could not run at all if a's nextval had pinned a
    const x = Number((await a.query("SELECT nextval('corr_seq') AS v")).rows[0].v);
    const y = Number((await b.query("SELECT nextval('corr_seq') AS v")).rows[0].v);
    expect(y).toBeGreaterThan(x);
    expect(poolStats(relay)).toMatchObject({ active: 0, idle: 1 });
  });
});

describe('set_config', () => {
  it("set_config(…, 'false') pins even after the same shape was seen with 'true': the next client never sees the value", async () => {
    const relay = await relayWith({ pool: { size: 1, checkout_timeout_ms: 30_000 } });
    const a = await connect(relay);
    const b = await connect(relay);
    await a.query("SELECT set_config('app.tenant', '1', 'true')");
    await a.query("SELECT set_config('app.tenant', '7', 'false')");
    expect((await a.query("SELECT current_setting('app.tenant', true) AS t")).rows[0].t).toBe('7');
    // the only server connection is a's now: b waits for it
    const seen = b.query<{ t: string | null }>("SELECT current_setting('app.tenant', true) AS t");
    await vi.waitFor(() => expect(poolStats(relay).waiting).toBe(1), { timeout: 10_000, interval: 20 });
    expect((await a.query("SELECT current_setting('app.tenant', true) AS t")).rows[0].t).toBe('7');
    await a.end();
    const t = (await seen).rows[0]!.t;
    expect(t === null || t === '').toBe(true);
  });
});

describe('DEALLOCATE never removes what another client prepared', () => {
  const login = () => ({ user: shared.user, password: shared.password, database: shared.database });
  const summary = (messages: BackendMessage[]) => messages.map((m) => (m.type === 'E' ? `E ${errorFields(m.body).get('C')}` : m.type));

  /** a, with a named statement on the only server connection, and that statement's server-side name */
  async function setup(): Promise<{ relay: Relay; run: () => Promise<unknown>; name: string }> {
    const relay = await relayWith({ pool: { size: 1, checkout_timeout_ms: 30_000 } });
    const a = await connect(relay);
    const run = async () => (await a.query({ name: 'a_stmt', text: "SELECT 'from a'::text AS v" })).rows;
    expect(await run()).toEqual([{ v: 'from a' }]);
    const names = (await a.query<{ name: string }>("SELECT name FROM pg_prepared_statements WHERE name LIKE 'pgrelay\\_%'")).rows.map((r) => r.name);
    expect(names).toHaveLength(1);
    return { relay, run, name: names[0]! };
  }

  it('a statement of a multi-statement Query (26000; the other statement does not run)', async () => {
    const { relay, run, name } = await setup();
    const b = await RawClient.connect(relay.port, login());
    try {
      expect(summary(await b.query(`SELECT 1; DEALLOCATE ${name}`))).toEqual(['E 26000', 'Z']);
      expect(summary(await b.query(`DEALLOCATE PREPARE ${name}; SELECT 1`))).toEqual(['E 26000', 'Z']);
    } finally {
      b.destroy();
    }
    for (let i = 0; i < 3; i++) expect(await run()).toEqual([{ v: 'from a' }]);
  });

  it('through Parse/Bind/Execute (postgres.js, and raw messages)', async () => {
    const { relay, run, name } = await setup();
    const b = postgres(relay.url(), { max: 1, onnotice: () => undefined });
    sqls.push(b);
    // a tagged template is sent as Parse/Bind/Execute (unsafe() without parameters as a simple Query)
    await expect(b`DEALLOCATE ${b.unsafe(name)}`).rejects.toMatchObject({ code: '26000' });
    await expect(b.unsafe(`DEALLOCATE ${name}`)).rejects.toMatchObject({ code: '26000' });
    const raw = await RawClient.connect(relay.port, login());
    try {
      raw.send(Buffer.concat([serialize.parse({ name: 'd', text: `DEALLOCATE ${name}` }), serialize.bind({ statement: 'd' }), serialize.execute({}), serialize.sync()]));
      expect(summary(await raw.until('Z'))).toEqual(['1', '2', 'E 26000', 'Z']);
    } finally {
      raw.destroy();
    }
    for (let i = 0; i < 3; i++) expect(await run()).toEqual([{ v: 'from a' }]);
  });

  it('DEALLOCATE ALL forgets only the client’s own statements (alone, in a transaction that rolls back, through Parse/Bind/Describe/Execute as psycopg 3 sends it); refused in a multi-statement Query', async () => {
    const { relay, run, name } = await setup();
    const b = await connect(relay);
    expect((await b.query({ name: 'b_stmt', text: 'SELECT 2 AS v' })).rows).toEqual([{ v: 2 }]);
    const all = await b.query('DEALLOCATE ALL');
    expect(all.command).toBe('DEALLOCATE');
    // b's own statement is gone, as on a direct connection (pg only sends Bind for a name it prepared)
    await expect(b.query({ name: 'b_stmt', text: 'SELECT 2 AS v' })).rejects.toMatchObject({ code: '26000' });
    await b.query('BEGIN');
    await b.query('DEALLOCATE ALL');
    await expect(b.query('SELECT 1/0')).rejects.toMatchObject({ code: '22012' });
    await b.query('ROLLBACK');
    await expect(b.query('SELECT 1; DEALLOCATE ALL')).rejects.toMatchObject({ code: '0A000' });
    const viaParse = postgres(relay.url(), { max: 1, onnotice: () => undefined });
    sqls.push(viaParse);
    await viaParse`DEALLOCATE ALL`;
    const raw = await RawClient.connect(relay.port, login());
    try {
      const mine = serialize.parse({ name: 'mine', text: 'SELECT 3' });
      const deallocateAll = [serialize.parse({ text: 'DEALLOCATE ALL' }), serialize.bind({}), serialize.describe({ type: 'P', name: '' }), serialize.execute({})];
      raw.send(Buffer.concat([mine, serialize.sync()]));
      expect(summary(await raw.until('Z'))).toEqual(['1', 'Z']);
      // a statement before it in the same run fails (at its Bind: the constant is folded there): the server skips the rest, the name stays
      raw.send(Buffer.concat([serialize.parse({ text: 'SELECT 1/0' }), serialize.bind({}), serialize.execute({}), ...deallocateAll, serialize.sync()]));
      expect(summary(await raw.until('Z'))).toEqual(['1', 'E 22012', 'Z']);
      raw.send(Buffer.concat([serialize.bind({ statement: 'mine' }), serialize.execute({}), serialize.sync()]));
      expect(summary(await raw.until('Z'))).toEqual(['2', 'D', 'C', 'Z']);
      // behind a statement answered in the same run, and alone: answered in order, the name goes
      raw.send(Buffer.concat([serialize.parse({ text: 'SELECT 4' }), serialize.bind({}), serialize.execute({}), ...deallocateAll, serialize.sync()]));
      expect(summary(await raw.until('Z'))).toEqual(['1', '2', 'D', 'C', '1', '2', 'n', 'C', 'Z']);
      raw.send(Buffer.concat([serialize.bind({ statement: 'mine' }), serialize.execute({}), serialize.sync()]));
      expect(summary(await raw.until('Z'))).toEqual(['E 26000', 'Z']);
      raw.send(Buffer.concat([...deallocateAll, serialize.sync()]));
      expect(summary(await raw.until('Z'))).toEqual(['1', '2', 'n', 'C', 'Z']);
    } finally {
      raw.destroy();
    }
    for (let i = 0; i < 3; i++) expect(await run()).toEqual([{ v: 'from a' }]);
    const left = (await b.query<{ name: string }>('SELECT name FROM pg_prepared_statements')).rows.map((r) => r.name);
    expect(left).toContain(name);
  });
});
