/**
 * RSS per idle client: opens many real client connections to pgrelay (startup + SCRAM
 * authentication through the `pg` client, then one round trip so that each is a full session),
 * leaves them idle, and reads pgrelay's VmRSS before, with them open, and after closing them.
 */
import pg from 'pg';
import { rssBytes } from './proc.js';

export interface IdleClientsResult {
  clients: number;
  rssBeforeBytes: number;
  rssWithClientsBytes: number;
  rssAfterCloseBytes: number;
  perClientBytes: number;
}

export interface IdleClientsOptions {
  pid: number;
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
  clients: number;
  /** connections being opened at once */
  concurrency?: number;
}

const settle = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export async function measureIdleClients(options: IdleClientsOptions): Promise<IdleClientsResult> {
  const rss = () => {
    const value = rssBytes(options.pid);
    if (value === undefined) throw new Error('pgrelay is gone');
    return value;
  };
  await settle(1000);
  const rssBeforeBytes = rss();
  const clients: pg.Client[] = [];
  try {
    let next = 0;
    const open = async () => {
      while (next < options.clients) {
        next++;
        const client = new pg.Client({ host: options.host, port: options.port, user: options.user, password: options.password, database: options.database, connectionTimeoutMillis: 30_000 });
        client.on('error', () => {});
        clients.push(client);
        await client.connect();
        await client.query('SELECT 1');
      }
    };
    await Promise.all(Array.from({ length: options.concurrency ?? 32 }, open));
    await settle(2000);
    const rssWithClientsBytes = rss();
    await Promise.all(clients.splice(0).map((client) => client.end().catch(() => {})));
    await settle(2000);
    const rssAfterCloseBytes = rss();
    return {
      clients: options.clients,
      rssBeforeBytes,
      rssWithClientsBytes,
      rssAfterCloseBytes,
      perClientBytes: (rssWithClientsBytes - rssBeforeBytes) / options.clients,
    };
  } finally {
    await Promise.all(clients.map((client) => client.end().catch(() => {})));
  }
}
