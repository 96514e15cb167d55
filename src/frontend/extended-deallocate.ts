import type { Classification } from '../classify/classifier.js';
import { ProxyError, SqlState } from '../errors.js';
import { BackendCode, FrontendCode, TxStatus } from '../protocol/codes.js';
import { bindComplete, closeComplete, message, noData, parseComplete, readCString } from '../protocol/messages.js';
import type { ClientStatements, StatementPayload } from './client-statements.js';
import type { ServerStatement } from './prepared-statements.js';
import { Expect, type ResponseQueue } from './response-queue.js';
import type { ServerLease } from './server-lease.js';
import type { ServerReplies } from './server-replies.js';

/** What a DEALLOCATE the session answers removes: one of the client's names, or all of them (`name` null). */
export interface DeallocateTarget {
  name: string | null;
  statement: ServerStatement | undefined;
}

/** The session as ExtendedDeallocate sees it. */
export interface DeallocateHost {
  readonly lease: ServerLease;
  readonly queue: ResponseQueue<StatementPayload>;
  readonly replies: ServerReplies;
  readonly statements: ClientStatements;
  /** the transaction status the client was told last */
  txStatus(): number;
  pinned(): boolean;
  unitOpen(): boolean;
  /** an extended unit begins without a server connection */
  openUnit(): void;
  sendToClient(data: Buffer): void;
  failUnit(error: unknown): void;
  /** the client's names go (see StatementMessages.answerDeallocated) */
  forget(target: DeallocateTarget): void;
}

const NO_PARAMETERS = message(BackendCode.ParameterDescription, (w) => w.int16(0));
const ANSWERED_HERE: Classification = { route: 'any', pin: false, reason: 'DEALLOCATE answered by pgrelay', effects: [], statements: 1, userFunctions: [] };

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
 * same run makes the server skip it). In a failed transaction the statement goes to the server
 * path as before (pgrelay refuses it there, and the server's 25P02 comes first).
 */
export class ExtendedDeallocate {
  /** the client's statement names ('' = unnamed) that hold a DEALLOCATE answered here */
  private readonly held = new Map<string, DeallocateTarget>();
  /** portals bound from them */
  private readonly portals = new Map<string, DeallocateTarget>();

  constructor(private readonly host: DeallocateHost) {}

  /** Whether any statement or portal is held here (the session asks before intercept). */
  get active(): boolean {
    return this.held.size > 0 || this.portals.size > 0;
  }

  /** A Parse of `name` with this classification: true when it is a DEALLOCATE held here (its ParseComplete is answered). */
  parsed(name: string, classification: Classification, hasParameterTypes: boolean): boolean {
    this.held.delete(name);
    const host = this.host;
    if (hasParameterTypes || host.txStatus() === TxStatus.Failed || host.lease.conn?.txStatus === TxStatus.Failed) return false;
    const target = host.statements.deallocateTarget(classification, host.pinned());
    if (target === undefined) return false;
    // the name now means this statement
    if (name !== '') host.statements.delete(name);
    this.held.set(name, target);
    this.answer(parseComplete);
    return true;
  }

  /** A Bind, Describe, Close or Execute of a statement or portal held here: answered (true); a Parse of a held name is not (it forgets it). */
  intercept(code: number, b: Buffer, start: number, end: number): boolean {
    switch (code) {
      case FrontendCode.Parse:
        this.held.delete(readCString(b, start, end)[0]);
        return false;
      case FrontendCode.Bind:
        return this.onBind(b, start, end);
      case FrontendCode.Describe:
      case FrontendCode.Close:
        return this.onDescribeOrClose(code, b, start, end);
      case FrontendCode.Execute: {
        const target = this.portals.get(readCString(b, start, end)[0]);
        if (target === undefined) return false;
        this.execute(target);
        return true;
      }
      default:
        return false;
    }
  }

  private onBind(b: Buffer, start: number, end: number): boolean {
    const [portal, statementStart] = readCString(b, start, end);
    const [statement, at] = readCString(b, statementStart, end);
    this.portals.delete(portal);
    const target = this.held.get(statement);
    if (target === undefined) return false;
    const formats = b.readInt16BE(at);
    const values = b.readInt16BE(at + 2 + 2 * formats);
    if (values !== 0) {
      this.host.failUnit(new ProxyError(SqlState.protocolViolation, `bind message supplies ${values} parameters, but prepared statement "${statement}" requires 0`));
      return true;
    }
    this.portals.set(portal, target);
    this.answer(bindComplete);
    return true;
  }

  private onDescribeOrClose(code: number, b: Buffer, start: number, end: number): boolean {
    const statement = b[start] === 0x53; /* S */
    const name = readCString(b, start + 1, end)[0];
    const names = statement ? this.held : this.portals;
    if (!names.has(name)) return false;
    if (code === FrontendCode.Close) {
      names.delete(name);
      this.answer(closeComplete);
    } else this.answer(statement ? Buffer.concat([NO_PARAMETERS, noData]) : noData);
    return true;
  }

  /** The Execute: the names go once everything before it is answered, with its CommandComplete. */
  private execute(target: DeallocateTarget): void {
    const host = this.host;
    // DEALLOCATE ALL drops the named statements held here too (not the unnamed one)
    if (target.name === null) for (const name of this.held.keys()) if (name !== '') this.held.delete(name);
    if (host.lease.conn && host.queue.length > 0) {
      host.replies.pushSynthetic(Expect.SyntheticDeallocate, { classification: ANSWERED_HERE, text: target.name ?? '', statement: target.statement, answer: { data: noData, ready: false } });
      return;
    }
    if (!host.unitOpen()) host.openUnit();
    host.forget(target);
  }

  /** Answers in order with what the server still owes. */
  private answer(data: Buffer): void {
    const host = this.host;
    if (host.lease.conn && host.queue.length > 0) return host.replies.pushSynthetic(Expect.SyntheticAnswer, { classification: ANSWERED_HERE, text: '', answer: { data, ready: false } });
    if (!host.unitOpen()) host.openUnit();
    host.sendToClient(data);
  }
}
