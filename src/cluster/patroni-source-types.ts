/** What the Patroni topology source is given, and the records it hands back (for /status and the admin API). */
import type { Config } from '../config/types.js';
import type { Metrics } from '../metrics/metrics.js';
import type { PoolSet } from '../pool/pool-set.js';
import type { Logger } from '../util/log.js';
import type { Topology } from './topology.js';

/** What pgrelay's health checker offers (HealthChecker implements it). */
export interface HealthView {
  /** runs a check of the node now (or joins the running one); NodeStatus is updated before it resolves */
  checkNow(name: string): Promise<unknown>;
  /** the node list changed: start checking new nodes */
  reload(): void;
  on(event: 'checked', listener: (name: string, result: unknown) => void): unknown;
  off(event: 'checked', listener: (name: string, result: unknown) => void): unknown;
}

/** A change of primary followed (the shape of Failover.lastFailover, shown by /status). */
export interface PatroniFailoverRecord {
  kind: 'switchover' | 'follow';
  from: string;
  to: string;
  /** ISO time the change completed */
  at: string;
  /** from losing the old primary (or the switchover request) to writes flowing on the new one */
  durationMs: number;
  detectMs: undefined;
  timeline: number | undefined;
  reason: string;
  dataLoss: false;
}

/** The answer of a switchover (the shape of the managed mode's SwitchoverResult). */
export interface PatroniSwitchoverResult {
  from: string;
  to: string;
  timeline: number;
  /** not known in this mode (Patroni stops the old leader): '' */
  finalLsn: string;
  /** the time the switchover was scheduled for (ISO) */
  scheduledAt: string;
  /** how long units for the primary were held */
  pausedMs: number;
  durationMs: number;
  reason: string;
  /** Patroni's own answer to POST /switchover */
  patroni: string;
}

export interface PatroniSourceDeps {
  topology: Topology;
  pools: PoolSet;
  health: HealthView;
  metrics: Metrics;
  log: Logger;
  config: () => Config;
  /** the node list changed (after health.reload): e.g. the lag monitor opens probes for new nodes */
  nodesChanged?: () => void;
  /** a change of primary was followed (for /status: Failover.lastFailover) */
  primaryMoved?: (record: PatroniFailoverRecord) => void;
}
