/**
 * node-postgres clients through a relay for one test file, ended after its tests (before the
 * relays it registered earlier are stopped: after-hooks run in reverse order). A client's error
 * event is ignored: a broken connection shows in the next query's rejection.
 *
 *   const connect = usePgClients();
 *   const client = await connect(relay);
 */
import pg from 'pg';
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
