import { readFileSync } from 'node:fs';
import pg from 'pg';
import { enforceServerAuth } from '../auth/pg-client-auth.js';
import { isNoTlsError, pgSslAttempt } from '../auth/server-tls.js';
import type { Config } from '../config/types.js';
import type { Credentials } from './credentials.js';

export interface ProbeOptions {
  host: string;
  port: number;
  credentials: Credentials;
  /** connect timeout, client-side query timeout and server-side statement_timeout */
  timeoutMs: number;
  tls: Config['server_tls'];
  applicationName: string;
}

/** Databases tried in turn for a monitoring connection (any will do: the queries are cluster-wide). */
const DATABASES = ['postgres', 'template1'];

/**
 * One persistent monitoring connection to a node (pg.Client), opened on first use and again after
 * any failure. A query that fails or times out closes the connection: the next call reconnects.
 * Queries are named (prepared once per connection).
 */
export class NodeProbe {
  private client: pg.Client | undefined;
  private connecting: Promise<pg.Client> | undefined;
  private closed = false;
  /** the database that accepted us last time */
  private database = DATABASES[0]!;

  constructor(
    readonly name: string,
    readonly options: ProbeOptions,
  ) {}

  async query<T>(name: string, text: string): Promise<T> {
    const client = await this.connect();
    try {
      const result = await client.query({ name, text });
      return result.rows[0] as T;
    } catch (error) {
      if (this.client === client) this.drop();
      throw error;
    }
  }

  /** Closes the connection (politely, bounded); the probe cannot be used afterwards. */
  async close(): Promise<void> {
    this.closed = true;
    const client = this.client ?? (await this.connecting?.catch(() => undefined));
    this.client = undefined;
    this.connecting = undefined;
    if (!client) return;
    await Promise.race([client.end().catch(() => undefined), new Promise((resolve) => setTimeout(resolve, 1000).unref())]);
    client.connection.stream.destroy();
  }

  private connect(): Promise<pg.Client> {
    if (this.closed) return Promise.reject(new Error('probe closed'));
    if (this.client) return Promise.resolve(this.client);
    this.connecting ??= this.open().finally(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  private async open(): Promise<pg.Client> {
    const order = [this.database, ...DATABASES.filter((d) => d !== this.database)];
    let lastError: unknown;
    for (const database of order) {
      try {
        const client = await this.openOn(database, this.options.tls.mode !== 'disable');
        this.database = database;
        if (this.closed) {
          client.connection.stream.destroy();
          throw new Error('probe closed');
        }
        this.client = client;
        return client;
      } catch (error) {
        lastError = error;
        // only a database we may not use is worth another try
        const code = (error as { code?: string }).code;
        if (code !== '3D000' && code !== '42501') break;
      }
    }
    throw lastError;
  }

  private async openOn(database: string, tls: boolean): Promise<pg.Client> {
    const { host, port, credentials, timeoutMs, applicationName } = this.options;
    const client = new pg.Client({
      host,
      port,
      user: credentials.user,
      password: credentials.password,
      database,
      application_name: applicationName,
      connectionTimeoutMillis: timeoutMs,
      query_timeout: timeoutMs,
      statement_timeout: timeoutMs,
      keepAlive: true,
      ssl: tls ? pgSslAttempt({ mode: this.options.tls.mode, ca: this.options.tls.ca === undefined ? undefined : readFileSync(this.options.tls.ca, 'utf8') }, host) : false,
    });
    enforceServerAuth(client, this.name, credentials.requireAuth);
    client.on('error', () => {
      if (this.client === client) this.drop();
    });
    try {
      await client.connect();
    } catch (error) {
      client.connection.stream.destroy();
      if (tls && this.options.tls.mode === 'prefer' && isNoTlsError(error)) return this.openOn(database, false);
      throw error;
    }
    return client;
  }

  /** Forgets a broken connection (its socket is destroyed: a hung server must not keep it open). */
  private drop(): void {
    const client = this.client;
    this.client = undefined;
    client?.connection.stream.destroy();
  }
}
