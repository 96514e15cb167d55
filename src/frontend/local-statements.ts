import type { Classification } from '../classify/classifier.js';
import { ProxyError, SqlState } from '../errors.js';
import { FrontendCode } from '../protocol/codes.js';
import { bindComplete, closeComplete, readCString, readyForQuery } from '../protocol/messages.js';
import type { StatementPayload } from './client-statements.js';
import { Expect, type ResponseQueue } from './response-queue.js';
import type { ServerLease } from './server-lease.js';
import type { ServerReplies } from './server-replies.js';

/** The session as LocalStatements sees it. */
export interface LocalAnswerHost {
  readonly lease: ServerLease;
  readonly queue: ResponseQueue<StatementPayload>;
  readonly replies: ServerReplies;
  /** the transaction status the client was told last */
  txStatus(): number;
  unitOpen(): boolean;
  /** an extended unit begins without a server connection */
  openUnit(): void;
  sendToClient(data: Buffer): void;
  failUnit(error: unknown): void;
}

/** what the queue entry of an answer made here carries as its statement */
export const ANSWERED_HERE: Classification = Object.freeze({ route: 'any', pin: false, reason: 'answered by pgrelay', effects: [], statements: 1, userFunctions: [] });

/**
 * Statements a client prepares through the extended protocol that pgrelay answers itself and
 * never sends to a server (`SHOW pgrelay.last_write_lsn`, a DEALLOCATE): the subclass holds one
 * when its Parse comes (with what it is, `T`); Bind, Describe, Close and Execute of it, and of the
 * portals bound from it, are then answered here, in order with what the server still owes
 * (queued behind it when the server owes answers, else sent at once, the unit begun without a
 * server). A Bind with parameters fails as the server's would (08P01): such a statement has none.
 */
export abstract class LocalStatements<T> {
  /** the client's statement names ('' = unnamed) held here (made on first use: most clients never prepare one) */
  protected statements: Map<string, T> | undefined;
  /** portals bound from them, with the result format the client asked for */
  protected portals: Map<string, { held: T; format: number }> | undefined;

  constructor(
    protected readonly host: LocalAnswerHost,
    /** the text the queue entries of answers made here carry */
    private readonly label: string,
  ) {}

  /** Whether a statement or portal is held here (the session asks before handing messages in). */
  get active(): boolean {
    return (this.statements?.size ?? 0) > 0 || (this.portals?.size ?? 0) > 0;
  }

  /** The Describe answer of a held statement (ParameterDescription, then its row shape). */
  protected abstract describeStatement(held: T): Buffer;
  /** The Describe answer of a portal bound from it. */
  protected abstract describePortal(held: T, format: number): Buffer;
  /** Runs an Execute of a portal bound from it (its answers through `answer`). */
  protected abstract execute(held: T, format: number): void;

  /** `name` now means a statement held here. */
  protected hold(name: string, held: T): void {
    (this.statements ??= new Map()).set(name, held);
  }

  /** A Bind, Describe, Close or Execute of a statement or portal held here: answered (true), else false. */
  protected answerHeld(code: number, b: Buffer, start: number, end: number): boolean {
    switch (code) {
      case FrontendCode.Bind:
        return this.onBind(b, start, end);
      case FrontendCode.Describe:
      case FrontendCode.Close:
        return this.onDescribeOrClose(code, b, start, end);
      case FrontendCode.Execute: {
        const portal = this.portals?.get(readCString(b, start, end)[0]);
        if (portal === undefined) return false;
        this.execute(portal.held, portal.format);
        return true;
      }
      default:
        return false;
    }
  }

  private onBind(b: Buffer, start: number, end: number): boolean {
    const [portal, statementStart] = readCString(b, start, end);
    const [statement, at] = readCString(b, statementStart, end);
    this.portals?.delete(portal);
    const held = this.statements?.get(statement);
    if (held === undefined) return false;
    // parameter formats and values (none are expected), then the result formats asked for
    let i = at;
    const formats = b.readInt16BE(i);
    i += 2 + 2 * formats;
    const values = b.readInt16BE(i);
    i += 2;
    for (let k = 0; k < values; k++) {
      const length = b.readInt32BE(i);
      i += 4 + Math.max(0, length);
    }
    const resultFormats = b.readInt16BE(i);
    (this.portals ??= new Map()).set(portal, { held, format: resultFormats > 0 ? b.readInt16BE(i + 2) : 0 });
    if (values !== 0) {
      this.host.failUnit(new ProxyError(SqlState.protocolViolation, `bind message supplies ${values} parameters, but prepared statement "${statement}" requires 0`));
      return true;
    }
    this.answer([bindComplete], false);
    return true;
  }

  private onDescribeOrClose(code: number, b: Buffer, start: number, end: number): boolean {
    const kind = b[start];
    const name = readCString(b, start + 1, end)[0];
    if (kind === 0x53 /* S */) {
      const held = this.statements?.get(name);
      if (held === undefined) return false;
      if (code === FrontendCode.Close) {
        this.statements!.delete(name);
        this.answer([closeComplete], false);
      } else this.answer([this.describeStatement(held)], false);
      return true;
    }
    const portal = this.portals?.get(name);
    if (portal === undefined) return false;
    if (code === FrontendCode.Close) {
      this.portals!.delete(name);
      this.answer([closeComplete], false);
    } else this.answer([this.describePortal(portal.held, portal.format)], false);
    return true;
  }

  /** Answers pgrelay makes, in order with what the server still owes; `ready`: a simple Query's end. */
  protected answer(parts: Buffer[], ready: boolean): void {
    const host = this.host;
    const data = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
    if (host.lease.conn && host.queue.length > 0) return host.replies.pushSynthetic(Expect.SyntheticAnswer, { classification: ANSWERED_HERE, text: this.label, answer: { data, ready } });
    if (!ready && !host.unitOpen()) host.openUnit();
    host.sendToClient(data);
    if (ready) host.sendToClient(readyForQuery(host.txStatus()));
  }
}
