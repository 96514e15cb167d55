/**
 * node-postgres clients through a relay for one test file, ended after its tests (before the
 * relays it registered earlier are stopped: after-hooks run in reverse order). A client's error
 * event is ignored: a broken connection shows in the next query's rejection.
 *
 *   const connect = usePgClients();
 *   const client = await connect(relay);
 */
import pg from 'pg';
import postgres from 'postgres';
import { afterAll } from 'vitest';

export function usePgClients(): (relay: { url(): string }) => Promise<pg.Client> {
  const clients: pg.Client[] = [];
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
  });
  return async (relay) => {
    const client = new pg.Client({ connectionString: relay.url() });
    clients.push(client);
    client.on('error', () => undefined);
    await client.connect();
    return client;
  };
}

/**
 * postgres.js clients (one connection each, notices ignored) through a relay for one test file,
 * ended after its tests, like usePgClients.
 *
 *   const pgjs = usePostgresJs();
 *   const sql = pgjs(relay);
 */
export function usePostgresJs(): (relay: { url(): string }) => postgres.Sql {
  const sqls: postgres.Sql[] = [];
  afterAll(async () => {
    await Promise.all(sqls.map((s) => s.end({ timeout: 1 }).catch(() => undefined)));
  });
  return (relay) => {
    const sql = postgres(relay.url(), { max: 1, onnotice: () => undefined });
    sqls.push(sql);
    return sql;
  };
}
