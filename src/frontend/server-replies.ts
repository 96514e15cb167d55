import type { ServerConnection, ServerDataHandler } from '../pool/server-connection.js';
import { ProxyError, SqlState } from '../errors.js';
import { BackendCode, TxStatus } from '../protocol/codes.js';
import { closeComplete, parseComplete, readCString, readErrorFields, readyForQuery } from '../protocol/messages.js';
import type { ServerMessageScanner, ServerMessageSink } from '../protocol/server-scanner.js';
import { type ClientStatements, forgetsStatements, type StatementPayload } from './client-statements.js';
import type { ClientTransaction } from './client-transaction.js';
import type { ServerStatement } from './prepared-statements.js';
import type { ReplayWindow } from './replay-window.js';
import { Expect, kindOf, type ResponseQueue, SWALLOW } from './response-queue.js';
import type { ServerLease } from './server-lease.js';
import { REROUTED_CONFLICT, REROUTED_READONLY, REROUTED_SERIALIZABLE, type Rerouted } from '../metrics/unit-reason.js';
import { replicaRefusal } from '../routing/replica-refusals.js';
import type { SessionEffects } from './session-effects.js';
import type { SessionServices } from './session-services.js';

/** What the replies need from their session. */
export interface RepliesHost {
  /** the session (its read-your-writes key), its user and database */
  readonly session: { readonly user: string; readonly database: string };
  readonly services: SessionServices;
  readonly lease: ServerLease;
  readonly scanner: ServerMessageScanner;
  readonly replayWindow: ReplayWindow;
  readonly statements: ClientStatements;
  readonly effects: SessionEffects;
  readonly tx: ClientTransaction;
  isClosed(): boolean;
  unitOpen(): boolean;
  /** a statement that pins the session completed */
  pin(): void;
  /** when the unit now running began */
  unitBeganAt(): number;
  /** the unit that attached the connection was for the primary */
  attachedForPrimary(): boolean;
  sendToClient(data: Buffer): void;
  /** a ParseComplete / CloseComplete pgrelay makes (skipped when the client has it from before a replay) */
  sendHead(data: Buffer): void;
  /** the server sent what cannot be a PostgreSQL message: the client ends */
  fatal(error: unknown): void;
  /** units ended during a server chunk: the connection may go back */
  unitsEnded(): void;
  /** the attached connection closed */
  lost(conn: ServerConnection, error: Error | undefined): void;
  /** bytes sent to the client so far */
  clientBytes(): number;
  /** the replay window's units run again, the connection being gone (false: they may not) */
  runAgain(node: string): boolean;
  /** answers `DEALLOCATE name`, now that the work before it is answered */
  answerDeallocated(name: string | null, statement: ServerStatement | undefined): void;
  /** the same sent through the extended protocol: its CommandComplete only (see ExtendedDeallocate) */
  forgetDeallocated(name: string | null, statement: ServerStatement | undefined): void;
}

/**
 * The server's answers, matched to what was sent: one entry per message that gets an answer (the
 * ResponseQueue), popped as answers pass. Decides which answers the client does not see (those
 * to messages pgrelay sent itself, heads it already has from before a replay, a server's FATAL,
 * a replica's in_hot_standby), when a unit is done, and where the answers pgrelay makes itself
 * go; applies a completed unit's session effects. It handles the attached connection's data
 * (scanned by ServerMessageScanner, to which it is the sink) and its close.
 */
export class ServerReplies implements ServerDataHandler, ServerMessageSink {
  readonly queue: ResponseQueue<StatementPayload>;
  /** a message of the unit under way failed (its session effects do not apply) */
  unitHadError = false;
  /** the text of a FATAL the attached server sent before closing (not forwarded: the client stays) */
  serverFatal: string | undefined;
  /** units ended: after the server chunk, the session looks at its connection */
  private releaseDue = false;
  /** a replica refused a read (25006, or 0A000 for serializable): nothing more of this connection reaches the client */
  private refused: Rerouted | undefined;
  /** server chunks are views of the connection's read buffer (see ServerDataHandler) */
  readonly borrowsChunks = true;

  constructor(
    private readonly host: RepliesHost,
    queue: ResponseQueue<StatementPayload>,
  ) {
    this.queue = queue;
  }

  onServerData(conn: ServerConnection, chunk: Buffer): void {
    const host = this.host;
    if (conn !== host.lease.conn || host.isClosed()) return;
    host.lease.beginScan();
    try {
      host.scanner.scan(chunk, this);
    } catch (error) {
      host.services.log.error({ node: conn.node, err: error instanceof Error ? error.message : String(error) }, 'bad data from server');
      host.fatal(error);
    } finally {
      host.lease.endScan(conn, !host.isClosed());
      if (this.refused) this.runOnPrimary(conn);
      else if (this.releaseDue && host.lease.conn === conn) {
        this.releaseDue = false;
        host.unitsEnded();
      }
    }
  }

  onServerClose(conn: ServerConnection, error: Error | undefined): void {
    if (conn === this.host.lease.conn && !this.host.isClosed()) this.host.lost(conn, error);
  }

  /** The connection was lost: nothing more is owed. */
  clear(): void {
    this.queue.clear();
    this.unitHadError = false;
    this.host.effects.dropPending();
  }

  drop(code: number): boolean {
    if (this.refused) return true;
    const head = this.queue.peek();
    if ((head & SWALLOW) === 0) return this.host.replayWindow.alreadySent(code);
    // an error in an injected extended message (a re-sent Parse) is the client's error too
    if (code === BackendCode.ErrorResponse && kindOf(head) !== Expect.Query) return false;
    return true;
  }

  small(code: number, b: Buffer, start: number, end: number, dropped: boolean): boolean {
    if (code === BackendCode.ReadyForQuery) {
      const status = b[start]!;
      const server = this.host.lease.conn;
      if (server) server.txStatus = status;
      if (dropped) return false;
      this.host.tx.saw(status);
      return true;
    }
    if (dropped) return false;
    if (code === BackendCode.ErrorResponse) {
      // a FATAL ends the server connection, not the client's: the session reports the loss
      const fields = readErrorFields(b, start, end);
      const severity = fields.get('V') ?? fields.get('S');
      if (severity !== 'FATAL' && severity !== 'PANIC') return !this.refusedOnReplica(fields);
      this.serverFatal = fields.get('M');
      return false;
    }
    const [name, next] = readCString(b, start, end);
    // a replica would tell the client it is in hot standby; pgrelay is one logical primary
    if (name === 'in_hot_standby') return false;
    if (name === 'DateStyle') this.host.effects.reported(name, readCString(b, next, end)[0]);
    return true;
  }

  out(data: Buffer): void {
    this.host.sendToClient(data);
  }

  insert(): void {
    this.emitSynthetic();
  }

  end(code: number, length: number, dropped: boolean): boolean {
    if (this.refused) return false;
    const replayWindow = this.host.replayWindow;
    if (!dropped && replayWindow.open) replayWindow.reachedClient(code, length);
    const queue = this.queue;
    const kind = queue.peekKind();
    switch (code) {
      case BackendCode.ParseComplete:
        if (kind === Expect.Parse) {
          const statement = queue.peekPayload()?.statement;
          if (statement) statement.parsed = true;
          queue.shift();
        }
        break;
      case BackendCode.BindComplete:
        if (kind === Expect.Bind) queue.shift();
        break;
      case BackendCode.CloseComplete:
        if (kind === Expect.Close) queue.shift();
        break;
      case BackendCode.RowDescription:
      case BackendCode.NoData:
        if (kind === Expect.Describe) queue.shift();
        break;
      case BackendCode.CommandComplete:
      case BackendCode.EmptyQueryResponse:
      case BackendCode.PortalSuspended:
        if (kind === Expect.Execute) {
          this.statementDone(queue.peekPayload());
          queue.shift();
        }
        break;
      case BackendCode.ErrorResponse:
        // an error of pgrelay's own state replay is not the client's unit failing
        if (!dropped) this.unitHadError = true;
        if (kind !== Expect.Query && kind !== 0) this.skipToSync();
        break;
      case BackendCode.ReadyForQuery: {
        const head = queue.peek();
        if (kindOf(head) === Expect.Query && (head & SWALLOW) === 0) this.statementDone(queue.peekPayload());
        queue.shift();
        if ((head & SWALLOW) === 0) this.unitDone();
        break;
      }
      default:
        break;
    }
    return queue.peekKind() >= Expect.SyntheticParseComplete;
  }

  /**
   * An error in an extended unit: the server skips everything up to Sync; a Parse that failed or
   * was skipped left no statement behind on this connection.
   */
  private skipToSync(): void {
    const queue = this.queue;
    let stillThere: Set<string> | undefined;
    while (queue.length > 0 && queue.peekKind() !== Expect.Sync && queue.peekKind() !== Expect.Query) {
      const skipped = queue.peekKind();
      const payload = queue.peekPayload();
      // a Close of an evicted statement did not run: the statement is still there (whatever Parse of it is skipped after)
      if (skipped === Expect.Close && (queue.peek() & SWALLOW) !== 0 && payload) {
        this.host.lease.conn?.prepared.add(payload.text);
        (stillThere ??= new Set()).add(payload.text);
      }
      if ((skipped === Expect.Parse || skipped === Expect.SyntheticParseComplete) && payload?.statement) {
        if (skipped === Expect.Parse && !stillThere?.has(payload.statement.name)) this.host.lease.conn?.prepared.delete(payload.statement.name);
        const name = payload.name;
        if (name !== undefined) {
          const mappedAgain = queue.someAfterHead((later, laterPayload) => (later === Expect.Parse || later === Expect.SyntheticParseComplete) && laterPayload?.name === name);
          this.host.statements.parseFailed(name, payload.statement, mappedAgain);
        }
      }
      queue.shift();
    }
  }

  /**
   * An error of a replica: a refusal (see replicaRefusal) of units that may run again (reads
   * outside a transaction the client has had nothing but heads of) is not the client's. After a
   * read-only refusal (25006) their statement's shape goes to the primary from now on; after a
   * serializable one (0A000: the default isolation of the client's role or database), every
   * read of the session, and of later sessions of its user in its database; after a conflict
   * with recovery (the replica cancelled the read to replay WAL), nothing. The rest of this
   * connection's answers are swallowed, and the units run again on the primary once this chunk
   * is written out.
   */
  private refusedOnReplica(fields: ReadonlyMap<string, string>): boolean {
    const host = this.host;
    const node = host.lease.node;
    if (!node || node.name === host.services.topology.primaryName) return false;
    const refusal = replicaRefusal(fields);
    if (refusal === undefined || !host.replayWindow.mayRunAgain(host.clientBytes())) return false;
    const refusals = host.services.router.refusedOnReplica;
    // a conflict with recovery is the moment's, not the statement's: nothing is remembered
    if (refusal === 'conflict') {
      this.refused = REROUTED_CONFLICT;
      return true;
    }
    if (refusal === 'serializable') {
      host.effects.serverSerializable = true;
      refusals.rememberSerializable(host.session.user, host.session.database);
      this.refused = REROUTED_SERIALIZABLE;
      return true;
    }
    const classification = this.queue.peekPayload()?.classification;
    if (classification) refusals.remember(classification);
    this.refused = REROUTED_READONLY;
    return true;
  }

  /** After a replica's read-only refusal: its connection goes (its answers are half read), the units run on the primary. */
  private runOnPrimary(conn: ServerConnection): void {
    const host = this.host;
    const refused = this.refused!;
    this.refused = undefined;
    this.releaseDue = false;
    const node = conn.node;
    host.lease.release(false);
    this.clear();
    host.scanner.reset();
    if (host.isClosed()) return;
    const why = refused === REROUTED_SERIALIZABLE ? 'as serializable' : refused === REROUTED_CONFLICT ? 'for a conflict with recovery' : 'as a write';
    host.services.log.info({ node }, `a replica refused a read ${why}: running it on the primary`);
    host.replayWindow.toPrimary = refused;
    if (host.runAgain(node)) return;
    host.replayWindow.toPrimary = undefined;
    host.fatal(new ProxyError(SqlState.connectionFailure, `a read a replica refused ${why} could not run again on the primary`, { severity: 'FATAL' }));
  }

  /** A statement of the unit completed: unless the unit failed, its pin and session effects count. */
  private statementDone(payload: StatementPayload | undefined): void {
    if (!payload || this.unitHadError) return;
    const c = payload.classification;
    if (c.pin) this.host.pin();
    this.host.effects.collect(c.effects, payload.text);
    this.host.effects.placeholders.ran(this.host.lease.conn, c, payload.text);
    if (c.effects.length > 0 && forgetsStatements(c)) {
      // the server's statements are gone now, not at the unit's end: what was parked behind it prepares them again
      this.host.statements.clear();
      this.host.lease.conn?.prepared.clear();
    }
  }

  /** A unit's ReadyForQuery arrived: its session effects apply; the connection may go back. */
  private unitDone(): void {
    const host = this.host;
    const server = host.lease.conn;
    const node = host.lease.node;
    // pipelined units: a later unit's start replaces an earlier one's, which then reads shorter
    if (node) host.services.metrics.observeUnit(node.name, (performance.now() - host.unitBeganAt()) / 1000);
    const status = server?.txStatus ?? TxStatus.Idle;
    const failed = this.unitHadError;
    this.unitHadError = false;
    host.effects.unitEnded(status, failed, host.tx.wasFailed, server, host.statements);
    // a write that reached the primary and is now committed: reads that follow must see it
    if (status === TxStatus.Idle && host.attachedForPrimary()) host.services.wroteOnPrimary(host.session);
    if (this.queue.length === 0 && !host.unitOpen()) host.replayWindow.close();
    this.releaseDue = true;
  }

  /** An answer pgrelay makes itself, in order with what the server still owes. */
  pushSynthetic(kind: number, payload?: StatementPayload): void {
    this.queue.push(kind, payload);
    this.emitSynthetic();
  }

  /** Answers pgrelay makes itself, once everything before them is answered. */
  emitSynthetic(): void {
    const queue = this.queue;
    for (;;) {
      const kind = queue.peekKind();
      if (kind === Expect.SyntheticParseComplete) this.host.sendHead(parseComplete);
      else if (kind === Expect.SyntheticCloseComplete) this.host.sendHead(closeComplete);
      else if (kind === Expect.SyntheticDeallocate) {
        const payload = queue.peekPayload()!;
        const name = payload.statement === undefined ? null : payload.text;
        // through the extended protocol (an answer marks it): the Sync ends the unit
        if (payload.answer !== undefined) this.host.forgetDeallocated(name, payload.statement);
        else {
          this.host.answerDeallocated(name, payload.statement);
          this.releaseDue = true; // a unit of its own: the session may go on
        }
      } else if (kind === Expect.SyntheticAnswer) {
        const answer = queue.peekPayload()!.answer!;
        this.host.sendToClient(answer.data);
        if (answer.ready) {
          this.host.sendToClient(readyForQuery(this.host.tx.status));
          this.releaseDue = true;
        }
      } else return;
      queue.shift();
    }
  }
}
