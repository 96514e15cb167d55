/**
 * The AWS RDS workflows on a local cluster, while clients keep running through pgrelay:
 * - create a read replica: snapshot (pg_basebackup) of the current primary through a new
 *   replication slot, start, catch up until within routing.max_lag, then into pgrelay's routing
 *   table (a live reload) and wait until pgrelay's own checks vouch for it;
 * - convert single-AZ to Multi-AZ: the same for a standby, made the primary's synchronous standby
 *   (synchronous_standby_names + reload) once caught up, so every commit waits for it from then on
 *   and it is the failover target;
 * - remove a node: out of the routing table first, drain the units running there, then detach it
 *   (synchronous_standby_names), stop it, drop its slot and delete its files.
 * Every step is reported as it happens (WorkflowEvent). A failed add leaves pgrelay's configuration
 * as it was and removes whatever it had created. One workflow runs at a time.
 *
 * The running pgrelay is reached through RelayControl (demo-cluster-routes.ts implements it over
 * App), so this module depends on no part of the proxy.
 */
import fs from 'node:fs';
import { lsnDistance, parseLsn } from '../cluster/lsn.js';
import type { Config, NodeConfig } from '../config/types.js';
import { isValidNodeName, type BaseBackupProgress, type LocalCluster, type LocalNode } from './cluster.js';
import { formatBytes, formatMs, percent } from './progress-format.js';
import { WorkflowRefused, type RelayControl, type WorkflowEvent, type WorkflowKind, type WorkflowOptions, type WorkflowRun } from './rds-workflow-types.js';

export { WorkflowRefused } from './rds-workflow-types.js';
export type { RelayControl, RelayNodeView, WorkflowEvent, WorkflowKind, WorkflowOptions, WorkflowRun, WorkflowStep } from './rds-workflow-types.js';

const POLL_MS = 250;
/** Progress of a long wait is reported at most this often (and whenever its state changes). */
const REPORT_MS = 1000;
const CATCH_UP_TIMEOUT_MS = 300_000;
const VOUCH_TIMEOUT_MS = 60_000;
const DRAIN_TIMEOUT_MS = 60_000;
const SYNC_TIMEOUT_MS = 30_000;
/** Beyond the snapshot itself, the new node needs room for the WAL it receives and keeps. */
const DISK_MARGIN_BYTES = 256 * 1024 * 1024;

type Emit = (event: Omit<WorkflowEvent, 'elapsedMs'>) => void;

export class ClusterWorkflows {
  private current: WorkflowRun | undefined;

  constructor(
    private readonly cluster: LocalCluster,
    private readonly relay: RelayControl,
  ) {}

  /** The workflow running now, if any. */
  get running(): WorkflowRun | undefined {
    return this.current;
  }

  /**
   * Starts a workflow. Refuses at once (WorkflowRefused) what can be judged before anything
   * changes: a bad or taken name, an unknown node, the primary, another workflow or a failover
   * running. Every later failure is reported as the `failed` event.
   */
  start(kind: WorkflowKind, options: WorkflowOptions, onEvent: (event: WorkflowEvent) => void): WorkflowRun {
    if (this.current) throw new WorkflowRefused(409, `${this.current.kind} ${this.current.node} is running; one cluster change runs at a time`);
    if (this.relay.changingPrimary()) throw new WorkflowRefused(409, 'a failover or switchover is running; try again once it is over');
    const clusterPrimary = this.cluster.primary().name;
    const relayPrimary = this.relay.primaryName();
    if (relayPrimary !== clusterPrimary) {
      if (relayPrimary === undefined || !this.cluster.nodes.some((n) => n.name === relayPrimary)) {
        throw new WorkflowRefused(409, `pgrelay sends writes to ${relayPrimary ?? 'no node'}, which is not a node of the local cluster (its primary was ${clusterPrimary})`);
      }
      // pgrelay failed over (managed mode promoted that node): the local cluster follows it
      this.cluster.adoptPrimary(relayPrimary, (name) => {
        const role = this.relay.node(name)?.role;
        return role === 'standby' || role === 'replica' ? role : undefined;
      });
    }
    const node = kind === 'remove' ? this.checkRemove(options.name) : this.checkAdd(kind === 'add-standby' ? 'standby' : 'replica', options.name);
    const startedAt = performance.now();
    let last: WorkflowEvent | undefined;
    const emit: Emit = (event) => {
      last = { ...event, elapsedMs: Math.round(performance.now() - startedAt) };
      onEvent(last);
    };
    const work = kind === 'remove' ? this.remove(node, options, emit) : this.add(kind === 'add-standby' ? 'standby' : 'replica', node, options, emit);
    const run: WorkflowRun = {
      kind,
      node,
      done: work.then(
        () => last!,
        (error: unknown) => {
          emit({ step: 'failed', ok: false, node, error: errorText(error), message: `${kind} ${node} failed: ${errorText(error)}` });
          return last!;
        },
      ),
    };
    this.current = run;
    void run.done.finally(() => {
      if (this.current === run) this.current = undefined;
    });
    return run;
  }

  private checkAdd(role: 'standby' | 'replica', requested: string | undefined): string {
    const taken = (name: string) => this.cluster.nodes.some((n) => n.name === name) || this.relay.config().nodes.some((n) => n.name === name);
    if (requested !== undefined) {
      if (!isValidNodeName(requested)) throw new WorkflowRefused(400, `invalid node name "${requested}": use [a-z][a-z0-9_]*, at most 40 characters`);
      if (taken(requested)) throw new WorkflowRefused(409, `a node named ${requested} already exists`);
      return requested;
    }
    for (let i = 1; ; i++) if (!taken(`${role}${i}`)) return `${role}${i}`;
  }

  private checkRemove(name: string | undefined): string {
    if (name === undefined || name === '') throw new WorkflowRefused(400, 'name the node to remove');
    if (!this.cluster.nodes.some((n) => n.name === name)) {
      const known = this.cluster.nodes.map((n) => n.name).join(', ');
      throw new WorkflowRefused(404, `no node named "${name}" in the local cluster (nodes: ${known})`);
    }
    if (name === this.cluster.primary().name) throw new WorkflowRefused(409, `${name} is the primary: it cannot be removed (switch over to another node first)`);
    return name;
  }

  // ------------------------------------------------------------------ add

  private async add(role: 'standby' | 'replica', name: string, options: WorkflowOptions, emit: Emit): Promise<void> {
    const kindWord = role === 'standby' ? 'synchronous standby' : 'read replica';
    const primary = this.cluster.primary();
    await this.preflight(primary, emit);

    // snapshot, slot, start, streaming (LocalCluster.addNode removes what it built when a step fails)
    let lastBackup: BaseBackupProgress | undefined;
    let backupReportedAt = -Infinity;
    const reportBackup = (progress: BaseBackupProgress, final: boolean) => {
      const rate = progress.elapsedMs > 0 ? (progress.doneBytes * 1000) / progress.elapsedMs : 0;
      const message = final
        ? `snapshot done: ${formatBytes(progress.totalBytes)} copied in ${(progress.elapsedMs / 1000).toFixed(1)} s (${formatBytes(rate)}/s)`
        : `copied ${formatBytes(progress.doneBytes)} of ${formatBytes(progress.totalBytes)} (${percent(progress.doneBytes, progress.totalBytes)}%), ${formatBytes(rate)}/s`;
      emit({ step: 'snapshot', node: name, bytes: progress.doneBytes, totalBytes: progress.totalBytes, bytesPerSecond: Math.round(rate), message });
    };
    const added = await this.cluster.addNode(role, {
      name,
      synchronous: 'later',
      onBaseBackupProgress: (progress) => {
        lastBackup = progress;
        const now = performance.now();
        if (now - backupReportedAt < REPORT_MS) return;
        backupReportedAt = now;
        reportBackup(progress, false);
      },
      onStep: (text) => {
        if (text.startsWith('replication slot ')) {
          emit({ step: 'slot', node: name, message: `${text} (keeps the WAL the new node needs from the moment of the snapshot)` });
        } else if (text === `base backup ${name}`) {
          emit({ step: 'snapshot', node: name, message: `pg_basebackup of ${primary.name} (${primary.host}:${primary.port}) into ${name}` });
        } else if (text === `start ${name}`) {
          if (lastBackup) reportBackup(lastBackup, true);
          emit({ step: 'start', node: name, message: `starting ${name} from the snapshot (hot standby)` });
        } else if (text === 'wait for streaming') {
          emit({ step: 'streaming', node: name, message: `waiting for ${primary.name} to stream WAL to ${name}` });
        } else {
          emit({ step: 'rollback', node: name, message: text });
        }
      },
    });
    emit({ step: 'streaming', node: name, port: added.port, message: `${name} (${added.host}:${added.port}) streams from ${primary.name}` });

    let inRelay = false;
    try {
      await this.catchUp(added, primary, options.catchUpTimeoutMs ?? CATCH_UP_TIMEOUT_MS, emit);
      if (role === 'standby') await this.makeSynchronous(added, primary, emit);
      const before = this.relay.config();
      const next: Config = { ...structuredClone(before), nodes: [...structuredClone(before.nodes), nodeConfig(added, role)] };
      const changes = this.relay.apply(next);
      inRelay = true;
      emit({ step: 'pgrelay', node: name, message: `${name} joins pgrelay's routing table without a restart (${changes})` });
      await this.vouch(added, role, options.vouchTimeoutMs ?? VOUCH_TIMEOUT_MS, emit);
    } catch (error) {
      emit({ step: 'rollback', node: name, message: `${errorText(error)}: undoing the ${kindWord} ${name}` });
      if (inRelay) await this.leaveRelay(name, DRAIN_TIMEOUT_MS, 'rollback', emit).catch(() => {});
      await this.cluster.removeNode(name, { onStep: (text) => emit({ step: 'rollback', node: name, message: text }) }).catch((cleanup: unknown) => {
        emit({ step: 'rollback', node: name, message: `could not remove ${name}: ${errorText(cleanup)}` });
      });
      throw error;
    }
    const view = this.relay.node(name)!;
    const lag = view.lagSeconds === undefined ? '' : `, lag ${formatMs(view.lagSeconds * 1000)}`;
    emit({
      step: 'done',
      ok: true,
      node: name,
      host: added.host,
      port: added.port,
      role,
      message:
        role === 'standby'
          ? `${name} (${added.host}:${added.port}) is the synchronous standby: every commit waits for it, and it is the failover target${lag}`
          : `${name} (${added.host}:${added.port}) is a read replica and serves reads${lag}`,
    });
  }

  /** The primary answers, and the disk can hold a copy of it. */
  private async preflight(primary: LocalNode, emit: Emit): Promise<void> {
    let sizeBytes: number;
    try {
      // what pg_basebackup copies is about the databases' size (pg_wal is not copied: the WAL
      // from the snapshot's start is streamed, and DISK_MARGIN_BYTES leaves room for it)
      const [row] = await this.cluster.query<{ data: string }>(
        primary.name,
        'SELECT sum(pg_database_size(oid))::bigint::text AS data FROM pg_database',
        [],
        { superuser: true, database: 'postgres' },
      );
      sizeBytes = Number(row!.data);
    } catch (error) {
      throw new Error(`the primary ${primary.name} (${primary.host}:${primary.port}) is unreachable: ${errorText(error)}`);
    }
    const stats = fs.statfsSync(this.cluster.baseDir);
    const freeBytes = stats.bavail * stats.bsize;
    const neededBytes = sizeBytes + DISK_MARGIN_BYTES;
    if (freeBytes < neededBytes) {
      throw new Error(
        `not enough disk space in ${this.cluster.baseDir}: the snapshot of ${primary.name} is about ${formatBytes(sizeBytes)} and the new node needs ${formatBytes(neededBytes)} with its WAL, but only ${formatBytes(freeBytes)} are free`,
      );
    }
    emit({
      step: 'check',
      totalBytes: sizeBytes,
      message: `${primary.name} (${primary.host}:${primary.port}) answers; the snapshot copies about ${formatBytes(sizeBytes)}; ${formatBytes(freeBytes)} free in ${this.cluster.baseDir}`,
    });
  }

  /**
   * Until the node has replayed everything the primary had written when catch-up began, and its
   * replay lag (the primary's pg_stat_replication) is within routing.max_lag_ms (and its byte lag
   * within max_lag_bytes, when set).
   */
  private async catchUp(node: LocalNode, primary: LocalNode, timeoutMs: number, emit: Emit): Promise<void> {
    const { max_lag_ms: maxLagMs, max_lag_bytes: maxLagBytes } = this.relay.config().routing;
    const limit = `routing.max_lag_ms ${maxLagMs}${maxLagBytes > 0 ? `, max_lag_bytes ${maxLagBytes}` : ''}`;
    const deadline = performance.now() + timeoutMs;
    let target: bigint | undefined;
    let reportedAt = 0;
    let first: number | undefined;
    for (;;) {
      const sample = await this.lagSample(node, primary);
      target ??= sample.primaryLsn;
      const reached = sample.replayLsn !== undefined && sample.replayLsn >= target;
      const withinTime = sample.lagMs === null || sample.lagMs <= maxLagMs;
      const withinBytes = maxLagBytes === 0 || sample.lagBytes <= maxLagBytes;
      first ??= sample.lagBytes;
      if (reached && withinTime && withinBytes) {
        emit({
          step: 'catch-up',
          node: node.name,
          lagBytes: sample.lagBytes,
          lagMs: sample.lagMs,
          message: `caught up: ${formatBytes(sample.lagBytes)} behind ${primary.name}, replay lag ${sample.lagMs === null ? 'none (idle)' : formatMs(sample.lagMs)} (within ${limit})`,
        });
        return;
      }
      const now = performance.now();
      if (now - reportedAt >= REPORT_MS) {
        reportedAt = now;
        emit({
          step: 'catch-up',
          node: node.name,
          lagBytes: sample.lagBytes,
          lagMs: sample.lagMs,
          message: `${formatBytes(sample.lagBytes)} behind ${primary.name}, replay lag ${sample.lagMs === null ? 'unknown yet' : formatMs(sample.lagMs)} (wanted: within ${limit})`,
        });
      }
      if (now > deadline) {
        throw new Error(`${node.name} did not catch up within ${formatMs(timeoutMs)}: still ${formatBytes(sample.lagBytes)} behind (it was ${formatBytes(first)} behind at first)`);
      }
      await sleep(POLL_MS);
    }
  }

  private async lagSample(node: LocalNode, primary: LocalNode): Promise<{ primaryLsn: bigint; replayLsn: bigint | undefined; lagBytes: number; lagMs: number | null }> {
    // the node first: its position can only have moved on by the time the primary answers
    const [replay] = await this.cluster
      .query<{ lsn: string | null }>(node.name, 'SELECT pg_last_wal_replay_lsn()::text AS lsn', [], { superuser: true, database: 'postgres' })
      .catch((error: unknown) => {
        throw new Error(`${node.name} (${node.host}:${node.port}) does not answer: ${errorText(error)}`);
      });
    const [row] = await this.cluster.query<{ lsn: string; lag_ms: number | null; state: string | null }>(
      primary.name,
      `SELECT pg_current_wal_lsn()::text AS lsn,
              (SELECT (extract(epoch FROM replay_lag) * 1000)::float8 FROM pg_stat_replication WHERE application_name = $1 LIMIT 1) AS lag_ms,
              (SELECT state FROM pg_stat_replication WHERE application_name = $1 LIMIT 1) AS state`,
      [node.name],
      { superuser: true, database: 'postgres' },
    );
    if (row!.state !== 'streaming') throw new Error(`${primary.name} does not stream to ${node.name} (its walsender is ${row!.state ?? 'gone'})`);
    const primaryLsn = parseLsn(row!.lsn);
    const replayLsn = replay?.lsn ? parseLsn(replay.lsn) : undefined;
    return { primaryLsn, replayLsn, lagBytes: replayLsn === undefined ? Number(primaryLsn) : lsnDistance(primaryLsn, replayLsn), lagMs: row!.lag_ms };
  }

  /** The primary's synchronous_standby_names names the standby; until pg_stat_replication says `sync`. */
  private async makeSynchronous(node: LocalNode, primary: LocalNode, emit: Emit): Promise<void> {
    await this.cluster.applySynchronousStandbys();
    const [setting] = await this.cluster.query<{ value: string }>(primary.name, "SELECT current_setting('synchronous_standby_names') AS value", [], { superuser: true, database: 'postgres' });
    emit({ step: 'synchronous', node: node.name, message: `${primary.name} reloaded with synchronous_standby_names = '${setting!.value}'` });
    const deadline = performance.now() + SYNC_TIMEOUT_MS;
    let state: string | undefined;
    for (;;) {
      const [row] = await this.cluster.query<{ sync_state: string }>(primary.name, 'SELECT sync_state FROM pg_stat_replication WHERE application_name = $1', [node.name], { superuser: true, database: 'postgres' });
      state = row?.sync_state;
      if (state === 'sync' || state === 'potential' || state === 'quorum') break;
      if (performance.now() > deadline) throw new Error(`${node.name} is not a synchronous standby of ${primary.name} after ${formatMs(SYNC_TIMEOUT_MS)} (sync_state ${state ?? 'none'})`);
      await sleep(POLL_MS);
    }
    emit({
      step: 'synchronous',
      node: node.name,
      message:
        state === 'sync'
          ? `pg_stat_replication on ${primary.name}: ${node.name} is sync; every commit now waits for it`
          : `pg_stat_replication on ${primary.name}: ${node.name} is ${state} (another standby is the synchronous one)`,
    });
  }

  /** Until pgrelay's health check sees the node up (as the synchronous standby) and its lag monitor lets it serve reads. */
  private async vouch(node: LocalNode, role: 'standby' | 'replica', timeoutMs: number, emit: Emit): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    let said = '';
    for (;;) {
      const view = this.relay.node(node.name);
      if (view === undefined) throw new Error(`${node.name} left pgrelay's routing table`);
      const roleOk = role === 'replica' || view.role === 'standby';
      if (view.up && view.replicating && view.fresh && roleOk) {
        const lag = view.lagSeconds === undefined ? 'unmeasured' : `${formatMs(view.lagSeconds * 1000)} / ${formatBytes(view.lagBytes ?? 0)}`;
        emit({
          step: 'pgrelay',
          node: node.name,
          lagMs: view.lagSeconds === undefined ? null : Math.round(view.lagSeconds * 1000),
          lagBytes: view.lagBytes,
          message:
            role === 'standby'
              ? `pgrelay's health check sees ${node.name} as the synchronous standby (the failover target); its lag monitor measures ${lag}: it serves reads too`
              : `pgrelay's lag monitor measures ${node.name} at ${lag}: reads go there`,
        });
        return;
      }
      const why = !view.up ? 'its health check has not passed yet' : !roleOk ? `its health check sees it as ${view.role}, not yet as the synchronous standby` : (view.staleReason ?? 'lag not measured yet');
      if (why !== said) {
        said = why;
        emit({ step: 'pgrelay', node: node.name, message: `waiting for pgrelay to vouch for ${node.name}: ${why}` });
      }
      if (performance.now() > deadline) throw new Error(`pgrelay did not vouch for ${node.name} within ${formatMs(timeoutMs)}: ${why}`);
      await sleep(POLL_MS);
    }
  }

  // ------------------------------------------------------------------ remove

  private async remove(name: string, options: WorkflowOptions, emit: Emit): Promise<void> {
    const node = this.cluster.node(name);
    const view = this.relay.node(name);
    const wasSynchronous = node.role === 'standby' || view?.role === 'standby';
    if (view !== undefined || this.relay.connections(name).total > 0) {
      await this.leaveRelay(name, options.drainTimeoutMs ?? DRAIN_TIMEOUT_MS, 'drain', emit);
    } else {
      emit({ step: 'drain', node: name, message: `${name} is not in pgrelay's routing table: nothing to drain` });
    }
    if (wasSynchronous) {
      emit({ step: 'detach', node: name, message: `${name} is a synchronous standby: the primary stops waiting for it first (commits no longer wait for a standby unless another one follows)` });
    }
    await this.cluster.removeNode(name, {
      onStep: (text) => {
        if (text.startsWith('synchronous standby ')) {
          const standbys = text.slice('synchronous standby '.length);
          emit({ step: 'detach', node: name, message: `${this.cluster.primary().name} reloaded: its synchronous standby is now ${standbys === 'none' ? 'none (single-AZ: commits wait for no standby)' : standbys}` });
        }
        else if (text.startsWith('stop ')) emit({ step: 'stop', node: name, message: `stopping ${name} (its WAL receiver detaches from the primary)` });
        else if (text.startsWith('drop slot ')) emit({ step: 'slot', node: name, message: `${text} (the primary no longer keeps WAL for it)` });
        else if (text.startsWith('delete files ')) emit({ step: 'cleanup', node: name, message: `deleting ${node.dataDir} and the node's log` });
      },
    });
    emit({ step: 'done', ok: true, node: name, host: node.host, port: node.port, role: node.role, message: `${name} is gone: out of pgrelay, stopped, its slot dropped and its files deleted` });
  }

  /**
   * Takes the node out of pgrelay's configuration (the router stops choosing it at once), then
   * waits until the units running there have finished and its pools have closed.
   */
  private async leaveRelay(name: string, timeoutMs: number, step: 'drain' | 'rollback', emit: Emit): Promise<void> {
    const before = this.relay.config();
    if (before.nodes.some((n) => n.name === name)) {
      const changes = this.relay.apply({ ...structuredClone(before), nodes: structuredClone(before.nodes.filter((n) => n.name !== name)) });
      emit({ step, node: name, message: `${name} leaves pgrelay's routing table (${changes}): no new unit goes there` });
    }
    const deadline = performance.now() + timeoutMs;
    let reportedAt = 0;
    for (;;) {
      const { active, total } = this.relay.connections(name);
      if (total === 0) {
        emit({ step, node: name, message: `no unit runs on ${name} any more; pgrelay holds no connection to it` });
        return;
      }
      const now = performance.now();
      if (now > deadline) {
        this.relay.closeNode(name);
        emit({ step, node: name, message: `drain of ${name} took longer than ${formatMs(timeoutMs)}: closed its last ${total} server connection(s) (${active} busy)` });
        return;
      }
      if (now - reportedAt >= REPORT_MS) {
        reportedAt = now;
        emit({ step, node: name, message: `draining ${name}: ${active} unit(s) still running there, ${total} server connection(s) open` });
      }
      await sleep(POLL_MS / 5);
    }
  }
}

function nodeConfig(node: LocalNode, role: 'standby' | 'replica'): NodeConfig {
  return { name: node.name, host: node.host, port: node.port, role, weight: 1 };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
