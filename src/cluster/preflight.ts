import { enforceServerAuth } from '../auth/pg-client-auth.js';
import { pgSsl } from '../auth/server-tls.js';
import type net from 'node:net';
import pg from 'pg';
import type { Config } from '../config/types.js';
import type { Metrics } from '../metrics/metrics.js';
import type { Logger } from '../util/log.js';
import {
  ALTER_SYSTEM_PARAMETERS,
  groupShortfalls,
  judgeCapabilities,
  MONITOR_FUNCTIONS,
  type AlterSystemParameter,
  type CapabilityReport,
  type CheckFailure,
  type NodeCheck,
  type RoleFacts,
} from './capabilities.js';
import { failoverLogin, healthLogin } from './health-checker.js';
import type { NodeLogin } from './health-probe.js';
import type { Topology } from './topology.js';

/** What a role may do, in one round trip (the parameter ACLs need a second one on 15+). */
const FACTS_SQL = `SELECT current_user AS user,
  current_setting('server_version_num')::int AS version,
  pg_is_in_recovery() AS in_recovery,
  r.rolsuper AS superuser, r.rolreplication AS replication,
  pg_has_role('pg_read_all_stats', 'USAGE') AS read_all_stats,
  pg_has_role('pg_read_all_settings', 'USAGE') AS read_all_settings,
  pg_has_role('pg_signal_backend', 'USAGE') AS signal_backend,
  has_function_privilege('pg_promote(boolean, integer)', 'EXECUTE') AS promote,
  has_function_privilege('pg_reload_conf()', 'EXECUTE') AS reload_conf,
  ARRAY(SELECT f FROM unnest($1::text[]) AS f WHERE NOT has_function_privilege(f, 'EXECUTE')) AS denied_functions,
  current_setting('synchronous_standby_names') AS sync_names
FROM pg_roles AS r WHERE r.rolname = current_user`;

const PARAMETER_SQL = `SELECT p AS parameter, has_parameter_privilege(p, 'ALTER SYSTEM') AS allowed FROM unnest($1::text[]) AS p`;

interface FactsRow {
  user: string;
  version: number;
  in_recovery: boolean;
  superuser: boolean;
  replication: boolean;
  read_all_stats: boolean;
  read_all_settings: boolean;
  signal_backend: boolean;
  promote: boolean;
  reload_conf: boolean;
  denied_functions: string[];
  sync_names: string;
}

/** SQLSTATEs that mean "this role may not do that", as opposed to "the node did not answer". */
const REFUSED = new Set(['28000', '28P01', '42501', '3D000']);

/** Reads one role's facts on one node over a short-lived connection (postgres, else template1). */
export async function roleFacts(login: NodeLogin, timeoutMs: number): Promise<RoleFacts | CheckFailure> {
  let last: unknown;
  for (const database of [login.database, 'template1']) {
    const client = new pg.Client({
      host: login.host,
      port: login.port,
      user: login.user,
      password: login.password,
      database,
      ssl: pgSsl(login.tls, login.host),
      application_name: 'pgrelay preflight',
      connectionTimeoutMillis: timeoutMs,
      query_timeout: timeoutMs,
      statement_timeout: timeoutMs,
    });
    enforceServerAuth(client, `${login.host}:${login.port}`, login.requireAuth);
    client.on('error', () => {});
    try {
      await client.connect();
      const row = (await client.query<FactsRow>(FACTS_SQL, [MONITOR_FUNCTIONS])).rows[0];
      if (!row) return { error: `role ${login.user} is not in pg_roles`, login: true };
      const alterSystem = Object.fromEntries(ALTER_SYSTEM_PARAMETERS.map((p) => [p, row.superuser])) as Record<AlterSystemParameter, boolean>;
      if (row.version >= 150000 && !row.superuser) {
        for (const p of (await client.query<{ parameter: AlterSystemParameter; allowed: boolean }>(PARAMETER_SQL, [ALTER_SYSTEM_PARAMETERS])).rows) alterSystem[p.parameter] = p.allowed;
      }
      return {
        user: row.user,
        version: row.version,
        inRecovery: row.in_recovery,
        superuser: row.superuser,
        replication: row.replication || row.superuser,
        readAllStats: row.read_all_stats,
        readAllSettings: row.read_all_settings,
        signalBackend: row.signal_backend || row.superuser,
        promote: row.promote,
        reloadConf: row.reload_conf,
        deniedFunctions: row.denied_functions,
        alterSystem,
        synchronousStandbyNames: row.sync_names,
      };
    } catch (error) {
      last = error;
      const code = (error as { code?: string }).code;
      // only a database we may not use is worth the second try
      if (code !== '3D000' && !(code === '42501' && database !== 'template1' && /database/i.test(errorText(error)))) break;
    } finally {
      // a polite goodbye (no "unexpected EOF" in the server's log every minute), bounded: a hung server gets none
      await Promise.race([client.end().catch(() => undefined), new Promise((resolve) => setTimeout(resolve, 1000).unref())]);
      (client as unknown as { connection?: { stream?: net.Socket } }).connection?.stream?.destroy();
    }
  }
  const code = (last as { code?: string }).code;
  const sqlstate = code !== undefined && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
  return { error: sqlstate ? `${sqlstate} ${errorText(last)}` : errorText(last), login: sqlstate !== undefined && REFUSED.has(sqlstate) };
}

/** Checks both roles on every node (the failover role in managed mode only) and judges. */
export async function runPreflight(config: Config, nodes: readonly { name: string; host: string; port: number; configuredRole: Config['nodes'][number]['role'] }[], primary: string | undefined): Promise<CapabilityReport> {
  const monitor = healthLogin(config);
  const failover = failoverLogin(config);
  const managed = config.failover.mode === 'managed';
  const timeoutMs = Math.max(2000, 2 * config.health.timeout_ms);
  const checks: NodeCheck[] = await Promise.all(
    nodes.map(async (node): Promise<NodeCheck> => {
      const at = { host: node.host, port: node.port };
      const monitorFacts = await roleFacts({ ...monitor, ...at }, timeoutMs);
      const failoverFacts = !managed ? undefined : failover.user === monitor.user && failover.password === monitor.password ? monitorFacts : await roleFacts({ ...failover, ...at }, timeoutMs);
      return { node: node.name, configuredRole: node.configuredRole, monitor: monitorFacts, failover: failoverFacts };
    }),
  );
  return judgeCapabilities({ mode: config.failover.mode, allowDataLoss: config.failover.allow_data_loss, monitorUser: monitor.user, failoverUser: failover.user, primary, nodes: checks });
}

/** Lines for a person (logs, check-config): one per role and grant, then each capability. */
export function describeReport(report: CapabilityReport): { level: 'error' | 'warn' | 'info'; text: string; fields: Record<string, unknown> }[] {
  const lines: { level: 'error' | 'warn' | 'info'; text: string; fields: Record<string, unknown> }[] = [];
  for (const group of groupShortfalls(report.shortfalls)) {
    lines.push({
      level: group.disables ? 'error' : 'warn',
      text: `role ${group.role} lacks ${group.missing} on ${group.nodes.join(', ')}: ${group.effects.join('; ')}. Fix: ${group.grant}`,
      fields: { role: group.role, nodes: group.nodes, missing: group.missing, grant: group.grant, features: group.features },
    });
  }
  for (const { node, role, error } of report.unchecked) lines.push({ level: 'warn', text: `role ${role} could not be checked on ${node}: ${error}`, fields: { role, node } });
  for (const name of ['replica_reads', 'failover', 'switchover'] as const) {
    const capability = report[name];
    const level = capability.state === 'ok' || !capability.configured ? 'info' : capability.state === 'degraded' || capability.state === 'unknown' ? 'warn' : 'error';
    lines.push({ level, text: `${name}: ${capability.state} (${capability.reason})`, fields: { capability: name, state: capability.state } });
  }
  return lines;
}

/** Whether a configured feature cannot work (check-config --connect exits 1). */
export function disablesConfiguredFeature(report: CapabilityReport): boolean {
  return (['replica_reads', 'failover', 'switchover'] as const).some((name) => report[name].configured && (report[name].state === 'off' || report[name].state === 'impossible'));
}

export interface PreflightDeps {
  topology: Topology;
  metrics: Metrics;
  log: Logger;
  config: () => Config;
}

/** Grants change without a reload: the preflight runs again this often (quietly, unless its findings change). */
export const PREFLIGHT_REPEAT_MS = 60_000;

/**
 * The preflight as pgrelay runs it: at start, after each reload (both log every finding: errors
 * for what disables a feature, warnings for what degrades one), again every PREFLIGHT_REPEAT_MS,
 * when a node it could not reach comes up and when the primary or its synchronous standby setting
 * changes (these log only what changed). Keeps the latest
 * report for /status, /health and pgrelay_capability.
 */
export class Preflight {
  report: CapabilityReport | undefined;
  /** Date.now() when `report` was made */
  checkedAt: number | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private loud = false;
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;
  /** the primary and its synchronous_standby_names as last seen by the health checks */
  private primaryKey: string | undefined;

  constructor(private readonly deps: PreflightDeps) {}

  /** Checks every node now (start, reload: `loud` logs every finding) and then every PREFLIGHT_REPEAT_MS. */
  async start(): Promise<void> {
    await this.run(true);
    if (this.stopped) return;
    this.timer = setInterval(() => void this.run(false), PREFLIGHT_REPEAT_MS);
    this.timer.unref();
  }

  /** Runs once (joins a run in progress and queues one more after it). */
  run(loud: boolean): Promise<void> {
    this.loud ||= loud;
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      do {
        this.again = false;
        const log = this.loud;
        this.loud = false;
        await this.runOnce(log).catch((error: unknown) => this.deps.log.error({ err: errorText(error) }, 'preflight failed'));
      } while (this.again && !this.stopped);
    })().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  /**
   * A health check of the primary: a new primary, or a change of its synchronous_standby_names (a
   * standby added, failover settling a new one), changes what failover can do: check again.
   */
  primarySeen(name: string, synchronousStandbyNames: string): void {
    const key = `${name}\0${synchronousStandbyNames}`;
    const before = this.primaryKey;
    this.primaryKey = key;
    if (before !== undefined && before !== key && this.report) void this.run(false);
  }

  /** A node came up: check again if the last run could not reach it. */
  nodeUp(name: string): void {
    if (this.report?.unchecked.some((u) => u.node === name)) void this.run(false);
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
  }

  private async runOnce(loud: boolean): Promise<void> {
    const { topology, log, metrics } = this.deps;
    const nodes = [...topology.nodes.values()].map((n) => ({ name: n.name, host: n.host, port: n.port, configuredRole: n.configuredRole }));
    const report = await runPreflight(this.deps.config(), nodes, topology.primaryName);
    if (this.stopped) return;
    const before = this.report === undefined ? undefined : findings(this.report);
    this.report = report;
    this.checkedAt = Date.now();
    metrics.capability.reset();
    for (const name of ['replica_reads', 'failover', 'switchover'] as const) {
      if (report[name].configured) metrics.capability.labels(name).set(report[name].state === 'ok' ? 1 : 0);
    }
    if (!loud && before === findings(report)) return;
    for (const line of describeReport(report)) log[line.level](line.fields, `preflight: ${line.text}`);
  }
}

/** A report's findings, for "did anything change" (an unreachable node's error text varies from run to run). */
function findings(report: CapabilityReport): string {
  return JSON.stringify({ ...report, unchecked: report.unchecked.map((u) => `${u.node} ${u.role}`) });
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
