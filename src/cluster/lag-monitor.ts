import type { Config } from '../config/types.js';
import type { Metrics } from '../metrics/metrics.js';
import type { LagReading } from '../routing/eligibility.js';
import type { LagPolicy } from '../routing/lag-policy.js';
import type { WriteLsnSource } from '../routing/freshness.js';
import type { Logger } from '../util/log.js';
import { monitorCredentials } from './credentials.js';
import { LagHistory } from './lag-history.js';
import { divergenceReason, notKnownText, type LimitedTrack } from './limited-view.js';
import { lsnDistance, parseLsn } from './lsn.js';
import { FenceSampler } from './fence-sampler.js';
import { NodeProbe } from './node-probe.js';
import type { NodeStatus, Topology } from './topology.js';
import { WriteWaiters } from './write-waiters.js';

/** The primary's position: write position (lag in bytes), insert position (read-your-writes), timeline. */
const PRIMARY_SQL = `SELECT pg_current_wal_lsn()::text AS current_lsn,
       pg_current_wal_insert_lsn()::text AS insert_lsn,
       ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int AS timeline`;

/** A replica's replay position and where its WAL comes from (`sees_receiver`: see limited-view.ts). */
const REPLICA_SQL = `SELECT pg_is_in_recovery() AS in_recovery,
       pg_last_wal_replay_lsn()::text AS replay_lsn,
       CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() END AS replay_paused,
       r.status AS receiver_status, r.received_tli, r.sender_host, r.sender_port,
       pg_has_role('pg_read_all_stats', 'USAGE') AS sees_receiver
  FROM (SELECT 1) AS one LEFT JOIN pg_stat_wal_receiver AS r ON true`;

interface PrimaryRow {
  current_lsn: string;
  insert_lsn: string;
  timeline: number;
}

interface ReplicaRow {
  in_recovery: boolean;
  replay_lsn: string | null;
  replay_paused: boolean | null;
  receiver_status: string | null;
  received_tli: number | null;
  sender_host: string | null;
  sender_port: number | null;
  sees_receiver: boolean;
}

interface PrimarySample {
  node: string;
  /** when the query was sent (the primary was at currentLsn no earlier than this) */
  atMs: number;
  currentLsn: bigint;
  insertLsn: bigint;
  timeline: number;
}

interface ReplicaSample {
  /** when the answer arrived (the node had replayed at least replayLsn by then) */
  atMs: number;
  row: ReplicaRow;
}

/** `previous` and `diverged`: the limited view's (limited-view.ts) */
interface Probe extends LimitedTrack {
  probe: NodeProbe;
  busy: boolean;
  last: ReplicaSample | undefined;
  previous: ReplicaSample | undefined;
  /** the last query failed (logged once per failure streak) */
  failing: boolean;
}

export interface LagMonitorDeps {
  topology: Topology;
  metrics: Metrics;
  log: Logger;
  config: () => Config;
  /** routing's lag policy: the monitor reports readings to it, it decides who serves reads */
  lagPolicy: LagPolicy;
  /** milliseconds, monotonic; replaceable in tests */
  now?: () => number;
}

const HISTORY_MIN_MS = 60_000;

/** Writes committed within this many milliseconds of a sample asked for by a write share the next one. */
const WRITE_SAMPLE_GAP_MS = 5;

/**
 * Keeps every replica's lag current in the topology. Every `routing.lag_interval_ms` it reads the
 * primary's WAL position and each other node's replay position, over one persistent connection per
 * node (NodeProbe), and judges each replica:
 * - lag in bytes: primary write position − replay position;
 * - lag in time: from a history of (time, primary position) samples (LagHistory) — how long ago
 *   the primary was where the replica is; 0 for a caught-up replica even when the primary is idle;
 * - it must replay the *current* primary's WAL: in recovery, its WAL receiver streaming, on the
 *   primary's timeline, and not streaming from another node that is out of recovery (an async
 *   replica still following a dead or fenced primary looks fresh by LSN alone);
 * - each reading goes to routing's LagPolicy, which decides (with hysteresis) who serves reads.
 * A replica's sample is judged once the same round's primary sample is in (both taken at the
 * same moment). Nothing counts as fresh before it is measured; a node the monitor cannot query is
 * not fresh. `topology.changed()` is called only when a node's eligibility changes.
 *
 * It is also the WriteLsnSource for read-your-writes: a committed write waits for the next
 * primary sample sent after it; at most one is in flight, and it serves every write before it.
 * A write registered without asking for one (see Freshness) waits for the next round's sample,
 * or for the one `hurry` asks for once its client reads.
 */
export class LagMonitor implements WriteLsnSource {
  private readonly probes = new Map<string, Probe>();
  private history: LagHistory;
  private primarySample: PrimarySample | undefined;
  /** the primary the history belongs to */
  private historyOf: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  private intervalMs = 0;
  private stopped = false;
  private credentialsKey = '';

  /** read-your-writes: writes waiting for a position */
  private readonly writes = new WriteWaiters();
  private primaryInflight: Promise<void> | undefined;
  private primaryQueued: Promise<void> | undefined;
  private primaryFailing = false;
  /** when a sample was last asked for on behalf of writes, and the one scheduled (see sampleForWrites) */
  private lastWriteSampleAt = -Infinity;
  private writeSampleTimer: NodeJS.Timeout | undefined;
  /** primary position samples taken (rounds and writes), for tests and diagnostics */
  primarySamples = 0;
  /** fast read-your-writes: replay positions sampled often while reads wait for a fence */
  readonly fences: FenceSampler;

  private readonly topology: Topology;
  private readonly metrics: Metrics;
  private readonly log: Logger;
  private readonly config: () => Config;
  private readonly lagPolicy: LagPolicy;
  private readonly now: () => number;
  private readonly onTopologyChange = () => this.topologyChanged();

  constructor(deps: LagMonitorDeps) {
    this.topology = deps.topology;
    this.metrics = deps.metrics;
    this.log = deps.log;
    this.config = deps.config;
    this.lagPolicy = deps.lagPolicy;
    this.now = deps.now ?? (() => performance.now());
    this.history = newHistory(this.config());
    this.fences = new FenceSampler({ topology: this.topology, probe: (name) => this.probes.get(name)?.probe });
  }

  /** Measures every node once (bounded wait), then keeps measuring. */
  async start(): Promise<void> {
    this.stopped = false;
    this.fences.start();
    this.syncProbes();
    for (const node of this.topology.nodes.values()) if (node.name !== this.topology.primaryName) this.unmeasured(node, 'lag not measured yet');
    this.historyOf = this.topology.primaryName;
    this.topology.on('change', this.onTopologyChange);
    const config = this.config();
    const bound = new Promise<void>((resolve) => setTimeout(resolve, Math.max(1000, 2 * config.health.timeout_ms + 500)).unref());
    await Promise.race([this.samplePrimary().then(() => this.round()), bound]);
    if (!this.stopped) this.schedule(config.routing.lag_interval_ms);
  }

  /** Applies a reloaded config: nodes, credentials, interval, limits (judged at the next sample). */
  configure(): void {
    if (this.stopped) return;
    const config = this.config();
    const horizon = historyHorizonMs(config);
    if (horizon !== this.history.horizonMs || Math.max(1, config.routing.lag_interval_ms / 10) !== this.history.minSpacingMs) this.history = newHistory(config);
    this.syncProbes();
    if (config.routing.lag_interval_ms !== this.intervalMs && this.timer) this.schedule(config.routing.lag_interval_ms);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.fences.stop();
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.writeSampleTimer) clearTimeout(this.writeSampleTimer);
    this.writeSampleTimer = undefined;
    this.topology.off('change', this.onTopologyChange);
    const probes = [...this.probes.values()];
    this.probes.clear();
    await Promise.all(probes.map((p) => p.probe.close()));
  }

  // ------------------------------------------------------------------ read-your-writes

  afterWrite(done: (lsn: bigint) => void, soon = true): void {
    this.writes.add(done);
    if (soon) this.sampleForWrites();
  }

  /** Writes registered without asking for a sample want their position now (a client reads). */
  hurry(): void {
    if (this.writes.pending > 0) this.sampleForWrites();
  }

  /**
   * A sample for the writes waiting now: at once when none was asked for in the last
   * WRITE_SAMPLE_GAP_MS, else one sample at the end of that gap serves every write made meanwhile
   * (under a write load a sample per commit cost a query on the primary per transaction).
   */
  private sampleForWrites(): void {
    if (this.writeSampleTimer !== undefined) return;
    const wait = this.lastWriteSampleAt + WRITE_SAMPLE_GAP_MS - this.now();
    if (wait <= 0) this.sampleNowForWrites();
    else this.writeSampleTimer = setTimeout(this.sampleNowForWrites, Math.ceil(wait));
  }

  private readonly sampleNowForWrites = (): void => {
    this.writeSampleTimer = undefined;
    if (this.stopped) return;
    this.lastWriteSampleAt = this.now();
    void this.samplePrimary();
  };

  /** Writes still waiting for a WAL position (for tests and /status). */
  get pendingWrites(): number {
    return this.writes.pending;
  }

  /**
   * A primary sample sent after this call: resolves once it is in (or failed). One runs at a
   * time; calls made while one is in flight share the next one.
   */
  private samplePrimary(): Promise<void> {
    if (!this.primaryInflight) {
      this.primaryInflight = this.runPrimarySample().finally(() => {
        this.primaryInflight = undefined;
      });
      return this.primaryInflight;
    }
    this.primaryQueued ??= this.primaryInflight.then(() => {
      this.primaryQueued = undefined;
      return this.samplePrimary();
    });
    return this.primaryQueued;
  }

  private async runPrimarySample(): Promise<void> {
    const name = this.topology.primaryName;
    if (name === undefined || this.stopped) return;
    const probe = this.probeOf(name);
    if (!probe) return;
    const seq = this.writes.last;
    const sentAt = this.now();
    let row: PrimaryRow;
    try {
      row = await probe.probe.query<PrimaryRow>('pgrelay_primary_lsn', PRIMARY_SQL);
    } catch (error) {
      if (!this.primaryFailing) this.log.warn({ node: name, err: errorText(error) }, 'lag monitor cannot read the primary WAL position');
      this.primaryFailing = true;
      return;
    }
    this.primarySamples++;
    if (this.primaryFailing) this.log.info({ node: name }, 'lag monitor reads the primary WAL position again');
    this.primaryFailing = false;
    if (this.topology.primaryName !== name || this.stopped) return;
    const sample: PrimarySample = { node: name, atMs: sentAt, currentLsn: parseLsn(row.current_lsn), insertLsn: parseLsn(row.insert_lsn), timeline: row.timeline };
    if (this.historyOf !== name) {
      this.primaryChanged(name);
      this.topology.changed();
    }
    this.primarySample = sample;
    this.history.add(sentAt, sample.currentLsn);
    this.writes.release(seq, sample.insertLsn);
    this.fences.progress();
  }

  // ------------------------------------------------------------------ rounds

  private schedule(intervalMs: number): void {
    if (this.timer) clearInterval(this.timer);
    this.intervalMs = intervalMs;
    this.timer = setInterval(() => void this.round(), intervalMs);
    this.timer.unref();
  }

  /** One round: the primary's position and every other node's replay position, taken together. */
  private round(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    const primaryName = this.topology.primaryName;
    const primaryDone = this.samplePrimary();
    const judged: Promise<void>[] = [];
    for (const node of this.topology.nodes.values()) {
      if (node.name === primaryName) continue;
      const probe = this.probeOf(node.name);
      if (!probe || probe.busy) continue;
      probe.busy = true;
      const sample = probe.probe.query<ReplicaRow>('pgrelay_replica_lsn', REPLICA_SQL).then(
        (row) => ({ atMs: this.now(), row }),
        (error: unknown) => error instanceof Error ? error : new Error(String(error)),
      );
      judged.push(
        sample.then(async (result) => {
          probe.busy = false;
          await primaryDone;
          if (this.stopped || this.probes.get(node.name) !== probe) return;
          if (result instanceof Error) {
            if (!probe.failing) this.log.warn({ node: node.name, err: result.message }, 'lag monitor cannot query the node');
            probe.failing = true;
            this.unreachable(node.name, result);
          } else {
            if (probe.failing) this.log.info({ node: node.name }, 'lag monitor queries the node again');
            probe.failing = false;
            probe.previous = probe.last;
            probe.last = result;
            this.judge(node.name, result);
            this.fences.progress();
          }
        }),
      );
    }
    return Promise.all(judged).then(() => undefined);
  }

  private judge(name: string, sample: ReplicaSample): void {
    const node = this.topology.node(name);
    if (!node || name === this.topology.primaryName) return;
    const { row } = sample;
    node.replayLsn = row.replay_lsn === null ? undefined : parseLsn(row.replay_lsn);
    node.replayPaused = row.replay_paused === true;
    node.notKnown = row.sees_receiver ? undefined : notKnownText(monitorCredentials(this.config()).user);
    const primary = this.primarySample;
    const unfit = this.unfitReason(node, row, primary);
    // the limited view judges the sample its divergence check vouched for (the one before)
    const judged = row.sees_receiver ? sample : (this.probes.get(name)?.previous ?? sample);
    const judgedLsn = judged.row.replay_lsn === null ? undefined : parseLsn(judged.row.replay_lsn);
    if (unfit !== undefined || !primary || judgedLsn === undefined) {
      this.setLag(node, undefined, undefined);
      this.report(node, undefined, unfit ?? 'the primary WAL position is not known yet');
      return;
    }
    const lagBytes = lsnDistance(primary.currentLsn, judgedLsn);
    const estimate = this.history.lag(judgedLsn, judged.atMs);
    const lagMs = estimate?.lagMs ?? 0;
    this.setLag(node, lagMs, lagBytes);
    if (estimate?.beyondHistory) {
      this.report(node, undefined, `lag of at least ${Math.round(lagMs)} ms (${lagBytes} bytes): older than the monitor's sample history`);
      return;
    }
    this.report(node, { lagMs, lagBytes, replayPaused: node.replayPaused }, undefined);
  }

  /** Why a node cannot be judged by its lag at all (it does not replay the current primary's WAL). */
  private unfitReason(node: NodeStatus, row: ReplicaRow, primary: PrimarySample | undefined): string | undefined {
    if (!row.in_recovery) return 'out of recovery: not a replica';
    if (row.replay_lsn === null) return 'has not replayed any WAL yet';
    // a role without pg_monitor sees the receiver's pid and nulls: see limited-view.ts
    if (!row.sees_receiver) return primary && this.probes.has(node.name) ? divergenceReason(this.probes.get(node.name)!, primary) : undefined;
    if (row.receiver_status !== 'streaming') return `WAL receiver is ${row.receiver_status ?? 'not running'}, not streaming`;
    if (primary && row.received_tli !== null && row.received_tli !== primary.timeline) {
      return `receives timeline ${row.received_tli} while the primary ${primary.node} is on timeline ${primary.timeline}`;
    }
    if (row.sender_host !== null && row.sender_port !== null) {
      for (const other of this.topology.nodes.values()) {
        if (other === node || other.name === this.topology.primaryName || other.port !== row.sender_port || other.host !== row.sender_host) continue;
        // streaming from a node that is not the primary: fine when it is a replica itself (cascading)
        const otherLast = this.probes.get(other.name)?.last;
        if (otherLast?.row.in_recovery !== true) return `streams from ${other.name}, which is not the primary (${this.topology.primaryName ?? 'none'})`;
      }
    }
    return undefined;
  }

  private unreachable(name: string, error: Error): void {
    const node = this.topology.node(name);
    if (!node || name === this.topology.primaryName) return;
    this.setLag(node, undefined, undefined);
    this.report(node, undefined, `lag monitor cannot query the node: ${error.message}`);
  }

  private unmeasured(node: NodeStatus, reason: string): void {
    this.setLag(node, undefined, undefined);
    this.lagPolicy.report(node, undefined, reason);
  }

  private setLag(node: NodeStatus, lagMs: number | undefined, lagBytes: number | undefined): void {
    node.lagSeconds = lagMs === undefined ? undefined : lagMs / 1000;
    node.lagBytes = lagBytes;
    if (lagMs === undefined || lagBytes === undefined) {
      this.metrics.replicaLagSeconds.remove(node.name);
      this.metrics.replicaLagBytes.remove(node.name);
    } else {
      this.metrics.replicaLagSeconds.labels(node.name).set(lagMs / 1000);
      this.metrics.replicaLagBytes.labels(node.name).set(lagBytes);
    }
  }

  /**
   * Reports a node's reading (undefined: none it can vouch for, with the reason) to the lag
   * policy, which decides whether it serves reads; tells the topology (and logs) only when that
   * changed.
   */
  private report(node: NodeStatus, reading: LagReading | undefined, reason: string | undefined): void {
    const wasFresh = node.fresh;
    if (!this.lagPolicy.report(node, reading, reason)) return;
    if (node.fresh) this.log.info({ node: node.name, lagMs: lagMsOf(node), lagBytes: node.lagBytes }, 'replica serves reads again');
    else if (wasFresh) this.log.info({ node: node.name, reason: node.staleReason }, 'replica excluded from reads');
    this.topology.changed();
  }

  // ------------------------------------------------------------------ topology

  private topologyChanged(): void {
    if (this.stopped) return;
    const primary = this.topology.primaryName;
    if (primary !== this.historyOf && primary !== undefined) {
      this.primaryChanged(primary);
      this.topology.changed();
    }
    if (primary !== undefined && this.pendingWrites > 0) void this.samplePrimary();
  }

  /**
   * A new primary: the history (positions of the old one) is dropped and every other node is
   * unfit until a sample shows it replaying the new primary's timeline.
   */
  private primaryChanged(primary: string): void {
    this.historyOf = primary;
    this.history.clear();
    this.primarySample = undefined;
    for (const node of this.topology.nodes.values()) {
      if (node.name === primary) this.setLag(node, undefined, undefined);
      else this.unmeasured(node, `the primary changed to ${primary}: lag not measured against it yet`);
    }
    this.log.info({ primary }, 'lag monitor follows a new primary');
  }

  /** Opens probes for new nodes, closes those of removed or moved nodes. */
  private syncProbes(): void {
    const config = this.config();
    const credentials = monitorCredentials(config);
    const key = `${credentials.user}\0${credentials.password}\0${config.health.timeout_ms}\0${JSON.stringify(config.server_tls)}`;
    const reconnectAll = key !== this.credentialsKey;
    this.credentialsKey = key;
    for (const [name, probe] of this.probes) {
      const node = this.topology.node(name);
      if (reconnectAll || !node || node.host !== probe.probe.options.host || node.port !== probe.probe.options.port) {
        this.probes.delete(name);
        void probe.probe.close();
        this.metrics.replicaLagSeconds.remove(name);
        this.metrics.replicaLagBytes.remove(name);
      }
    }
    for (const node of this.topology.nodes.values()) {
      if (this.probes.has(node.name)) continue;
      this.probes.set(node.name, {
        probe: new NodeProbe(node.name, { host: node.host, port: node.port, credentials, timeoutMs: config.health.timeout_ms, tls: config.server_tls, applicationName: 'pgrelay lag monitor' }),
        busy: false,
        last: undefined,
        previous: undefined,
        diverged: undefined,
        failing: false,
      });
      if (node.name !== this.topology.primaryName && this.timer) this.unmeasured(node, 'lag not measured yet');
    }
  }

  private probeOf(name: string): Probe | undefined {
    return this.probes.get(name);
  }
}

function historyHorizonMs(config: Config): number {
  return Math.max(HISTORY_MIN_MS, 4 * config.routing.max_lag_ms);
}

function newHistory(config: Config): LagHistory {
  return new LagHistory(historyHorizonMs(config), Math.max(1, config.routing.lag_interval_ms / 10));
}

function lagMsOf(node: NodeStatus): number | undefined {
  return node.lagSeconds === undefined ? undefined : Math.round(node.lagSeconds * 1000);
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
