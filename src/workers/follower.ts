import { Gauge } from 'prom-client';
import type { App, ClusterFollower, FenceWaits } from '../app.js';
import { collectStateMetrics } from '../admin/collect-state.js';
import type { Config } from '../config/types.js';
import type { WriteLsnSource } from '../routing/freshness.js';
import { processIdFor, slotOfProcessId } from './backend-keys.js';
import { applySnapshot, isPgrelayMessage, type LeaderMessage, type TopologySnapshot, type WorkerMessage } from './messages.js';
import { workerConfig } from './worker-config.js';

/** How often a worker tells the leader its busy server connections and clients (when they changed). */
const BUSY_REPORT_MS = 20;

interface FenceWaiter {
  ready: () => boolean;
  done: (ready: boolean) => void;
  timer: NodeJS.Timeout;
}

/**
 * A worker's line to the leader (workers mode). The worker runs only the data path; what one
 * process does with its own health checker, lag monitor and failover goes over IPC:
 * - topology: the leader's snapshots replace the worker's view (who is primary, up, fenced, fresh,
 *   lag figures, replay positions); the leader's `closeNode` closes the worker's pools too;
 * - read-your-writes: a committed write asks the leader for a primary WAL position sampled after
 *   it (one request in flight; writes made meanwhile share the next);
 * - fast read-your-writes: while reads of this worker wait for a fence, the leader samples replay
 *   positions as it does for its own waits and sends each reading at once;
 * - a broken server connection is reported to the leader's health checker, and a unit waiting
 *   for its decision waits for the leader's answer (sent after the topology it decided);
 * - CancelRequests for another worker's session go to the leader, which hands them on;
 * - reload, metrics and stop come from the leader.
 */
export class LeaderLink implements ClusterFollower {
  private app: App | undefined;
  private readonly waiters = new Set<FenceWaiter>();
  private waitingSent = false;
  /** writes covered by the position request in flight, and those that need the next one */
  private covered: ((lsn: bigint) => void)[] = [];
  private uncovered: ((lsn: bigint) => void)[] = [];
  private writeRequest: number | undefined;
  private nextId = 1;
  private readonly decisions = new Map<number, () => void>();
  private lastBusy = '';
  private topologySeq = 0;
  private busyTimer: NodeJS.Timeout | undefined;
  /** a reload that arrived while the App was being built */
  private pendingConfig: Config | undefined;
  /** resolves with the grace period when the leader says stop */
  readonly stopRequested: Promise<number>;
  private resolveStop!: (graceMs: number) => void;

  constructor(
    readonly slot: number,
    private readonly count: number,
    private readonly send: (message: WorkerMessage) => void,
    private initialTopology: TopologySnapshot,
  ) {
    this.stopRequested = new Promise((resolve) => (this.resolveStop = resolve));
  }

  // ---------------------------------------------------------------- ClusterFollower

  readonly writes: WriteLsnSource = {
    afterWrite: (done) => {
      if (this.writeRequest === undefined) {
        this.covered.push(done);
        this.requestPosition();
      } else this.uncovered.push(done);
    },
  };

  readonly fences: FenceWaits = {
    wait: (ready, timeoutMs, done) => {
      const waiter: FenceWaiter = {
        ready,
        done,
        timer: setTimeout(() => {
          if (!this.waiters.delete(waiter)) return;
          done(false);
          this.tellWaiting();
        }, timeoutMs),
      };
      this.waiters.add(waiter);
      this.tellWaiting();
    },
    progress: () => {
      if (this.waiters.size === 0) return;
      for (const waiter of this.waiters) {
        if (!waiter.ready()) continue;
        this.waiters.delete(waiter);
        clearTimeout(waiter.timer);
        waiter.done(true);
      }
      this.tellWaiting();
    },
  };

  readonly backendKeys = {
    next: (taken: (processId: number) => boolean) => processIdFor(this.slot, taken),
    cancelElsewhere: (processId: number, secretKey: number) => {
      // this worker's own id with no session: it ended (nothing to cancel, as PostgreSQL)
      if (slotOfProcessId(processId) !== this.slot) this.send({ pgrelay: 'cancel', processId, secretKey });
    },
  };

  nodeBroken(node: string, error: Error | undefined): void {
    this.send({ pgrelay: 'node-broken', node, error: error?.message ?? null });
  }

  whenDecided(node: string, callback: () => void): void {
    const id = this.nextId++;
    this.decisions.set(id, callback);
    this.send({ pgrelay: 'when-decided', id, node });
  }

  attach(app: App): void {
    this.app = app;
    const slot = String(this.slot);
    new Gauge({
      name: 'pgrelay_worker_client_connections',
      help: 'Client connections open on each worker process (workers mode), by worker slot.',
      labelNames: ['worker'],
      registers: [app.metrics.registry],
      collect() {
        this.labels(slot).set(app.frontend.clientCount);
      },
    });
    if (this.pendingConfig) this.reload(app, this.pendingConfig);
    this.topology(this.initialTopology, 0);
    this.busyTimer = setInterval(() => this.reportBusy(false), BUSY_REPORT_MS);
    this.busyTimer.unref();
  }

  // ---------------------------------------------------------------- from the leader

  handle(message: unknown): void {
    if (!isPgrelayMessage<LeaderMessage>(message)) return;
    const app = this.app;
    switch (message.pgrelay) {
      case 'topology':
        if (app) this.topology(message.topology, message.seq);
        else this.initialTopology = message.topology;
        return;
      case 'replay':
        if (app) this.replay(message.readings);
        return;
      case 'write-lsn':
        if (message.id === this.writeRequest) this.positionKnown(BigInt(message.lsn));
        return;
      case 'decided': {
        const callback = this.decisions.get(message.id);
        this.decisions.delete(message.id);
        callback?.();
        return;
      }
      case 'close-node':
        app?.pools.closeNode(message.node);
        return;
      case 'cancel':
        app?.frontend.cancelByKey(message.processId, message.secretKey);
        return;
      case 'reload':
        if (app) this.reload(app, message.config);
        else this.pendingConfig = message.config;
        return;
      case 'metrics':
        if (app) void this.metrics(app, message.id);
        return;
      case 'stop':
        this.resolveStop(message.graceMs);
        return;
      case 'init':
        return;
    }
  }

  /** The leader is gone (or the worker stops): nothing more to ask it. */
  close(): void {
    if (this.busyTimer) clearInterval(this.busyTimer);
    this.busyTimer = undefined;
    for (const waiter of this.waiters) {
      clearTimeout(waiter.timer);
      waiter.done(false);
    }
    this.waiters.clear();
    const decisions = [...this.decisions.values()];
    this.decisions.clear();
    for (const callback of decisions) callback();
  }

  // ---------------------------------------------------------------- internals

  /** The leader applied this config already (its certificate files read): a failure here is logged, not fatal. */
  private reload(app: App, config: Config): void {
    try {
      app.reload(workerConfig(config, this.count, this.slot));
    } catch (error) {
      app.log.error({ err: error instanceof Error ? error.message : String(error) }, 'worker: configuration reload failed');
    }
  }

  private topology(snapshot: TopologySnapshot, seq: number): void {
    const app = this.app!;
    applySnapshot(app.topology, snapshot);
    if (snapshot.remoteApply) app.remoteApply.adopt(snapshot.remoteApply);
    // nodes the leader found (Patroni) or moved: the pools connect where the leader says
    for (const n of snapshot.nodes) app.pools.upsertNode({ name: n.name, host: n.host, port: n.port, role: n.configuredRole, weight: n.weight });
    this.topologySeq = seq;
    // a switchover drains on what every worker has busy once it saw the fence: say it now
    this.reportBusy(true);
    this.fences.progress();
  }

  private replay(readings: [string, string][]): void {
    const topology = this.app!.topology;
    for (const [name, lsn] of readings) {
      const node = topology.node(name);
      if (!node) continue;
      const position = BigInt(lsn);
      if (node.replayLsn === undefined || position > node.replayLsn) node.replayLsn = position;
    }
    this.fences.progress();
  }

  private requestPosition(): void {
    const id = this.nextId++;
    this.writeRequest = id;
    this.send({ pgrelay: 'after-write', id });
  }

  private positionKnown(lsn: bigint): void {
    const covered = this.covered;
    this.covered = this.uncovered;
    this.uncovered = [];
    this.writeRequest = undefined;
    for (const done of covered) done(lsn);
    if (this.covered.length > 0) this.requestPosition();
    this.fences.progress();
  }

  private tellWaiting(): void {
    const waiting = this.waiters.size > 0;
    if (waiting === this.waitingSent) return;
    this.waitingSent = waiting;
    this.send({ pgrelay: 'fences', waiting });
  }

  private reportBusy(always: boolean): void {
    const app = this.app;
    if (!app) return;
    const nodes: Record<string, number> = {};
    for (const pool of app.pools.all()) {
      const s = pool.stats();
      const busy = s.active + s.connecting + s.waiting;
      if (busy > 0) nodes[pool.endpoint.node] = (nodes[pool.endpoint.node] ?? 0) + busy;
    }
    const clients = app.frontend.clientCount;
    const sessions = app.frontend.sessionCount;
    const text = JSON.stringify([nodes, clients, sessions]);
    if (!always && text === this.lastBusy) return;
    this.lastBusy = text;
    this.send({ pgrelay: 'busy', nodes, seq: this.topologySeq, clients, sessions });
  }

  /** This worker's metrics for the leader's /metrics: the data path's; the cluster's are the leader's. */
  private async metrics(app: App, id: number): Promise<void> {
    collectStateMetrics(app);
    const m = app.metrics;
    for (const gauge of [m.nodeUp, m.nodeFenced, m.nodeFresh, m.replicaLagSeconds, m.replicaLagBytes, m.info, m.capability, m.failoverDuration]) gauge.reset();
    this.send({ pgrelay: 'metrics', id, metrics: await app.metrics.registry.getMetricsAsJSON() });
  }
}
