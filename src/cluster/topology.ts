import { EventEmitter } from 'node:events';
import type { NodeConfig, NodeRole } from '../config/types.js';

/**
 * pgrelay's view of the cluster: one entry per node, updated by the health checker, the lag
 * monitor and failover. The YAML role is a starting hint; `role` is what the server says.
 * Every exclusion of a node from routing carries a reason.
 */
export interface NodeStatus {
  readonly name: string;
  host: string;
  port: number;
  weight: number;
  configuredRole: NodeRole;
  /** role as the servers report it: out of recovery = primary */
  role: NodeRole;
  up: boolean;
  /** out of recovery on an older timeline than the current primary, or demoted by failover */
  fenced: boolean;
  inRecovery: boolean | undefined;
  timeline: number | undefined;
  /** last replayed WAL position (replicas), as a number of bytes */
  replayLsn: bigint | undefined;
  replayPaused: boolean;
  lagBytes: number | undefined;
  lagSeconds: number | undefined;
  /** whether the lag monitor lets this node serve reads; with a reason when not */
  fresh: boolean;
  /**
   * the lag monitor reaches this node and sees it replaying the current primary's WAL (its
   * timeline, streaming), with a lag figure it can vouch for; when false no read goes there, even
   * under a looser per-statement max_lag hint
   */
  replicating: boolean;
  staleReason: string | undefined;
  /** what the lag monitor cannot see on this node with the monitor role's privileges (undefined: nothing hidden) */
  notKnown: string | undefined;
  /** units running on the node now, and a moving average of their duration */
  inflight: number;
  latencyEwmaMs: number;
  lastError: string | undefined;
}

export class Topology extends EventEmitter {
  readonly nodes = new Map<string, NodeStatus>();
  /** the node that takes writes, if any is known to be up */
  primaryName: string | undefined;
  /** bumped on every change that can affect routing */
  version = 0;

  constructor(nodes: readonly NodeConfig[]) {
    super();
    this.configure(nodes);
  }

  /** Applies the configured node list: new nodes join, removed ones leave, known ones keep their state. */
  configure(nodes: readonly NodeConfig[]): void {
    const names = new Set(nodes.map((n) => n.name));
    for (const name of [...this.nodes.keys()]) if (!names.has(name)) this.nodes.delete(name);
    for (const config of nodes) {
      const known = this.nodes.get(config.name);
      if (known) {
        known.host = config.host;
        known.port = config.port;
        known.weight = config.weight;
        known.configuredRole = config.role;
        continue;
      }
      this.nodes.set(config.name, {
        name: config.name,
        host: config.host,
        port: config.port,
        weight: config.weight,
        configuredRole: config.role,
        role: config.role,
        up: true,
        fenced: false,
        inRecovery: undefined,
        timeline: undefined,
        replayLsn: undefined,
        replayPaused: false,
        lagBytes: undefined,
        lagSeconds: undefined,
        fresh: true,
        replicating: true,
        staleReason: undefined,
        notKnown: undefined,
        inflight: 0,
        latencyEwmaMs: 1,
        lastError: undefined,
      });
    }
    if (this.primaryName === undefined || !this.nodes.has(this.primaryName)) {
      this.primaryName = nodes.find((n) => n.role === 'primary')?.name;
    }
    this.changed();
  }

  node(name: string): NodeStatus | undefined {
    return this.nodes.get(name);
  }

  primary(): NodeStatus | undefined {
    const primary = this.primaryName === undefined ? undefined : this.nodes.get(this.primaryName);
    return primary && primary.up && !primary.fenced ? primary : undefined;
  }

  setPrimary(name: string | undefined): void {
    if (this.primaryName === name) return;
    this.primaryName = name;
    if (name !== undefined) {
      const node = this.nodes.get(name);
      if (node) {
        node.role = 'primary';
        node.fenced = false;
      }
    }
    this.changed();
  }

  changed(): void {
    this.version++;
    this.emit('change');
  }
}
