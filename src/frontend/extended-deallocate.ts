import type { Classification } from '../classify/classifier.js';
import { BackendCode, FrontendCode, TxStatus } from '../protocol/codes.js';
import { message, noData, parseComplete, readCString } from '../protocol/messages.js';
import type { ClientStatements } from './client-statements.js';
import { ANSWERED_HERE, type LocalAnswerHost, LocalStatements } from './local-statements.js';
import type { ServerStatement } from './prepared-statements.js';
import { Expect } from './response-queue.js';

/** What a DEALLOCATE the session answers removes: one of the client's names, or all of them (`name` null). */
export interface DeallocateTarget {
  name: string | null;
  statement: ServerStatement | undefined;
}

/** The session as ExtendedDeallocate sees it. */
export interface DeallocateHost extends LocalAnswerHost {
  readonly statements: ClientStatements;
  pinned(): boolean;
  /** the client's names go, with the DEALLOCATE's CommandComplete (StatementMessages.forgetDeallocated, as ServerReplies calls it) */
  forgetDeallocated(name: string | null, statement: ServerStatement | undefined): void;
}

const NO_PARAMETERS_NO_DATA = Buffer.concat([message(BackendCode.ParameterDescription, (w) => w.int16(0)), noData]);

/**
 * `DEALLOCATE name` of one of the client's statements, and `DEALLOCATE ALL`, sent through the
 * extended protocol: psycopg 3 sends the commands it makes itself that way (Parse, Bind,
 * Describe of the portal, Execute, Sync), its `DEALLOCATE ALL` after every rollback of a
 * connection that prepared statements, and `DEALLOCATE name` when its statement cache rotates.
 * The server connection's statements are shared and named by pgrelay, so the server must not
 * run them: they are answered here as the simple-Query form is (StatementMessages.answerDeallocate)
 * — the client's names go, the server's statements stay — with the answers the server would give
 * (ParseComplete, BindComplete, NoData, CommandComplete), in order with what the server still
 * owes. The names go when the Execute is answered (not at all when an error before it in the
 * same run makes the server skip it). In a failed transaction the statement goes the server's
 * way as before (pgrelay refuses it there, after the server's 25P02); a pinned client's
 * DEALLOCATE ALL runs on its own connection (see forgetsStatements).
 */
export class ExtendedDeallocate extends LocalStatements<DeallocateTarget> {
  constructor(protected override readonly host: DeallocateHost) {
    super(host, 'DEALLOCATE');
  }

  /** A Parse of `name` with this classification: true when it is a DEALLOCATE held here (its ParseComplete is answered). */
  parsed(name: string, classification: Classification, hasParameterTypes: boolean): boolean {
    this.statements?.delete(name);
    const host = this.host;
    if (hasParameterTypes || host.txStatus() === TxStatus.Failed || host.lease.conn?.txStatus === TxStatus.Failed) return false;
    const target = host.statements.deallocateTarget(classification, host.pinned());
    if (target === undefined) return false;
    // the name now means this statement
    if (name !== '') host.statements.delete(name);
    this.hold(name, target);
    this.answer([parseComplete], false);
    return true;
  }

  /** A client message: answered here (true) when it names a statement or portal held here; a Parse forgets the name it reuses. */
  intercept(code: number, b: Buffer, start: number, end: number): boolean {
    if (code === FrontendCode.Parse) {
      this.statements?.delete(readCString(b, start, end)[0]);
      return false;
    }
    return this.answerHeld(code, b, start, end);
  }

  protected describeStatement(): Buffer {
    return NO_PARAMETERS_NO_DATA;
  }

  protected describePortal(): Buffer {
    return noData;
  }

  /** The names go once everything before the Execute is answered, with its CommandComplete. */
  protected execute(target: DeallocateTarget): void {
    const host = this.host;
    // DEALLOCATE ALL drops the named statements held here too (not the unnamed one)
    if (target.name === null && this.statements) for (const name of this.statements.keys()) if (name !== '') this.statements.delete(name);
    if (host.lease.conn && host.queue.length > 0) {
      // an answer marks the entry as the extended form's (see ServerReplies.emitSynthetic)
      host.replies.pushSynthetic(Expect.SyntheticDeallocate, { classification: ANSWERED_HERE, text: target.name ?? '', statement: target.statement, answer: { data: noData, ready: false } });
      return;
    }
    if (!host.unitOpen()) host.openUnit();
    host.forgetDeallocated(target.name, target.statement);
  }
}
