import type net from 'node:net';
import pg from 'pg';
import { enforceServerAuth } from '../auth/pg-client-auth.js';
import { pgSsl, type ServerTlsSettings } from '../auth/server-tls.js';
import type { ServerAuthMethod } from '../config/types.js';
import { parseConninfo } from './conninfo.js';

/** Where and as whom pgrelay's own connections to a node log in (health checks, failover). */
export interface NodeLogin {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
  /** server_tls (auth/server-tls.ts) */
  tls: ServerTlsSettings;
  requireAuth: ReadonlySet<ServerAuthMethod>;
}

export interface ReplicationPeer {
  applicationName: string;
  state: string;
  syncState: string;
}

/** One successful health check: what the server says it is. */
export interface ProbeResult {
  inRecovery: boolean;
  /** out of recovery: the timeline it writes; in recovery: the timeline it receives (or its last checkpoint's) */
  timeline: number | undefined;
  /** out of recovery: its synchronous_standby_names and walsenders */
  synchronousStandbyNames: string;
  peers: ReplicationPeer[];
  /** in recovery: the name it streams under (what its primary's pg_stat_replication shows) */
  applicationName: string | undefined;
  /** in recovery: where its WAL receiver streams from, while it does */
  upstream: { host: string; port: number; status: string } | undefined;
  /** in recovery: WAL received and replayed */
  receiveLsn: bigint | undefined;
  replayLsn: bigint | undefined;
}

/**
 * One round trip that tells recovery state, timeline and replication. pg_walfile_name() fails
 * during recovery, so the CASE keeps it to primaries (CASE evaluates only the branch taken for
 * volatile functions). The health role needs pg_monitor to see other sessions' replication rows.
 */
const CHECK_SQL = `SELECT pg_is_in_recovery() AS in_recovery,
  CASE WHEN NOT pg_is_in_recovery() THEN substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END AS wal_timeline,
  CASE WHEN pg_is_in_recovery() THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver), (pg_control_checkpoint()).timeline_id) END AS recovery_timeline,
  current_setting('synchronous_standby_names') AS sync_names,
  current_setting('cluster_name') AS cluster_name,
  (SELECT json_build_object('host', sender_host, 'port', sender_port, 'status', status, 'conninfo', conninfo)
     FROM pg_stat_wal_receiver) AS receiver,
  CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn()::text END AS receive_lsn,
  CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()::text END AS replay_lsn,
  CASE WHEN NOT pg_is_in_recovery() THEN
    (SELECT json_agg(json_build_object('app', application_name, 'state', state, 'sync', sync_state)) FROM pg_stat_replication)
  END AS peers`;

interface CheckRow {
  in_recovery: boolean;
  wal_timeline: string | null;
  recovery_timeline: number | null;
  sync_names: string;
  cluster_name: string;
  /** conninfo is the WAL receiver's, with the password obfuscated; only application_name is read from it */
  receiver: { host: string | null; port: number | null; status: string | null; conninfo: string | null } | null;
  receive_lsn: string | null;
  replay_lsn: string | null;
  peers: { app: string; state: string | null; sync: string | null }[] | null;
}

/**
 * A node's health-check connection: one pg client kept open between checks (so a check is one
 * round trip, not a connect and an authentication), dropped and reopened after an error. A check
 * (connect included) that does not finish within the timeout fails. A connect that times out is
 * destroyed (a stopped server accepts TCP connections but never answers them); a query that times
 * out on an open connection is kept, and the next checks wait for its answer instead of queueing
 * another or reconnecting: a server that is only slow (a loaded machine) answers it late and is up
 * again at once, without a storm of new connections and authentications that would make it slower
 * still. A query unanswered for STALE_CHECKS timeouts (a half-open connection) is given up.
 */
export class HealthProbe {
  private client: pg.Client | undefined;
  /** the client's connection is established (a timeout from then on concerns a query) */
  private connected = false;
  /** the query still unanswered on the kept connection, and since when */
  private pending: { result: Promise<ProbeResult>; since: number } | undefined;
  private closed = false;
  /** the login's database, else template1 when that one is missing or forbidden (the checks are cluster-wide) */
  private fallback = false;

  /** `onLost` is told when the kept connection breaks between checks (the server went away). */
  constructor(
    private login: NodeLogin,
    private readonly onLost: (error: Error) => void,
  ) {}

  /** New address or credentials: the next check connects afresh. */
  setLogin(login: NodeLogin): void {
    const same = JSON.stringify(login) === JSON.stringify(this.login);
    this.login = login;
    if (!same) {
      this.fallback = false;
      this.drop();
    }
  }

  async check(timeoutMs: number): Promise<ProbeResult> {
    if (this.closed) throw new Error('probe closed');
    if (this.pending && performance.now() - this.pending.since > STALE_CHECKS * timeoutMs) this.drop();
    let timer: NodeJS.Timeout | undefined;
    let timedOut = false;
    const work = this.pending?.result ?? this.start(timeoutMs);
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        timedOut = true;
        reject(new Error(`health check timed out after ${timeoutMs} ms`));
      }, timeoutMs);
    });
    try {
      return await Promise.race([work, timeout]);
    } catch (error) {
      // an unanswered query on an open connection is kept (see above); anything else starts afresh
      if (!(timedOut && this.connected && this.pending?.result === work)) this.drop();
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  private start(timeoutMs: number): Promise<ProbeResult> {
    const result = this.run(timeoutMs);
    const pending = { result, since: performance.now() };
    this.pending = pending;
    result.then(
      () => this.settled(pending),
      () => this.settled(pending),
    );
    return result;
  }

  private settled(pending: { result: Promise<ProbeResult> }): void {
    if (this.pending === pending) this.pending = undefined;
  }

  private async run(timeoutMs: number): Promise<ProbeResult> {
    if (!this.client) {
      const client = new pg.Client({
        host: this.login.host,
        port: this.login.port,
        user: this.login.user,
        password: this.login.password,
        database: this.fallback ? 'template1' : this.login.database,
        ssl: pgSsl(this.login.tls, this.login.host),
        application_name: 'pgrelay health check',
        connectionTimeoutMillis: timeoutMs,
        keepAlive: true,
      });
      enforceServerAuth(client, `${this.login.host}:${this.login.port}`, this.login.requireAuth);
      client.on('error', (error: Error) => {
        if (this.client !== client) return;
        this.drop();
        this.onLost(error);
      });
      client.on('end', () => {
        if (this.client !== client) return;
        this.client = undefined;
        this.connected = false;
        this.onLost(new Error('health-check connection closed by the server'));
      });
      this.client = client;
      this.connected = false;
      try {
        await client.connect();
        if (this.client === client) this.connected = true;
      } catch (error) {
        const code = (error as { code?: string }).code;
        if ((code === '3D000' || code === '42501') && !this.fallback) {
          this.fallback = true;
          this.drop();
          return this.run(timeoutMs);
        }
        throw error;
      }
    }
    const client = this.client;
    if (!client) throw new Error('health-check connection closed');
    const result = await client.query<CheckRow>(CHECK_SQL);
    return toResult(result.rows[0]!);
  }

  /** Closes the connection at once (a hung server gets no polite goodbye). */
  drop(): void {
    const client = this.client;
    this.client = undefined;
    this.connected = false;
    this.pending = undefined;
    if (!client) return;
    const stream = (client as unknown as { connection?: { stream?: net.Socket } }).connection?.stream;
    stream?.destroy();
    client.end().catch(() => {});
  }

  close(): void {
    this.closed = true;
    this.drop();
  }
}

function toResult(row: CheckRow): ProbeResult {
  const timeline = row.in_recovery ? (row.recovery_timeline ?? undefined) : row.wal_timeline ? Number.parseInt(row.wal_timeline, 16) : undefined;
  const receiver = row.receiver;
  return {
    inRecovery: row.in_recovery,
    timeline,
    synchronousStandbyNames: row.sync_names,
    // state and sync_state are null for a role without pg_read_all_stats: '' = not known
    peers: (row.peers ?? []).map((p) => ({ applicationName: p.app, state: p.state ?? '', syncState: p.sync ?? '' })),
    applicationName: row.in_recovery ? (applicationNameOf(receiver?.conninfo) ?? (row.cluster_name || undefined)) : undefined,
    upstream: receiver?.host && receiver.port ? { host: receiver.host, port: receiver.port, status: receiver.status ?? '' } : undefined,
    receiveLsn: parseLsn(row.receive_lsn),
    replayLsn: parseLsn(row.replay_lsn),
  };
}

/** Timeouts after which a query still unanswered on the kept connection is given up. */
const STALE_CHECKS = 10;

/** application_name of a WAL receiver's conninfo (the name its primary's pg_stat_replication shows). */
function applicationNameOf(conninfo: string | null | undefined): string | undefined {
  if (!conninfo) return undefined;
  try {
    return parseConninfo(conninfo).get('application_name') || undefined;
  } catch {
    return undefined;
  }
}

/** 'X/Y' (hex) → a byte position. */
export function parseLsn(text: string | null | undefined): bigint | undefined {
  if (!text) return undefined;
  const slash = text.indexOf('/');
  if (slash <= 0) return undefined;
  return (BigInt(`0x${text.slice(0, slash)}`) << 32n) | BigInt(`0x${text.slice(slash + 1)}`);
}
