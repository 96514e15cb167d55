/**
 * What the RDS workflows speak: RelayControl (what they need from the pgrelay in front of the
 * cluster), the workflow kinds, steps, options and progress events, and the refusal of a request.
 */
import type { Config, NodeRole } from '../config/types.js';

/** What the workflows need from the pgrelay in front of the cluster. */
export interface RelayControl {
  config(): Config;
  /**
   * Applies a new configuration the way a reload does (no client dropped; a removed node drains);
   * returns the one-line description of the change, throws with the reasons when it is rejected.
   */
  apply(next: Config): string;
  /** The node pgrelay sends writes to. */
  primaryName(): string | undefined;
  /** pgrelay's view of a node; undefined when it is not in the routing table. */
  node(name: string): RelayNodeView | undefined;
  /** Server connections to the node, draining pools included: 0 once nothing runs there any more. */
  connections(name: string): { active: number; total: number };
  /** Closes every server connection to the node at once (a drain that ran out of time). */
  closeNode(name: string): void;
  /** A failover or switchover is running. */
  changingPrimary(): boolean;
}

export interface RelayNodeView {
  up: boolean;
  /** as the servers say (a streaming standby the primary lists as synchronous is `standby`) */
  role: NodeRole;
  /** the lag monitor reaches it and sees it replay the current primary's WAL */
  replicating: boolean;
  /** within max_lag: reads may go there */
  fresh: boolean;
  lagSeconds: number | undefined;
  lagBytes: number | undefined;
  staleReason: string | undefined;
}

export type WorkflowKind = 'add-replica' | 'add-standby' | 'remove';

export type WorkflowStep =
  | 'check'
  | 'slot'
  | 'snapshot'
  | 'start'
  | 'streaming'
  | 'catch-up'
  | 'synchronous'
  | 'pgrelay'
  | 'drain'
  | 'detach'
  | 'stop'
  | 'cleanup'
  | 'rollback'
  | 'done'
  | 'failed';

/** One progress line. The last event of a workflow is `done` (ok) or `failed`. */
export interface WorkflowEvent {
  step: WorkflowStep;
  /** a sentence for a person */
  message: string;
  /** milliseconds since the workflow started */
  elapsedMs: number;
  node?: string;
  ok?: boolean;
  error?: string;
  /** snapshot: bytes copied so far, the total pg_basebackup estimated, and the rate */
  bytes?: number;
  totalBytes?: number;
  bytesPerSecond?: number;
  /** catch-up and pgrelay: how far behind the primary the node is */
  lagBytes?: number;
  lagMs?: number | null;
  /** done: where the node listens, its role */
  host?: string;
  port?: number;
  role?: string;
}

export interface WorkflowOptions {
  /** add: the new node's name (default replicaN / standbyN) */
  name?: string;
  /** add: how long the new node may take to catch up with the primary; default 5 minutes */
  catchUpTimeoutMs?: number;
  /** add: how long pgrelay's health check and lag monitor may take to vouch for it; default 60 s */
  vouchTimeoutMs?: number;
  /** remove: how long units running on the node may take to finish; default 60 s */
  drainTimeoutMs?: number;
}

/** A request refused before anything started: `status` is the HTTP status to answer with. */
export class WorkflowRefused extends Error {
  constructor(
    readonly status: 400 | 404 | 409,
    message: string,
  ) {
    super(message);
    this.name = 'WorkflowRefused';
  }
}

export interface WorkflowRun {
  kind: WorkflowKind;
  node: string;
  /** settles when the workflow has ended (its last event has been emitted); never rejects */
  done: Promise<WorkflowEvent>;
}
