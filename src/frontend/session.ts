import type net from 'node:net';
import type { Classification } from '../classify/classifier.js';
import { ProxyError, SqlState } from '../errors.js';
import type { ServerConnection } from '../pool/server-connection.js';
import { FrontendCode, TxStatus } from '../protocol/codes.js';
import { FrameReader } from '../protocol/frame-reader.js';
import { readyForQuery } from '../protocol/messages.js';
import { ServerMessageScanner } from '../protocol/server-scanner.js';
import { CausalityToken } from './causality-token.js';
import { ExtendedDeallocate } from './extended-deallocate.js';
import { ClientStatements, forgetsStatements, isLoneDeallocate, refuseDeallocate, type StatementPayload } from './client-statements.js';
import { syncCommitFloorFrame } from '../routing/sync-commit-floor.js';
import { ClientTransaction, lostOutcome } from './client-transaction.js';
import { RecentClassification } from './recent-classification.js';
import { ReplayWindow } from './replay-window.js';
import { Expect, ResponseQueue } from './response-queue.js';
import { ServerLease } from './server-lease.js';
import { ServerReplies } from './server-replies.js';
import * as answers from './session-answers.js';
import { SessionEffects } from './session-effects.js';
import type { SessionServices } from './session-services.js';
import { SessionState } from './session-state.js';
import { StatementMessages } from './statement-messages.js';
import { CausalityLink, DeallocateLink, PlacementLink, RepliesLink, StatementLink } from './session-links.js';
import { FUNCTION_CALL, UnitPlacement } from './unit-placement.js';
import { holdsMessage, IDLE, isParked, OPEN, SKIPPING, type Step, type UnitState, type WaitReason, unitIsOpen } from './unit-state.js';

/** Client input beyond this is not read from the socket while the session waits. */
const MAX_BUFFERED_INPUT = 1 << 20;

/**
 * One client after authentication: reads its messages, cuts them into units, sends each unit to a
 * server connection chosen by the router, and streams the answers back.
 *
 * The unit boundary is explicit (UnitState, moved only by `move`): a unit starts with the first
 * message after the previous unit's Sync (or a simple Query / FunctionCall on its own) and holds
 * one server connection until the server says ReadyForQuery; outside a transaction (status I) the
 * connection then goes back to its pool (transaction pooling). Inside a transaction, or when
 * pinned, units stick to it. A message whose unit must wait (for a connection, a primary, or the
 * units in flight) is parked with the rest of its handling, which runs when the wait is over.
 *
 * Server → client traffic is forwarded as received (ServerReplies, ServerMessageScanner, ServerLease).
 * Where a client can tell it is not talking to PostgreSQL directly (decisions, not accidents;
 * see also ClientTransaction, StatementMessages and SessionEffects): a read outside a transaction
 * whose server connection is lost before it answered anything but heads (RowDescription, …), or
 * that a replica refused as a write (25006), runs once more elsewhere instead of failing; a
 * malformed message (a string without its terminator, fields past the end) is FATAL 08P01 and
 * closes the client (PostgreSQL answers some of them with an ERROR and goes on).
 */
export class ClientSession {
  readonly processId: number;
  readonly secretKey: number;
  // members and methods without `private` are for the session's links alone (LinkedSession, session-links.ts)
  readonly reader: FrameReader;
  readonly state: SessionState;
  readonly lease: ServerLease;
  readonly scanner = new ServerMessageScanner();
  readonly queue = new ResponseQueue<StatementPayload>();
  readonly replies: ServerReplies;
  readonly placement: UnitPlacement;
  readonly named: StatementMessages;
  readonly statements = new ClientStatements();
  readonly effects: SessionEffects;
  /** SHOW pgrelay.last_write_lsn, answered here; after_lsn hints that are no position */
  private readonly causality: CausalityToken;
  /** DEALLOCATE sent through the extended protocol, answered here */
  readonly deallocates: ExtendedDeallocate;
  /** the reads in flight, to run again when their connection is lost (see ReplayWindow) */
  readonly replayWindow = new ReplayWindow();
  /** where the current unit is (see UnitState) */
  private unit: UnitState = IDLE;
  /** the rest of a parked message's handling, due now that its wait is over (run by pump) */
  private resumeStep: Step | undefined;
  /** the client is pinned to its server connection for the rest of its life */
  pinned = false;
  closed = false;
  private pumping = false;
  /** the message being handled was answered by pgrelay and never reaches a server (a move of an optimistic transaction does not send it) */
  answeredHere = false;
  /** the unit under way runs DISCARD ALL or DEALLOCATE ALL on the server (its Sync waits for the outcome) */
  private forgetting = false;
  /** the client's transaction as it sees it */
  readonly tx = new ClientTransaction();
  /** the classification of the text classified last (a driver sends the same text again and again) */
  readonly recent = new RecentClassification();
  /** bytes sent to the client so far */
  clientBytes = 0;
  /** the code of the client message being handled */
  private clientCode = 0;

  constructor(
    readonly services: SessionServices,
    readonly socket: net.Socket,
    readonly user: string,
    readonly database: string,
    startupParams: ReadonlyMap<string, string>,
    keys: { processId: number; secretKey: number },
  ) {
    this.processId = keys.processId;
    this.secretKey = keys.secretKey;
    this.reader = new FrameReader(services.config().client.max_message_bytes);
    this.state = new SessionState(startupParams);
    this.effects = new SessionEffects(this.state);
    const lease = new ServerLease({ socket, mayReadClient: () => !this.closed && this.unit.phase !== 'parked', drained: () => this.pump() }, services.router);
    this.lease = lease;
    this.replies = new ServerReplies(new RepliesLink(this), this.queue);
    this.placement = new UnitPlacement(services, new PlacementLink(this));
    this.named = new StatementMessages(new StatementLink(this));
    this.causality = new CausalityToken(new CausalityLink(this));
    this.deallocates = new ExtendedDeallocate(new DeallocateLink(this));
    if (services.config().pool.mode === 'session') this.pinned = true;
  }

  /** Starts reading client messages; `leftover` are bytes that came with the startup packet. */
  start(leftover: Buffer): void {
    this.socket.on('data', (chunk: Buffer) => this.onClientData(chunk));
    this.socket.on('drain', () => this.lease.clientDrained());
    this.socket.on('close', () => this.close());
    this.socket.on('error', () => this.close());
    if (leftover.length > 0) this.onClientData(leftover);
  }

  /** The session state SQL, so that the startup check can apply it (the remote_apply shortcut reads synchronous_commit in it). */
  stateSql(): string { return this.state.sql(); }

  get isPinned(): boolean { return this.pinned; }
  get unitOpen(): boolean { return unitIsOpen(this.unit); }
  /** A unit or a transaction is under way on a server connection (graceful shutdown waits for it). */
  get busy(): boolean {
    const server = this.lease.conn;
    return server !== undefined && (this.queue.length > 0 || this.unitOpen || server.txStatus !== TxStatus.Idle);
  }

  /** The server connection running this client's work, if any (for cancel). */
  runningOn(): ServerConnection | undefined {
    return this.queue.length > 0 ? this.lease.cancelTarget() : undefined;
  }

  /** The one place the unit's state changes. */
  move(next: UnitState): void {
    this.unit = next;
  }

  /**
   * The unit waits. `holds`: the message being handled is not done with (its rest, `resume`, may
   * be known only when the wait is over); else only what the client sent after it waits.
   */
  park(why: WaitReason, holds: boolean, resume: Step | undefined = undefined): void {
    this.move({ phase: 'parked', why, open: this.unitOpen, holds, resume });
  }

  /** The wait is over: the parked message's rest runs (in pump, with what the client sent after it). */
  private wake(): void {
    const unit = this.unit;
    if (unit.phase !== 'parked') return;
    this.move(unit.open ? OPEN : IDLE);
    this.resumeStep = unit.resume;
    this.pump();
  }

  // ---------------------------------------------------------------- client → server

  private onClientData(chunk: Buffer): void {
    if (this.closed) return;
    this.services.metrics.addBytesIn(chunk.length);
    this.reader.push(chunk);
    this.pump();
  }

  /** Handles buffered client messages until one has to wait. */
  private pump(): void {
    if (this.pumping || this.closed) return;
    this.pumping = true;
    this.lease.beginBatch();
    try {
      while (!this.closed && !isParked(this.unit) && !this.lease.clientFull) {
        const resume = this.resumeStep;
        this.resumeStep = undefined;
        if (resume !== undefined) resume();
        else if (this.reader.next()) {
          this.answeredHere = false;
          this.handle(this.reader.code, this.reader.buffer, this.reader.start, this.reader.end);
        } else break;
        // the message is done with (unless parked with it): it joins the replay window (one pgrelay
        // answers itself too: its answer, queued behind the units in flight, is lost with them and
        // made again when they run again), and an optimistic transaction's log unless pgrelay
        // answered it itself (a move must not send it to the primary)
        if (holdsMessage(this.unit) || this.reader.held) continue;
        if (this.replayWindow.open) this.replayWindow.add(this.reader);
        if (this.placement.optimistic.onReplica && !this.answeredHere) this.placement.optimistic.record(this.reader);
      }
    } catch (error) {
      // a client message whose fields run past its end (or miss a terminator)
      this.fatal(error instanceof RangeError ? new ProxyError(SqlState.protocolViolation, 'invalid message format', { severity: 'FATAL' }) : error);
    } finally {
      this.pumping = false;
      this.lease.endBatch();
    }
    const waiting = this.unit.phase === 'parked';
    if ((waiting && this.reader.pending > MAX_BUFFERED_INPUT) || this.lease.clientFull) this.socket.pause();
    else if (this.socket.isPaused() && !waiting && !this.lease.serverIsFull) this.socket.resume();
  }

  /** Handles one client message (or parks it: see park). */
  private handle(code: number, b: Buffer, start: number, end: number): void {
    this.clientCode = code;
    if (this.unit.phase === 'skipping') {
      if (code === FrontendCode.Sync) {
        this.move(IDLE);
        this.sendToClient(readyForQuery(this.tx.status));
      } else if (code === FrontendCode.Terminate) this.close();
      return;
    }
    const local = this.causality.intercept(code, b, start, end);
    if (local !== false && local !== true) return this.handle(code, local, 5, local.length);
    if (local || (this.deallocates.active && this.deallocates.intercept(code, b, start, end))) {
      this.answeredHere = true;
      return;
    }
    switch (code) {
      case FrontendCode.Query:
        return this.onQuery(b, start, end);
      case FrontendCode.Parse:
        return this.named.onParse(b, start, end);
      case FrontendCode.Bind:
        return this.named.onBind(b, start, end);
      case FrontendCode.Describe:
      case FrontendCode.Close:
        return this.named.onDescribeOrClose(code, b, start, end);
      case FrontendCode.Execute:
        return this.placement.beginExtendedUnit(undefined, () => {
          const payload = this.statements.portalPayload;
          this.lease.forward(b, start, end);
          this.queue.push(Expect.Execute, payload);
          if (payload !== undefined && forgetsStatements(payload.classification)) this.forgetting = true;
        });
      case FrontendCode.Sync:
        return this.onSync(b, start, end);
      case FrontendCode.FunctionCall:
        if (this.tx.orphaned) return this.answerOrphaned(undefined, true);
        return this.placement.beginSimpleUnit('primary', FUNCTION_CALL, undefined, () => {
          this.lease.forward(b, start, end);
          this.queue.push(Expect.Query);
        });
      case FrontendCode.Flush:
      case FrontendCode.CopyData:
      case FrontendCode.CopyDone:
      case FrontendCode.CopyFail:
        if (this.lease.conn) this.lease.forward(b, start, end);
        return;
      case FrontendCode.Terminate:
        return this.close();
      default:
        throw new ProxyError(SqlState.protocolViolation, `invalid frontend message type ${code}`, { severity: 'FATAL' });
    }
  }

  private onQuery(b: Buffer, start: number, end: number): void {
    const text = b.toString('utf8', start, end - 1);
    const belowFloor = syncCommitFloorFrame(text, this.services.config().routing.min_synchronous_commit);
    if (belowFloor) return this.onQuery(belowFloor, 5, belowFloor.length); // refused: raises on the server, in order
    const classification = this.recent.classify(this.services.classifier, text);
    if (this.tx.orphaned) return this.answerOrphaned(classification, true);
    if (this.named.answerDeallocate(classification)) {
      // never sent to a server: it joins neither the replay window nor an optimistic transaction's log
      this.answeredHere = true;
      return;
    }
    const begun = classification.effects[0]?.type === 'begin' ? this.placement.deferBegin(classification, text, b.subarray(start - 5, end)) : this.tx.beginDeferred ? this.tx.holdSavepoint(classification, text) : undefined;
    if (begun !== undefined) return begun.forEach((data) => this.sendToClient(data));
    const payload: StatementPayload = { classification, text };
    this.placement.beginSimpleUnit(this.placement.targetOf(classification), classification.route, classification, () => {
      const refused = this.statements.refusedDeallocate(classification, isLoneDeallocate(classification));
      const refusal = refused === undefined ? this.placement.pinRefusal(classification) : refuseDeallocate(refused);
      if (refusal === undefined) this.lease.forward(b, start, end);
      else this.lease.inject(refusal);
      this.queue.push(Expect.Query, payload);
      // statements that forget prepared statements: what follows waits for their outcome
      if (forgetsStatements(classification)) this.park('drain', false);
    });
  }

  private onSync(b: Buffer, start: number, end: number): void {
    const forgetting = this.forgetting;
    this.forgetting = false;
    if (!this.lease.conn) {
      // nothing of this unit needed a server (e.g. only a Close of a statement), or its
      // transaction's connection was lost
      this.move(IDLE);
      this.sendToClient(readyForQuery(this.tx.status));
      return;
    }
    this.lease.forward(b, start, end);
    this.queue.push(Expect.Sync);
    this.move(IDLE);
    // the unit ran DISCARD ALL or DEALLOCATE ALL on the server: what follows waits for its outcome
    if (forgetting) this.park('drain', false);
  }

  /** The parked unit's wait is over: `next` is what runs now (the rest of its message, or its failure). */
  resumeWith(next: Step): void {
    const unit = this.unit;
    if (unit.phase !== 'parked') return;
    this.move({ ...unit, resume: next });
    this.wake();
  }

  // ---------------------------------------------------------------- server → client

  /** After a server chunk that ended units: the connection goes back, and a unit waiting for the drain goes on. */
  maybeRelease(): void {
    const server = this.lease.conn;
    const drained = this.unit.phase === 'parked' && this.unit.why === 'drain';
    if (!server || this.pinned || this.unitOpen || this.queue.length > 0 || server.txStatus !== TxStatus.Idle) {
      if (drained && server && this.queue.length === 0) this.wake();
      return;
    }
    this.placement.release(true);
    if (drained) this.wake();
  }

  /** The attached connection closed under the session. */
  lost(conn: ServerConnection, error: Error | undefined): void {
    const node = this.lease.node!;
    const midMessage = this.scanner.clientHasPart;
    const hadWork = this.queue.length > 0 || this.unitOpen;
    const inTransaction = conn.txStatus !== TxStatus.Idle;
    const outcome = lostOutcome(this.queue, inTransaction);
    this.services.nodeBroken(node.name, error);
    this.services.metrics.serverErrors.labels(node.name).inc();
    this.lease.lost();
    this.replies.clear();
    this.scanner.reset();
    if (hadWork && !inTransaction && !midMessage && this.replay(node.name)) return;
    this.replayWindow.close();
    if (midMessage) {
      // the client holds part of a message: its stream cannot be repaired, and nothing may follow
      // (an ErrorResponse would be read as the rest of that message, e.g. as a row's last value);
      // the client sees its connection end, as if the server had died under it
      this.services.log.warn({ node: node.name, user: this.user }, 'server connection lost in the middle of a message: closing the client');
      this.close();
      return;
    }
    if (this.pinned) {
      this.sendToClient(answers.pinnedConnectionLost(node.name));
      this.close();
      return;
    }
    const serverFatal = this.replies.serverFatal;
    this.replies.serverFatal = undefined;
    if ((!hadWork && !inTransaction) || (!hadWork && this.placement.optimistic.lostIdle(conn))) return;
    this.tx.lost(inTransaction && outcome !== 'unknown', hadWork, node.name, serverFatal);
    if (hadWork) {
      this.sendToClient(answers.connectionLost(node.name, serverFatal, outcome));
      if (this.unitOpen) this.move(SKIPPING);
      else this.sendToClient(readyForQuery(this.tx.status));
    }
    if (this.unit.phase === 'parked' && this.unit.why === 'drain') this.wake();
    else this.pump();
  }

  /**
   * The connection was lost (or a replica refused them) under reads that the client has had no byte
   * of: they run again, once, where the router sends them now. False when they may not.
   */
  replay(node: string): boolean {
    const bytes = this.replayWindow.take(this.clientBytes, node);
    if (bytes === undefined) return false;
    // a message parked behind the reads (waiting for them to drain) is read again after them
    const reader = this.reader;
    const parked = holdsMessage(this.unit);
    this.move(IDLE);
    this.replies.serverFatal = undefined;
    if (parked) reader.unshift(reader.buffer.subarray(reader.frameStart, reader.end));
    reader.unshift(bytes);
    if (!this.replayWindow.toPrimary) this.services.log.warn({ node, user: this.user }, 'server connection lost before a read was answered: running it again');
    this.pump();
    return true;
  }

  /** A statement that pins the session completed: it keeps its server connection for good. */
  pin(): void {
    if (!this.pinned) this.services.pinned(+1);
    this.pinned = true;
  }

  // ---------------------------------------------------------------- answers pgrelay makes itself

  /** The server connection of the client's transaction was lost: only ROLLBACK (or COMMIT) ends it. */
  answerOrphaned(classification: Classification | undefined, simple: boolean): void {
    const { answers: sent, ended } = this.tx.answerOrphaned(classification, simple);
    for (const data of sent) this.sendToClient(data);
    if (ended) this.effects.dropTransaction();
    else if (!simple) this.move(SKIPPING);
  }

  /** An error pgrelay raises for the unit that is starting (nothing of it reached a server). */
  failUnit(error: unknown): void {
    const proxyError = answers.toProxyError(error);
    this.services.log.warn({ user: this.user, sqlstate: proxyError.sqlstate, err: proxyError.message }, 'unit failed in pgrelay');
    this.sendToClient(answers.errorAnswer(proxyError, 'ERROR'));
    const code = this.clientCode;
    if (code === FrontendCode.Query || code === FrontendCode.FunctionCall) this.sendToClient(readyForQuery(this.tx.status));
    else this.move(SKIPPING);
  }

  /**
   * A ParseComplete or CloseComplete pgrelay answers itself: part of the replay window's heads,
   * or skipped when the client already has it from before a replay.
   */
  sendHead(data: Buffer): void {
    const code = data[0]!;
    if (this.replayWindow.alreadySent(code)) return;
    this.replayWindow.reachedClient(code, data.length);
    this.sendToClient(data);
  }

  sendToClient(data: Buffer): void {
    if (this.closed) return;
    this.clientBytes += data.length;
    this.services.metrics.addBytesOut(data.length);
    this.lease.toClient(data);
  }

  fatal(error: unknown): void {
    if (!(error instanceof ProxyError)) this.services.log.error({ err: error instanceof Error ? error.message : String(error), user: this.user }, 'session failed');
    this.sendToClient(answers.errorAnswer(error, 'FATAL'));
    this.close();
  }

  /** Cancels the query this client is running, on the server connection running it. */
  cancel(): void { this.runningOn()?.cancel(); }

  /** pgrelay is stopping: the client is told why, then closed. */
  shutdown(): void {
    this.sendToClient(answers.SHUTTING_DOWN); // nothing is sent, nor closed again, once closed
    this.close();
  }

  /** Ends the session: an unfinished transaction's connection is destroyed (the server rolls it back). */
  close(): void {
    if (this.closed) return;
    // what was gathered for the client goes before the end (a FATAL, say)
    this.lease.flushClientOut(true);
    this.closed = true;
    const server = this.lease.conn;
    if (server) this.placement.release(this.queue.length === 0 && !this.unitOpen && server.txStatus === TxStatus.Idle && !this.pinned && !this.lease.heldReads);
    // the client goes away with bytes it borrowed still queued: that connection is not reused
    this.lease.closeClient();
    if (this.pinned) this.services.pinned(-1);
    this.socket.end();
    this.socket.destroySoon?.();
    this.services.sessionClosed(this);
  }
}

