import type { Config } from '../config/types.js';
import { ProxyError, SqlState } from '../errors.js';
import type { PoolSet } from '../pool/pool-set.js';
import type { Logger } from '../util/log.js';
import { chooseFailoverTarget, type PlanNode, type ReplicationObservation } from './failover-plan.js';
import type { HealthChecker } from './health-checker.js';
import { addressOf, sleep, type NodeAdmin } from './node-admin.js';
import { listsStandby, parseSyncStandbyNames } from './sync-standby-names.js';
import type { NodeStatus, Topology } from './topology.js';

export interface SwitchoverContext {
  topology: Topology;
  pools: PoolSet;
  /** workers mode: server connections other processes have busy on a node */
  busyElsewhere?: (node: string) => number;
  admin: NodeAdmin;
  health: HealthChecker;
  log: Logger;
  config: () => Config;
  planNodes: () => PlanNode[];
  observation: (primary: string) => ReplicationObservation | undefined;
  /** `closePools: false` only holds new units (running transactions go on) */
  fence: (name: string, reason: string, options?: { closePools: boolean }) => void;
  unfence: (name: string) => void;
}

export interface SwitchoverResult {
  from: string;
  to: string;
  timeline: number;
  /** the old primary's WAL position when it stopped taking writes */
  finalLsn: string;
  /** how long units for the primary were held */
  pausedMs: number;
  durationMs: number;
  reason: string;
}

/** Longest wait for transactions running on the old primary to finish before they are ended. */
const DRAIN_MAX_MS = 10_000;
/** Longest wait for the target to replay the old primary's final WAL position. */
const CATCH_UP_MAX_MS = 30_000;

/**
 * A planned change of primary with no acknowledged write lost and no client error:
 *  0. the other replicas are re-pointed to stream from the target (cascading): they then never
 *     hold WAL the target lacks (the old primary keeps writing background WAL — autovacuum,
 *     checkpoints — which a replica still streaming from it would receive past the point where
 *     the new timeline forks, and could not follow the target afterwards). The old primary's
 *     synchronous standbys are moved only once it refuses writes (step 3), or its commits would
 *     wait for them;
 *  1. hold new units for the primary (the old primary is fenced: the router has no primary, so
 *     sessions wait up to failover.wait_ms, as during a failover);
 *  2. let transactions running there finish (bounded; what is left is ended in step 3);
 *  3. make the old primary refuse writes (default_transaction_read_only = on, reload) and end the
 *     remaining sessions of pgrelay's users there;
 *  4. wait until the target has replayed the old primary's final WAL position;
 *  5. promote the target, clear its synchronous_standby_names, make it the primary (units flow).
 * The old primary stays fenced: turning a running primary into a replica needs its files
 * (standby.signal, a restart, maybe pg_rewind), which pgrelay does not have; an operator rejoins
 * it. If anything fails before the promotion, the old primary takes writes again.
 */
export async function runSwitchover(ctx: SwitchoverContext, targetName: string | undefined): Promise<SwitchoverResult> {
  const { topology, admin, log } = ctx;
  const startedAt = performance.now();
  const old = topology.primary();
  if (!old) throw new ProxyError(SqlState.cannotConnectNow, 'no primary is available to switch over from');
  const target = chooseTarget(ctx, old, targetName);
  const peers = await admin.streamingPeers(addressOf(old));
  const targetApp = ctx.health.applicationName(target.name).toLowerCase();
  if (!peers.some((p) => p.state === 'streaming' && p.applicationName.toLowerCase() === targetApp)) {
    throw new ProxyError(SqlState.cannotConnectNow, `${target.name} is not streaming from ${old.name}: it cannot catch up`);
  }
  const reason = targetName ? `switchover to ${target.name} requested` : `switchover to ${target.name}, the synchronous standby`;
  // A follower the old primary's commits may wait for is moved only once it refuses writes. Its
  // sync_state lags a change of synchronous_standby_names (a walsender re-reads the setting on its
  // own time), so a standby the setting lists counts as synchronous too.
  const syncNames = parseSyncStandbyNames(await admin.synchronousStandbyNames(addressOf(old)));
  const synchronous = new Set(peers.filter((p) => p.syncState === 'sync' || p.syncState === 'quorum' || p.syncState === 'potential').map((p) => p.applicationName.toLowerCase()));
  const followers = [...topology.nodes.values()].filter((n) => n.name !== old.name && n.name !== target.name && n.up && !n.fenced && n.inRecovery === true);
  const isSynchronous = (n: NodeStatus) => {
    const app = ctx.health.applicationName(n.name);
    return synchronous.has(app.toLowerCase()) || listsStandby(syncNames, app);
  };

  // 0. cascade the asynchronous replicas from the target
  await cascade(ctx, followers.filter((n) => !isSynchronous(n)), target);
  log.warn({ from: old.name, to: target.name }, 'switchover: holding units for the primary');

  // 1. hold
  ctx.fence(old.name, `switchover to ${target.name} in progress`, { closePools: false });
  const heldAt = performance.now();
  let readOnly = false;
  let finalLsn: bigint;
  try {
    // 2. drain
    const drainMs = Math.min(DRAIN_MAX_MS, Math.max(1000, ctx.config().failover.wait_ms / 2));
    const drained = await waitUntil(drainMs, () => busyConnections(ctx, old.name) === 0);
    if (!drained) log.warn({ node: old.name, busy: busyConnections(ctx, old.name) }, 'switchover: transactions still running on the old primary are ended');

    // 3. refuse writes, end what is left (pgrelay's own connections first)
    ctx.pools.closeNode(old.name);
    const users = [...new Set(ctx.config().users.map((u) => u.server_user ?? u.name))];
    readOnly = true;
    const refused = await admin.refuseWrites(addressOf(old), users);
    finalLsn = refused.finalLsn;
    if (refused.sessionsEnded > 0) log.info({ node: old.name, sessions: refused.sessionsEnded }, 'switchover: ended sessions on the old primary');
    await cascade(ctx, followers.filter(isSynchronous), target);

    // 4. catch up
    if (!(await admin.waitForReplay(addressOf(target), finalLsn, CATCH_UP_MAX_MS))) {
      throw new ProxyError(SqlState.cannotConnectNow, `${target.name} did not replay ${formatLsn(finalLsn)} within ${CATCH_UP_MAX_MS} ms`);
    }
  } catch (error) {
    // nothing was promoted: the old primary takes writes again
    if (readOnly) await admin.resetSystem(addressOf(old), ['default_transaction_read_only']).catch(() => {});
    ctx.unfence(old.name);
    log.error({ from: old.name, to: target.name, err: error instanceof Error ? error.message : String(error) }, 'switchover aborted: the old primary takes writes again');
    throw error;
  }

  // 5. promote
  let timeline: number;
  try {
    ({ timeline } = await admin.promote(addressOf(target)));
  } catch (error) {
    // the promotion may have happened: discovery (out of recovery, newest timeline) finds it
    log.error({ from: old.name, to: target.name, err: error instanceof Error ? error.message : String(error) }, 'switchover: promotion failed; units wait for a primary');
    throw error;
  }
  ctx.fence(old.name, `former primary: switched over to ${target.name} (read-only; rejoin it as a replica)`);
  target.inRecovery = false;
  target.timeline = timeline;
  topology.setPrimary(target.name);
  const pausedMs = performance.now() - heldAt;
  return { from: old.name, to: target.name, timeline, finalLsn: formatLsn(finalLsn), pausedMs, durationMs: performance.now() - startedAt, reason };
}

/** Longest wait for replicas re-pointed at the target to stream from it. */
const CASCADE_WAIT_MS = 10_000;

/** Re-points replicas to stream from the target (still a standby) and waits (bounded) until they do. */
async function cascade(ctx: SwitchoverContext, followers: NodeStatus[], target: NodeStatus): Promise<void> {
  if (followers.length === 0) return;
  const moved: NodeStatus[] = [];
  await Promise.all(
    followers.map(async (follower) => {
      try {
        await ctx.admin.repoint(addressOf(follower), addressOf(target));
        moved.push(follower);
      } catch (error) {
        ctx.log.warn({ node: follower.name, target: target.name, err: error instanceof Error ? error.message : String(error) }, 'switchover: could not re-point replica to the target; it is re-pointed after the promotion');
      }
    }),
  );
  const apps = (nodes: NodeStatus[]) => nodes.map((n) => ctx.health.applicationName(n.name).toLowerCase());
  let waiting = apps(moved);
  const deadline = performance.now() + CASCADE_WAIT_MS;
  while (waiting.length > 0 && performance.now() < deadline) {
    const streaming = new Set((await ctx.admin.streamingPeers(addressOf(target)).catch(() => [])).filter((p) => p.state === 'streaming').map((p) => p.applicationName.toLowerCase()));
    waiting = waiting.filter((app) => !streaming.has(app));
    if (waiting.length > 0) await sleep(20);
  }
  if (waiting.length > 0) ctx.log.warn({ target: target.name, replicas: waiting }, 'switchover: replicas do not stream from the target yet');
  else ctx.log.info({ target: target.name, replicas: apps(moved) }, 'switchover: replicas stream from the target');
}

function chooseTarget(ctx: SwitchoverContext, old: NodeStatus, targetName: string | undefined): NodeStatus {
  if (targetName !== undefined) {
    const node = ctx.topology.node(targetName);
    if (!node) throw new ProxyError(SqlState.invalidParameterValue, `no node named "${targetName}"`);
    if (node.name === old.name) throw new ProxyError(SqlState.invalidParameterValue, `${targetName} is already the primary`);
    if (!node.up || node.fenced || node.inRecovery !== true) throw new ProxyError(SqlState.cannotConnectNow, `${targetName} is not a replica that is up (up: ${node.up}, fenced: ${node.fenced}, in recovery: ${node.inRecovery})`);
    return node;
  }
  const choice = chooseFailoverTarget(ctx.planNodes(), old.name, ctx.observation(old.name), false);
  if (!choice.target) throw new ProxyError(SqlState.cannotConnectNow, `no switchover target: ${choice.reason}`);
  return ctx.topology.node(choice.target)!;
}

/** Server connections of the node lent out, opening, or waited for (in every worker process). */
function busyConnections(ctx: SwitchoverContext, node: string): number {
  let busy = ctx.busyElsewhere?.(node) ?? 0;
  for (const pool of ctx.pools.ofNode(node)) {
    const s = pool.stats();
    busy += s.active + s.connecting + s.waiting;
  }
  return busy;
}

async function waitUntil(timeoutMs: number, done: () => boolean): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (!done()) {
    if (performance.now() > deadline) return false;
    await sleep(10);
  }
  return true;
}


export function formatLsn(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}

/**
 * POST /admin/switchover with an optional JSON body `{"target": "standby1"}`: the HTTP status and
 * JSON answer (the admin route only serializes it).
 */
export async function switchoverRequest(run: (target: string | undefined) => Promise<SwitchoverResult>, body: string): Promise<{ status: number; body: Record<string, unknown> }> {
  let target: string | undefined;
  if (body.trim() !== '') {
    let parsed: unknown;
    try {
      parsed = JSON.parse(body);
    } catch {
      return { status: 400, body: { status: 'rejected', error: 'the body must be JSON, e.g. {"target": "standby1"}, or empty' } };
    }
    const value = parsed !== null && typeof parsed === 'object' ? (parsed as Record<string, unknown>)['target'] : undefined;
    if (value !== undefined && typeof value !== 'string') return { status: 400, body: { status: 'rejected', error: '"target" must be a node name (a string)' } };
    target = value;
  }
  try {
    const result = await run(target);
    return { status: 200, body: { status: 'done', ...result, pausedMs: Math.round(result.pausedMs), durationMs: Math.round(result.durationMs) } };
  } catch (error) {
    if (!(error instanceof ProxyError)) return { status: 500, body: { status: 'failed', error: error instanceof Error ? error.message : String(error) } };
    const status = error.sqlstate === SqlState.invalidParameterValue ? 400 : 409;
    return { status, body: { status: 'rejected', sqlstate: error.sqlstate, error: error.message } };
  }
}
