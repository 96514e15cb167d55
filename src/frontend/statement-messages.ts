import type { Classification } from '../classify/classifier.js';
import { FrontendCode, TxStatus } from '../protocol/codes.js';
import { bindComplete, closeComplete, commandComplete, message, noData, parseComplete, readCString, readyForQuery } from '../protocol/messages.js';
import { IN_FAILED_TRANSACTION } from './session-answers.js';
import type { Config } from '../config/types.js';
import { syncCommitFloorFrame } from '../routing/sync-commit-floor.js';
import { parseWithText, refusalText, type ClientStatements, type StatementPayload } from './client-statements.js';
import { renameInMessage, type ServerStatement, type StatementRegistry } from './prepared-statements.js';
import { Expect, type ResponseQueue, SWALLOW } from './response-queue.js';
import type { ServerLease } from './server-lease.js';
import type { ServerReplies } from './server-replies.js';
import type { Step } from './unit-state.js';

/** What the statement messages need from their session. */
export interface StatementHost {
  readonly lease: ServerLease;
  readonly queue: ResponseQueue<StatementPayload>;
  readonly replies: ServerReplies;
  /** the client's statement names */
  readonly statements: ClientStatements;
  /** the statements shared by every client (server-side names) */
  readonly registry: StatementRegistry;
  /** the server connection of the client's transaction was lost */
  orphaned(): boolean;
  unitOpen(): boolean;
  classify(text: string): Classification;
  /** `then` runs once the unit has its server connection (or the unit is answered with an error) */
  beginExtendedUnit(classification: Classification | undefined, then: Step): void;
  /** the unit begins without a server connection: pgrelay answers `head` itself */
  beginWithoutServer(head: Buffer): void;
  /** the transaction status the client was told last */
  txStatus(): number;
  sendToClient(data: Buffer): void;
  /** what the client sent next waits until the work in flight is answered */
  waitForOutcome(): void;
  /** the client is pinned to its server connection */
  pinned(): boolean;
  /** a BEGIN sent through the extended protocol, or a SAVEPOINT behind a held BEGIN, held (see UnitPlacement.holdExtendedBegin) */
  holdBegin(classification: Classification, text: string): { tag: string; parsed: string | undefined; described: boolean } | 'incomplete' | undefined;
  /** pgrelay holds a BEGIN the client sent (what follows it may be held with it) */
  beginHeld(): boolean;
  /** a Parse of a DEALLOCATE pgrelay answers itself (see ExtendedDeallocate.parsed): true when held */
  holdDeallocate(name: string, classification: Classification, hasParameterTypes: boolean): boolean;
  /** the configuration now (the synchronous_commit floor, the cap of statements per server connection) */
  config(): Config;
}

/**
 * The client's messages that name statements. Parse, Bind, Describe and Close: statement names are mapped to the shared
 * server-side statements (each server connection prepares one when first needed there), the
 * unnamed statement follows the client to whichever connection serves its next unit, and what
 * pgrelay can answer without a server (ParseComplete of a known text, CloseComplete) it answers
 * itself, in order with the server's answers. Execute, Sync and Flush pass through the session.
 * SQL `DEALLOCATE name` of a protocol-level statement: only the client's name goes.
 *
 * Where a client can tell it is not talking to PostgreSQL directly:
 * - a Parse of a statement name the client already uses replaces it (no 42P05);
 * - a named statement is prepared on each server connection when first needed there, so an error
 *   it could raise on another connection (a table dropped meanwhile) comes with the Bind; a Parse
 *   of a text that parsed before is answered without a server connection;
 * - SQL `EXECUTE name` of a protocol-level statement does not find it (the server knows it under
 *   a shared name); a Bind pipelined behind a Parse of the same name that then fails names the
 *   shared statement in its 26000 error;
 * - the unnamed statement survives a simple Query (PostgreSQL drops it);
 * - a multi-statement Query with a DEALLOCATE pgrelay refuses (another client's statement, or
 *   ALL) fails whole, before its other statements run; DEALLOCATE ALL through Parse fails (0A000).
 */
export class StatementMessages {
  constructor(private readonly host: StatementHost) {}

  onParse(b: Buffer, start: number, end: number): void {
    const [name, textStart] = readCString(b, start, end);
    const [text, typesStart] = readCString(b, textStart, end);
    const belowFloor = syncCommitFloorFrame(text, this.host.config().routing.min_synchronous_commit, { name, types: b.subarray(typesStart, end) });
    if (belowFloor) return this.onParse(belowFloor, 5, belowFloor.length);
    const classification = this.host.classify(text);
    // DEALLOCATE of the client's own statements, or ALL, is answered here (see ExtendedDeallocate)
    if (classification.effects[0]?.type === 'deallocate' && this.host.holdDeallocate(name, classification, b.readInt16BE(typesStart) !== 0)) return;
    // a Parse holds one statement: DEALLOCATE ALL is alone in it (a pinned client's reaches its own connection)
    const refused = this.host.statements.refusedDeallocate(classification, this.host.pinned());
    if (refused !== undefined) {
      // the statement fails at Execute, as the server's own refusal would
      const parse = parseWithText(name, refusalText(refused));
      return this.onParse(parse, 5, parse.length);
    }
    if ((classification.effects[0]?.type === 'begin' || this.host.beginHeld()) && this.heldBegin(classification, text, { name, frame: Buffer.from(b.subarray(start - 5, end)), textStart: textStart - start + 5 })) return;
    if (name !== '' && !this.host.orphaned()) {
      const statement = this.host.registry.intern(text, b.subarray(textStart, end), classification);
      if (statement.parsed) {
        // The text parsed on a server before: map the client's name and answer ParseComplete
        // without a server connection; each connection prepares it when a Bind or Describe needs
        // it there. A client that prepares (Parse + Sync) while its other work holds every
        // server connection, as pgbench -M prepared does, must not wait for one.
        this.host.statements.set(name, statement);
        return this.answerParseComplete({ classification, text, statement, name });
      }
    }
    this.host.beginExtendedUnit(classification, () => {
      const server = this.host.lease.conn!;
      if (name === '') {
        this.host.statements.parsedUnnamed(b.subarray(start - 5, end), { classification, text }, server);
        this.host.lease.forward(b, start, end);
        this.host.queue.push(Expect.Parse);
        return;
      }
      const statement = this.host.registry.intern(text, b.subarray(textStart, end), classification);
      this.host.statements.set(name, statement);
      const payload = { classification, text, statement, name };
      const parse = this.host.statements.prepareOn(server, statement);
      if (parse === undefined) return this.answerParseComplete(payload);
      this.closeEvicted(statement);
      this.host.lease.inject(parse);
      this.host.queue.push(Expect.Parse, payload);
    });
  }

  /**
   * A BEGIN sent through the extended protocol that pgrelay holds (as a simple-Query one, see
   * ClientTransaction), or a SAVEPOINT held with it: its Parse (when `parse`, the whole
   * message), Bind, Describe of the portal (when sent) and Execute are answered here, in order; it
   * goes to a server with the transaction's first statement. True when handled (or when its
   * messages are not all in yet: handled again then).
   */
  private heldBegin(classification: Classification, text: string, parse: { name: string; frame: Buffer; textStart: number } | undefined): boolean {
    const held = this.host.holdBegin(classification, text);
    if (held === undefined) return false;
    if (held === 'incomplete') return true;
    if (parse !== undefined && parse.name === '') {
      // the client's unnamed statement is the BEGIN now, held by no server connection yet
      this.host.statements.parsedUnnamed(parse.frame, { classification, text }, { prepared: new Set(), unnamedToken: 0 });
    } else if (parse !== undefined) {
      this.host.statements.set(parse.name, this.host.registry.intern(text, parse.frame.subarray(parse.textStart), classification));
    }
    this.host.beginWithoutServer(parse !== undefined ? parseComplete : bindComplete);
    if (parse !== undefined) this.host.sendToClient(bindComplete);
    if (held.described) this.host.sendToClient(noData);
    this.host.sendToClient(commandComplete(held.tag));
    return true;
  }

  /** ParseComplete made by pgrelay, in order with what the server still owes. */
  private answerParseComplete(payload: StatementPayload): void {
    if (this.host.lease.conn) {
      this.host.replies.pushSynthetic(Expect.SyntheticParseComplete, payload);
      return;
    }
    // nothing in flight: the unit has begun without a server connection (its Sync is answered here)
    this.host.beginWithoutServer(parseComplete);
  }

  onBind(b: Buffer, start: number, end: number): void {
    const [, statementStart] = readCString(b, start, end);
    const [name, afterName] = readCString(b, statementStart, end);
    if (name === '') {
      const unnamed = this.host.statements.unnamedPayload;
      return this.host.beginExtendedUnit(unnamed?.classification, () => {
        this.restoreUnnamed();
        this.host.lease.forward(b, start, end);
        this.host.statements.portalPayload = this.host.statements.unnamedPayload;
        this.host.queue.push(Expect.Bind);
      });
    }
    const statement = this.host.statements.get(name);
    if (statement !== undefined && (statement.classification.effects[0]?.type === 'begin' || this.host.beginHeld()) && this.heldBegin(statement.classification, statement.text, undefined)) return;
    this.host.beginExtendedUnit(statement?.classification, () => {
      if (!statement) {
        // unknown to pgrelay: let the server report it (26000) and skip to Sync as it does
        this.host.lease.forward(b, start, end);
        this.host.queue.push(Expect.Bind);
        return;
      }
      this.prepareOnServer(statement);
      this.host.lease.inject(renameInMessage(FrontendCode.Bind, b, start, statementStart, afterName, end, statement.name));
      this.host.statements.portalPayload = { classification: statement.classification, text: statement.text };
      this.host.queue.push(Expect.Bind);
    });
  }

  /** Describe or Close: 'S' names a statement (renamed), 'P' a portal (passed through). */
  onDescribeOrClose(code: number, b: Buffer, start: number, end: number): void {
    const kind = b[start];
    const [name, afterName] = readCString(b, start + 1, end);
    const expect = code === FrontendCode.Describe ? Expect.Describe : Expect.Close;
    if (kind !== 0x53 || name === '') {
      return this.host.beginExtendedUnit(kind === 0x53 ? this.host.statements.unnamedPayload?.classification : undefined, () => {
        if (kind === 0x53 && code === FrontendCode.Close) {
          if (this.host.statements.closeUnnamed(this.host.lease.conn!)) {
            this.host.lease.forward(b, start, end);
            this.host.queue.push(Expect.Close);
          } else this.host.replies.pushSynthetic(Expect.SyntheticCloseComplete);
          return;
        }
        if (kind === 0x53) this.restoreUnnamed();
        this.host.lease.forward(b, start, end);
        this.host.queue.push(expect);
      });
    }
    const statement = this.host.statements.get(name);
    if (code === FrontendCode.Close) {
      // the server-side statement is shared with other clients: only the client's name goes
      this.host.statements.delete(name);
      if (!this.host.lease.conn && !this.host.unitOpen()) return this.host.beginWithoutServer(closeComplete);
      return this.host.beginExtendedUnit(undefined, () => this.host.replies.pushSynthetic(Expect.SyntheticCloseComplete));
    }
    this.host.beginExtendedUnit(statement?.classification, () => {
      if (!statement) {
        this.host.lease.forward(b, start, end);
        this.host.queue.push(expect);
        return;
      }
      this.prepareOnServer(statement);
      this.host.lease.inject(renameInMessage(code, b, start, start + 1, afterName, end, statement.name));
      this.host.queue.push(expect);
    });
  }

  /** Writes an unnamed statement's Parse again when the unit landed on another connection. */
  private restoreUnnamed(): void {
    const restore = this.host.statements.restoreUnnamed(this.host.lease.conn!);
    if (restore === undefined) return;
    this.host.lease.inject(restore);
    this.host.queue.push((restore[0] === FrontendCode.Parse ? Expect.Parse : Expect.Close) | SWALLOW);
  }

  private prepareOnServer(statement: ServerStatement): void {
    const parse = this.host.statements.prepareOn(this.host.lease.conn!, statement);
    if (parse === undefined) return;
    this.closeEvicted(statement);
    this.host.lease.inject(parse);
    this.host.queue.push(Expect.Parse | SWALLOW, { classification: statement.classification, text: statement.text, statement });
  }

  /**
   * The connection keeps at most `pool.max_prepared_statements` server-side statements: the
   * least recently used are closed there, in line before the Parse of `statement` (answers
   * swallowed; a Close skipped after an error leaves the statement there, see ServerReplies).
   */
  private closeEvicted(statement: ServerStatement): void {
    const evicted = this.host.statements.evictFrom(this.host.lease.conn!, this.host.config().pool.max_prepared_statements, statement.name);
    for (const name of evicted) {
      this.host.lease.inject(message(FrontendCode.Close, (w) => w.int8(0x53).cstring(name)));
      this.host.queue.push(Expect.Close | SWALLOW, { classification: statement.classification, text: name });
    }
  }

  /** DEALLOCATE of a protocol-level statement: only the client's name goes (the server one is shared). */
  answerDeallocate(classification: Classification): boolean {
    const target = this.host.statements.deallocateTarget(classification, this.host.pinned());
    if (target === undefined) return false;
    if (this.host.queue.length === 0) {
      this.answerDeallocated(target.name, target.statement);
      return true;
    }
    // behind work still in flight: whether it succeeds depends on how that work ends (a failed
    // transaction refuses it), so the answer and what the client sent after it wait for that
    this.host.queue.push(Expect.SyntheticDeallocate, { classification, text: target.name ?? '', statement: target.statement });
    this.host.waitForOutcome();
    return true;
  }

  /** `statement` undefined: DEALLOCATE ALL (the client's names are forgotten) */
  answerDeallocated(name: string | null, statement: ServerStatement | undefined): void {
    // as PostgreSQL: nothing runs in a failed transaction, the statement stays
    if (this.host.txStatus() === TxStatus.Failed) this.host.sendToClient(IN_FAILED_TRANSACTION);
    else this.forgetDeallocated(name, statement);
    this.host.sendToClient(readyForQuery(this.host.txStatus()));
  }

  /** The client's names a DEALLOCATE removes go (the server's statements stay), with its CommandComplete. */
  forgetDeallocated(name: string | null, statement: ServerStatement | undefined): void {
    if (statement === undefined) this.host.statements.clear();
    else if (name !== null && this.host.statements.get(name) === statement) this.host.statements.delete(name);
    this.host.sendToClient(commandComplete(statement === undefined ? 'DEALLOCATE ALL' : 'DEALLOCATE'));
  }
}
