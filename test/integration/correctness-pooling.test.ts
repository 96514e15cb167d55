import pg from 'pg';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startProtocolRelay } from '../support/protocol-client.js';
import type { Relay } from '../support/relay.js';
import { queryNode, sharedCluster } from '../support/shared-cluster.js';

// What one client does to the state of a server backend never shows through to another client
// that is served by the same backend afterwards (transaction pooling): sequence values
// (currval/lastval are per backend) and settings made with set_config(…, false).
const shared = sharedCluster();
const primary = shared.nodes.find((n) => n.role === 'primary')!.name;
const relays: Relay[] = [];
const clients: pg.Client[] = [];
const sqls: postgres.Sql[] = [];

async function relayWith(overrides: Record<string, unknown>): Promise<Relay> {
  const relay = await startProtocolRelay(shared, overrides);
  relays.push(relay);
  return relay;
}

async function connect(relay: Relay): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: relay.url() });
  clients.push(client);
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

function poolStats(relay: Relay) {
  return relay.app.pools.get(primary, shared.user, shared.database).stats();
}

beforeAll(async () => {
  await queryNode(shared, primary, 'DROP SEQUENCE IF EXISTS corr_seq; CREATE SEQUENCE corr_seq');
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
  await Promise.all(sqls.map((s) => s.end({ timeout: 1 }).catch(() => undefined)));
  await Promise.all(relays.map((r) => r.stop()));
  await queryNode(shared, primary, 'DROP SEQUENCE IF EXISTS corr_seq');
});

describe('sequence state is per backend', () => {
  it("currval and lastval answer the client's own nextval, whoever else drew from the sequence", async () => {
    const relay = await relayWith({ pool: { size: 2, checkout_timeout_ms: 30_000 } });
    const a = await connect(relay);
    const b = postgres(relay.url(), { max: 1, onnotice: () => undefined });
    sqls.push(b);
    const mine = Number((await a.query("SELECT nextval('corr_seq') AS v")).rows[0].v);
    const theirs = Number((await b`SELECT nextval('corr_seq') AS v`)[0]!.v);
    expect(theirs).toBe(mine + 1);
    for (let i = 0; i < 3; i++) {
      expect(Number((await a.query("SELECT currval('corr_seq') AS v")).rows[0].v)).toBe(mine);
      expect(Number((await a.query('SELECT lastval() AS v')).rows[0].v)).toBe(mine);
      expect(Number((await b`SELECT currval('corr_seq') AS v`)[0]!.v)).toBe(theirs);
    }
    // both clients hold their backend; that is what pinned_sessions counts
    expect(poolStats(relay)).toMatchObject({ active: 2, idle: 0 });
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
