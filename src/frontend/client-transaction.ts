import type { Classification } from '../classify/classifier.js';
import { FrontendCode, TxStatus } from '../protocol/codes.js';
import { commandComplete, message, readyForQuery } from '../protocol/messages.js';
import { type BeginFacts, deferredBeginTag } from '../routing/unit-route.js';
import type { StatementPayload } from './client-statements.js';
import { Expect, kindOf, type ResponseQueue, SWALLOW } from './response-queue.js';
import { idleTransactionLost, type LostOutcome, transactionAborted } from './session-answers.js';

// the answers to a held BEGIN, built once
const BEGIN_COMPLETE = commandComplete('BEGIN');
const START_COMPLETE = commandComplete('START TRANSACTION');
const SAVEPOINT_COMPLETE = commandComplete('SAVEPOINT');

/**
 * `SAVEPOINT name`, nothing else (no comment): a name PostgreSQL keeps as it is (at most 63 bytes,
 * so no NOTICE of a truncated identifier is lost), plain or quoted.
 */
const PLAIN_SAVEPOINT = /^\s*savepoint\s+([A-Za-z_][A-Za-z0-9_$]*|"(?:[^"\0]|"")+")\s*;?\s*$/i;
const MAX_IDENTIFIER_BYTES = 63;

/** What decides whether a BEGIN can be answered here (see deferredBeginTag). */
export interface DeferFacts {
  /** nothing is under way: no server connection held, no unit open, nothing in flight */
  idle: boolean;
  pinned: boolean;
  defaultReadOnly: boolean;
  /** routing.transactions is `optimistic` (a BEGIN with an isolation level a replica runs is held too) */
  optimistic: boolean;
}

/**
 * The client's transaction as the client sees it: the status it was told last (and the one
 * before: a unit that goes from E to I rolled back), a plain BEGIN pgrelay answered and holds
 * for the transaction's first statement, and a transaction whose server connection was lost
 * (only ROLLBACK or COMMIT ends it; every other statement fails as in an aborted transaction).
 * Returns the messages to send; sends nothing itself.
 *
 * Where a client can tell: a plain BEGIN is answered by pgrelay and sent with the transaction's
 * first statement (which decides where it runs): the transaction starts there (`now()`), and a
 * BEGIN that would fail on the server (it cannot) would fail with that statement.
 */
export class ClientTransaction {
  status: number = TxStatus.Idle;
  private before: number = TxStatus.Idle;
  /** a plain BEGIN the client was told succeeded, to be sent with the transaction's first statement */
  private deferred: Buffer | undefined;
  /** SAVEPOINTs the client sent after that BEGIN, held with it ('; SAVEPOINT a; SAVEPOINT b') */
  private savepoints = '';
  /** the server connection of the open transaction was lost: the client must roll back */
  orphaned = false;
  /** why an idle transaction's connection was lost, told with the client's next statement */
  private notice: string | undefined;

  /** The client is told `status` (a ReadyForQuery). */
  saw(status: number): void {
    this.before = this.status;
    this.status = status;
  }

  /** The transaction was failed before the status now seen (a COMMIT then rolled back). */
  get wasFailed(): boolean {
    return this.before === TxStatus.Failed;
  }

  get beginDeferred(): boolean {
    return this.deferred !== undefined;
  }

  /**
   * A plain BEGIN outside a transaction is answered here and sent with the transaction's first
   * statement: returns the answers (`frame`, the whole BEGIN message, is kept), or undefined when
   * it goes to a server now.
   */
  deferBegin(classification: Classification, text: string, frame: Buffer, facts: DeferFacts): Buffer[] | undefined {
    const tag = deferredBeginTag(classification, text, this.beginFacts(facts));
    if (tag === undefined) return undefined;
    this.deferred = Buffer.from(frame);
    this.saw(TxStatus.InTransaction);
    return [tag === 'BEGIN' ? BEGIN_COMPLETE : START_COMPLETE, readyForQuery(TxStatus.InTransaction)];
  }

  /**
   * A plain `SAVEPOINT name` right after a held BEGIN (pgjdbc with `autosave`, nested transaction
   * blocks of Django, SQLAlchemy or Rails) is held with it: it cannot fail in the transaction the
   * BEGIN opens, so the client is told it succeeded, and it goes to a server in front of the
   * transaction's first statement, which still decides where the transaction runs. Returns the
   * answers of a simple Query, or undefined when it goes to a server now.
   */
  holdSavepoint(classification: Classification, text: string): Buffer[] | undefined {
    if (!this.holdsSavepoint(classification, text)) return undefined;
    this.addSavepoint(text);
    return [SAVEPOINT_COMPLETE, readyForQuery(TxStatus.InTransaction)];
  }

  /** Whether `text` is a SAVEPOINT that is held with the BEGIN that is held (see holdSavepoint). */
  holdsSavepoint(classification: Classification, text: string): boolean {
    if (this.deferred === undefined || classification.statements !== 1 || classification.route !== 'any' || classification.pin || classification.effects.length !== 0) return false;
    const name = PLAIN_SAVEPOINT.exec(text)?.[1];
    return name !== undefined && Buffer.byteLength(name.startsWith('"') ? name.slice(1, -1).replaceAll('""', '"') : name) <= MAX_IDENTIFIER_BYTES;
  }

  /** A SAVEPOINT the caller found held (see holdsSavepoint) is added to the held BEGIN. */
  addSavepoint(text: string): void {
    this.savepoints += `; ${text.trim().replace(/;$/, '')}`;
  }

  /** The command tag a BEGIN sent through the extended protocol is answered with when it can be held (see holdExtendedBegin), else undefined. */
  extendedBeginTag(classification: Classification, text: string, facts: DeferFacts): string | undefined {
    return deferredBeginTag(classification, text, this.beginFacts(facts));
  }

  /**
   * The facts with this transaction's own, written out: V8 (Node 20) builds `{ ...facts, more }`
   * on a slow path (~2.5 µs a call, against ~0.05 µs for a literal; once per transaction here).
   */
  private beginFacts(facts: DeferFacts): BeginFacts {
    return { idle: facts.idle, pinned: facts.pinned, defaultReadOnly: facts.defaultReadOnly, optimistic: facts.optimistic, beginDeferred: this.deferred !== undefined, clientTxStatus: this.status };
  }

  /**
   * A BEGIN sent through the extended protocol (see findExtendedBegin) is held: as a simple
   * Query, which is what goes in front of the transaction's first statement (and runs again on
   * the primary when the transaction moves).
   */
  holdExtendedBegin(text: string): void {
    this.deferred = message(FrontendCode.Query, (w) => w.cstring(text));
    this.saw(TxStatus.InTransaction);
  }

  /** The held BEGIN, with the SAVEPOINTs held after it, to send in front of the transaction's first statement (once). */
  takeBegin(): Buffer | undefined {
    let begin = this.deferred;
    this.deferred = undefined;
    if (begin !== undefined && this.savepoints !== '') {
      // one Query (one ReadyForQuery, swallowed as the BEGIN's is): the BEGIN's text is a plain one, with no comment
      const text = `${begin.toString('utf8', 5, begin.length - 1).trim().replace(/;$/, '')}${this.savepoints}`;
      begin = message(FrontendCode.Query, (w) => w.cstring(text));
    }
    this.savepoints = '';
    return begin;
  }

  /** The server connection was lost: an open transaction is gone (`hadWork`: the client is told now, else with its next statement). */
  lost(inTransaction: boolean, hadWork: boolean, node: string, serverFatal: string | undefined): void {
    if (inTransaction) this.orphaned = true;
    if (inTransaction && !hadWork) this.notice = idleTransactionLost(node, serverFatal);
    this.status = inTransaction ? TxStatus.Failed : TxStatus.Idle;
  }

  /**
   * A statement in a transaction whose connection was lost: ROLLBACK or COMMIT (simple Query)
   * ends it (`ended`); anything else fails. `simple`: a Query or FunctionCall (it gets its
   * ReadyForQuery), else an extended message (the session skips to Sync).
   */
  answerOrphaned(classification: Classification | undefined, simple: boolean): { answers: Buffer[]; ended: boolean } {
    const ends = classification?.effects.some((e) => e.type === 'rollback' || e.type === 'commit') ?? false;
    if (ends && simple) {
      this.orphaned = false;
      this.notice = undefined;
      this.status = TxStatus.Idle;
      return { answers: [commandComplete('ROLLBACK'), readyForQuery(TxStatus.Idle)], ended: true };
    }
    const notice = this.notice;
    this.notice = undefined;
    const error = transactionAborted(notice);
    return { answers: simple ? [error, readyForQuery(TxStatus.Failed)] : [error], ended: false };
  }
}

/**
 * What a client whose server connection was lost can be told of its statements in flight: a
 * COMMIT (or PREPARE TRANSACTION), or outside a transaction anything that may write (routed to
 * the primary, a FunctionCall), may have committed before the connection went: 'unknown'. In a
 * transaction without its COMMIT in flight, it did not commit; else only reads were lost.
 */
export function lostOutcome(queue: ResponseQueue<StatementPayload>, inTransaction: boolean): LostOutcome {
  const mayCommit = (entry: number, payload: StatementPayload | undefined): boolean => {
    const kind = kindOf(entry);
    if ((entry & SWALLOW) !== 0 || (kind !== Expect.Query && kind !== Expect.Execute)) return false;
    const c = payload?.classification;
    if (c?.effects.some((e) => e.type === 'commit')) return true;
    return !inTransaction && (c === undefined || c.route === 'primary');
  };
  if (queue.some(mayCommit)) return 'unknown';
  return inTransaction ? 'not committed' : 'read';
}
