import type { Classification } from '../classify/classifier.js';
import { ProxyError, SqlState } from '../errors.js';
import { runInternalQuery } from '../pool/internal-query.js';
import type { Pool } from '../pool/pool.js';
import type { ServerConnection, ServerDataHandler } from '../pool/server-connection.js';
import { TxStatus } from '../protocol/codes.js';
import type { FrameReader } from '../protocol/frame-reader.js';
import { firstDifference } from '../protocol/row-digest.js';
import type { ServerMessageScanner } from '../protocol/server-scanner.js';
import type { Target } from '../routing/router.js';
import { raiseStatement } from '../routing/sync-commit-floor.js';
import { endsTransaction, startsOptimistic, staysOnReplica } from '../routing/unit-route.js';
import type { ClientTransaction } from './client-transaction.js';
import { OptimisticLog, type ParsedStatements } from './optimistic-log.js';
import { replayRuns } from './optimistic-replay.js';
import type { ServerLease } from './server-lease.js';
import type { SessionServices } from './session-services.js';
import type { Step, WaitReason } from './unit-state.js';

/** How long running a transaction's reads again on the primary may take. */
const REPLAY_TIMEOUT_MS = 60_000;

/** What an optimistic transaction needs from where units are placed. */
export interface OptimisticHost {
  readonly lease: ServerLease;
  readonly scanner: ServerMessageScanner;
  readonly tx: ClientTransaction;
  /** the session's handler of its attached connection (given back after the replay) */
  readonly handler: ServerDataHandler;
  /** statements the client parsed before the transaction */
  readonly statements: ParsedStatements;
  park(why: WaitReason, resume: Step | undefined): void;
  resumeWith(next: Step): void;
  failUnit(error: unknown): void;
  isClosed(): boolean;
  /** the unit is placed on the primary; `then` runs once a connection there is attached */
  placeOnPrimary(then: Step): void;
}

/**
 * A transaction begun with a plain BEGIN (held by pgrelay, see ClientTransaction) whose first
 * statement is a plain read runs on a replica (routing.transactions: optimistic) and commits
 * there while it only reads. Before its first statement that may not run there (see
 * staysOnReplica; or once its log passed routing.optimistic_max_bytes), it moves: the replica
 * transaction is rolled back, one is opened on the primary with the same BEGIN, and what ran on
 * the replica (reads, SAVEPOINTs, SET LOCALs, in order) runs again there; the answers are
 * compared (row count and order-insensitive checksums, see OptimisticLog). The same: the
 * statement runs on the primary and the client sees nothing of the move. Different (or a log
 * that cannot run again): the client gets 40001 and its transaction is failed (only ROLLBACK
 * ends it; nothing of it was committed anywhere).
 */
export class OptimisticTransaction {
  /** made by the first optimistic transaction (most clients never run one) */
  private kept: OptimisticLog | undefined;
  /** the replica connection the optimistic transaction runs on */
  private conn: ServerConnection | undefined;
  /** its BEGIN (the client's message), sent again on the primary */
  private begin: Buffer | undefined;
  /** the transaction lost its replica connection while idle there: its next unit places it again (see lostIdle) */
  private homeless: { node: string; runs: Buffer[]; expected: number[] } | undefined;
  /** what such a transaction runs again once placed (see placeAgain) */
  private replaying: { node: string; runs: Buffer[]; expected: number[] } | undefined;
  /** the client's last transaction conflicted: its next one (a retry, likely) starts on the primary */
  private primaryNext = false;

  constructor(
    private readonly services: SessionServices,
    private readonly host: OptimisticHost,
  ) {}

  private get log(): OptimisticLog {
    return (this.kept ??= new OptimisticLog(this.host.statements));
  }

  /** routing.transactions is `optimistic` */
  get enabled(): boolean {
    return this.services.config().routing.transactions === 'optimistic';
  }

  /** A held BEGIN's transaction whose first statement is a plain read starts on a replica. */
  get startsOnReplica(): boolean {
    return this.enabled && !this.primaryNext;
  }

  /** The attached connection runs an optimistic transaction on a replica (its messages are kept). */
  get onReplica(): boolean {
    return this.conn !== undefined && this.conn === this.host.lease.conn;
  }

  /** A client message that ran on the replica (the session calls this once it is done with one). */
  record(reader: FrameReader): void {
    this.log.record(reader.code, reader.buffer, reader.start, reader.end);
  }

  /**
   * A held BEGIN went to `conn` in front of the transaction's first statement (`first`), which
   * wanted `target`: an optimistic transaction starts when that is a plain read on a replica (or
   * a transaction setting a replica runs alike: startsOptimistic). A
   * read that wanted one but went to the primary (no replica qualified: none configured, down,
   * lagging, or behind the client's writes) starts a transaction there like any other: there is
   * nowhere to move it, and running its reads again there could only fail it with 40001.
   */
  begun(conn: ServerConnection, begin: Buffer, target: Target | 'any', first: Classification | undefined): void {
    this.stop();
    this.homeless = undefined;
    this.primaryNext = false;
    const onPrimary = conn.node === this.services.topology.primaryName;
    if (target !== 'replica' || onPrimary || !this.enabled || !startsOptimistic(first)) {
      if (target === 'primary' || onPrimary) this.services.metrics.countTransaction('primary');
      return;
    }
    this.conn = conn;
    this.begin = begin;
    this.log.reset();
    this.host.scanner.digest = this.log.digest;
  }

  /** The attached connection goes back: a transaction that ended on its replica is counted. */
  released(): void {
    if (!this.onReplica) return;
    if (this.conn!.txStatus === TxStatus.Idle) this.services.metrics.countTransaction('replica');
    this.stop();
  }

  private stop(): void {
    this.conn = undefined;
    this.begin = undefined;
    this.host.scanner.digest = undefined;
  }

  /** Whether a unit that wants `target` moves the transaction to the primary before it runs. */
  mustMove(server: ServerConnection, target: Target | 'any', classification: Classification | undefined): boolean {
    if (server !== this.conn || !this.onReplica || server.txStatus !== TxStatus.InTransaction) return false;
    if (target === 'primary' || !staysOnReplica(classification) || this.services.router.refusedOnReplica.has(classification)) return true;
    return this.log.bytes > this.services.config().routing.optimistic_max_bytes && !endsTransaction(classification);
  }

  /** Moves the transaction to the primary (see the class); `then` runs the unit there once its reads are verified. */
  move(then: Step): void {
    const host = this.host;
    const runs = [this.begin!, ...this.log.runs()];
    const expected = this.log.digest.results.slice();
    const unreplayable = this.log.unreplayable;
    this.stop();
    const replica = host.lease.detach();
    if (replica) rollBack(replica.conn, replica.pool);
    this.unplaced(replica?.conn.node ?? 'replica');
    host.placeOnPrimary(() => this.verify(unreplayable === undefined ? runs : runs.slice(0, 1), expected, unreplayable, then));
  }

  /**
   * The replica connection of the optimistic transaction was lost while nothing of the client's
   * was in flight there: instead of failing the transaction, its next unit places it again (see
   * rehome), unless its log cannot run again or the transaction had failed (it ends with the
   * client's ROLLBACK, as a lost one does). True when it will.
   */
  lostIdle(conn: ServerConnection): boolean {
    if (conn !== this.conn || this.log.unreplayable !== undefined || conn.txStatus !== TxStatus.InTransaction) return false;
    this.homeless = { node: conn.node, runs: [this.begin!, ...this.log.runs()], expected: this.log.digest.results.slice() };
    this.conn = undefined;
    this.host.scanner.digest = undefined;
    return true;
  }

  /**
   * A transaction that lost its replica (see lostIdle) is placed again now: the node to avoid,
   * or undefined when there is none. The client's transaction is failed should the placing fail
   * (see unplaced); once placed, `rehome` runs it again there.
   */
  placeAgain(): string | undefined {
    const homeless = this.homeless;
    if (homeless === undefined) return undefined;
    this.homeless = undefined;
    this.replaying = homeless;
    this.unplaced(homeless.node);
    return homeless.node;
  }

  /**
   * The transaction has no server connection until it is placed again and verified: should the
   * placing fail (no primary, a connect refused), the client's transaction is failed (only
   * ROLLBACK ends it), never left to run its next statements outside a transaction.
   */
  unplaced(node: string): void {
    this.host.tx.lost(true, true, node, undefined);
  }

  /**
   * A connection is attached for a transaction that lost its replica (see lostIdle): what it ran
   * runs again there and is compared, as for a move; the same answers: it goes on there (still
   * optimistic on a replica), and the client never knew.
   */
  rehome(then: Step): void {
    const { runs, expected } = this.replaying!;
    this.replaying = undefined;
    this.verify(runs, expected, undefined, then, true);
  }

  /** The transaction has its server connection again (see unplaced). */
  private placed(): void {
    this.host.tx.orphaned = false;
    this.host.tx.status = TxStatus.InTransaction;
  }

  /**
   * The primary connection is attached: the replica's work runs again there (only the BEGIN when
   * it cannot), then `then`, or a conflict: the transaction there is failed with 40001 (raised on
   * the server, so that it is failed there too and ends with the client's ROLLBACK).
   */
  private verify(runs: Buffer[], expected: number[], unreplayable: string | undefined, then: Step, rehomed = false): void {
    const host = this.host;
    const conn = host.lease.conn!;
    const node = host.lease.node!.name;
    const gone = (): boolean => host.isClosed() || conn !== host.lease.conn;
    host.park('connection', undefined);
    const lost = (error: unknown): void => {
      if (gone()) return;
      host.resumeWith(() => {
        host.lease.lost();
        this.services.nodeBroken(node, error instanceof Error ? error : undefined);
        this.primaryNext = true;
        host.tx.lost(true, true, node, undefined);
        host.failUnit(new ProxyError(SqlState.connectionFailure, `connection to node ${node} lost while the transaction moved to it; the transaction is rolled back`));
      });
    };
    void (async () => {
      const result = await replayRuns(conn, runs, REPLAY_TIMEOUT_MS);
      conn.unnamedToken = 0; // the replay used the unnamed statement
      if (gone()) return;
      let why = unreplayable === undefined ? undefined : `it could not move to the primary: ${unreplayable}`;
      if (why === undefined) {
        const at = result.error === undefined ? firstDifference(expected, result.results) : 0;
        if (at < 0 && conn.txStatus === TxStatus.InTransaction) {
          conn.setHandler(host.handler);
          this.placed();
          if (rehomed && node !== this.services.topology.primaryName) {
            // on another replica: still optimistic, its log goes on
            this.conn = conn;
            this.begin = runs[0];
            host.scanner.digest = this.log.digest;
          } else this.services.metrics.countTransaction('moved');
          return host.resumeWith(then);
        }
        if (result.error !== undefined) why = `its BEGIN failed on the primary (${result.error.get('C') ?? 'error'})`;
        else if (at < 0) why = `its transaction was not open on the primary after its statements ran again`;
        else why = `the data it read changed: statement ${at + 1} of it answered differently on the primary`;
      }
      this.services.metrics.countTransaction('conflict');
      this.primaryNext = true;
      const error = conflictError(why);
      await runInternalQuery(conn, raiseStatement(error));
      if (gone()) return;
      conn.setHandler(host.handler);
      this.placed();
      host.resumeWith(() => {
        host.tx.saw(TxStatus.Failed);
        host.failUnit(error);
      });
    })().catch(lost);
  }
}

/** 40001, as PostgreSQL's own serialization failures (drivers, ORMs and retry loops handle it). */
function conflictError(why: string): ProxyError {
  return new ProxyError(SqlState.serializationFailure, `could not serialize access: this transaction read on a replica and ${why}; run it again`);
}

/** Ends the transaction a connection no session holds any more; it goes back to its pool, or is closed. */
function rollBack(conn: ServerConnection, pool: Pool): void {
  runInternalQuery(conn, 'ROLLBACK').then(
    (result) => {
      if (result.error !== undefined || conn.txStatus !== TxStatus.Idle) pool.discard(conn);
      else conn.whenCancelsSettled(() => pool.release(conn));
    },
    () => pool.discard(conn),
  );
}
