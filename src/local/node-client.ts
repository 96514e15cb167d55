/**
 * SQL on one node of a LocalCluster: each call opens a short-lived connection (as the application
 * user or the superuser) and closes it; pollUntil repeats a check until a node reports a state.
 */
import pg from 'pg';
import type { LocalNode } from './cluster-types.js';

const POLL_MS = 25;
const QUERY_TIMEOUT_MS = 60_000;

export interface NodeCredentials {
  readonly user: string;
  readonly password: string;
  readonly database: string;
  readonly superuser: string;
  readonly superuserPassword: string;
}

export interface ConnectOptions {
  superuser?: boolean;
  database?: string;
}

export class NodeClient {
  constructor(
    private readonly credentials: NodeCredentials,
    private readonly nodeOf: (name: string) => LocalNode,
  ) {}

  /** Runs one statement on its own short-lived connection and returns the rows. */
  async query<T = any>(name: string, sql: string, params: unknown[] = [], opts: ConnectOptions = {}): Promise<T[]> {
    return this.withClient(name, opts, async (client) => (await client.query(sql, params)).rows as T[]);
  }

  superQuery<T>(name: string, sql: string, params: unknown[] = []): Promise<T[]> {
    return this.query<T>(name, sql, params, { superuser: true });
  }

  async withClient<T>(name: string, opts: ConnectOptions, use: (client: pg.Client) => Promise<T>): Promise<T> {
    const node = this.nodeOf(name);
    const c = this.credentials;
    const client = new pg.Client({
      host: node.host,
      port: node.port,
      user: opts.superuser ? c.superuser : c.user,
      password: opts.superuser ? c.superuserPassword : c.password,
      database: opts.database ?? c.database,
      connectionTimeoutMillis: 10_000,
      query_timeout: QUERY_TIMEOUT_MS,
    });
    client.on('error', () => {}); // a node killed under an idle client must not crash the process
    try {
      await client.connect();
      return await use(client);
    } finally {
      await client.end().catch(() => {});
    }
  }
}

/** Retries `check` (errors count as "not yet") until it returns a value or time runs out. */
export async function pollUntil<T>(what: string, timeoutMs: number, check: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const result = await check();
      if (result !== undefined) return result;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      const detail = lastError instanceof Error ? ` (last error: ${lastError.message})` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail}`);
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}
