import type { Classifier } from '../classify/classifier.js';
import type { Failover } from '../cluster/failover.js';
import type { PatroniTopologySource } from '../cluster/patroni.js';
import type { Preflight } from '../cluster/preflight.js';
import type { Topology } from '../cluster/topology.js';
import type { Config } from '../config/types.js';
import type { Metrics } from '../metrics/metrics.js';
import type { PoolSet } from '../pool/pool-set.js';
import type { Logger } from '../util/log.js';
import type { RemoteApplyStatus } from '../cluster/remote-apply.js';

/** What the leader says of its workers (workers mode). */
export interface WorkersView {
  metricsText(): Promise<string>;
  status(): WorkerStatus[];
  /** units per node and route (pgrelay_queries_total's values) and units in flight per node, summed over the workers */
  dataPath(): Promise<{ queries: { labels: Record<string, string | number>; value: number }[]; inflight: Map<string, number> }>;
}

/** One worker process in /status (workers mode). */
export interface WorkerStatus {
  worker: number;
  pid: number | null;
  listening: boolean;
  /** epoch milliseconds */
  started_at: number;
  clients: number;
  sessions: number;
  /** server connections lent out, opening or waited for */
  busy_server_connections: number;
}

/**
 * What the admin layer (HTTP routes, /status, reload, signals) needs from the running pgrelay.
 * App implements it; the admin files depend on this interface, not on app.ts, so that imports go
 * one way (app → admin).
 */
export interface AdminApp {
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly topology: Topology;
  readonly pools: PoolSet;
  readonly failover: Failover;
  /** failover.mode patroni: the topology comes from Patroni's REST API */
  readonly patroni: PatroniTopologySource | undefined;
  readonly classifier: Classifier;
  /** what the monitor and failover roles can do (capabilities in /status and /health) */
  readonly preflight: Preflight;
  /** the remote_apply shortcut's state (/status capabilities) */
  readonly remoteApply: { status(): RemoteApplyStatus };
  readonly frontend: { readonly clientCount: number; readonly sessionCount: number };
  /** the file the config came from, when started from one */
  readonly configPath: string | undefined;
  /** epoch milliseconds */
  readonly startedAt: number;
  /** stop() was called */
  readonly stopping: boolean;
  readonly currentConfig: Config;
  /** workers mode, in the leader: the workers' metrics merged with the leader's, and each worker */
  readonly workers?: WorkersView | undefined;
  /** Applies a new, validated config without dropping clients. */
  reload(next: Config): void;
  /** Stops accepting, lets running transactions finish (bounded by graceMs), then closes everything. */
  stop(graceMs?: number): Promise<void>;
}
