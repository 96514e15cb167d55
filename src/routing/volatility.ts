import pg from 'pg';
import { enforceServerAuth } from '../auth/pg-client-auth.js';
import { pgSsl } from '../auth/server-tls.js';
import type { Classifier, Volatility } from '../classify/classifier.js';
import type { Topology } from '../cluster/topology.js';
import type { Credentials } from '../cluster/credentials.js';
import type { Logger } from '../util/log.js';

/** Databases looked at, at most: a cluster with more is rare, and each costs a connection per refresh. */
const MAX_DATABASES = 50;

/**
 * Reads the volatility of every function (user and built-in) from pg_proc on the primary (at start and every
 * `volatility_refresh_ms`) and gives it to the classifier: a VOLATILE user function sends its
 * statement to the primary; STABLE and IMMUTABLE ones may run on replicas. Functions of every
 * database are merged by name, the most volatile definition winning (an overloaded or
 * same-named function in two databases is treated as its most dangerous form).
 */
export class VolatilityLoader {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;

  constructor(
    private readonly topology: Topology,
    private readonly classifier: Classifier,
    private credentials: () => Credentials,
    private intervalMs: number,
    private readonly log: Logger,
  ) {}

  /** Loads the map once (bounded wait), then keeps it fresh; an unknown function triggers a re-read. */
  async start(): Promise<void> {
    this.classifier.onUnknownFunction = () => this.refreshSoon();
    this.schedule();
    await Promise.race([this.refresh(), new Promise((r) => setTimeout(r, 5000).unref())]);
  }

  private lastUnknownRefresh = 0;

  /** A statement called a function the map lacks: re-read, at most once per second. */
  private refreshSoon(): void {
    const now = Date.now();
    if (now - this.lastUnknownRefresh < 1000) return;
    this.lastUnknownRefresh = now;
    void this.refresh();
  }

  configure(intervalMs: number): void {
    if (intervalMs === this.intervalMs) return;
    this.intervalMs = intervalMs;
    this.schedule();
  }

  private schedule(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = setInterval(() => void this.refresh(), this.intervalMs);
    this.timer.unref();
  }

  /** One refresh (concurrent calls share it). Failures are logged; the previous map stays. */
  refresh(): Promise<void> {
    this.running ??= this.load()
      .catch((error: unknown) => this.log.warn({ err: error instanceof Error ? error.message : String(error) }, 'could not read function volatility from the primary'))
      .finally(() => {
        this.running = undefined;
      });
    return this.running;
  }

  private async load(): Promise<void> {
    const primary = this.topology.primary();
    if (!primary) return;
    const { user, password, requireAuth, tls } = this.credentials();
    const connect = async (database: string) => {
      const client = new pg.Client({ host: primary.host, port: primary.port, user, password, database, ssl: pgSsl(tls, primary.host), connectionTimeoutMillis: 5000, statement_timeout: 10_000 });
      enforceServerAuth(client, primary.name, requireAuth);
      client.on('error', () => undefined);
      await client.connect();
      return client;
    };
    const first = await connect('postgres').catch(() => connect(user));
    let databases: string[];
    try {
      const rows = await first.query<{ datname: string }>('SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname LIMIT $1', [MAX_DATABASES]);
      databases = rows.rows.map((r) => r.datname);
    } finally {
      await first.end().catch(() => undefined);
    }
    const map = new Map<string, Volatility>();
    for (const database of databases) {
      let client: pg.Client;
      try {
        client = await connect(database);
      } catch {
        continue; // no CONNECT privilege there: its functions are not used through this role anyway
      }
      try {
        const rows = await client.query<{ name: string; qualified: string; v: Volatility }>(
          `SELECT p.proname AS name, n.nspname || '.' || p.proname AS qualified, p.provolatile AS v
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname NOT LIKE 'pg_toast%'`,
        );
        for (const row of rows.rows) {
          merge(map, row.name, row.v);
          merge(map, row.qualified, row.v);
        }
      } finally {
        await client.end().catch(() => undefined);
      }
    }
    this.classifier.setVolatility(map);
    this.log.debug({ functions: map.size, databases: databases.length }, 'function volatility loaded');
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}

const RANK: Record<Volatility, number> = { i: 0, s: 1, v: 2 };

function merge(map: Map<string, Volatility>, name: string, v: Volatility): void {
  const known = map.get(name);
  if (known === undefined || RANK[v] > RANK[known]) map.set(name, v);
}
