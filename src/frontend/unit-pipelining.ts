import type { Classification } from '../classify/classifier.js';
import type { Config } from '../config/types.js';
import type { Pool } from '../pool/pool.js';
import type { ServerConnection } from '../pool/server-connection.js';
import { ServerPipeline } from '../pool/server-pipeline.js';
import { FrontendCode, TxStatus } from '../protocol/codes.js';
import type { FrameReader } from '../protocol/frame-reader.js';

/** What deciding whether a unit may share a connection needs from its session. */
export interface PipeliningFacts {
  /** the client messages, at the unit's first one */
  readonly reader: FrameReader;
  readonly tx: { readonly status: number; readonly beginDeferred: boolean; readonly orphaned: boolean };
  pinned(): boolean;
}

/**
 * The shape of a unit that may run behind other clients' units on one server connection
 * (pool.pipeline_depth; see ServerPipeline), or undefined. Self-contained means: pipelining is on
 * and the pool pools transactions; the client is outside a transaction (status I, no BEGIN held
 * back) and not pinned; the unit is one statement with no session effect (no SET, no pin, no
 * PREPARE/DEALLOCATE, no transaction control) and all of it is already here: a simple Query, or
 * an extended run (Parse, Bind, Describe, Execute, Flush) whose Sync is buffered. Such a unit is
 * its own implicit transaction (or ends at its Sync), so its error cannot touch the next unit.
 */
export function pipelineShape(pool: Config['pool'], facts: PipeliningFacts, classification: Classification | undefined): Classification | undefined {
  if (pool.pipeline_depth < 2 || pool.mode !== 'transaction' || classification === undefined) return undefined;
  if (classification.statements !== 1 || classification.pin || classification.effects.length > 0) return undefined;
  const tx = facts.tx;
  if (tx.status !== TxStatus.Idle || tx.beginDeferred || tx.orphaned || facts.pinned()) return undefined;
  const reader = facts.reader;
  if (reader.code === FrontendCode.Query) return classification;
  return isExtendedRunBuffered(reader.code, reader.unread()) ? classification : undefined;
}

/** Messages an extended run that may share a connection consists of (up to its Sync). */
function isRunMessage(code: number): boolean {
  return code === FrontendCode.Parse || code === FrontendCode.Bind || code === FrontendCode.Describe || code === FrontendCode.Execute || code === FrontendCode.Flush;
}

/** Whether the run that starts with a `first` message continues in `rest` with run messages only, up to a Sync. */
export function isExtendedRunBuffered(first: number, rest: Buffer): boolean {
  if (!isRunMessage(first)) return false;
  let at = 0;
  while (rest.length - at >= 5) {
    const code = rest[at]!;
    if (code === FrontendCode.Sync) return true;
    if (!isRunMessage(code)) return false;
    at += 1 + rest.readInt32BE(at + 1);
  }
  return false;
}

/**
 * A connection of `pool` (all of them lent) that a unit of `shape` may be queued on now: one
 * carrying only short self-contained units, fewer than `depth`, with the client's session state
 * already applied (a replay would have to run first; such a unit waits for a free connection).
 * The least loaded one. Units that wait for the pool meanwhile are not starved: a connection
 * that took its share stops taking more (see ServerPipeline.mayQueue).
 */
export function sharedConnection(pool: Pool, shape: Classification, depth: number, state: string): ServerConnection | undefined {
  const now = performance.now();
  const othersWait = pool.waitingCount > 0;
  let best: ServerConnection | undefined;
  let bestDepth = depth;
  for (const conn of pool.lent()) {
    const pipeline = ServerPipeline.of(conn);
    if (pipeline === undefined || pipeline.depth >= bestDepth || conn.appliedState !== state) continue;
    if (!pipeline.mayQueue(shape, depth, now, othersWait)) continue;
    best = conn;
    bestDepth = pipeline.depth;
  }
  return best;
}
