import type { Classification } from '../classify/classifier.js';
import type { NodeStatus } from '../cluster/topology.js';
import { ProxyError, SqlState } from '../errors.js';
import type { Pool } from '../pool/pool.js';
import type { ServerConnection, ServerDataHandler } from '../pool/server-connection.js';
import { FrontendCode, TxStatus } from '../protocol/codes.js';
import type { FrameReader } from '../protocol/frame-reader.js';
import { message } from '../protocol/messages.js';
import type { ServerMessageScanner } from '../protocol/server-scanner.js';
import type { Rerouted } from '../metrics/unit-reason.js';
import type { Target } from '../routing/router.js';
import { raiseStatement } from '../routing/sync-commit-floor.js';
import { isReplayable, isUnreachable, onHeldConnection, pinOnReplicaRefusal, staysOnReplica, targetOf } from '../routing/unit-route.js';
import type { ClientTransaction } from './client-transaction.js';
import type { ClientStatements, StatementPayload } from './client-statements.js';
import { OptimisticTransaction } from './optimistic-transaction.js';
import { Expect, type ResponseQueue, SWALLOW } from './response-queue.js';
import type { ServerLease } from './server-lease.js';
import type { SessionEffects } from './session-effects.js';
import { applyState, type SessionState } from './session-state.js';
import type { ReplayWindow } from './replay-window.js';
import type { SessionServices } from './session-services.js';
import type { Step, WaitReason } from './unit-state.js';
import { lookAhead, type AheadHost, type UnitAhead } from './unit-lookahead.js';
import { findExtendedBegin } from './extended-begin.js';
import { DISCARD_SEQUENCES, SequenceAffinity } from './sequence-affinity.js';
import { unitText } from './placeholder-guard.js';
import { opensToOthers, pipelineAfter, pipelineShape, sharedConnection } from './unit-pipelining.js';

/** An extended unit's later messages are looked at up to this many buffered bytes (beyond: the primary). */
const LOOKAHEAD_BYTES = 256 * 1024;

/** The route a FunctionCall message is counted as. */
export const FUNCTION_CALL = 'function call';

/** What placing a unit needs from its session. */
export interface PlacementHost {
  /** the session: its key for read-your-writes, its user and database */
  readonly session: { readonly user: string; readonly database: string };
  /** what handles the attached connection's data and close */
  readonly handler: ServerDataHandler;
  readonly lease: ServerLease;
  readonly scanner: ServerMessageScanner;
  readonly queue: ResponseQueue<StatementPayload>;
  /** units run again after a lost connection avoid that node once */
  readonly replayWindow: ReplayWindow;
  /** the settings to apply on a connection before the unit runs */
  readonly state: SessionState;
  /** a held BEGIN goes in front of the transaction's first statement */
  readonly tx: ClientTransaction;
  /** the session's transaction defaults pick a target (see targetOf) */
  readonly effects: SessionEffects;
  /** the client's statements (an optimistic transaction runs them again on the primary) */
  readonly statements: ClientStatements;
  /** the client messages (at the unit's first one when it starts: see ReplayWindow) */
  readonly reader: FrameReader;
  /** bytes sent to the client so far */
  clientBytes(): number;
  /** an extended unit has begun */
  openUnit(): void;
  /** a message of a transaction whose connection was lost (it fails, up to Sync) */
  answerOrphaned(classification: Classification | undefined): void;
  pinned(): boolean;
  unitOpen(): boolean;
  isClosed(): boolean;
  /** the unit waits for `why`, holding the message being handled; `resume`: its rest, if known now */
  park(why: WaitReason, resume: Step | undefined): void;
  /** the parked unit's wait is over: `next` runs */
  resumeWith(next: Step): void;
  /** pgrelay answers the unit with this error (nothing of it reached a server) */
  failUnit(error: unknown): void;
  /** the classification of a statement the client prepared ('' = its unnamed statement) */
  statement(name: string): StatementPayload | undefined;
  /** the message being handled is handled again once more client bytes are in (see lookAhead) */
  awaitInput(): void;
}

/**
 * Where a unit runs, and getting it there. A unit stays on the connection the session holds when
 * it may (a transaction, a pin, pipelined reads; see onHeldConnection), else the connection goes
 * back and the unit is placed: the router gives a Route, the node's pool a connection, which gets
 * the session's settings (and a held BEGIN) before the unit. A unit that must wait is parked (no primary yet, no free connection, a node whose
 * connect failed and whose health is being decided: then routed once more); a refusal or a
 * failed connect is the unit's error. `then` runs once the connection is attached: at once when
 * nothing had to wait, else as the parked unit's resume step.
 */
export class UnitPlacement {
  /** the unit being placed was routed again after a failed connect (once per unit) */
  private rerouted = false;
  /** the unit being placed was placed again after its connection was lost during the state replay */
  private placedAgain = false;
  /** the unit placed last runs on the primary because a replica refused it (see ServerReplies): counted as this */
  private refusedOnReplica: Rerouted | undefined;
  /** what the unit that attached the current server connection asked for ('primary' too once a unit for the primary ran on it) */
  attachTarget: Target | 'any' = 'any';
  /** when the unit now running began (pgrelay_query_duration_seconds) */
  unitBeganAt = 0;
  /** the look-ahead's questions to this session (see aheadOfUnit), made on first use */
  private ahead: AheadHost | undefined;
  private aheadRunOnly: AheadHost | undefined;
  /** sequence state (currval/lastval) stays the client's own */
  private readonly sequences = new SequenceAffinity();
  /** a transaction of a held BEGIN that runs on a replica while it only reads */
  readonly optimistic: OptimisticTransaction;

  constructor(
    private readonly services: SessionServices,
    private readonly host: PlacementHost,
  ) {
    // a replica refused this user's reads in this database as serializable before (0A000)
    if (services.router.refusedOnReplica.serializable(host.session.user, host.session.database)) host.effects.serverSerializable = true;
    this.optimistic = new OptimisticTransaction(services, {
      park: host.park, resumeWith: host.resumeWith, failUnit: host.failUnit, isClosed: host.isClosed, // not `...host`: a spread object gets a hidden class of its own (~0.6 KB per session)
      tx: host.tx,
      lease: host.lease,
      scanner: host.scanner,
      handler: host.handler,
      statements: { parseBody: (name) => host.statements.parseBody(name) },
      placeOnPrimary: (then) => this.place('primary', undefined, then),
    });
  }

  /**
   * A BEGIN outside a transaction, with nothing under way, is answered here and sent with the
   * transaction's first statement: the answers to send, or undefined when it goes to a server now.
   */
  deferBegin(classification: Classification, text: string, frame: Buffer): Buffer[] | undefined {
    const host = this.host;
    const idle = !host.lease.conn && !host.unitOpen() && host.queue.length === 0;
    return host.tx.deferBegin(classification, text, frame, { idle, pinned: host.pinned(), defaultReadOnly: host.effects.defaultReadOnly, optimistic: this.optimistic.enabled });
  }

  /**
   * A BEGIN sent through the extended protocol (the Parse or Bind being handled starts it, see
   * findExtendedBegin) is held as a simple-Query one, and a SAVEPOINT sent so behind a held BEGIN
   * is held with it (see ClientTransaction.holdSavepoint): its messages are taken (the reader is
   * past its Execute) and the command tag to answer with is returned; 'incomplete': handled again
   * once more client bytes are in; undefined: it goes to a server now.
   */
  holdExtendedBegin(classification: Classification, text: string): { tag: string; parsed: string | undefined; described: boolean } | 'incomplete' | undefined {
    const host = this.host;
    const reader = host.reader;
    // a SAVEPOINT behind a held BEGIN is held with it (see ClientTransaction.holdSavepoint)
    const savepoint = classification.effects[0]?.type !== 'begin';
    // the unit may have begun without a server (pgjdbc closes statements it dropped in front of the BEGIN)
    const idle = !host.lease.conn && host.queue.length === 0;
    const tag = savepoint ? (host.tx.holdsSavepoint(classification, text) ? 'SAVEPOINT' : undefined) : host.tx.extendedBeginTag(classification, text, { idle, pinned: host.pinned(), defaultReadOnly: host.effects.defaultReadOnly, optimistic: this.optimistic.enabled });
    if (tag === undefined) return undefined;
    const preparedBegin = (name: string): boolean => host.statement(name)?.text === text;
    const found = findExtendedBegin(reader.buffer.subarray(reader.frameStart, reader.end), reader.unread(), preparedBegin);
    if (found === 'incomplete') {
      host.awaitInput();
      return found;
    }
    if (found === undefined) return undefined;
    if (savepoint) host.tx.addSavepoint(text);
    else host.tx.holdExtendedBegin(text);
    for (let i = 1; i < found.messages; i++) reader.next();
    return { tag, parsed: found.parsed, described: found.described };
  }

  /** Where a statement wants to run, given the session's transaction defaults. */
  targetOf(classification: Classification | undefined): Target | 'any' {
    const target = targetOf(classification, { beginDeferred: this.host.tx.beginDeferred, defaultReadOnly: this.host.effects.defaultReadOnly, optimistic: this.optimistic.startsOnReplica });
    // serializable by default (the client's own default, or its role's or database's as a replica
    // told): a hot standby refuses every transaction of the session (0A000);
    // a shape a replica refused as a write (25006) goes to the primary
    return target === 'replica' && (this.host.effects.serializable || this.services.router.refusedOnReplica.has(classification)) ? 'primary' : target;
  }

  /** The Query that fails a pinning statement of a transaction on a replica on the server, in order (see pinOnReplicaRefusal). */
  pinRefusal(classification: Classification): Buffer | undefined {
    const server = this.host.lease.conn;
    const refused = pinOnReplicaRefusal(classification, server !== undefined && server.node !== this.services.topology.primaryName && server.txStatus !== TxStatus.Idle);
    return refused && message(FrontendCode.Query, (w) => w.cstring(raiseStatement(refused)));
  }

  /** A simple Query or FunctionCall: `then` runs once it has its server connection. */
  beginSimpleUnit(target: Target | 'any', route: string, classification: Classification | undefined, then: Step): void {
    // a Query inside an extended unit runs on the unit's connection
    if (this.host.unitOpen()) return this.ensureServer(undefined, classification, then);
    this.ensureServer(target, classification, () => {
      this.unitBegins(route, classification, route === FUNCTION_CALL ? undefined : classification);
      then();
    });
  }

  /** A message of an extended-protocol unit: `then` runs once the unit has its server connection. */
  beginExtendedUnit(classification: Classification | undefined, then: Step): void {
    if (this.host.tx.orphaned) return this.host.answerOrphaned(classification);
    if (this.host.unitOpen() && this.host.lease.conn) {
      // a unit of an optimistic transaction that parsed on its replica (Parse, Describe, Flush) and now runs what may not run there moves
      return this.optimistic.onReplica && this.aheadOfUnit(true, classification) === 'write' ? this.ensureServer('primary', undefined, then) : then();
    }
    let target = this.targetOf(classification);
    let decidedBy = classification;
    if (this.optimistic.onReplica) {
      // an optimistic transaction's unit stays on its replica, or moves, as a whole, by the statements it runs
      const ahead = this.aheadOfUnit(true, classification);
      if (ahead === 'incomplete') return this.host.awaitInput();
      target = ahead === 'write' ? 'primary' : 'replica';
      decidedBy = undefined;
    } else if (target !== 'primary' && (this.unitMayMove() || this.host.tx.beginDeferred)) {
      // a unit that starts with a read and writes later runs on the primary as a whole
      const ahead = this.aheadOfUnit(false, classification);
      if (ahead === 'incomplete') return this.host.awaitInput();
      if (ahead === 'write') target = 'primary';
    }
    this.ensureServer(target, decidedBy, () => {
      this.host.openUnit();
      this.unitBegins(classification?.route ?? 'any', classification, classification);
      then();
    });
  }

  /** The unit is placed by its own statements: not in a transaction, not pinned. */
  private unitMayMove(): boolean {
    const server = this.host.lease.conn;
    return !this.host.pinned() && this.host.tx.status === TxStatus.Idle && (server === undefined || server.txStatus === TxStatus.Idle);
  }

  /** Whether the extended unit's later messages (those already received) write (see lookAhead). */
  private aheadOfUnit(runOnly: boolean, current: Classification | undefined): UnitAhead {
    const reader = this.host.reader;
    if (reader.pending > LOOKAHEAD_BYTES) return 'write';
    const host = runOnly ? (this.aheadRunOnly ??= this.aheadHost(true)) : (this.ahead ??= this.aheadHost(false));
    return lookAhead(reader.buffer.subarray(reader.frameStart, reader.end), reader.unread(), host, current);
  }

  /** What lookAhead asks this session (made once: every extended unit outside a transaction looks ahead). */
  private aheadHost(runOnly: boolean): AheadHost {
    return {
      classify: (text) => this.services.classifier.classify(text),
      statement: (name) => this.host.statement(name)?.classification,
      // in an optimistic transaction, a statement that may not run on its replica moves the whole unit
      wantsPrimary: (classification) => (runOnly ? !staysOnReplica(classification) : this.targetOf(classification) === 'primary'),
      runOnly,
    };
  }

  private unitBegins(route: string, counted: Classification | undefined, replayed: Classification | undefined): void {
    this.unitBeganAt = performance.now();
    this.services.countUnit(this.host.lease.node!, this.refusedOnReplica ?? route, counted);
    this.refusedOnReplica = undefined;
    // a read outside a transaction may run again when its connection is lost
    const replayable = isReplayable(replayed, { pinned: this.host.pinned(), clientTxStatus: this.host.tx.status, serverTxStatus: this.host.lease.conn!.txStatus });
    this.host.replayWindow.unitStarts(this.host.reader, replayable, this.host.clientBytes());
    // a unit on a shared connection: may others' still be queued behind it?
    if (this.host.lease.pipelined) this.host.lease.unitStarts(pipelineShape(this.services.config().pool, this.host, replayed));
  }

  /**
   * Runs `then` once a server connection suitable for `target` is attached (undefined = whatever
   * is attached, else any node); parks the message meanwhile.
   */
  ensureServer(target: Target | 'any' | undefined, classification: Classification | undefined, then: Step): void {
    const host = this.host;
    const server = host.lease.conn;
    if (server && target !== undefined && this.optimistic.mustMove(server, target, classification)) {
      // answers still in flight on the replica (pipelined units) first: they are part of what moves
      if (host.queue.length === 0) return this.optimistic.move(then);
      // mid-run with answers still coming (statements pipelined behind a Flush): it cannot move without losing them; it runs there (a write fails with 25006)
      if (host.unitOpen()) return then();
      return host.park('drain', () => this.ensureServer(target, classification, then));
    }
    const lostOn = server ? undefined : this.optimistic.placeAgain();
    if (lostOn !== undefined) {
      // an optimistic transaction that lost its replica: on another node, its reads verified there
      host.replayWindow.avoid = lostOn;
      return this.place(target === 'primary' ? 'primary' : 'replica', undefined, () => this.optimistic.rehome(() => this.ensureServer(target, classification, then)));
    }
    if (server) {
      const onPrimary = server.node === this.services.topology.primaryName;
      // a write on the held primary connection counts for read-your-writes, whatever attached it
      if (target === 'primary' && onPrimary) this.attachTarget = 'primary';
      if (host.pinned() || host.unitOpen() || server.txStatus !== TxStatus.Idle || target === undefined || target === 'any') return then();
      const held = onHeldConnection(target, { onPrimary, busy: host.queue.length > 0 });
      if (held === 'stay') return then();
      if (held === 'drain') return host.park('drain', () => this.ensureServer(target, classification, then));
      this.release(true);
    }
    // a pinned session's connection (pool.mode: session) is a primary one: a pin never fails a write
    this.place(host.pinned() ? 'primary' : (target ?? 'any'), classification, then);
  }

  /** `fenceWaited`: the read already waited for a replica past its fence (routing.fence_wait_ms) */
  place(target: Target | 'any', classification: Classification | undefined, then: Step, fenceWaited = false): void {
    const services = this.services;
    const host = this.host;
    // units a replica refused as writes (25006) run again: on the primary
    if (host.replayWindow.toPrimary) {
      this.refusedOnReplica = host.replayWindow.toPrimary;
      host.replayWindow.toPrimary = undefined;
      target = 'primary';
    }
    let constraints = target === 'replica' ? services.readConstraints(host.session, classification) : undefined;
    const avoid = host.replayWindow.avoid;
    if (avoid !== undefined) {
      // units run again after a lost connection: not on that node while its health is decided
      if (target === 'replica') constraints = { ...constraints, avoidNode: avoid };
      host.replayWindow.avoid = undefined;
    }
    const route = services.router.route(target === 'replica' ? 'replica' : 'primary', constraints);
    if (route.kind === 'refuse') return host.failUnit(route.error);
    if (route.kind === 'wait') {
      host.park('primary', undefined);
      services.waitForPrimary((error) => {
        if (!host.isClosed()) host.resumeWith(error ? () => host.failUnit(error) : () => this.place(target, classification, then));
      });
      return;
    }
    if (avoid !== undefined && route.node.name === avoid) {
      // run again on the node whose connection was just lost (nothing else may serve them): once its
      // health check has decided, so that they go neither to pooled connections that died with the
      // lost one (their close not seen yet) nor to a node on its way down
      host.park('node', undefined);
      services.whenNodeDecided(avoid, () => {
        if (!host.isClosed()) host.resumeWith(() => this.place(target, classification, then, fenceWaited));
      });
      return;
    }
    if (route.fallback === 'consistency' && !fenceWaited && avoid === undefined) {
      // read-your-writes: no replica is known past the client's last write yet; wait briefly for one
      const waiting = services.waitForFence(host.session, classification, () => {
        if (!host.isClosed()) host.resumeWith(() => this.place(target, classification, then, true));
      });
      if (waiting) return host.park('fence', undefined);
    }
    if (route.fallback) services.metrics.countPrimaryRead(route.fallback);
    const node = route.node;
    let pool: Pool;
    try {
      pool = services.pools.get(node.name, host.session.user, host.session.database);
    } catch (error) {
      return host.failUnit(error);
    }
    // enough connections busy (pool.pipeline_after for reads; else all of them): a self-contained unit
    // may queue behind others' on one (pool.pipeline_depth); one that takes a connection opens it to
    // such units when reads share early (pipeline_after > 0) or it took the pool's last connection
    const poolConfig = services.config().pool;
    const pipelined = pipelineShape(poolConfig, host, classification);
    const after = pipelined === undefined ? 0 : pipelineAfter(poolConfig, pipelined);
    if (pipelined !== undefined && pool.sharesAfter(after)) {
      const shared = sharedConnection(pool, pipelined, poolConfig.pipeline_depth, host.state.sql());
      if (shared !== undefined) {
        this.attach(shared, node, pool, target, classification, undefined, pipelined);
        return then();
      }
    }
    let sync = true;
    let answered = false;
    let replaying = false;
    // a unit that reads a custom parameter by name: not on a backend where another client defined it
    const text = classification?.namesSettings ? unitText(host.reader, (name) => host.statement(name)?.text) : undefined;
    let replaced = false;
    const onConnection = (error: Error | undefined, conn: ServerConnection | undefined): void => {
      answered = true;
      if (host.isClosed()) {
        if (conn) pool.release(conn);
        return;
      }
      if (conn && !replaced && host.effects.placeholders.wouldSeeForeign(conn, classification, text)) {
        replaced = true;
        replaying = true; // the unit waits for the new connection
        pool.replace(conn, onConnection);
        return;
      }
      if (error || !conn) {
        if (error instanceof ProxyError && error.sqlstate === SqlState.tooManyConnections) services.metrics.poolWaitTimeouts.labels(node.name).inc();
        else {
          services.nodeBroken(node.name, error);
          if (!this.rerouted && isUnreachable(error)) {
            // the node may be going down (failover): route the unit again once its health is decided
            this.rerouted = true;
            host.park('node', undefined);
            services.whenNodeDecided(node.name, () => {
              if (!host.isClosed()) host.resumeWith(() => this.place(target, classification, then));
            });
            return;
          }
        }
        this.rerouted = false;
        const failure = error ?? new Error('no server connection');
        if (sync) host.failUnit(failure);
        else host.resumeWith(() => host.failUnit(failure));
        return;
      }
      this.rerouted = false;
      const wanted = host.state.sql();
      if (conn.appliedState !== wanted) {
        // the session's settings first, and their answer before anything of the unit is sent
        replaying = true;
        void applyState(conn, wanted, node.name).then((failure) => {
          if (failure) pool.discard(conn);
          if (host.isClosed()) {
            if (!failure) pool.release(conn);
            return;
          }
          if (failure === undefined) return host.resumeWith(() => this.attachAndRun(conn, node, pool, target, classification, text, then, opensToOthers(pipelined, after, pool)));
          if (failure.cause !== undefined && !this.placedAgain) {
            // the connection was lost, and nothing of the unit was sent: it is placed again, once
            this.placedAgain = true;
            return host.resumeWith(() => this.place(target, classification, then));
          }
          this.placedAgain = false;
          host.resumeWith(() => host.failUnit(failure));
        });
        return;
      }
      this.attach(conn, node, pool, target, classification, text, opensToOthers(pipelined, after, pool));
      if (sync) then();
      else host.resumeWith(then);
    };
    pool.acquire(onConnection, this.sequences.preferred());
    sync = false;
    if (!answered) {
      host.park('connection', undefined);
      services.metrics.countPoolWait(node.name);
    } else if (replaying) host.park('connection', undefined);
  }

  private attachAndRun(conn: ServerConnection, node: NodeStatus, pool: Pool, target: Target | 'any', classification: Classification | undefined, text: string | undefined, then: Step, pipelined: object | undefined): void {
    this.placedAgain = false;
    this.attach(conn, node, pool, target, classification, text, pipelined);
    then();
  }

  /** `text`: the unit's first SQL text, when it names settings (see PlaceholderGuard) */
  private attach(conn: ServerConnection, node: NodeStatus, pool: Pool, target: Target | 'any', classification: Classification | undefined, text: string | undefined, pipelined?: object): void {
    this.host.scanner.reset();
    this.host.scanner.digest = undefined;
    this.attachTarget = target;
    this.host.lease.attach(conn, node, pool, this.host.handler, pipelined);
    const placeholders = this.host.effects.placeholders;
    placeholders.attached(conn);
    const definitions = placeholders.definitionsFor(conn, classification, text);
    if (definitions !== undefined) {
      this.host.lease.inject(definitions);
      this.host.queue.push(Expect.Query | SWALLOW);
    }
    if (this.sequences.attached(conn, node.name === this.services.topology.primaryName, classification, this.host.pinned())) {
      this.host.lease.inject(DISCARD_SEQUENCES);
      this.host.queue.push(Expect.Query | SWALLOW);
    }
    const begin = this.host.tx.takeBegin();
    if (begin !== undefined) {
      this.host.lease.inject(begin);
      this.host.queue.push(Expect.Query | SWALLOW);
      this.optimistic.begun(conn, begin, target, classification);
    }
  }

  /** Gives the server connection back (to its pool, or destroys it when its state is unknown). */
  release(reusable: boolean): void {
    if (!this.host.lease.conn) return;
    this.optimistic.released();
    this.host.replayWindow.close();
    this.host.queue.clear();
    this.host.lease.release(reusable && !this.host.scanner.inMessage);
  }
}
