import { afterAll, describe, expect, it, vi } from 'vitest';
import { STEADY, startProtocolRelay } from '../support/protocol-client.js';
import { startRelay, type Relay } from '../support/relay.js';
import { sharedCluster } from '../support/shared-cluster.js';
import { usePgClients, usePostgresJs } from '../support/pg-clients.js';

// A custom parameter (SET myapp.x, set_config('app.tenant', …, true)) leaves a placeholder on the
// server backend that RESET ALL / DISCARD ALL do not remove: the next client of that pooled
// backend saw '' where a direct connection answers NULL (current_setting(…, true)) or 42704
// (issue 16, PostgreSQL's regression test guc). Now a unit that reads such a parameter by name,
// which its client has not defined, never runs on a backend where another client defined it —
// while the row-level-security pattern (set_config(…, true) in every transaction, then reads)
// keeps its backend (pool size 1: one backend pid throughout).
const shared = sharedCluster();
const replicaPorts = shared.nodes.filter((n) => n.role !== 'primary').map((n) => n.port);
const relays: Relay[] = [];
const connect = usePgClients();
const pgjs = usePostgresJs();

async function relayWith(size: number): Promise<Relay> {
  const relay = await startProtocolRelay(shared, { pool: { size, checkout_timeout_ms: 30_000 } });
  relays.push(relay);
  return relay;
}

afterAll(async () => {
  await Promise.all(relays.map((r) => r.stop()));
});

describe('a placeholder the client defined itself', () => {
  it('reads as empty after RESET wherever the read runs (a replica backend that never saw it: guc)', async () => {
    const relay = await startRelay(shared, { ...STEADY, routing: { consistency: 'eventual', max_lag_ms: 60_000 } });
    relays.push(relay);
    const a = await connect(relay);
    await vi.waitFor(async () => expect(replicaPorts).toContain(Number((await a.query('SELECT inet_server_port() AS p')).rows[0].p)), { timeout: 20_000, interval: 50 });
    await a.query('SET custom.my_guc = 42');
    expect((await a.query('SHOW custom.my_guc')).rows[0]['custom.my_guc']).toBe('42');
    await a.query('RESET custom.my_guc');
    // this makes it go to empty, not become unknown again (on a direct connection)
    for (let i = 0; i < 4; i++) {
      const row = (await a.query("SELECT current_setting('custom.my_guc', true) AS v, inet_server_port() AS p")).rows[0];
      expect(row.v).toBe('');
      expect((await a.query('SHOW custom.my_guc')).rows[0]['custom.my_guc']).toBe('');
    }
  });
});

describe('placeholder parameters another client defined on a pooled backend', () => {
  it('set_config(…, true) in a transaction: the next client reads NULL / 42704, as on a fresh connection (pg, postgres.js simple and extended)', async () => {
    const relay = await relayWith(1);
    const a = await connect(relay);
    await a.query('BEGIN');
    await a.query("SELECT set_config('app.tenant', '5', true)");
    expect((await a.query("SELECT current_setting('app.tenant') AS t")).rows[0].t).toBe('5');
    await a.query('COMMIT');
    const b = pgjs(relay);
    expect((await b.unsafe("SELECT current_setting('app.tenant', true) AS t"))[0]!.t).toBeNull();
    expect((await b`SELECT current_setting('app.tenant', true) AS t`)[0]!.t).toBeNull();
    await expect(b.unsafe('SHOW app.tenant')).rejects.toMatchObject({ code: '42704' });
    const c = await connect(relay);
    await expect(c.query("SELECT current_setting('app.tenant')")).rejects.toMatchObject({ code: '42704' });
    // a client that defines the name in the same text reads its own value
    expect((await c.query("SELECT set_config('app.tenant', '9', false) AS s, current_setting('app.tenant') AS t")).rows[0]).toEqual({ s: '9', t: '9' });
  });

  it('a statement the client prepared before (postgres.js: Bind and Execute only) reads NULL too after another client defined the name', async () => {
    const relay = await relayWith(1);
    const b = pgjs(relay);
    const read = async () => (await b`SELECT current_setting('app.prepared_tenant', true) AS t`)[0]!.t;
    expect(await read()).toBeNull();
    const a = await connect(relay);
    await a.query('BEGIN');
    await a.query("SELECT set_config('app.prepared_tenant', '5', true)");
    await a.query('COMMIT');
    expect(await read()).toBeNull();
    expect(await read()).toBeNull();
  });

  it('SET myapp.x at session level: after the client ends, the next one does not see the placeholder (guc: SHOW, current_setting, pg_settings)', async () => {
    const relay = await relayWith(1);
    const a = await connect(relay);
    await a.query('SET myapp.x = 42');
    expect((await a.query('SHOW myapp.x')).rows[0]['myapp.x']).toBe('42');
    await a.end();
    const b = await connect(relay);
    await expect(b.query('SHOW myapp.x')).rejects.toMatchObject({ code: '42704' });
    expect((await b.query("SELECT current_setting('myapp.x', true) AS v")).rows[0].v).toBeNull();
    expect((await b.query("SELECT count(*)::int AS n FROM pg_settings WHERE name = 'myapp.x'")).rows[0].n).toBe(0);
  });

  it('the row-level-security pattern keeps its backend: set_config(…, true) before the reads, by any client', async () => {
    const relay = await relayWith(1);
    const a = await connect(relay);
    const b = pgjs(relay);
    const pids = new Set<number>();
    for (let i = 0; i < 10; i++) {
      await a.query('BEGIN');
      await a.query(`SELECT set_config('app.tenant', '${i}', true)`);
      const row = (await a.query("SELECT current_setting('app.tenant') AS t, pg_backend_pid() AS pid")).rows[0];
      await a.query('COMMIT');
      expect(row.t).toBe(String(i));
      pids.add(row.pid);
      const [other] = await b.begin(async (tx) => {
        await tx`SELECT set_config('app.tenant', ${String(100 + i)}, true)`;
        return tx`SELECT current_setting('app.tenant') AS t, pg_backend_pid() AS pid`;
      });
      expect(other!.t).toBe(String(100 + i));
      pids.add(other!.pid);
      // a read of a name both clients defined before: the same backend too
      expect((await a.query("SELECT current_setting('app.tenant', true) AS t, pg_backend_pid() AS pid")).rows[0]).toEqual({ t: '', pid: row.pid });
    }
    expect(pids.size).toBe(1);
  });
});
