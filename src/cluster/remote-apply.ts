import type { Config } from '../config/types.js';
import type { AppliedWrites } from '../routing/freshness.js';
import { syncCommitLevel, type SyncCommitLevel } from '../routing/sync-commit-floor.js';
import type { Logger } from '../util/log.js';
import { monitorCredentials } from './credentials.js';
import type { ProbeResult } from './health-probe.js';
import { NodeProbe } from './node-probe.js';
import type { Topology } from './topology.js';

/** The server's synchronous_commit as the monitor role sees it, and where that value comes from. */
const LEVEL_SQL = `SELECT current_setting('synchronous_commit') AS level,
  has_table_privilege('pg_catalog.pg_db_role_setting', 'SELECT') AS can_see_overrides`;
/** ALTER ROLE / ALTER DATABASE … SET synchronous_commit: then the server's value is not every session's default */
const OVERRIDES_SQL = `SELECT count(*)::int AS overrides FROM pg_catalog.pg_db_role_setting s, unnest(s.setconfig) c WHERE c ILIKE 'synchronous\\_commit=%'`;

export interface RemoteApplyDeps {
  topology: Topology;
  log: Logger;
  config: () => Config;
  /** the application_name a node streams under (HealthChecker.applicationName) */
  applicationName: (node: string) => string;
}

/** What /status says about the shortcut. */
export interface RemoteApplyStatus {
  /** 'on': the server default is remote_apply and a standby is in sync; 'session': only for sessions that SET it; 'off' */
  state: 'on' | 'session' | 'off';
  /** the synchronous standby reads may use at once, if one is in sync */
  standby: string | null;
  reason: string;
}

/** What a workers-mode leader tells its workers, which run no health checks of their own. */
export interface RemoteApplyShared {
  standby: { node: string; primary: string } | null;
  serverLevel: SyncCommitLevel | null;
  overridden: boolean;
  reason: string;
}

interface SessionMarks {
  /** a text that may have changed synchronous_commit for the transaction (SET LOCAL …): until its next write */
  untilWrite: boolean;
  /** set_config(): the session's level cannot be followed any more */
  sticky: boolean;
}

/**
 * The remote_apply shortcut (issue #17, DESIGN "Fast read-your-writes"): when a session's write
 * commits under `synchronous_commit = remote_apply` while a synchronous standby is in sync (state
 * `sync` in the primary's pg_stat_replication, not a quorum), the commit was applied there before
 * it was acknowledged: that standby may serve the session's next reads at once, without waiting
 * for the write's position to be sampled (Freshness, Router: `fenceAppliedOn`).
 *
 * What it knows and from where:
 * - which standby is in sync: the primary's health checks (pg_stat_replication, every
 *   health.interval_ms). A monitor role without pg_read_all_stats (pg_monitor) sees no sync_state:
 *   no shortcut, and it says so (log, once per reason, and /status).
 * - the server default of synchronous_commit: its own monitoring connection to the primary
 *   (current_setting), refreshed with each health check of the primary; a role or database
 *   override (ALTER ROLE/DATABASE … SET synchronous_commit, pg_db_role_setting) makes the
 *   server value no session's sure default, and then only sessions that SET it themselves use it.
 * - a session's own level: its session-level SET or startup parameter (the session state's SQL);
 *   a SET LOCAL (or another statement naming the setting) makes its next write not use the
 *   shortcut; set_config() none of its writes. A SET inside a function or DO block is not seen.
 * A change of the synchronous standby (synchronous_standby_names) is seen at the next health check
 * of the primary.
 */
export class RemoteApply implements AppliedWrites {
  private probe: NodeProbe | undefined;
  private probeKey = '';
  private serverLevel: SyncCommitLevel | undefined;
  /** the server's level is not every session's default (role/database overrides, or not readable) */
  private overridden = true;
  /** the standby in sync, under which primary */
  private standby: { node: string; primary: string } | undefined;
  private reason = 'the primary has not been checked yet';
  private logged = '';
  private refreshing = false;
  private stopped = false;
  private readonly marks = new WeakMap<object, SessionMarks>();

  constructor(private readonly deps: RemoteApplyDeps) {}

  /** A health check of the primary: who is in sync now, and (asked now) the server's level. */
  primaryChecked(name: string, result: ProbeResult): void {
    if (this.stopped || name !== this.deps.topology.primaryName || result.inRecovery) return;
    this.standby = undefined;
    const peers = result.peers;
    if (peers.some((p) => p.syncState === '')) {
      const role = monitorCredentials(this.deps.config()).user;
      this.note(`the monitor role ${role} cannot see pg_stat_replication.sync_state (GRANT pg_monitor TO ${role};): reads after a write wait for its position`);
    } else if (peers.some((p) => p.syncState === 'quorum')) {
      this.note('synchronous_standby_names is a quorum (ANY): no one standby is known to apply every commit');
    } else {
      const sync = peers.find((p) => p.syncState === 'sync' && p.state === 'streaming');
      const app = sync?.applicationName.toLowerCase();
      const node = app === undefined ? undefined : [...this.deps.topology.nodes.values()].find((n) => n.name !== name && this.deps.applicationName(n.name).toLowerCase() === app);
      if (node) this.standby = { node: node.name, primary: name };
      else this.note(sync ? `the synchronous standby ${sync.applicationName} is not a configured node` : 'no synchronous standby is in sync');
    }
    void this.refreshLevel(name);
  }

  /** The node that applied the session's write just committed (before it was acknowledged), if one did. */
  appliedOn(session: object): string | undefined {
    const marks = this.marks.get(session);
    const touched = marks !== undefined && (marks.sticky || marks.untilWrite);
    if (marks) marks.untilWrite = false;
    const standby = this.current();
    if (touched || standby === undefined) return undefined;
    const own = sessionLevel(stateSqlOf(session));
    const level = own === 'server' ? (this.overridden ? undefined : this.serverLevel) : own;
    return level === 'remote_apply' ? standby : undefined;
  }

  stillApplies(node: string): boolean {
    return this.current() === node;
  }

  touched(session: object, sticky: boolean): void {
    const marks = this.marks.get(session);
    if (marks) {
      marks.untilWrite = true;
      marks.sticky ||= sticky;
    } else this.marks.set(session, { untilWrite: true, sticky });
  }

  status(): RemoteApplyStatus {
    const standby = this.current() ?? null;
    if (standby === null) return { state: 'off', standby, reason: this.reason };
    if (!this.overridden && this.serverLevel === 'remote_apply') return { state: 'on', standby, reason: `synchronous_commit is remote_apply on the primary and ${standby} is in sync: reads after a write may go there at once` };
    return { state: 'session', standby, reason: `${this.reason}; sessions that SET synchronous_commit = remote_apply may read from ${standby} at once after a write` };
  }

  /** The leader's findings, for its workers (workers mode). */
  shared(): RemoteApplyShared {
    return { standby: this.standby ?? null, serverLevel: this.serverLevel ?? null, overridden: this.overridden, reason: this.reason };
  }

  /** A worker: the leader's findings replace its own (it checks nothing itself). */
  adopt(from: RemoteApplyShared): void {
    this.standby = from.standby ?? undefined;
    this.serverLevel = from.serverLevel ?? undefined;
    this.overridden = from.overridden;
    this.reason = from.reason;
  }

  stop(): void {
    this.stopped = true;
    void this.probe?.close();
    this.probe = undefined;
  }

  private current(): string | undefined {
    const standby = this.standby;
    if (!standby || standby.primary !== this.deps.topology.primaryName) return undefined;
    const node = this.deps.topology.node(standby.node);
    return node && node.up && !node.fenced && node.inRecovery !== false ? standby.node : undefined;
  }

  private async refreshLevel(primary: string): Promise<void> {
    if (this.refreshing) return;
    this.refreshing = true;
    try {
      const probe = this.probeFor(primary);
      if (!probe) return;
      const row = await probe.query<{ level: string; can_see_overrides: boolean }>('pgrelay_sync_commit', LEVEL_SQL);
      this.serverLevel = syncCommitLevel(row.level);
      if (!row.can_see_overrides) {
        this.overridden = true;
        this.note('the monitor role may not read pg_db_role_setting: the server default of synchronous_commit is not known to hold for every session');
        return;
      }
      const { overrides } = await probe.query<{ overrides: number }>('pgrelay_sync_commit_overrides', OVERRIDES_SQL);
      this.overridden = overrides > 0;
      if (this.overridden) this.note('a role or database sets its own synchronous_commit (ALTER ROLE/DATABASE … SET): the server default is not every session\'s');
      else if (this.serverLevel !== 'remote_apply') this.note(`synchronous_commit is ${this.serverLevel ?? row.level} on the primary, not remote_apply`);
      else if (this.current() !== undefined) this.note('');
    } catch (error) {
      this.overridden = true;
      this.note(`the server's synchronous_commit could not be read: ${error instanceof Error ? error.message : String(error)}`);
    } finally {
      this.refreshing = false;
    }
  }

  private probeFor(primary: string): NodeProbe | undefined {
    const node = this.deps.topology.node(primary);
    if (!node || this.stopped) return undefined;
    const config = this.deps.config();
    const credentials = monitorCredentials(config);
    const key = `${primary}\0${node.host}\0${node.port}\0${credentials.user}\0${credentials.password}\0${JSON.stringify(config.server_tls)}`;
    if (this.probe && key === this.probeKey) return this.probe;
    void this.probe?.close();
    this.probeKey = key;
    this.probe = new NodeProbe(primary, { host: node.host, port: node.port, credentials, timeoutMs: config.health.timeout_ms, tls: config.server_tls, applicationName: 'pgrelay remote_apply check' });
    return this.probe;
  }

  /** Why the shortcut is off (or only for some sessions), logged once per reason; '' = fully on. */
  private note(reason: string): void {
    this.reason = reason === '' ? 'on' : reason;
    if (reason === this.logged) return;
    this.logged = reason;
    if (reason === '') this.deps.log.info({ standby: this.current() }, 'remote_apply shortcut on: reads after a write may go to the synchronous standby at once');
    else this.deps.log.info({ reason }, 'remote_apply shortcut not in use');
  }
}

/** The session state's SQL (ClientSession.stateSql), when the session key has one. */
function stateSqlOf(session: object): string | undefined {
  const read = (session as { stateSql?: unknown }).stateSql;
  return typeof read === 'function' ? String(read.call(session)) : undefined;
}

const SET_LEVEL = /\bset\s+(?:session\s+)?"?synchronous_commit"?\s*(?:=|\bto\b)\s*'?([a-z_0-9]+)'?\s*$/i;

/**
 * The level a session set for itself ('server': it set none, or SET … TO DEFAULT), or undefined
 * when its state names the setting in a way not followed here (then no shortcut).
 */
export function sessionLevel(stateSql: string | undefined): SyncCommitLevel | 'server' | undefined {
  if (stateSql === undefined) return undefined;
  if (!/synchronous_commit/i.test(stateSql)) return 'server';
  let level: SyncCommitLevel | 'server' | undefined;
  for (const statement of stateSql.split(';\n')) {
    if (!/synchronous_commit/i.test(statement)) continue;
    const m = SET_LEVEL.exec(statement.trim());
    if (!m) return undefined;
    level = m[1]!.toLowerCase() === 'default' ? 'server' : syncCommitLevel(m[1]!);
    if (level === undefined) return undefined;
  }
  return level;
}
