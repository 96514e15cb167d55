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
 * an extended run of that one statement whose Sync is buffered (see isExtendedRunBuffered). Such a unit is
 * its own implicit transaction (or ends at its Sync), so its error cannot touch the next unit.
 */
export function pipelineShape(pool: Config['pool'], facts: PipeliningFacts, classification: Classification | undefined): Classification | undefined {
  if (pool.pipeline_depth < 2 || pool.mode !== 'transaction' || classification === undefined) return undefined;
  if (classification.statements !== 1 || classification.pin || classification.effects.length > 0) return undefined;
  // currval/lastval and named custom settings may need a statement of pgrelay's before them (DISCARD
  // SEQUENCES, RESET of a placeholder: see SequenceAffinity, PlaceholderGuard): not in line with others
  if (classification.readsSequences === true || classification.namesSettings === true) return undefined;
  const tx = facts.tx;
  if (tx.status !== TxStatus.Idle || tx.beginDeferred || tx.orphaned || facts.pinned()) return undefined;
  const reader = facts.reader;
  if (reader.code === FrontendCode.Query) return classification;
  return runBuffered(reader.buffer, reader.frameStart, reader.end, reader.unread()) ? classification : undefined;
}

/**
 * How many of a pool's connections must be busy before a unit of `shape` looks for one to share
 * (0: every one of them). pool.pipeline_after applies to reads only: a write queued behind another
 * client's unit on a connection that then breaks cannot be run again (it may have run), so a write
 * shares a connection only where it would otherwise wait for one.
 */
export function pipelineAfter(pool: Config['pool'], shape: Classification): number {
  return shape.route === 'primary' ? 0 : pool.pipeline_after;
}

/**
 * The shape a unit that has just taken a connection of `pool` runs with, so that other clients'
 * units may queue behind it (see ServerLease.attach), or undefined: reads sharing early
 * (`after` > 0), or a unit that took the pool's last connection.
 */
export function opensToOthers(shape: Classification | undefined, after: number, pool: Pool): Classification | undefined {
  return shape !== undefined && (after > 0 || pool.exhausted) ? shape : undefined;
}

/**
 * Whether the extended run that starts with the message `first` (code byte to end) is all here, up
 * to its Sync in `rest`, and runs exactly the statement it was placed by: it starts with a Parse
 * or a Bind; it holds at most one Parse, one Bind and one Execute besides Describe and Flush
 * (nothing else: no Close, no Query, no second statement that could SET something); a Bind after
 * a Parse binds that statement.
 */
export function isExtendedRunBuffered(first: Buffer, rest: Buffer): boolean {
  return runBuffered(first, 0, first.length, rest);
}

/**
 * isExtendedRunBuffered with the first message at `b[start, end)`: names are compared as bytes,
 * nothing is copied or decoded (every extended unit asks, twice when it may share a connection).
 */
function runBuffered(b: Buffer, start: number, end: number, rest: Buffer): boolean {
  const code = b[start];
  if (code !== FrontendCode.Parse && code !== FrontendCode.Bind) return false;
  const run = RUN;
  run.parsedIn = undefined;
  run.binds = 0;
  run.executes = 0;
  if (!takeRunMessage(b, start, end, run)) return false;
  let at = 0;
  while (rest.length - at >= 5) {
    if (rest[at] === FrontendCode.Sync) return true;
    const next = at + 1 + rest.readInt32BE(at + 1);
    if (next > rest.length || next < at + 5 || !takeRunMessage(rest, at, next, run)) return false;
    at = next;
  }
  return false;
}

/** What a run holds so far: the Parse's statement name (bytes of `parsedIn`), the Binds and Executes seen. */
interface RunSoFar {
  parsedIn: Buffer | undefined;
  parsedStart: number;
  parsedEnd: number;
  binds: number;
  executes: number;
}

/** One for every call: runBuffered runs to its end synchronously. */
const RUN: RunSoFar = { parsedIn: undefined, parsedStart: 0, parsedEnd: 0, binds: 0, executes: 0 };

/** One message `b[at, end)` of a run that may share a connection (see isExtendedRunBuffered); false: it may not. */
function takeRunMessage(b: Buffer, at: number, end: number, run: RunSoFar): boolean {
  switch (b[at]) {
    case FrontendCode.Parse: {
      if (run.parsedIn !== undefined || run.binds > 0) return false;
      const nameEnd = nulAt(b, at + 5, end);
      if (nameEnd < 0) return false;
      run.parsedIn = b;
      run.parsedStart = at + 5;
      run.parsedEnd = nameEnd;
      return true;
    }
    case FrontendCode.Bind: {
      if (run.binds++ > 0) return false;
      if (run.parsedIn === undefined) return true;
      const portalEnd = nulAt(b, at + 5, end);
      const statementEnd = portalEnd < 0 ? -1 : nulAt(b, portalEnd + 1, end);
      return statementEnd >= 0 && b.compare(run.parsedIn, run.parsedStart, run.parsedEnd, portalEnd + 1, statementEnd) === 0;
    }
    case FrontendCode.Execute:
      return run.executes++ === 0;
    case FrontendCode.Describe:
    case FrontendCode.Flush:
      return true;
    default:
      return false;
  }
}

/** Where the NUL that ends the string at `at` is, before `end`; -1 when there is none. */
function nulAt(b: Buffer, at: number, end: number): number {
  const nul = b.indexOf(0, at);
  return nul >= 0 && nul < end ? nul : -1;
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
