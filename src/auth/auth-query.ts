import pg from 'pg';
import type { Config } from '../config/types.js';
import { enforceServerAuth } from './pg-client-auth.js';
import { loadServerTls, pgSsl } from './server-tls.js';

/** Where the lookup runs: the current primary. */
export interface LookupTarget {
  name: string;
  host: string;
  port: number;
}

export { DEFAULT_AUTH_QUERY } from '../config/auth-query-default.js';

const TIMEOUT_MS = 5000;

/**
 * `auth_query`: reads a user's SCRAM verifier from the server, as PgBouncer does, for users that
 * are not in pgrelay's file. One persistent connection (as `auth_query.user`, under server_auth
 * and server_tls) to the current primary, opened on first use and again after a failure. The
 * query takes the user name as $1 and returns the verifier in its second column (`passwd`); no
 * row or a NULL means no such user. The verifier is never logged.
 */
export class AuthQuery {
  private client: Promise<pg.Client> | undefined;
  private clientTarget = '';

  constructor(
    private readonly config: () => Config,
    private readonly target: () => LookupTarget | undefined,
  ) {}

  async verifier(user: string): Promise<string | undefined> {
    const settings = this.config().auth_query;
    if (!settings) return undefined;
    const client = await this.connect();
    try {
      const result = await client.query<Record<string, unknown>>({ text: settings.query, values: [user] });
      const row = result.rows[0];
      if (!row) return undefined;
      const value = Object.values(row)[1] ?? row['passwd'];
      return typeof value === 'string' ? value : undefined;
    } catch (error) {
      this.drop();
      throw error;
    }
  }

  private connect(): Promise<pg.Client> {
    const target = this.target();
    if (!target) return Promise.reject(new Error('no primary to run auth_query on'));
    const key = `${target.host}:${target.port}`;
    if (this.client && this.clientTarget === key) return this.client;
    this.drop();
    const config = this.config();
    const settings = config.auth_query!;
    const client = new pg.Client({
      host: target.host,
      port: target.port,
      user: settings.user,
      password: settings.password ?? '',
      database: settings.database,
      ssl: pgSsl(loadServerTls(config), target.host),
      application_name: 'pgrelay auth_query',
      connectionTimeoutMillis: TIMEOUT_MS,
      query_timeout: TIMEOUT_MS,
    });
    enforceServerAuth(client, target.name, new Set(config.server_auth.require_auth));
    client.on('error', () => this.drop());
    this.clientTarget = key;
    const connecting = client.connect().then(() => client);
    connecting.catch(() => this.drop());
    this.client = connecting;
    return connecting;
  }

  private drop(): void {
    const client = this.client;
    this.client = undefined;
    void client?.then((c) => c.end().catch(() => undefined), () => undefined);
  }

  close(): void {
    this.drop();
  }
}
