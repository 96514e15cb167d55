import type net from 'node:net';
import type { Classification, SessionEffect } from '../classify/classifier.js';
import { splitStatements } from '../classify/classifier.js';
import { isLoneDeallocate, refusedDeallocate, type DeallocateRefusal } from '../classify/deallocate.js';
import { syncCommitFloorFrame } from '../routing/sync-commit-floor.js';
import type { NodeStatus } from '../cluster/topology.js';
import { ProxyError, SqlState } from '../errors.js';
import type { Pool } from '../pool/pool.js';
import type { ServerConnection, ServerDataHandler } from '../pool/server-connection.js';
import { BackendCode, FrontendCode, TxStatus } from '../protocol/codes.js';
import { FrameReader } from '../protocol/frame-reader.js';
import {
  closeComplete,
  commandComplete,
  errorResponse,
  message,
  parseComplete,
  readCString,
  readErrorFields,
  readyForQuery,
} from '../protocol/messages.js';
import type { Target } from '../routing/router.js';
import type { SessionContext } from './session-context.js';
import { Expect, ResponseQueue, SWALLOW, kindOf } from './response-queue.js';
import { renameInMessage, SERVER_STATEMENT_PREFIX, type ServerStatement } from './prepared-statements.js';
import { ReplayWindow } from './replay-window.js';
import { quoteLiteral, SessionState, stateTransition } from './session-state.js';

/** Per-unit bookkeeping attached to the queue entries that complete a statement. */
interface StatementPayload {
  classification: Classification;
  /** the text the classification was made from, for the values of SET effects */
  text: string;
  /** on a Parse entry: the shared statement it prepares (marked parsed, or forgotten on error) */
  statement?: ServerStatement;
  /** on a client's Parse entry: the client's name for it */
  name?: string;
}

let unnamedTokens = 0;

/** Outcome of getting a server connection for a message. */
const OK = 0; // attached: go on
const WAIT = 1; // the session waits; the message is handled again later
const FAILED = 2; // pgrelay answered the unit with an error; the message is consumed
type Ready = typeof OK | typeof WAIT | typeof FAILED;

/** The route a FunctionCall message is counted as. */
const FUNCTION_CALL = 'function call';

/** Texts longer than this are not remembered for the next classification (see classify). */
const MAX_REMEMBERED_TEXT = 4096;

/** Client input beyond this is not read from the socket while the session waits. */
const MAX_BUFFERED_INPUT = 1 << 20;

/**
 * One client after authentication: reads its messages, cuts them into units, sends each unit to a
 * server connection chosen by the router, and streams the answers back.
 *
 * The unit boundary is explicit: a unit starts with the first message after the previous unit's
 * Sync (or a simple Query / FunctionCall on its own) and holds one server connection until the
 * server says ReadyForQuery; outside a transaction (status I) the connection then goes back to its
 * pool (transaction pooling). Inside a transaction, or when pinned, units stick to it.
 *
 * Server → client traffic is forwarded as received; only message headers are looked at, plus the
 * bodies of ReadyForQuery and ParameterStatus. The bytes are borrowed from the server
 * connection's read buffer: while the client socket still queues some, that connection reads no
 * more (which is also the backpressure towards the server) and is not given back to its pool.
 *
 * Where a client can tell it is not talking to PostgreSQL directly (decisions, not accidents):
 * - a plain BEGIN is answered by pgrelay and sent with the transaction's first statement (which
 *   decides where it runs): the transaction starts there (`now()`), and a BEGIN that would fail
 *   on the server (it cannot) would fail with that statement;
 * - a read outside a transaction whose server connection is lost before it answered anything
 *   but heads (RowDescription, …) runs once more elsewhere instead of failing with 08006;
 * - a malformed message (a string without its terminator, fields past the end) is FATAL 08P01
 *   and closes the client; PostgreSQL answers some of them with an ERROR and goes on;
 * - a Parse of a statement name the client already uses replaces it (no 42P05);
 * - a named statement is prepared on each server connection when first needed there, so an error
 *   it could raise on another connection (a table dropped meanwhile) comes with the Bind; a Parse
 *   of a text that parsed before is answered without a server connection;
 * - SQL `EXECUTE name` of a protocol-level statement does not find it (the server knows it under
 *   a shared name); a Bind pipelined behind a Parse of the same name that then fails names the
 *   shared statement in its 26000 error;
 * - the unnamed statement survives a simple Query (PostgreSQL drops it);
 * - a multi-statement Query with a DEALLOCATE pgrelay refuses (another client's statement, or
 *   ALL) fails whole, before its other statements run; DEALLOCATE ALL through Parse fails (0A000);
 * - a SET rolled back to a savepoint is still replayed on the next connection if the
 *   transaction commits (ROLLBACK TO is not tracked; ROLLBACK, and COMMIT of a failed
 *   transaction, are).
 */
export class ClientSession implements ServerDataHandler {
  readonly processId: number;
  readonly secretKey: number;
  private readonly reader: FrameReader;
  private readonly state: SessionState;
  private server: ServerConnection | undefined;
  private serverNode: NodeStatus | undefined;
  /** the pool that lent `server` (it takes it back: no key lookup per unit) */
  private serverPool: Pool | undefined;
  private readonly queue = new ResponseQueue<StatementPayload>();
  /** an extended-protocol unit has started and its Sync has not come yet */
  private unitOpen = false;
  /** the client is pinned to its server connection for the rest of its life */
  private pinned = false;
  /** the session is waiting (for a server connection, or for a pipeline to drain) */
  private waiting: 'none' | 'acquire' | 'drain' = 'none';
  /** after an error pgrelay raised in an extended unit: drop messages until Sync */
  private skipUntilSync = false;
  /** the server connection of an open transaction was lost: the client must roll back */
  private orphanedTransaction = false;
  /** why the server connection of an idle transaction was lost, told with the client's next statement */
  private orphanNotice: string | undefined;
  /** the text of a FATAL the attached server sent before closing (not forwarded: the client stays) */
  private serverFatal: string | undefined;
  /** the unit being started was routed again after a failed connect (once per unit) */
  private rerouted = false;
  private closed = false;
  private pumping = false;
  /** the transaction status the client last saw */
  private clientTxStatus: number = TxStatus.Idle;
  /** the one it saw before that (a unit that goes from E to I rolled back) */
  private txStatusBefore: number = TxStatus.Idle;
  /** SET effects of the open transaction, applied when it commits */
  private txEffects: { effect: SessionEffect; text: string }[] = [];
  /** the transaction of the open unit is read-only by the session's default */
  private defaultReadOnly = false;
  private readonly statements = new Map<string, ServerStatement>();
  private lastUnnamedParse: Buffer | undefined;
  private lastUnnamedPayload: StatementPayload | undefined;
  private unnamedToken = 0;
  /** classification of the portal bound last (for Execute) */
  private portalPayload: StatementPayload | undefined;
  /** the current unit's classification decided its node; later units of a pipeline follow it */
  private unitStartedAt = 0;
  /** when the unit now running began (pgrelay_query_duration_seconds, per unit, also inside transactions and pinned sessions) */
  private unitBeganAt = 0;
  private unitHadError = false;
  private releaseAfterChunk = false;
  /** the classification of the unit being started (for per-statement hints such as max_lag_ms) */
  private startingClassification: Classification | undefined;
  /** what the unit that attached the current server connection asked for */
  private attachTarget: Target | 'any' = 'any';
  /**
   * the server connection was attached, after a wait, for the message the session handles again
   * now: that message's unit takes it as it is (routing it again would give it back to the pool,
   * to the next waiter, and wait once more)
   */
  private attachedForWaiter = false;
  /** the text classified last, its classification, and the classifier (and its generation) that made it */
  private lastText: string | undefined;
  private lastClassification: Classification | undefined;
  private lastClassifier: unknown;
  private lastGeneration = 0;
  /** a plain BEGIN the client was told succeeded, to be sent with the transaction's first statement */
  private deferredBegin: Buffer | undefined;
  /** bytes sent to the client so far */
  private clientBytes = 0;
  /** the reads in flight, to run again when their connection is lost (see ReplayWindow) */
  private readonly replayWindow = new ReplayWindow();

  /** server chunks are views of the connection's read buffer (see ServerDataHandler) */
  readonly borrowsChunks = true;
  /** the client socket still holds bytes borrowed from a server connection's read buffer */
  private heldReads = false;
  /** server connections to give back once the client has written what it borrowed from them */
  private pendingGiveBack: { conn: ServerConnection; pool: Pool }[] = [];
  /** the server socket whose write buffer is full: the client is not read until it drains */
  private serverFull: net.Socket | undefined;
  /**
   * Messages for the server written during a pump go out together at its end, to `outConn`: one
   * socket write when there is one piece (the common case), a corked writev when there are more.
   */
  private readonly serverOut: Buffer[] = [];
  private outConn: ServerConnection | undefined;
  /** answers for the client made while a server chunk is scanned go out together at its end */
  private readonly clientOut: Buffer[] = [];
  private collectingClientOut = false;
  /** an error for the unit being started, raised while the session waited */
  private deferredError: Error | undefined;
  /** the code of the client message being handled */
  private clientCode = 0;

  // forwarding run: contiguous client messages not yet written to the server
  private runBuffer: Buffer | undefined;
  private runStart = 0;
  private runEnd = 0;

  // server stream scanner state (per attached connection)
  /** bytes of the current server message still to pass */
  private need = 0;
  /** the current server message is being swallowed */
  private dropping = false;
  /** the length of the current server message, header included */
  private currentLength = 0;
  /** the code of the current server message (when split across chunks) */
  private currentCode = 0;
  /** an answer pgrelay makes itself is next in the queue (see emitSyntheticAfter) */
  private syntheticDue = false;
  private readonly header = Buffer.allocUnsafe(5);
  private headerLength = 0;
  /** a ReadyForQuery/ParameterStatus body being collected across chunks */
  private small: Buffer | undefined;
  private smallLength = 0;

  constructor(
    private readonly ctx: SessionContext,
    readonly socket: net.Socket,
    readonly user: string,
    readonly database: string,
    startupParams: ReadonlyMap<string, string>,
    keys: { processId: number; secretKey: number },
  ) {
    this.processId = keys.processId;
    this.secretKey = keys.secretKey;
    this.reader = new FrameReader(ctx.config().client.max_message_bytes);
    this.state = new SessionState(startupParams);
    if (ctx.config().pool.mode === 'session') this.pinned = true;
  }

  /** Starts reading client messages; `leftover` are bytes that came with the startup packet. */
  start(leftover: Buffer): void {
    this.socket.on('data', (chunk: Buffer) => this.onClientData(chunk));
    this.socket.on('drain', () => this.server?.socket.resume());
    this.socket.on('close', () => this.close());
    this.socket.on('error', () => this.close());
    if (leftover.length > 0) this.onClientData(leftover);
  }

  /** The session state SQL, so that the startup check can apply it. */
  stateSql(): string {
    return this.state.sql();
  }

  get isPinned(): boolean {
    return this.pinned;
  }

  /** A unit or a transaction is under way on a server connection (graceful shutdown waits for it). */
  get busy(): boolean {
    const server = this.server;
    return server !== undefined && (this.queue.length > 0 || this.unitOpen || server.txStatus !== TxStatus.Idle);
  }

  /** The server connection running this client's work, if any (for cancel). */
  runningOn(): ServerConnection | undefined {
    return this.server && this.queue.length > 0 ? this.server : undefined;
  }

  // ---------------------------------------------------------------- client → server

  private onClientData(chunk: Buffer): void {
    if (this.closed) return;
    this.ctx.metrics.addBytesIn(chunk.length);
    this.reader.push(chunk);
    this.pump();
  }

  /** Handles buffered client messages until one has to wait. */
  private pump(): void {
    if (this.pumping || this.closed) return;
    this.pumping = true;
    try {
      while (this.waiting === 'none' && !this.closed && this.reader.next()) {
        if (!this.handle(this.reader.code, this.reader.buffer, this.reader.start, this.reader.end)) {
          this.reader.rewind();
          break;
        }
        if (this.replayWindow.open) this.replayWindow.add(this.reader);
      }
      this.flushRun();
    } catch (error) {
      // a client message whose fields run past its end (or miss a terminator)
      this.fatal(error instanceof RangeError ? new ProxyError(SqlState.protocolViolation, 'invalid message format', { severity: 'FATAL' }) : error);
    } finally {
      this.pumping = false;
      this.flushServerOut();
    }
    if (this.waiting !== 'none' && this.reader.pending > MAX_BUFFERED_INPUT) this.socket.pause();
    else if (this.socket.isPaused() && this.waiting === 'none' && this.serverFull === undefined) this.socket.resume();
  }

  /** Handles one client message; false = wait and see this message again later. */
  private handle(code: number, b: Buffer, start: number, end: number): boolean {
    this.clientCode = code;
    if (this.skipUntilSync) {
      if (code === FrontendCode.Sync) {
        this.skipUntilSync = false;
        this.unitOpen = false;
        this.sendToClient(readyForQuery(this.clientTxStatus));
      } else if (code === FrontendCode.Terminate) this.close();
      return true;
    }
    switch (code) {
      case FrontendCode.Query:
        return this.onQuery(b, start, end);
      case FrontendCode.Parse:
        return this.onParse(b, start, end);
      case FrontendCode.Bind:
        return this.onBind(b, start, end);
      case FrontendCode.Describe:
        return this.onDescribeOrClose(code, b, start, end);
      case FrontendCode.Close:
        return this.onDescribeOrClose(code, b, start, end);
      case FrontendCode.Execute: {
        const ready = this.beginExtendedUnit(undefined);
        if (ready !== OK) return ready === FAILED;
        this.forward(b, start, end);
        this.queue.push(Expect.Execute, this.portalPayload);
        return true;
      }
      case FrontendCode.Flush:
        if (this.server) this.forward(b, start, end);
        return true;
      case FrontendCode.Sync:
        return this.onSync(b, start, end);
      case FrontendCode.FunctionCall: {
        if (this.orphanedTransaction) {
          this.answerOrphaned(undefined, true);
          return true;
        }
        const ready = this.beginSimpleUnit('primary', FUNCTION_CALL);
        if (ready !== OK) return ready === FAILED;
        this.forward(b, start, end);
        this.queue.push(Expect.Query);
        return true;
      }
      case FrontendCode.CopyData:
      case FrontendCode.CopyDone:
      case FrontendCode.CopyFail:
        if (this.server) this.forward(b, start, end);
        return true;
      case FrontendCode.Terminate:
        this.close();
        return true;
      default:
        throw new ProxyError(SqlState.protocolViolation, `invalid frontend message type ${code}`, { severity: 'FATAL' });
    }
  }

  private onQuery(b: Buffer, start: number, end: number): boolean {
    const text = b.toString('utf8', start, end - 1);
    const belowFloor = syncCommitFloorFrame(text, this.ctx.config().routing.min_synchronous_commit);
    if (belowFloor) return this.onQuery(belowFloor, 5, belowFloor.length);
    const classification = this.classify(text);
    if (this.orphanedTransaction) {
      this.answerOrphaned(classification, true);
      return true;
    }
    if (this.answerDeallocate(classification)) return true;
    if (this.deferBegin(classification, text, b, start, end)) return true;
    const payload: StatementPayload = { classification, text };
    this.startingClassification = classification;
    const ready = this.beginSimpleUnit(this.targetOf(classification), classification.route);
    if (ready !== OK) return ready === FAILED;
    const refused = this.refusedDeallocate(classification, isLoneDeallocate(classification));
    if (refused === undefined) this.forward(b, start, end);
    else this.inject(refuseDeallocate(refused));
    this.queue.push(Expect.Query, payload);
    // statements that forget prepared statements: what follows waits for their outcome
    for (const effect of classification.effects) if (effect.type === 'discard_all' || (effect.type === 'deallocate' && effect.name === null)) this.waiting = 'drain';
    return true;
  }

  private onParse(b: Buffer, start: number, end: number): boolean {
    const [name, textStart] = readCString(b, start, end);
    const [text, typesStart] = readCString(b, textStart, end);
    const belowFloor = syncCommitFloorFrame(text, this.ctx.config().routing.min_synchronous_commit, { name, types: b.subarray(typesStart, end) });
    if (belowFloor) return this.onParse(belowFloor, 5, belowFloor.length);
    const classification = this.classify(text);
    const refused = this.refusedDeallocate(classification, false);
    // the statement fails at Execute, as the server's own refusal would
    if (refused !== undefined) return this.onParse(...withParseText(b, start, end, name, refusalText(refused)));
    if (name !== '' && !this.orphanedTransaction) {
      const statement = this.ctx.statements.intern(text, b.subarray(textStart, end), classification);
      if (statement.parsed) {
        // The text parsed on a server before: map the client's name and answer ParseComplete
        // without a server connection; each connection prepares it when a Bind or Describe needs
        // it there. A client that prepares (Parse + Sync) while its other work holds every
        // server connection, as pgbench -M prepared does, must not wait for one.
        this.statements.set(name, statement);
        this.answerParseComplete({ classification, text, statement, name });
        return true;
      }
    }
    const payload: StatementPayload = { classification, text };
    const ready = this.beginExtendedUnit(classification);
    if (ready !== OK) return ready === FAILED;
    if (name === '') {
      this.lastUnnamedParse = Buffer.from(b.subarray(start - 5, end));
      this.lastUnnamedPayload = payload;
      this.unnamedToken = ++unnamedTokens;
      this.server!.unnamedToken = this.unnamedToken;
      this.forward(b, start, end);
      this.queue.push(Expect.Parse);
      return true;
    }
    const statement = this.ctx.statements.intern(text, b.subarray(textStart, end), classification);
    this.statements.set(name, statement);
    if (this.server!.prepared.has(statement.name)) {
      this.answerParseComplete({ classification, text, statement, name });
    } else {
      this.inject(statement.parse);
      this.server!.prepared.add(statement.name);
      this.queue.push(Expect.Parse, { classification, text, statement, name });
    }
    return true;
  }

  /** ParseComplete made by pgrelay, in order with what the server still owes. */
  private answerParseComplete(payload: StatementPayload): void {
    if (this.server) {
      this.queue.push(Expect.SyntheticParseComplete, payload);
      this.emitSynthetic();
      return;
    }
    // nothing in flight: the unit has begun without a server connection (its Sync is answered here)
    this.unitOpen = true;
    this.sendHead(parseComplete);
  }

  private onBind(b: Buffer, start: number, end: number): boolean {
    const [, statementStart] = readCString(b, start, end);
    const [name, afterName] = readCString(b, statementStart, end);
    if (name === '') {
      const ready = this.beginExtendedUnit(this.lastUnnamedPayload?.classification);
      if (ready !== OK) return ready === FAILED;
      this.restoreUnnamed();
      this.forward(b, start, end);
      this.portalPayload = this.lastUnnamedPayload;
      this.queue.push(Expect.Bind);
      return true;
    }
    const statement = this.statements.get(name);
    const ready = this.beginExtendedUnit(statement?.classification);
    if (ready !== OK) return ready === FAILED;
    if (!statement) {
      // unknown to pgrelay: let the server report it (26000) and skip to Sync as it does
      this.forward(b, start, end);
      this.queue.push(Expect.Bind);
      return true;
    }
    this.prepareOnServer(statement);
    this.inject(renameInMessage(FrontendCode.Bind, b, start, statementStart, afterName, end, statement.name));
    this.portalPayload = { classification: statement.classification, text: statement.text };
    this.queue.push(Expect.Bind);
    return true;
  }

  /** Describe or Close: 'S' names a statement (renamed), 'P' a portal (passed through). */
  private onDescribeOrClose(code: number, b: Buffer, start: number, end: number): boolean {
    const kind = b[start];
    const [name, afterName] = readCString(b, start + 1, end);
    const expect = code === FrontendCode.Describe ? Expect.Describe : Expect.Close;
    if (kind !== 0x53 || name === '') {
      const ready = this.beginExtendedUnit(kind === 0x53 ? this.lastUnnamedPayload?.classification : undefined);
      if (ready !== OK) return ready === FAILED;
      if (kind === 0x53 && code === FrontendCode.Close) {
        this.closeUnnamed(b, start, end);
        return true;
      }
      if (kind === 0x53) this.restoreUnnamed();
      this.forward(b, start, end);
      this.queue.push(expect);
      return true;
    }
    const statement = this.statements.get(name);
    if (code === FrontendCode.Close) {
      // the server-side statement is shared with other clients: only the client's name goes
      this.statements.delete(name);
      if (!this.server && !this.unitOpen) {
        this.unitOpen = true;
        this.sendHead(closeComplete);
        return true;
      }
      const ready = this.beginExtendedUnit(undefined);
      if (ready !== OK) return ready === FAILED;
      this.queue.push(Expect.SyntheticCloseComplete);
      this.emitSynthetic();
      return true;
    }
    const ready = this.beginExtendedUnit(statement?.classification);
    if (ready !== OK) return ready === FAILED;
    if (!statement) {
      this.forward(b, start, end);
      this.queue.push(expect);
      return true;
    }
    this.prepareOnServer(statement);
    this.inject(renameInMessage(code, b, start, start + 1, afterName, end, statement.name));
    this.queue.push(expect);
    return true;
  }

  private onSync(b: Buffer, start: number, end: number): boolean {
    if (this.orphanedTransaction && !this.server) {
      this.unitOpen = false;
      this.sendToClient(readyForQuery(this.clientTxStatus));
      return true;
    }
    if (!this.server) {
      // nothing of this unit needed a server (e.g. only a Close of a statement)
      this.unitOpen = false;
      this.sendToClient(readyForQuery(this.clientTxStatus));
      return true;
    }
    this.forward(b, start, end);
    this.queue.push(Expect.Sync);
    this.unitOpen = false;
    return true;
  }

  /**
   * The classifier's answer, or the one it gave this session last for the same text: a message
   * handled again after a wait for a server connection, or a driver that sends the same text
   * again and again (an unnamed Parse per execution), skips the lexer and the cache lookup.
   */
  private classify(text: string): Classification {
    const classifier = this.ctx.classifier;
    if (text === this.lastText && classifier === this.lastClassifier && this.lastGeneration === classifier.generation) {
      classifier.stats.hits++;
      return this.lastClassification!;
    }
    const classification = classifier.classify(text);
    // a long text (a bulk INSERT) is not kept alive by an idle session
    if (text.length > MAX_REMEMBERED_TEXT) return classification;
    this.lastText = text;
    this.lastClassifier = classifier;
    this.lastClassification = classification;
    this.lastGeneration = classifier.generation;
    return classification;
  }

  /**
   * A plain `BEGIN` outside a transaction is answered by pgrelay and sent later, in front of the
   * transaction's first statement, which decides where the transaction runs: after
   * `SET TRANSACTION READ ONLY` on a replica, after anything else on the primary.
   */
  private deferBegin(classification: Classification, text: string, b: Buffer, start: number, end: number): boolean {
    if (this.server || this.unitOpen || this.pinned || this.queue.length > 0 || this.deferredBegin !== undefined) return false;
    if (this.clientTxStatus !== TxStatus.Idle || this.defaultReadOnly) return false;
    const effect = classification.effects[0];
    if (classification.statements !== 1 || classification.route !== 'primary' || effect?.type !== 'begin' || effect.readOnly || !PLAIN_BEGIN.test(text)) return false;
    this.deferredBegin = Buffer.from(b.subarray(start - 5, end));
    this.txStatusBefore = this.clientTxStatus;
    this.clientTxStatus = TxStatus.InTransaction;
    // PostgreSQL's command tags: BEGIN [WORK | TRANSACTION] → BEGIN, START TRANSACTION → START TRANSACTION
    this.sendToClient(commandComplete(/^\s*start/i.test(text) ? 'START TRANSACTION' : 'BEGIN'));
    this.sendToClient(readyForQuery(TxStatus.InTransaction));
    return true;
  }

  /** Where a statement wants to run, given the session's transaction defaults. */
  private targetOf(classification: Classification | undefined): Target | 'any' {
    if (this.deferredBegin !== undefined) {
      // the first statement of a transaction whose BEGIN pgrelay holds
      const readOnly = classification !== undefined && classification.route !== 'primary' && classification.effects[0]?.type === 'set_transaction_read_only';
      return readOnly ? 'replica' : 'primary';
    }
    if (!classification) return 'any';
    if (classification.route === 'replica') return 'replica';
    if (classification.route === 'any') {
      for (const effect of classification.effects) if (effect.type === 'begin' && (effect.readOnly || this.defaultReadOnly)) return 'replica';
      return 'any';
    }
    if (this.defaultReadOnly && classification.effects.length === 1 && classification.effects[0]!.type === 'begin') return 'replica';
    return 'primary';
  }

  private beginSimpleUnit(target: Target | 'any', route: string): Ready {
    // a Query inside an extended unit runs on the unit's connection
    const ready = this.ensureServer(this.unitOpen ? undefined : target);
    if (ready === OK && !this.unitOpen) {
      this.unitBeganAt = performance.now();
      this.ctx.countUnit(this.serverNode!, route, this.startingClassification);
      this.openReplayWindow(route === FUNCTION_CALL ? undefined : this.startingClassification);
    }
    return ready;
  }

  private beginExtendedUnit(classification: Classification | undefined): Ready {
    if (this.orphanedTransaction) {
      this.answerOrphaned(classification, false);
      return FAILED;
    }
    if (this.unitOpen && this.server) return OK;
    this.startingClassification = classification;
    const ready = this.ensureServer(this.targetOf(classification));
    if (ready === OK) {
      this.unitOpen = true;
      this.unitBeganAt = performance.now();
      this.ctx.countUnit(this.serverNode!, classification?.route ?? 'any', classification);
      this.openReplayWindow(classification);
    }
    return ready;
  }

  /** A unit starts on the attached connection: it may run again when it is a read outside a transaction. */
  private openReplayWindow(classification: Classification | undefined): void {
    const replayable =
      classification !== undefined &&
      classification.route !== 'primary' &&
      classification.effects.length === 0 &&
      !classification.pin &&
      !this.pinned &&
      this.clientTxStatus === TxStatus.Idle &&
      this.server!.txStatus === TxStatus.Idle;
    this.replayWindow.unitStarts(this.reader, replayable, this.clientBytes);
  }

  /**
   * Makes sure a server connection suitable for `target` is attached (undefined = whatever is
   * attached, else any node).
   */
  private ensureServer(target: Target | 'any' | undefined): Ready {
    if (this.deferredError) {
      const error = this.deferredError;
      this.deferredError = undefined;
      this.failUnit(error);
      return FAILED;
    }
    const server = this.server;
    if (server) {
      if (this.attachedForWaiter) {
        this.attachedForWaiter = false;
        return OK;
      }
      if (this.pinned || this.unitOpen || server.txStatus !== TxStatus.Idle || target === undefined || target === 'any') return OK;
      const onPrimary = server.node === this.ctx.topology.primaryName;
      if (this.queue.length > 0) {
        // pipelining: later units follow on the same connection, unless a write needs another node
        if (target === 'replica' || onPrimary) return OK;
        this.waiting = 'drain';
        return WAIT;
      }
      if (target === 'primary' && onPrimary) return OK;
      this.detach(true);
    }
    return this.acquire(target ?? 'any');
  }

  private acquire(target: Target | 'any'): Ready {
    let choice;
    try {
      let constraints = target === 'replica' ? this.ctx.readConstraints(this, this.startingClassification) : undefined;
      const avoid = this.replayWindow.avoid;
      if (avoid !== undefined) {
        // units run again after a lost connection: not on that node while its health is decided
        if (target === 'replica') constraints = { ...constraints, avoidNode: avoid };
        this.replayWindow.avoid = undefined;
      }
      choice = this.ctx.router.choose(target === 'replica' ? 'replica' : 'primary', constraints);
    } catch (error) {
      this.failUnit(error);
      return FAILED;
    }
    if (!choice) {
      this.waitForPrimary();
      return WAIT;
    }
    if (choice.fallback) this.ctx.metrics.countPrimaryRead(choice.fallback);
    const node = choice.node;
    let pool;
    try {
      pool = this.ctx.pools.get(node.name, this.user, this.database);
    } catch (error) {
      this.failUnit(error);
      return FAILED;
    }
    let sync = true;
    let result = WAIT as Ready;
    this.attachTarget = target;
    this.waiting = 'acquire';
    pool.acquire((error, conn) => {
      if (this.closed) {
        if (conn) pool.release(conn);
        return;
      }
      this.waiting = 'none';
      if (error || !conn) {
        if (error instanceof ProxyError && error.sqlstate === SqlState.tooManyConnections) this.ctx.metrics.poolWaitTimeouts.labels(node.name).inc();
        else {
          this.ctx.nodeBroken(node.name, error);
          if (!this.rerouted && isUnreachable(error)) {
            // the node may be going down (failover): route the unit again once its health is decided
            this.rerouted = true;
            this.waiting = 'acquire';
            this.ctx.whenNodeDecided(node.name, () => {
              if (this.closed) return;
              this.waiting = 'none';
              this.pump();
            });
            return;
          }
        }
        this.rerouted = false;
        this.deferredError = error ?? new Error('no server connection');
      } else {
        this.rerouted = false;
        this.attach(conn, node, pool);
        this.attachedForWaiter = !sync;
      }
      if (sync) result = this.deferredError ? FAILED : OK;
      else this.pump();
    });
    sync = false;
    if (result === FAILED) {
      const error = this.deferredError;
      this.deferredError = undefined;
      this.failUnit(error);
    } else if (result === WAIT) this.ctx.metrics.countPoolWait(node.name);
    return result;
  }

  private waitForPrimary(): void {
    this.waiting = 'acquire';
    this.ctx.waitForPrimary((error) => {
      if (this.closed) return;
      this.waiting = 'none';
      if (error) this.deferredError = error;
      this.pump();
    });
  }

  private attach(conn: ServerConnection, node: NodeStatus, pool: Pool): void {
    this.server = conn;
    this.serverNode = node;
    this.serverPool = pool;
    this.need = 0;
    this.dropping = false;
    this.headerLength = 0;
    this.small = undefined;
    conn.setHandler(this);
    node.inflight++;
    this.unitStartedAt = performance.now();
    const wanted = this.state.sql();
    if (conn.appliedState !== wanted) {
      this.inject(message(FrontendCode.Query, (w) => w.cstring(stateTransition(conn.appliedState, wanted))));
      this.queue.push(Expect.Query | SWALLOW);
      conn.appliedState = wanted;
    }
    const begin = this.deferredBegin;
    if (begin !== undefined) {
      this.deferredBegin = undefined;
      this.inject(begin);
      this.queue.push(Expect.Query | SWALLOW);
    }
  }

  /** Gives the server connection back (to its pool, or destroys it when its state is unknown). */
  private detach(reusable: boolean): void {
    const conn = this.server;
    if (!conn) return;
    const node = this.serverNode!;
    const pool = this.serverPool!;
    this.flushRun();
    this.flushServerOut();
    this.clearServerFull();
    this.server = undefined;
    this.serverNode = undefined;
    this.serverPool = undefined;
    this.attachedForWaiter = false;
    this.replayWindow.close();
    node.inflight--;
    const elapsedMs = performance.now() - this.unitStartedAt;
    node.latencyEwmaMs = node.latencyEwmaMs * 0.9 + elapsedMs * 0.1;
    this.queue.clear();
    if (!reusable || conn.closed || this.need > 0 || this.headerLength > 0) pool.discard(conn);
    // the client still writes bytes that live in this connection's read buffer: it stays paused
    else if (this.heldReads) this.pendingGiveBack.push({ conn, pool });
    else this.giveBack(conn, pool);
  }

  private giveBack(conn: ServerConnection, pool: Pool): void {
    // a cancel of this client's query must land before anyone else's query runs there
    conn.whenCancelsSettled(() => {
      pool.release(conn);
      conn.socket.resume();
    });
  }

  /** A write to the client completed: once nothing borrowed is queued, server reads go on. */
  private readonly onClientWritten = (): void => {
    if (!this.heldReads || this.socket.writableLength > 0) return;
    this.heldReads = false;
    if (this.pendingGiveBack.length > 0) {
      const pending = this.pendingGiveBack;
      this.pendingGiveBack = [];
      for (const { conn, pool } of pending) this.giveBack(conn, pool);
    }
    this.server?.socket.resume();
  };

  /**
   * Close of the client's unnamed statement: sent only where it is the client's (another client's
   * unnamed statement on this connection stays); closing one that does not exist is no error.
   */
  private closeUnnamed(b: Buffer, start: number, end: number): void {
    const server = this.server!;
    if (server.unnamedToken === this.unnamedToken) {
      this.forward(b, start, end);
      this.queue.push(Expect.Close);
      server.unnamedToken = 0;
    } else {
      this.queue.push(Expect.SyntheticCloseComplete);
      this.emitSynthetic();
    }
    this.lastUnnamedParse = undefined;
    this.lastUnnamedPayload = undefined;
    this.unnamedToken = 0;
  }

  /** Writes an unnamed statement's Parse again when the unit landed on another connection. */
  private restoreUnnamed(): void {
    const server = this.server!;
    if (server.unnamedToken === this.unnamedToken) return;
    if (this.lastUnnamedParse) {
      this.inject(this.lastUnnamedParse);
      this.queue.push(Expect.Parse | SWALLOW);
    } else {
      // the unnamed statement there is another client's: it must not be bound by this one
      this.inject(CLOSE_UNNAMED_STATEMENT);
      this.queue.push(Expect.Close | SWALLOW);
    }
    server.unnamedToken = this.unnamedToken;
  }

  private prepareOnServer(statement: ServerStatement): void {
    const server = this.server!;
    if (server.prepared.has(statement.name)) return;
    this.inject(statement.parse);
    server.prepared.add(statement.name);
    this.queue.push(Expect.Parse | SWALLOW, { classification: statement.classification, text: statement.text, statement });
  }

  /** Adds a client message to the run of bytes to forward unchanged. */
  private forward(b: Buffer, start: number, end: number): void {
    const frameStart = start - 5;
    if (this.runBuffer === b && this.runEnd === frameStart) {
      this.runEnd = end;
      return;
    }
    this.flushRun();
    this.runBuffer = b;
    this.runStart = frameStart;
    this.runEnd = end;
  }

  /** Writes a message pgrelay made (or rewrote), in order with the forwarded ones. */
  private inject(data: Buffer): void {
    this.flushRun();
    this.writeServer(data);
  }

  private flushRun(): void {
    if (this.runBuffer === undefined) return;
    const data = this.runBuffer.subarray(this.runStart, this.runEnd);
    this.runBuffer = undefined;
    this.writeServer(data);
  }

  private writeServer(data: Buffer): void {
    const server = this.server;
    if (!server || server.closed) return;
    if (this.pumping) {
      if (this.outConn !== server) {
        this.flushServerOut();
        this.outConn = server;
      }
      this.serverOut.push(data);
      return;
    }
    this.writeServerNow(server, data);
  }

  /** Writes what this pump gathered for the server. */
  private flushServerOut(): void {
    const conn = this.outConn;
    if (conn === undefined) return;
    this.outConn = undefined;
    const out = this.serverOut;
    if (!conn.closed) {
      if (out.length === 1) this.writeServerNow(conn, out[0]!);
      else {
        conn.socket.cork();
        for (const data of out) this.writeServerNow(conn, data);
        conn.socket.uncork();
      }
    }
    out.length = 0;
  }

  private writeServerNow(server: ServerConnection, data: Buffer): void {
    if (!server.write(data) && this.serverFull === undefined && server === this.server) {
      // the server does not keep up (a big COPY FROM STDIN): stop reading the client until it does
      this.serverFull = server.socket;
      this.socket.pause();
      server.socket.once('drain', this.onServerDrain);
    }
  }

  private readonly onServerDrain = (): void => {
    this.serverFull = undefined;
    if (!this.closed && this.waiting === 'none') this.socket.resume();
  };

  /** The server connection no longer applies backpressure to this client (it is given back or lost). */
  private clearServerFull(): void {
    if (this.serverFull === undefined) return;
    this.serverFull.off('drain', this.onServerDrain);
    this.serverFull = undefined;
    if (!this.closed && this.waiting === 'none' && !this.pumping) this.socket.resume();
  }

  // ---------------------------------------------------------------- server → client

  onServerData(conn: ServerConnection, chunk: Buffer): void {
    if (conn !== this.server || this.closed) return;
    const length = chunk.length;
    let at = 0;
    /** start of the bytes not yet written to the client that are to be forwarded */
    let fwdStart = 0;
    this.collectingClientOut = true;
    try {
      while (at < length) {
        if (this.need > 0) {
          // the rest of a message begun in an earlier chunk
          const take = Math.min(this.need, length - at);
          if (this.small) {
            chunk.copy(this.small, this.smallLength, at, at + take);
            this.smallLength += take;
          }
          at += take;
          this.need -= take;
          if (this.dropping || this.small) fwdStart = at;
          if (this.need === 0) this.finishMessage(this.currentCode, this.small, this.smallLength, false);
          if (this.syntheticDue) fwdStart = this.emitSyntheticAfter(chunk, fwdStart, at);
          continue;
        }
        let code: number;
        let declared: number;
        let headerInChunk: boolean;
        if (this.headerLength > 0 || length - at < 5) {
          // a header split across chunks: held back until its type is known
          if (fwdStart < at) this.sendToClient(chunk.subarray(fwdStart, at));
          const take = Math.min(5 - this.headerLength, length - at);
          chunk.copy(this.header, this.headerLength, at, at + take);
          this.headerLength += take;
          at += take;
          fwdStart = at;
          if (this.headerLength < 5) break;
          this.headerLength = 0;
          code = this.header[0]!;
          declared = this.header.readInt32BE(1);
          headerInChunk = false;
        } else {
          code = chunk[at]!;
          declared = chunk.readInt32BE(at + 1);
          at += 5;
          headerInChunk = true;
        }
        const bodyLength = declared - 4;
        if (bodyLength < 0) throw new ProxyError(SqlState.protocolViolation, `node ${conn.node} sent an invalid message length`);
        const messageStart = headerInChunk ? at - 5 : at;
        const drop = this.shouldDrop(code);
        const small = code === BackendCode.ReadyForQuery || code === BackendCode.ParameterStatus || code === BackendCode.ErrorResponse;
        this.currentCode = code;
        this.currentLength = declared + 1;
        this.dropping = drop;
        if (small && length - at >= bodyLength) {
          // whole here: decide, then either leave it in the forwarded run or cut it out
          const keep = this.onSmallMessage(code, chunk, at, at + bodyLength, drop);
          if (!keep || !headerInChunk) {
            if (fwdStart < messageStart) this.sendToClient(chunk.subarray(fwdStart, messageStart));
            if (keep) this.sendToClient(framed(code, chunk.subarray(at, at + bodyLength), bodyLength));
            fwdStart = at + bodyLength;
          }
          at += bodyLength;
          this.endMessage(code);
          if (this.syntheticDue) fwdStart = this.emitSyntheticAfter(chunk, fwdStart, at);
          continue;
        }
        if (drop || small) {
          if (fwdStart < messageStart) this.sendToClient(chunk.subarray(fwdStart, messageStart));
        } else if (!headerInChunk) {
          this.sendToClient(Buffer.from(this.header));
        }
        this.small = small ? Buffer.allocUnsafe(bodyLength) : undefined;
        this.smallLength = 0;
        const take = Math.min(bodyLength, length - at);
        if (this.small) {
          chunk.copy(this.small, 0, at, at + take);
          this.smallLength = take;
        }
        at += take;
        if (drop || small) fwdStart = at;
        if (take === bodyLength) this.finishMessage(code, undefined, 0, true);
        else this.need = bodyLength - take;
        if (this.syntheticDue) fwdStart = this.emitSyntheticAfter(chunk, fwdStart, at);
      }
      if (fwdStart < at) this.sendToClient(chunk.subarray(fwdStart, at));
    } catch (error) {
      this.ctx.log.error({ node: conn.node, err: error instanceof Error ? error.message : String(error) }, 'bad data from server');
      this.fatal(error);
    } finally {
      this.flushClientOut();
      // what the client socket could not take at once still points into the connection's read
      // buffer: no more reads until it is written (this is also the backpressure to the server)
      if (this.socket.writableLength > 0 && !this.closed) {
        this.heldReads = true;
        conn.socket.pause();
      }
      if (this.releaseAfterChunk && this.server === conn) {
        this.releaseAfterChunk = false;
        this.maybeRelease();
      }
    }
  }

  /**
   * Answers of pgrelay's own that are due now go after the server bytes before them: the part of
   * the chunk not yet written is written first. Returns the new start of the forwarded run.
   */
  private emitSyntheticAfter(chunk: Buffer, fwdStart: number, at: number): number {
    this.syntheticDue = false;
    if (fwdStart < at) this.sendToClient(chunk.subarray(fwdStart, at));
    this.emitSynthetic();
    return at;
  }

  /** A message whose body has fully passed (a collected small body is decided now). */
  private finishMessage(code: number, small: Buffer | undefined, smallLength: number, bodyWasForwarded: boolean): void {
    if (small && !bodyWasForwarded) {
      this.small = undefined;
      if (this.onSmallMessage(code, small, 0, smallLength, this.dropping)) this.sendToClient(framed(code, small, smallLength));
    }
    this.endMessage(code);
  }

  /** Whether the server message starting now is swallowed (an answer to what pgrelay sent). */
  private shouldDrop(code: number): boolean {
    const head = this.queue.peek();
    if ((head & SWALLOW) === 0) return this.replayWindow.alreadySent(code);
    // an error in an injected extended message (a re-sent Parse) is the client's error too
    if (code === BackendCode.ErrorResponse && kindOf(head) !== Expect.Query) return false;
    return true;
  }

  /** ReadyForQuery / ParameterStatus bodies; returns whether to pass the message on. */
  private onSmallMessage(code: number, b: Buffer, start: number, end: number, drop: boolean): boolean {
    if (code === BackendCode.ReadyForQuery) {
      const status = b[start]!;
      if (this.server) this.server.txStatus = status;
      if (drop) return false;
      this.txStatusBefore = this.clientTxStatus;
      this.clientTxStatus = status;
      return true;
    }
    if (drop) return false;
    if (code === BackendCode.ErrorResponse) {
      // a FATAL ends the server connection, not the client's: onServerClose reports the loss
      const fields = readErrorFields(b, start, end);
      const severity = fields.get('V') ?? fields.get('S');
      if (severity !== 'FATAL' && severity !== 'PANIC') return true;
      this.serverFatal = fields.get('M');
      return false;
    }
    const [name] = readCString(b, start, end);
    // a replica would tell the client it is in hot standby; pgrelay is one logical primary
    return name !== 'in_hot_standby';
  }

  /** Queue bookkeeping once a server message has fully passed. */
  private endMessage(code: number): void {
    const dropped = this.dropping;
    this.dropping = false;
    if (!dropped && this.replayWindow.open) this.replayWindow.reachedClient(code, this.currentLength);
    const kind = this.queue.peekKind();
    switch (code) {
      case BackendCode.ParseComplete:
        if (kind === Expect.Parse) {
          const statement = this.queue.peekPayload()?.statement;
          if (statement) statement.parsed = true;
          this.queue.shift();
        }
        break;
      case BackendCode.BindComplete:
        if (kind === Expect.Bind) this.queue.shift();
        break;
      case BackendCode.CloseComplete:
        if (kind === Expect.Close) this.queue.shift();
        break;
      case BackendCode.RowDescription:
      case BackendCode.NoData:
        if (kind === Expect.Describe) this.queue.shift();
        break;
      case BackendCode.CommandComplete:
      case BackendCode.EmptyQueryResponse:
      case BackendCode.PortalSuspended:
        if (kind === Expect.Execute) {
          this.collectEffects(this.queue.peekPayload());
          this.queue.shift();
        }
        break;
      case BackendCode.ErrorResponse:
        // an error of pgrelay's own state replay is not the client's unit failing
        if (!dropped) this.unitHadError = true;
        if (kind !== Expect.Query && kind !== 0) {
          // extended protocol: the server skips everything up to Sync; a Parse that failed or was
          // skipped left no statement behind on this connection
          while (this.queue.length > 0 && this.queue.peekKind() !== Expect.Sync && this.queue.peekKind() !== Expect.Query) {
            const skipped = this.queue.peekKind();
            const payload = this.queue.peekPayload();
            if ((skipped === Expect.Parse || skipped === Expect.SyntheticParseComplete) && payload?.statement) {
              if (skipped === Expect.Parse) this.server?.prepared.delete(payload.statement.name);
              if (payload.name !== undefined) this.forgetParse(payload.name, payload.statement);
            }
            this.queue.shift();
          }
        }
        break;
      case BackendCode.ReadyForQuery: {
        const head = this.queue.peek();
        if (kindOf(head) === Expect.Query && (head & SWALLOW) === 0) this.collectEffects(this.queue.peekPayload());
        this.queue.shift();
        if ((head & SWALLOW) === 0) this.unitDone();
        break;
      }
      default:
        break;
    }
    // emitted by onServerData once the bytes before it are written
    if (this.queue.peekKind() >= Expect.SyntheticParseComplete) this.syntheticDue = true;
  }

  /**
   * A client's Parse that failed or was skipped: its name means nothing on the server, unless a
   * Parse of that name that is still to be answered (pipelined after a Sync) maps it again.
   */
  private forgetParse(name: string, statement: ServerStatement): void {
    if (this.statements.get(name) !== statement) return;
    if (this.queue.someAfterHead((kind, payload) => (kind === Expect.Parse || kind === Expect.SyntheticParseComplete) && payload?.name === name)) return;
    this.statements.delete(name);
  }

  /** Answers pgrelay makes itself, once everything before them is answered. */
  private emitSynthetic(): void {
    for (;;) {
      const kind = this.queue.peekKind();
      if (kind === Expect.SyntheticParseComplete) this.sendHead(parseComplete);
      else if (kind === Expect.SyntheticCloseComplete) this.sendHead(closeComplete);
      else if (kind === Expect.SyntheticDeallocate) {
        const payload = this.queue.peekPayload()!;
        this.answerDeallocated(payload.statement === undefined ? null : payload.text, payload.statement);
        this.releaseAfterChunk = true; // a unit of its own: the session may go on (see maybeRelease)
      }
      else return;
      this.queue.shift();
    }
  }

  private pendingEffects: { effect: SessionEffect; text: string }[] = [];

  private collectEffects(payload: StatementPayload | undefined): void {
    if (!payload || this.unitHadError) return;
    const c = payload.classification;
    if (c.pin && !this.pinned) {
      this.pinned = true;
      this.ctx.pinned(+1);
    }
    for (const effect of c.effects) this.pendingEffects.push({ effect, text: payload.text });
  }

  /** A unit's ReadyForQuery arrived: apply its session effects, maybe release the connection. */
  private unitDone(): void {
    // pipelined units: a later unit's start replaces an earlier one's, which then reads shorter
    if (this.serverNode) this.ctx.metrics.observeUnit(this.serverNode.name, (performance.now() - this.unitBeganAt) / 1000);
    const status = this.server?.txStatus ?? TxStatus.Idle;
    const effects = this.pendingEffects;
    const failed = this.unitHadError;
    this.pendingEffects = [];
    this.unitHadError = false;
    if (effects.length > 0 || this.txEffects.length > 0) this.applyEffects(effects, status, failed);
    // a write that reached the primary and is now committed: reads that follow must see it
    if (status === TxStatus.Idle && this.attachTarget === 'primary') this.ctx.wroteOnPrimary(this);
    if (this.queue.length === 0 && !this.unitOpen) this.replayWindow.close();
    this.releaseAfterChunk = true;
  }

  private applyEffects(effects: { effect: SessionEffect; text: string }[], status: number, failed: boolean): void {
    // a failed transaction block ends rolled back, even when the client says COMMIT
    let rolledBack = (failed || this.txStatusBefore === TxStatus.Failed) && status === TxStatus.Idle;
    for (const { effect } of effects) if (effect.type === 'rollback') rolledBack = true;
    if (status !== TxStatus.Idle) {
      this.txEffects.push(...effects);
      return;
    }
    const all = rolledBack ? effects.filter(({ effect }) => effect.type !== 'set' && effect.type !== 'reset' && effect.type !== 'reset_all') : [...this.txEffects, ...effects];
    this.txEffects = [];
    let onlySets = true;
    for (const { effect, text } of all) {
      switch (effect.type) {
        case 'set': {
          const statement = effect.statement === 0 && !text.includes(';') ? text : splitStatements(text)[effect.statement] ?? text;
          this.state.set(effect.name, statement);
          break;
        }
        case 'reset':
          this.state.reset(effect.name);
          onlySets = false;
          break;
        case 'reset_all':
          this.state.resetAll();
          onlySets = false;
          break;
        case 'discard_all':
          this.state.resetAll();
          this.statements.clear();
          this.defaultReadOnly = false;
          if (this.server) {
            this.server.prepared.clear();
            this.server.unnamedToken = 0;
          }
          onlySets = false;
          break;
        case 'deallocate':
          if (effect.name === null) {
            this.statements.clear();
            this.server?.prepared.clear();
          }
          break;
        case 'default_read_only':
          this.defaultReadOnly = effect.value;
          break;
        default:
          break;
      }
    }
    if (this.server) this.server.appliedState = onlySets ? this.state.sql() : '\0dirty';
  }

  private maybeRelease(): void {
    const server = this.server;
    if (!server || this.pinned || this.unitOpen || this.queue.length > 0 || server.txStatus !== TxStatus.Idle) {
      if (this.waiting === 'drain' && server && this.queue.length === 0) {
        this.waiting = 'none';
        this.pump();
      }
      return;
    }
    this.detach(true);
    if (this.waiting === 'drain') {
      this.waiting = 'none';
      this.pump();
    }
  }

  onServerClose(conn: ServerConnection, error: Error | undefined): void {
    if (conn !== this.server || this.closed) return;
    this.clearServerFull();
    const node = this.serverNode!;
    const midMessage = (this.need > 0 && !this.dropping) || this.headerLength > 0;
    const hadWork = this.queue.length > 0 || this.unitOpen;
    const inTransaction = conn.txStatus !== TxStatus.Idle;
    this.ctx.nodeBroken(node.name, error);
    this.ctx.metrics.serverErrors.labels(node.name).inc();
    const pool = this.serverPool!;
    this.server = undefined;
    this.serverNode = undefined;
    this.serverPool = undefined;
    this.attachedForWaiter = false;
    node.inflight--;
    this.queue.clear();
    this.pendingEffects = [];
    this.unitHadError = false;
    this.need = 0;
    this.headerLength = 0;
    pool.discard(conn);
    if (hadWork && !inTransaction && !midMessage && this.replay(node.name)) return;
    this.replayWindow.close();
    if (midMessage) {
      // the client holds part of a message: its stream cannot be repaired, and nothing may follow
      // (an ErrorResponse would be read as the rest of that message, e.g. as a row's last value);
      // the client sees its connection end, as if the server had died under it
      this.ctx.log.warn({ node: node.name, user: this.user }, 'server connection lost in the middle of a message: closing the client');
      this.close();
      return;
    }
    if (this.pinned) {
      this.sendToClient(errorResponse({ severity: 'FATAL', code: SqlState.connectionFailure, message: `server connection to node ${node.name} lost; this session's state (temporary tables, LISTEN, session locks) is gone` }));
      this.close();
      return;
    }
    const reason = this.serverFatal === undefined ? '' : ` (${this.serverFatal})`;
    this.serverFatal = undefined;
    if (!hadWork && !inTransaction) return;
    if (inTransaction) this.orphanedTransaction = true;
    if (inTransaction && !hadWork) this.orphanNotice = `connection to node ${node.name} lost${reason}; the transaction was rolled back`;
    this.clientTxStatus = inTransaction ? TxStatus.Failed : TxStatus.Idle;
    if (hadWork) {
      this.sendToClient(
        errorResponse({
          severity: 'ERROR',
          code: SqlState.connectionFailure,
          message: `connection to node ${node.name} lost${reason}${inTransaction ? '; the transaction was rolled back' : ''}`,
          hint: inTransaction ? 'The transaction did not commit unless it was already acknowledged. Issue ROLLBACK and retry.' : 'The statement may or may not have completed. It is safe to retry reads.',
        }),
      );
      if (this.unitOpen) this.skipUntilSync = true;
      else this.sendToClient(readyForQuery(this.clientTxStatus));
    }
    if (this.waiting === 'drain') this.waiting = 'none';
    this.pump();
  }

  /**
   * The connection was lost under reads that the client has had no byte of: they run again, once,
   * on whatever connection the router picks now (the node that failed is being checked). Returns
   * false when they may not (see openReplayWindow).
   */
  private replay(node: string): boolean {
    const bytes = this.replayWindow.take(this.clientBytes, node);
    if (bytes === undefined) return false;
    this.unitOpen = false;
    this.skipUntilSync = false;
    this.serverFatal = undefined;
    this.waiting = 'none';
    this.reader.unshift(bytes);
    this.ctx.log.warn({ node, user: this.user }, 'server connection lost before a read was answered: running it again');
    this.pump();
    return true;
  }

  // ---------------------------------------------------------------- answers pgrelay makes itself

  /** The server connection of the client's transaction was lost: only ROLLBACK (or COMMIT) ends it. */
  private answerOrphaned(classification: Classification | undefined, simple: boolean): void {
    const ends = classification?.effects.some((e) => e.type === 'rollback' || e.type === 'commit') ?? false;
    if (ends && simple) {
      this.orphanedTransaction = false;
      this.orphanNotice = undefined;
      this.clientTxStatus = TxStatus.Idle;
      this.txEffects = [];
      this.sendToClient(commandComplete('ROLLBACK'));
      this.sendToClient(readyForQuery(TxStatus.Idle));
      return;
    }
    const notice = this.orphanNotice;
    this.orphanNotice = undefined;
    this.sendToClient(
      notice === undefined
        ? errorResponse({ severity: 'ERROR', code: SqlState.inFailedTransaction, message: 'current transaction is aborted, commands ignored until end of transaction block' })
        : errorResponse({ severity: 'ERROR', code: SqlState.connectionFailure, message: notice, hint: 'The transaction did not commit. Issue ROLLBACK and retry.' }),
    );
    if (simple) this.sendToClient(readyForQuery(TxStatus.Failed));
    else {
      this.unitOpen = true;
      this.skipUntilSync = true;
    }
  }

  /** A DEALLOCATE of the text that must not reach the shared server connection (see classify/deallocate.ts). */
  private refusedDeallocate(classification: Classification, alone: boolean): DeallocateRefusal | undefined {
    if (classification.effects.length === 0) return undefined;
    return refusedDeallocate(classification, { isOwn: (name) => this.statements.has(name), serverPrefix: SERVER_STATEMENT_PREFIX, alone });
  }

  /** DEALLOCATE of a protocol-level statement: only the client's name goes (the server one is shared). */
  private answerDeallocate(classification: Classification): boolean {
    if (!isLoneDeallocate(classification)) return false;
    const effect = classification.effects[0]!;
    if (effect.type !== 'deallocate') return false;
    // DEALLOCATE ALL forgets the client's names (a pinned client's own connection runs it)
    if (effect.name === null ? this.pinned : !this.statements.has(effect.name)) return false;
    const statement = effect.name === null ? undefined : this.statements.get(effect.name)!;
    if (this.queue.length === 0) {
      this.answerDeallocated(effect.name, statement);
      return true;
    }
    // behind work still in flight: whether it succeeds depends on how that work ends (a failed
    // transaction refuses it), so the answer and what the client sent after it wait for that
    this.queue.push(Expect.SyntheticDeallocate, { classification, text: effect.name ?? '', statement });
    this.waiting = 'drain';
    return true;
  }

  private answerDeallocated(name: string | null, statement: ServerStatement | undefined): void {
    if (this.clientTxStatus === TxStatus.Failed) {
      // as PostgreSQL: nothing runs in a failed transaction, the statement stays
      this.sendToClient(errorResponse({ severity: 'ERROR', code: SqlState.inFailedTransaction, message: 'current transaction is aborted, commands ignored until end of transaction block' }));
    } else {
      if (statement === undefined) this.statements.clear();
      else if (this.statements.get(name!) === statement) this.statements.delete(name!);
      this.sendToClient(commandComplete(statement === undefined ? 'DEALLOCATE ALL' : 'DEALLOCATE'));
    }
    this.sendToClient(readyForQuery(this.clientTxStatus));
  }

  /** An error pgrelay raises for the unit that is starting (nothing of it reached a server). */
  private failUnit(error: unknown): void {
    const proxyError = toProxyError(error);
    this.ctx.log.warn({ user: this.user, sqlstate: proxyError.sqlstate, err: proxyError.message }, 'unit failed in pgrelay');
    this.sendToClient(errorResponse({ severity: 'ERROR', code: proxyError.sqlstate, message: proxyError.message }));
    const code = this.clientCode;
    if (code === FrontendCode.Query || code === FrontendCode.FunctionCall) {
      this.sendToClient(readyForQuery(this.clientTxStatus));
    } else {
      this.unitOpen = true;
      this.skipUntilSync = true;
    }
  }

  /**
   * A ParseComplete or CloseComplete pgrelay answers itself: part of the replay window's heads,
   * or skipped when the client already has it from before a replay.
   */
  private sendHead(data: Buffer): void {
    const code = data[0]!;
    if (this.replayWindow.alreadySent(code)) return;
    this.replayWindow.reachedClient(code, data.length);
    this.sendToClient(data);
  }

  private sendToClient(data: Buffer): void {
    if (this.closed) return;
    this.clientBytes += data.length;
    this.ctx.metrics.addBytesOut(data.length);
    if (this.collectingClientOut) this.clientOut.push(data);
    else this.writeClient(data);
  }

  private writeClient(data: Buffer): void {
    if (!this.socket.write(data, this.onClientWritten) && this.server) this.server.socket.pause();
  }

  /** Writes what a server chunk's scan gathered for the client. */
  private flushClientOut(): void {
    this.collectingClientOut = false;
    const out = this.clientOut;
    if (out.length === 0) return;
    if (!this.closed) {
      if (out.length === 1) this.writeClient(out[0]!);
      else {
        this.socket.cork();
        for (const data of out) this.writeClient(data);
        this.socket.uncork();
      }
    }
    out.length = 0;
  }

  private fatal(error: unknown): void {
    const proxyError = toProxyError(error);
    if (!(error instanceof ProxyError)) this.ctx.log.error({ err: error instanceof Error ? error.message : String(error), user: this.user }, 'session failed');
    this.sendToClient(errorResponse({ severity: 'FATAL', code: proxyError.sqlstate, message: proxyError.message }));
    this.close();
  }

  /** Cancels the query this client is running, on the server connection running it. */
  cancel(): void {
    const server = this.runningOn();
    if (server) this.ctx.cancel(server);
  }

  /** pgrelay is stopping: the client is told why, then closed. */
  shutdown(): void {
    if (this.closed) return;
    this.sendToClient(errorResponse({ severity: 'FATAL', code: SqlState.adminShutdown, message: 'terminating connection: pgrelay is shutting down' }));
    this.close();
  }

  /** Ends the session: an unfinished transaction's connection is destroyed (the server rolls it back). */
  close(): void {
    if (this.closed) return;
    // what was gathered for the client goes before the end (a FATAL, say)
    this.flushClientOut();
    this.closed = true;
    if (this.server) {
      const clean = this.queue.length === 0 && !this.unitOpen && this.server.txStatus === TxStatus.Idle && !this.pinned && !this.heldReads;
      this.detach(clean);
    }
    // the client goes away with bytes it borrowed still queued: that connection is not reused
    const pending = this.pendingGiveBack;
    this.pendingGiveBack = [];
    for (const { conn, pool } of pending) pool.discard(conn);
    if (this.pinned) this.ctx.pinned(-1);
    this.socket.end();
    this.socket.destroySoon?.();
    this.ctx.sessionClosed(this);
  }
}

/** `BEGIN`, `BEGIN WORK|TRANSACTION`, `START TRANSACTION`: no options, no comment (hints stay routed) */
const PLAIN_BEGIN = /^\s*(?:begin(?:\s+(?:work|transaction))?|start\s+transaction)\s*;?\s*$/i;

const CLOSE_UNNAMED_STATEMENT = message(FrontendCode.Close, (w) => w.int8(0x53).cstring(''));

function framed(code: number, body: Buffer, length: number): Buffer {
  const out = Buffer.allocUnsafe(5 + length);
  out[0] = code;
  out.writeInt32BE(length + 4, 1);
  body.copy(out, 5, 0, length);
  return out;
}

/** A connect that failed for want of the server (refused, timed out, shutting down, pool closed). */
export function isUnreachable(error: unknown): boolean {
  return error instanceof ProxyError && (error.sqlstate === SqlState.connectionFailure || error.sqlstate === SqlState.cannotConnectNow || error.sqlstate === SqlState.adminShutdown);
}

/**
 * A statement that fails on the server with the refusal's SQLSTATE and message (for another
 * client's statement: exactly as a DEALLOCATE of a statement that does not exist, 26000; a
 * transaction is aborted as it would be), without touching the server's statements.
 */
function refusalText(refused: DeallocateRefusal): string {
  const body = `BEGIN RAISE EXCEPTION USING ERRCODE = '${refused.sqlstate}', MESSAGE = ${quoteLiteral(refused.message)}; END`;
  return `DO ${quoteLiteral(body)}`;
}

function refuseDeallocate(refused: DeallocateRefusal): Buffer {
  return message(FrontendCode.Query, (w) => w.cstring(refusalText(refused)));
}

/** A Parse message like the one at b[start, end) but with another text and no parameter types. */
function withParseText(b: Buffer, start: number, end: number, name: string, text: string): [Buffer, number, number] {
  const m = message(FrontendCode.Parse, (w) => w.cstring(name).cstring(text).int16(0));
  return [m, 5, m.length];
}

function toProxyError(error: unknown): ProxyError {
  if (error instanceof ProxyError) return error;
  return new ProxyError(SqlState.systemError, 'pgrelay internal error');
}
