import cluster, { type Worker } from 'node:cluster';
import type { AddressInfo } from 'node:net';
import { AggregatorRegistry, Counter, Gauge } from 'prom-client';
import { App } from '../app.js';
import { collectStateMetrics } from '../admin/collect-state.js';
import type { WorkerStatus } from '../admin/admin-app.js';
import type { Config } from '../config/types.js';
import type { Logger } from '../util/log.js';
import { slotOfProcessId } from './backend-keys.js';
import { isPgrelayMessage, snapshotOf, type LeaderMessage, type TopologySnapshot, type WorkerMessage } from './messages.js';

/** One registry's metrics as getMetricsAsJSON() gives them. */
type MetricsJson = Parameters<typeof AggregatorRegistry.aggregate>[0][number];

type MetricValues = { labels: Record<string, string | number>; value: number }[];

/** Metrics only the workers can say anything about, whose aggregation is not a sum. */
const LEADER_LEAVES_OUT = new Set(['pgrelay_classify_cache_hit_ratio']);

/** How often the leader looks whether lag figures changed, to send them to the workers. */
const TOPOLOGY_PUSH_MS = 50;
/** A worker that does not answer a scrape within this is left out of that scrape. */
const METRICS_TIMEOUT_MS = 2_000;
/** A crashed worker is forked again after this, doubled while it keeps crashing within a minute (to 5 s). */
const RESTART_MIN_MS = 200;
const RESTART_MAX_MS = 5_000;
/** After a stop's grace period, workers still running get this long before SIGKILL. */
const STOP_MARGIN_MS = 5_000;

interface WorkerState {
  slot: number;
  worker: Worker;
  listening: boolean;
  busy: Record<string, number>;
  /** the topology version the busy figures were taken under */
  busySeq: number;
  clients: number;
  sessions: number;
  startedAt: number;
  exited: Promise<void>;
}

export interface LeaderOptions {
  log: Logger;
  configPath?: string;
  count: number;
}

/**
 * The leader of `workers: N` (node:cluster's primary process). It runs the App without a client
 * listener — health checks, lag monitor, failover and switchover, Patroni, preflight, the admin
 * server — and N worker processes that share the listening socket (node:cluster hands each new
 * connection to the next worker, round robin) and run the data path. It tells the workers the
 * topology (on every change, and lag figures every TOPOLOGY_PUSH_MS), closes their pools where its
 * own failover closes them, answers their read-your-writes questions, hands CancelRequests to the
 * worker that owns the session, sends them reloads, aggregates their metrics for /metrics (prom-
 * client's AggregatorRegistry), restarts one that crashes, and stops them all on stop.
 */
export class Leader {
  private readonly workers = new Map<number, WorkerState>();
  private stopping = false;
  private topologySeq = 0;
  private lastTopology = '';
  private pushScheduled = false;
  private pushTimer: NodeJS.Timeout | undefined;
  private readonly fenceWanted = new Set<number>();
  private fenceWaiting = false;
  private lastReplay = '';
  private metricsRequest = 0;
  private readonly metricsAnswers = new Map<number, { pending: Set<number>; results: MetricsJson[]; done: () => void }>();
  private readonly restarts = new Map<number, { count: number; lastAt: number }>();
  private address: AddressInfo | undefined;
  private readonly restartsTotal: Counter;
  private readonly cancelsForwarded: Counter;

  private constructor(
    readonly app: App,
    private readonly options: LeaderOptions,
  ) {
    const registry = app.metrics.registry;
    const workers = this.workers;
    new Gauge({
      name: 'pgrelay_workers',
      help: 'Worker processes serving clients now (workers mode).',
      registers: [registry],
      collect() {
        this.set([...workers.values()].filter((w) => w.listening).length);
      },
    });
    this.restartsTotal = new Counter({ name: 'pgrelay_worker_restarts_total', help: 'Worker processes forked again after they exited unexpectedly.', registers: [registry] });
    this.cancelsForwarded = new Counter({ name: 'pgrelay_worker_cancels_forwarded_total', help: 'CancelRequests received by one worker and handed to the worker that owns the session.', registers: [registry] });
  }

  static async start(config: Config, options: LeaderOptions): Promise<Leader> {
    const app = await App.start(config, { log: options.log, configPath: options.configPath, role: 'leader' });
    const leader = new Leader(app, options);
    try {
      await leader.begin();
    } catch (error) {
      await app.stop();
      throw error;
    }
    return leader;
  }

  /** Where the workers listen (known once the first one listens). */
  get listenAddress(): AddressInfo {
    return this.address!;
  }

  private async begin(): Promise<void> {
    const { app } = this;
    app.workers = {
      busy: (node) => this.busy(node),
      stop: (graceMs) => this.stop(graceMs),
      reloaded: (next) => this.broadcast({ pgrelay: 'reload', config: next }),
      metricsText: () => this.metricsText(),
      status: () => this.status(),
      dataPath: () => this.dataPath(),
    };
    // what the leader's failover closes, the workers close too
    const closeNode = app.pools.closeNode.bind(app.pools);
    app.pools.closeNode = (node: string) => {
      closeNode(node);
      this.broadcast({ pgrelay: 'close-node', node });
    };
    app.topology.on('change', () => this.schedulePush());
    this.pushTimer = setInterval(() => this.pushTopology(), TOPOLOGY_PUSH_MS);
    this.pushTimer.unref();
    cluster.on('message', this.onMessage);
    const started = [];
    for (let slot = 1; slot <= this.options.count; slot++) started.push(this.fork(slot));
    await Promise.all(started);
  }

  /** Forks the worker of a slot; resolves once it listens, rejects if it exits before. */
  private fork(slot: number): Promise<void> {
    const worker = cluster.fork({ PGRELAY_WORKER_SLOT: String(slot) });
    let exitedResolve!: () => void;
    const state: WorkerState = { slot, worker, listening: false, busy: {}, busySeq: -1, clients: 0, sessions: 0, startedAt: Date.now(), exited: new Promise((resolve) => (exitedResolve = resolve)) };
    this.workers.set(slot, state);
    return new Promise((resolve, reject) => {
      const onListening = (message: unknown) => {
        if (!isPgrelayMessage<WorkerMessage>(message)) return;
        // the worker's listener is on: the config and topology of now
        if (message.pgrelay === 'hello') return this.send(state, { pgrelay: 'init', slot, count: this.options.count, config: this.app.currentConfig, topology: this.snapshot() });
        if (message.pgrelay !== 'listening') return;
        worker.off('message', onListening);
        state.listening = true;
        this.address ??= { address: message.host, port: message.port, family: message.family };
        this.options.log.info({ worker: slot, pid: worker.process.pid }, 'worker listening');
        resolve();
      };
      worker.on('message', onListening);
      worker.once('exit', (code, signal) => {
        exitedResolve();
        worker.off('message', onListening);
        if (this.workers.get(slot) === state) this.workers.delete(slot);
        this.fenceWanted.delete(slot);
        if (!state.listening) reject(new Error(`worker ${slot} exited (${signal ?? code}) before it listened`));
        if (this.stopping || !state.listening) return;
        this.options.log.error({ worker: slot, pid: worker.process.pid, code, signal }, 'worker exited: starting it again');
        this.restart(slot);
      });
    });
  }

  private restart(slot: number): void {
    const now = Date.now();
    const last = this.restarts.get(slot);
    const count = last && now - last.lastAt < 60_000 ? last.count + 1 : 0;
    this.restarts.set(slot, { count, lastAt: now });
    const delay = Math.min(RESTART_MAX_MS, RESTART_MIN_MS * 2 ** count);
    setTimeout(() => {
      if (this.stopping) return;
      this.restartsTotal.inc();
      this.fork(slot).catch((error: unknown) => {
        this.options.log.error({ worker: slot, err: error instanceof Error ? error.message : String(error) }, 'worker could not start again');
        if (!this.stopping && !this.workers.has(slot)) this.restart(slot);
      });
    }, delay).unref();
  }

  private readonly onMessage = (worker: Worker, message: unknown): void => {
    if (!isPgrelayMessage<WorkerMessage>(message)) return;
    const state = [...this.workers.values()].find((w) => w.worker === worker);
    if (!state) return;
    const { app } = this;
    switch (message.pgrelay) {
      case 'after-write': {
        const id = message.id;
        app.lagMonitor.afterWrite((lsn) => this.send(state, { pgrelay: 'write-lsn', id, lsn: lsn.toString() }));
        return;
      }
      case 'fences':
        if (message.waiting) this.fenceWanted.add(state.slot);
        else this.fenceWanted.delete(state.slot);
        this.sampleForWorkers();
        return;
      case 'node-broken':
        app.health.nodeBroken(message.node, message.error === null ? undefined : new Error(message.error));
        app.patroni?.nodeBroken(message.node);
        return;
      case 'when-decided': {
        const id = message.id;
        app.health.whenDecided(message.node, () => {
          // the decision's topology reaches the worker before the answer
          this.pushTopology();
          this.send(state, { pgrelay: 'decided', id });
        });
        return;
      }
      case 'cancel': {
        const owner = this.workers.get(slotOfProcessId(message.processId));
        if (!owner || owner === state) return;
        this.cancelsForwarded.inc();
        this.send(owner, { pgrelay: 'cancel', processId: message.processId, secretKey: message.secretKey });
        return;
      }
      case 'busy':
        state.busy = message.nodes;
        state.busySeq = message.seq;
        state.clients = message.clients;
        state.sessions = message.sessions;
        return;
      case 'metrics': {
        const request = this.metricsAnswers.get(message.id);
        if (!request || !request.pending.delete(state.slot)) return;
        request.results.push(message.metrics as MetricsJson);
        if (request.pending.size === 0) request.done();
        return;
      }
      case 'listening':
      case 'hello':
        return;
    }
  };

  // ---------------------------------------------------------------- topology

  private schedulePush(): void {
    if (this.pushScheduled) return;
    this.pushScheduled = true;
    queueMicrotask(() => {
      this.pushScheduled = false;
      this.pushTopology();
    });
  }

  /** Sends the topology to every worker when it differs from the last one sent. */
  private snapshot(): TopologySnapshot {
    return { ...snapshotOf(this.app.topology), remoteApply: this.app.remoteApply.shared() };
  }

  private pushTopology(): void {
    const topology = this.snapshot();
    const text = JSON.stringify(topology);
    if (text === this.lastTopology) return;
    this.lastTopology = text;
    this.topologySeq++;
    this.broadcast({ pgrelay: 'topology', topology, seq: this.topologySeq });
  }

  /**
   * Server connections the workers have busy on a node (a switchover drains them). A worker that
   * has not reported since the last topology it was sent counts as busy: it may not have seen
   * the fence yet.
   */
  private busy(node: string): number {
    this.pushTopology();
    let busy = 0;
    for (const w of this.workers.values()) {
      if (!w.listening) continue;
      busy += w.busySeq < this.topologySeq ? 1 : (w.busy[node] ?? 0);
    }
    return busy;
  }

  /** /status: each worker as last reported (every 20 ms when it changed). */
  private status(): WorkerStatus[] {
    return [...this.workers.values()]
      .sort((a, b) => a.slot - b.slot)
      .map((w) => {
        let busy = 0;
        for (const n of Object.values(w.busy)) busy += n;
        return { worker: w.slot, pid: w.worker.process.pid ?? null, listening: w.listening, started_at: w.startedAt, clients: w.clients, sessions: w.sessions, busy_server_connections: busy };
      });
  }

  // ---------------------------------------------------------------- fast read-your-writes

  /**
   * While any worker has reads waiting for a fence, the leader's fence sampler samples replay
   * positions as for a wait of its own; every reading is sent to the workers at once.
   */
  private sampleForWorkers(): void {
    if (this.fenceWaiting || this.fenceWanted.size === 0 || this.stopping || this.app.stopping) return;
    this.fenceWaiting = true;
    this.app.lagMonitor.fences.wait(
      () => {
        this.pushReplay();
        return this.fenceWanted.size === 0;
      },
      1_000,
      () => {
        this.fenceWaiting = false;
        this.sampleForWorkers();
      },
    );
  }

  private pushReplay(): void {
    const readings: [string, string][] = [];
    for (const node of this.app.topology.nodes.values()) {
      if (node.name !== this.app.topology.primaryName && node.replayLsn !== undefined) readings.push([node.name, node.replayLsn.toString()]);
    }
    const text = JSON.stringify(readings);
    if (text === this.lastReplay) return;
    this.lastReplay = text;
    for (const slot of this.fenceWanted) {
      const w = this.workers.get(slot);
      if (w) this.send(w, { pgrelay: 'replay', readings });
    }
  }

  // ---------------------------------------------------------------- metrics

  /**
   * /metrics: the leader's registry (cluster state: nodes, lag, failovers, capabilities) and every
   * worker's (clients, units, pools), merged by prom-client's AggregatorRegistry: counters and
   * histograms are summed, gauges summed (clients, pool connections, units in flight: each
   * worker's own) unless the metric says otherwise (process start time is left out, event loop lag
   * averaged, Node's version taken once). Per-worker figures keep a `worker` label.
   */
  private async metricsText(): Promise<string> {
    return (await this.aggregated()).metrics();
  }

  /**
   * /status in workers mode: units per node and route (pgrelay_queries_total) and units in flight
   * per node, summed over the workers.
   */
  private async dataPath(): Promise<{ queries: MetricValues; inflight: Map<string, number> }> {
    const registry = await this.aggregated();
    const values = async (name: string): Promise<MetricValues> => ((await registry.getSingleMetric(name)?.get()) as { values: MetricValues } | undefined)?.values ?? [];
    const inflight = new Map<string, number>();
    for (const { labels, value } of await values('pgrelay_node_inflight_units')) inflight.set(String(labels.node), (inflight.get(String(labels.node)) ?? 0) + value);
    return { queries: await values('pgrelay_queries_total'), inflight };
  }

  /** The leader's metrics and every worker's, merged (the workers that answer within METRICS_TIMEOUT_MS). */
  private async aggregated(): Promise<ReturnType<typeof AggregatorRegistry.aggregate>> {
    collectStateMetrics(this.app);
    const own = await this.app.metrics.registry.getMetricsAsJSON();
    const id = ++this.metricsRequest;
    const live = [...this.workers.values()].filter((w) => w.listening && w.worker.isConnected());
    // the leader classifies nothing: its ratio would pull the workers' mean down
    const results: MetricsJson[] = [(own as { name: string }[]).filter((m) => !LEADER_LEAVES_OUT.has(m.name)) as MetricsJson];
    await new Promise<void>((resolve) => {
      const timer = setTimeout(finish, METRICS_TIMEOUT_MS);
      const request = { pending: new Set(live.map((w) => w.slot)), results, done: finish };
      function finish(): void {
        clearTimeout(timer);
        resolve();
      }
      this.metricsAnswers.set(id, request);
      if (live.length === 0) finish();
      for (const w of live) this.send(w, { pgrelay: 'metrics', id });
    });
    this.metricsAnswers.delete(id);
    return AggregatorRegistry.aggregate(results);
  }

  // ---------------------------------------------------------------- stop

  /** Stops every worker (each lets its clients' transactions finish within graceMs); SIGKILL after. */
  private async stop(graceMs: number): Promise<void> {
    this.stopping = true;
    if (this.pushTimer) clearInterval(this.pushTimer);
    const states = [...this.workers.values()];
    for (const w of states) this.send(w, { pgrelay: 'stop', graceMs });
    const killTimer = setTimeout(() => {
      for (const w of states) if (w.worker.process.exitCode === null && w.worker.process.signalCode === null) w.worker.process.kill('SIGKILL');
    }, graceMs + STOP_MARGIN_MS);
    await Promise.all(states.map((w) => w.exited));
    clearTimeout(killTimer);
    cluster.off('message', this.onMessage);
  }

  private broadcast(message: LeaderMessage): void {
    for (const w of this.workers.values()) this.send(w, message);
  }

  private send(state: WorkerState, message: LeaderMessage): void {
    if (!state.worker.isConnected()) return;
    try {
      state.worker.send(message);
    } catch {
      // the channel closed between the check and the send: its exit is handled
    }
  }
}
