import type { Classification } from '../classify/classifier.js';
import { ProxyError, SqlState } from '../errors.js';
import { TxStatus } from '../protocol/codes.js';
import type { Target } from './router.js';

/**
 * The routing rules of one unit that depend on the client's session, as pure functions of plain
 * values: where a unit wants to run, whether a BEGIN waits for the transaction's first
 * statement, whether a unit stays on the connection the session holds, whether a read may run
 * again elsewhere. The node itself is the Router's choice (router.ts).
 */

/** What the session knows about itself when a unit starts. */
export interface SessionFacts {
  /** a plain BEGIN was answered by pgrelay and waits for the transaction's first statement */
  beginDeferred: boolean;
  /** `default_transaction_read_only` is on */
  defaultReadOnly: boolean;
  /** routing.transactions is `optimistic`: a held BEGIN's transaction may start on a replica */
  optimistic?: boolean;
}

/** Where a statement wants to run, given the session's transaction defaults ('any': wherever the session is). */
export function targetOf(classification: Classification | undefined, facts: SessionFacts): Target | 'any' {
  if (facts.beginDeferred) {
    // the first statement of a transaction whose BEGIN pgrelay holds
    const readOnly = classification !== undefined && classification.route !== 'primary' && classification.effects[0]?.type === 'set_transaction_read_only';
    // optimistic: a transaction that starts with a plain read starts on a replica, as does one
    // that starts with a transaction setting a replica runs alike (SET LOCAL, SET TRANSACTION
    // ISOLATION LEVEL …): an ORM's BEGIN; SET …; SELECT … (a write after it moves it, at the cost
    // of running the setting again)
    return readOnly || (facts.optimistic && startsOptimistic(classification)) ? 'replica' : 'primary';
  }
  if (!classification) return 'any';
  // a pin is a primary connection: a pin on a replica would fail every later write of the client
  if (classification.pin) return 'primary';
  if (classification.route === 'replica') return 'replica';
  if (classification.route === 'any') {
    for (const effect of classification.effects) if (effect.type === 'begin' && (effect.readOnly || facts.defaultReadOnly)) return 'replica';
    return 'any';
  }
  if (facts.defaultReadOnly && classification.effects.length === 1 && classification.effects[0]!.type === 'begin') return 'replica';
  return 'primary';
}

/** `BEGIN`, `BEGIN WORK|TRANSACTION`, `START TRANSACTION`: no options, no comment (hints stay routed) */
const PLAIN_BEGIN = /^\s*(?:begin(?:\s+(?:work|transaction))?|start\s+transaction)\s*;?\s*$/i;
/**
 * the same with an isolation level a hot standby runs (READ COMMITTED, REPEATABLE READ); not
 * READ WRITE: a transaction that says it will write starts on the primary
 */
const OPTIMISTIC_BEGIN =
  /^\s*(?:begin(?:\s+(?:work|transaction))?|start\s+transaction)(?:\s+isolation\s+level\s+(?:read\s+committed|read\s+uncommitted|repeatable\s+read))?\s*;?\s*$/i;

/**
 * A plain read: it may run on a replica and answers the same when run again on the primary
 * (no session or transaction effect, no pin, no call whose answer depends on the server or the
 * moment, no cursor). An optimistic transaction starts with one and stays on its replica while
 * it sends only these and transaction control (see staysOnReplica).
 */
export function isPlainRead(classification: Classification | undefined): boolean {
  return classification !== undefined && classification.route === 'replica' && !classification.pin && classification.effects.length === 0 && classification.unverifiable === undefined;
}

/**
 * Whether the first statement of a transaction whose BEGIN pgrelay holds starts it on a replica,
 * optimistic: a plain read, or a transaction setting a replica runs alike
 * (Classification.opensOnReplica).
 */
export function startsOptimistic(classification: Classification | undefined): boolean {
  return isPlainRead(classification) || classification?.opensOnReplica === true;
}

/**
 * What an optimistic transaction may run on its replica: plain reads, and statements that run
 * where the transaction is and are run again on the primary as they are (SAVEPOINT, RELEASE,
 * ROLLBACK TO, SET LOCAL, FETCH, COMMIT, ROLLBACK). Undefined: a message of a portal or statement
 * already there (Execute, Describe). Anything else moves the transaction to the primary first.
 */
export function staysOnReplica(classification: Classification | undefined): boolean {
  if (classification === undefined || isPlainRead(classification)) return true;
  if (classification.route !== 'any' || classification.pin) return false;
  return classification.effects.every((e) => e.type === 'commit' || e.type === 'rollback');
}

/** COMMIT or ROLLBACK: the transaction ends where it is. */
export function endsTransaction(classification: Classification | undefined): boolean {
  return classification !== undefined && classification.effects.some((e) => e.type === 'commit' || e.type === 'rollback');
}

/** What decides whether a BEGIN is deferred. */
export interface BeginFacts extends SessionFacts {
  /** nothing is under way: no server connection held, no unit open, nothing in flight */
  idle: boolean;
  pinned: boolean;
  /** the transaction status the client last saw */
  clientTxStatus: number;
}

/**
 * A plain `BEGIN` outside a transaction is answered by pgrelay and sent later, in front of the
 * transaction's first statement, which decides where the transaction runs: after
 * `SET TRANSACTION READ ONLY` on a replica, after anything else on the primary.
 * Returns the command tag to answer with, or undefined when the BEGIN goes to a server now.
 */
export function deferredBeginTag(classification: Classification, text: string, facts: BeginFacts): 'BEGIN' | 'START TRANSACTION' | undefined {
  if (!facts.idle || facts.pinned || facts.beginDeferred) return undefined;
  if (facts.clientTxStatus !== TxStatus.Idle || facts.defaultReadOnly) return undefined;
  const effect = classification.effects[0];
  if (classification.statements !== 1 || classification.route !== 'primary' || effect?.type !== 'begin' || effect.readOnly) return undefined;
  if (!(facts.optimistic ? OPTIMISTIC_BEGIN : PLAIN_BEGIN).test(text)) return undefined;
  // PostgreSQL's command tags: BEGIN [WORK | TRANSACTION] → BEGIN, START TRANSACTION → START TRANSACTION
  return /^\s*start/i.test(text) ? 'START TRANSACTION' : 'BEGIN';
}

/** The connection the session holds, when a new unit (not part of a transaction or a pin) wants `target`. */
export interface HeldConnection {
  /** it is the primary's */
  onPrimary: boolean;
  /** earlier units are still in flight on it (pipelining) */
  busy: boolean;
}

/**
 * Whether a unit stays on the connection the session holds: 'stay'; 'drain' = wait until the
 * units in flight there are answered, then route it; 'release' = give it back and route it.
 * Pipelined units follow on the same connection unless a write needs another node.
 */
export function onHeldConnection(target: Target, held: HeldConnection): 'stay' | 'drain' | 'release' {
  if (held.busy) return target === 'replica' || held.onPrimary ? 'stay' : 'drain';
  return target === 'primary' && held.onPrimary ? 'stay' : 'release';
}

/** What decides whether a unit may run again elsewhere if its connection is lost before it answered. */
export interface ReplayFacts {
  pinned: boolean;
  /** the client's and the server connection's transaction status */
  clientTxStatus: number;
  serverTxStatus: number;
}

/** A read outside a transaction, with no effect on the session, may run again once on another connection. */
export function isReplayable(classification: Classification | undefined, facts: ReplayFacts): boolean {
  return (
    classification !== undefined &&
    classification.route !== 'primary' &&
    classification.effects.length === 0 &&
    !classification.pin &&
    !facts.pinned &&
    facts.clientTxStatus === TxStatus.Idle &&
    facts.serverTxStatus === TxStatus.Idle
  );
}

/**
 * A statement that pins, inside a transaction that runs on a replica: it cannot move there, and a
 * pin on a replica would fail every later write of the client (25006). It is refused (0A000).
 */
export function pinOnReplicaRefusal(classification: Classification, inReplicaTransaction: boolean): ProxyError | undefined {
  if (!classification.pin || !inReplicaTransaction) return undefined;
  return new ProxyError(
    SqlState.featureNotSupported,
    'a statement that keeps session state (PREPARE, DECLARE … WITH HOLD, session advisory locks, set_config(…, false), …) cannot run in a read-only transaction on a replica: run it outside the transaction',
  );
}

/** A connect that failed for want of the server (refused, timed out, shutting down, pool closed). */
export function isUnreachable(error: unknown): boolean {
  return error instanceof ProxyError && (error.sqlstate === SqlState.connectionFailure || error.sqlstate === SqlState.cannotConnectNow || error.sqlstate === SqlState.adminShutdown);
}
