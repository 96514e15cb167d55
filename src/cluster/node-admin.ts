import pg from 'pg';
import { enforceServerAuth } from '../auth/pg-client-auth.js';
import { pgSsl } from '../auth/server-tls.js';
import { repointConninfo } from './conninfo.js';
import { parseLsn, type NodeLogin } from './health-probe.js';

/** A node as failover addresses it. */
export interface NodeAddress {
  name: string;
  host: string;
  port: number;
}

/** A node's address as failover uses it (a copy: a reload may change the node's own fields meanwhile). */
export function addressOf(node: NodeAddress): NodeAddress {
  return { name: node.name, host: node.host, port: node.port };
}

export interface StreamingPeer {
  applicationName: string;
  state: string;
  syncState: string;
}

const CONNECT_TIMEOUT_MS = 5_000;
const STATEMENT_TIMEOUT_MS = 60_000;

/**
 * The SQL failover runs on nodes, as the failover role (a superuser: pg_promote, ALTER SYSTEM,
 * replication slots, terminating sessions). Each call uses a short-lived connection of its own.
 * Settings are written with ALTER SYSTEM and applied with pg_reload_conf(); values that may hold
 * a password (primary_conninfo) are never logged.
 */
export class NodeAdmin {
  constructor(private readonly login: () => Omit<NodeLogin, 'host' | 'port'>) {}

  async withClient<T>(node: NodeAddress, use: (client: pg.Client) => Promise<T>, timeoutMs = CONNECT_TIMEOUT_MS): Promise<T> {
    const login = this.login();
    const client = new pg.Client({
      host: node.host,
      port: node.port,
      user: login.user,
      password: login.password,
      database: login.database,
      ssl: pgSsl(login.tls, node.host),
      application_name: 'pgrelay failover',
      connectionTimeoutMillis: timeoutMs,
      statement_timeout: STATEMENT_TIMEOUT_MS,
      query_timeout: STATEMENT_TIMEOUT_MS + 5_000,
    });
    enforceServerAuth(client, node.name, login.requireAuth);
    client.on('error', () => {}); // a node dying under this connection is reported by the query
    try {
      await client.connect();
      return await use(client);
    } finally {
      await client.end().catch(() => {});
    }
  }

  /**
   * Promotes a node in recovery and returns once it is out of recovery, with its new timeline.
   * pg_promote(false) only signals; the loop then polls pg_is_in_recovery() every 10 ms
   * (pg_promote(true) would poll on its own every 100 ms). On the same connection, a
   * synchronous_standby_names the node carries is cleared: it has no synchronous partner yet and
   * every commit would wait for one. A node already out of recovery is left as it is.
   */
  async promote(node: NodeAddress, waitSeconds = 30): Promise<{ timeline: number; clearedSyncNames: boolean }> {
    return this.withClient(node, async (client) => {
      const inRecovery = async () => (await client.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r')).rows[0]!.r;
      if (await inRecovery()) {
        try {
          await client.query('SELECT pg_promote(false)');
        } catch {
          // "standby promotion is ongoing" or "recovery is not in progress": the loop decides
        }
        const deadline = Date.now() + waitSeconds * 1000;
        while (await inRecovery()) {
          if (Date.now() > deadline) throw new Error(`${node.name} did not leave recovery within ${waitSeconds} s of pg_promote()`);
          await sleep(10);
        }
      }
      const row = (
        await client.query<{ tli: string; names: string }>(
          "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) AS tli, current_setting('synchronous_standby_names') AS names",
        )
      ).rows[0]!;
      const clearedSyncNames = row.names.trim() !== '';
      if (clearedSyncNames) {
        await client.query("ALTER SYSTEM SET synchronous_standby_names = ''");
        await client.query('SELECT pg_reload_conf()');
      }
      return { timeline: Number.parseInt(row.tli, 16), clearedSyncNames };
    });
  }

  /** Current synchronous_standby_names of a node. */
  async synchronousStandbyNames(node: NodeAddress): Promise<string> {
    return this.withClient(node, async (client) => (await client.query<{ v: string }>("SELECT current_setting('synchronous_standby_names') AS v")).rows[0]!.v);
  }

  /** ALTER SYSTEM SET synchronous_standby_names and reload (no wait: a committing backend re-reads it). */
  async setSynchronousStandbyNames(node: NodeAddress, value: string): Promise<void> {
    await this.alterSystem(node, { synchronous_standby_names: value });
  }

  async alterSystem(node: NodeAddress, settings: Record<string, string>): Promise<void> {
    await this.withClient(node, async (client) => {
      for (const [key, value] of Object.entries(settings)) {
        await client.query(`ALTER SYSTEM SET ${client.escapeIdentifier(key)} = ${client.escapeLiteral(value)}`);
      }
      await client.query('SELECT pg_reload_conf()');
    });
  }

  async resetSystem(node: NodeAddress, keys: readonly string[]): Promise<void> {
    await this.withClient(node, async (client) => {
      for (const key of keys) await client.query(`ALTER SYSTEM RESET ${client.escapeIdentifier(key)}`);
      await client.query('SELECT pg_reload_conf()');
    });
  }

  /** The primary's walsenders. */
  async streamingPeers(primary: NodeAddress): Promise<StreamingPeer[]> {
    return this.withClient(primary, async (client) => {
      const rows = await client.query<{ app: string; state: string; sync: string }>('SELECT application_name AS app, state, sync_state AS sync FROM pg_stat_replication');
      return rows.rows.map((r) => ({ applicationName: r.app, state: r.state, syncState: r.sync }));
    });
  }

  /**
   * The first of `applicationNames` (in their order) whose walsender streams and has flushed the
   * primary's WAL up to the moment of the call — every commit acknowledged before it — waiting up
   * to `timeoutMs`; undefined when none has (or flush_lsn cannot be read: it is null without
   * pg_read_all_stats).
   */
  async caughtUpStandby(primary: NodeAddress, applicationNames: readonly string[], timeoutMs: number): Promise<string | undefined> {
    return this.withClient(primary, async (client) => {
      const target = (await client.query<{ lsn: string }>('SELECT pg_current_wal_flush_lsn()::text AS lsn')).rows[0]!.lsn;
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const rows = await client.query<{ app: string }>("SELECT application_name AS app FROM pg_stat_replication WHERE state = 'streaming' AND flush_lsn >= $1::pg_lsn", [target]);
        const caught = new Set(rows.rows.map((r) => r.app.toLowerCase()));
        const found = applicationNames.find((name) => caught.has(name.toLowerCase()));
        if (found !== undefined || Date.now() >= deadline) return found;
        await sleep(50);
      }
    });
  }

  /**
   * Points a replica at a new primary: a physical slot for it on the primary (named as its
   * current primary_slot_name, else after the node), its own primary_conninfo with the host and
   * port replaced, then a reload (PostgreSQL ≥ 13 restarts the WAL receiver on the new conninfo;
   * recovery_target_timeline = latest lets it follow the new timeline). Returns whether the
   * replica follows the latest timeline (if not, it cannot follow and needs a restart).
   */
  async repoint(follower: NodeAddress, primary: NodeAddress): Promise<{ slot: string; followsLatest: boolean; changed: boolean }> {
    const settings = await this.withClient(follower, async (client) => {
      const r = await client.query<{ conninfo: string; slot: string; target: string }>(
        `SELECT current_setting('primary_conninfo') AS conninfo, current_setting('primary_slot_name') AS slot,
                current_setting('recovery_target_timeline') AS target`,
      );
      return r.rows[0]!;
    });
    if (settings.conninfo.trim() === '') throw new Error(`${follower.name} has no primary_conninfo to re-point (its replication credentials are unknown)`);
    const slot = settings.slot || slotName(follower.name);
    await this.withClient(primary, (client) =>
      client.query(
        `SELECT pg_create_physical_replication_slot($1, true)
          WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`,
        [slot],
      ),
    );
    const conninfo = repointConninfo(settings.conninfo, primary.host, primary.port);
    const changed = conninfo !== settings.conninfo || slot !== settings.slot;
    if (changed) await this.alterSystem(follower, { primary_conninfo: conninfo, primary_slot_name: slot });
    return { slot, followsLatest: settings.target === 'latest' || settings.target === '', changed };
  }

  /**
   * Makes a primary refuse writes for a switchover, on one connection: default_transaction_read_only
   * on (ALTER SYSTEM + reload), the sessions of `users` ended, then its final WAL position.
   */
  async refuseWrites(node: NodeAddress, users: readonly string[]): Promise<{ sessionsEnded: number; finalLsn: bigint }> {
    return this.withClient(node, async (client) => {
      await client.query('ALTER SYSTEM SET default_transaction_read_only = on');
      await client.query('SELECT pg_reload_conf()');
      // the final position is read once those sessions are gone (PostgreSQL 14+ waits for each
      // backend to exit): a commit racing the termination is then either in it or never happened
      const waits = Number((await client.query<{ v: string }>("SELECT current_setting('server_version_num') AS v")).rows[0]!.v) >= 140000;
      const ended = await client.query<{ n: number }>(
        `SELECT count(${waits ? 'pg_terminate_backend(pid, 5000)' : 'pg_terminate_backend(pid)'})::int AS n FROM pg_stat_activity
          WHERE usename = ANY($1) AND pid <> pg_backend_pid() AND backend_type = 'client backend'
            AND application_name NOT IN ('pgrelay failover')`,
        [users],
      );
      const lsn = await client.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn');
      return { sessionsEnded: ended.rows[0]!.n, finalLsn: parseLsn(lsn.rows[0]!.lsn)! };
    });
  }

  /** Polls a standby (one connection, every 10 ms) until it has replayed `lsn`; false on timeout. */
  async waitForReplay(node: NodeAddress, lsn: bigint, timeoutMs: number): Promise<boolean> {
    return this.withClient(node, async (client) => {
      const deadline = performance.now() + timeoutMs;
      for (;;) {
        const row = (await client.query<{ lsn: string | null }>('SELECT pg_last_wal_replay_lsn()::text AS lsn')).rows[0]!;
        if ((parseLsn(row.lsn) ?? 0n) >= lsn) return true;
        if (performance.now() > deadline) return false;
        await sleep(10);
      }
    });
  }
}

/** Replication slot names are [a-z0-9_]{1,63}. */
export function slotName(nodeName: string): string {
  const name = nodeName.toLowerCase().replace(/[^a-z0-9_]/g, '_').slice(0, 63);
  return name === '' ? 'pgrelay_replica' : name;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
