import type net from 'node:net';
import type { NodeStatus } from '../cluster/topology.js';
import type { Pool } from '../pool/pool.js';
import type { ServerConnection, ServerDataHandler } from '../pool/server-connection.js';
import { type PipelineMember, ServerPipeline } from '../pool/server-pipeline.js';
import { FrontendCode } from '../protocol/codes.js';

/** What the lease needs from its session. */
export interface LeaseHost {
  /** the client's socket */
  readonly socket: net.Socket;
  /** the client may be read now (the session is open and not waiting) */
  mayReadClient(): boolean;
  /** the client socket drained: messages it sent meanwhile are handled (see clientFull) */
  drained(): void;
}

/** Who learns when a node starts and finishes serving a client (the router's balancing figures). */
export interface UnitObserver {
  started(node: NodeStatus): void;
  /** `elapsedMs` undefined: the connection was lost (no latency sample) */
  finished(node: NodeStatus, elapsedMs: number | undefined): void;
}

/** Answers queued for a client that does not read, beyond which its own messages wait (bytes). */
const MAX_UNREAD_OUTPUT = 1 << 20;

/**
 * A session's hold on one server connection, and the bytes between the two sockets:
 * - attach / give back / discard: a connection goes back to its pool only once the client has
 *   written every byte borrowed from its read buffer (server chunks are views of that buffer);
 *   while the client socket still queues some, the server is not read (backpressure to it);
 * - client → server: forwarded client messages are gathered into runs of the bytes they came
 *   in, and written together at the end of a batch (one write, or a corked writev);
 * - a server whose write buffer is full stops the client from being read until it drains;
 * - server → client: answers gathered during one server chunk are written together.
 */
export class ServerLease {
  /** the attached connection, its node and the pool that lent it (it takes it back: no lookup) */
  conn: ServerConnection | undefined;
  node: NodeStatus | undefined;
  private pool: Pool | undefined;
  private attachedAt = 0;
  /** the connection is shared with other sessions' units (see ServerPipeline) */
  private member: PipelineMember | undefined;

  /** the client socket still holds bytes borrowed from a server connection's read buffer */
  heldReads = false;
  /** connections to give back once the client has written what it borrowed from them */
  private pendingGiveBack: { conn: ServerConnection; pool: Pool }[] = [];
  /** the server socket whose write buffer is full: the client is not read until it drains */
  private serverFull: net.Socket | undefined;

  /** a batch of client messages is being handled: writes to the server wait for its end */
  private batching = false;
  private readonly serverOut: Buffer[] = [];
  private outConn: ServerConnection | undefined;
  // a run of contiguous client bytes not yet written to the server
  private runBuffer: Buffer | undefined;
  private runStart = 0;
  private runEnd = 0;

  /** answers for the client made while a server chunk is scanned go out together at its end */
  private readonly clientOut: Buffer[] = [];
  private collectingClientOut = false;

  constructor(
    private readonly host: LeaseHost,
    private readonly observer: UnitObserver,
  ) {}

  // ------------------------------------------------------------------ the connection

  /** `pipelined`: the shape of a self-contained unit, which may share the connection (ServerPipeline) */
  attach(conn: ServerConnection, node: NodeStatus, pool: Pool, handler: ServerDataHandler, pipelined?: object): void {
    this.conn = conn;
    this.node = node;
    this.pool = pool;
    this.attachedAt = performance.now();
    if (pipelined === undefined) conn.setHandler(handler);
    else this.member = ServerPipeline.join(conn, handler, pipelined, (reusable) => (reusable ? giveBack(conn, pool) : pool.discard(conn)));
    this.observer.started(node);
  }

  /** The connection is shared with other sessions' units (see ServerPipeline). */
  get pipelined(): boolean {
    return this.member !== undefined;
  }

  /** A unit of the session starts on its shared connection: `shape` when it is self-contained (see unit-pipelining.ts). */
  unitStarts(shape: object | undefined): void {
    if (this.member !== undefined) this.member.approved = shape;
  }

  /**
   * The connection to send the client's cancel to: the one running this session's unit now, not
   * while it waits behind another's (on a shared connection the cancel is noted: see ServerPipeline.cancelling).
   */
  cancelTarget(): ServerConnection | undefined {
    const member = this.member;
    return member === undefined || member.pipeline.cancelling(member) ? this.conn : undefined;
  }

  /**
   * Gives the connection back to its pool (reusable), or destroys it (its state is unknown: a
   * transaction or a message under way).
   */
  release(reusable: boolean): void {
    const conn = this.conn;
    if (!conn) return;
    const pool = this.pool!;
    this.flushRun();
    this.flushServerOut();
    const member = this.member;
    this.unset(true);
    if (member !== undefined) member.pipeline.leave(member, reusable);
    else if (!reusable || conn.closed) pool.discard(conn);
    // the client still writes bytes that live in this connection's read buffer: it stays paused
    else if (this.heldReads) this.pendingGiveBack.push({ conn, pool });
    else giveBack(conn, pool);
  }

  /**
   * Lets go of the connection without giving it back: the caller owns it. Undefined when it
   * cannot be handed over (closed, or the client still writes bytes borrowed from its read
   * buffer): it is then discarded here.
   */
  detach(): { conn: ServerConnection; pool: Pool } | undefined {
    const conn = this.conn;
    if (!conn) return undefined;
    const pool = this.pool!;
    this.flushRun();
    this.flushServerOut();
    this.unset(true);
    if (!this.heldReads && !conn.closed) return { conn, pool };
    pool.discard(conn);
    return undefined;
  }

  /** The connection closed under the session: it goes, nothing more is written to it. */
  lost(): void {
    const conn = this.conn;
    if (!conn) return;
    const pool = this.pool!;
    const member = this.member;
    this.unset(false);
    if (member !== undefined) member.pipeline.leave(member, false);
    else pool.discard(conn);
  }

  /** `served`: the connection served to the end (its time is a latency sample; a lost one's is not) */
  private unset(served: boolean): void {
    const node = this.node!;
    this.clearServerFull();
    this.member = undefined;
    this.conn = undefined;
    this.node = undefined;
    this.pool = undefined;
    this.observer.finished(node, served ? performance.now() - this.attachedAt : undefined);
  }

  /** The client is gone: connections it still borrowed bytes from are not reused. */
  closeClient(): void {
    const pending = this.pendingGiveBack;
    this.pendingGiveBack = [];
    for (const { conn, pool } of pending) pool.discard(conn);
  }

  // ------------------------------------------------------------------ client → server

  /** Client messages handled from now until endBatch go to the server together. */
  beginBatch(): void {
    this.batching = true;
  }

  endBatch(): void {
    this.flushRun();
    this.batching = false;
    this.flushServerOut();
  }

  /** Adds a client message (its frame ends at `end`, its body starts at `start`) to the run to forward unchanged. */
  forward(b: Buffer, start: number, end: number): void {
    const frameStart = start - 5;
    if (this.runBuffer === b && this.runEnd === frameStart) this.runEnd = end;
    else {
      this.flushRun();
      this.runBuffer = b;
      this.runStart = frameStart;
      this.runEnd = end;
    }
    if (this.member !== undefined) this.memberWrote(b[frameStart]!);
  }

  /** Writes a message pgrelay made (or rewrote), in order with the forwarded ones. */
  inject(data: Buffer): void {
    this.flushRun();
    this.writeServer(data);
    if (this.member !== undefined) this.memberWrote(data[0]!);
  }

  /**
   * On a shared connection a unit's bytes reach the socket as soon as it ends (its Query, Sync or
   * FunctionCall): the pipeline then knows it is next in line, before any other session writes.
   */
  private memberWrote(code: number): void {
    const member = this.member!;
    const ended = code === FrontendCode.Query || code === FrontendCode.Sync || code === FrontendCode.FunctionCall;
    if (ended && this.conn !== undefined && !this.conn.closed) {
      this.flushRun();
      this.flushServerOut();
    }
    member.pipeline.wrote(member, ended);
  }

  private flushRun(): void {
    if (this.runBuffer === undefined) return;
    const data = this.runBuffer.subarray(this.runStart, this.runEnd);
    this.runBuffer = undefined;
    this.writeServer(data);
  }

  private writeServer(data: Buffer): void {
    const conn = this.conn;
    if (!conn || conn.closed) return;
    if (this.member !== undefined) this.member.pipeline.record(this.member, data);
    if (this.batching) {
      if (this.outConn !== conn) {
        this.flushServerOut();
        this.outConn = conn;
      }
      this.serverOut.push(data);
      return;
    }
    this.writeServerNow(conn, data);
  }

  private flushServerOut(): void {
    const conn = this.outConn;
    if (conn === undefined) return;
    this.outConn = undefined;
    const out = this.serverOut;
    if (!conn.closed) {
      const joined = joinSmall(out);
      if (joined) this.writeServerNow(conn, joined);
      else {
        conn.socket.cork();
        for (const data of out) this.writeServerNow(conn, data);
        conn.socket.uncork();
      }
    }
    out.length = 0;
  }

  private writeServerNow(conn: ServerConnection, data: Buffer): void {
    if (this.member !== undefined && this.member.pipeline.gather(data)) return;
    if (!conn.write(data) && this.serverFull === undefined && conn === this.conn) {
      // the server does not keep up (a big COPY FROM STDIN): stop reading the client until it does
      this.serverFull = conn.socket;
      this.host.socket.pause();
      conn.socket.once('drain', this.onServerDrain);
    }
  }

  /** the server's write buffer is full: the client is not read */
  get serverIsFull(): boolean {
    return this.serverFull !== undefined;
  }

  private readonly onServerDrain = (): void => {
    this.serverFull = undefined;
    if (this.host.mayReadClient() && !this.clientFull) this.host.socket.resume();
  };

  private clearServerFull(): void {
    if (this.serverFull === undefined) return;
    this.serverFull.off('drain', this.onServerDrain);
    this.serverFull = undefined;
    if (this.host.mayReadClient() && !this.batching && !this.clientFull) this.host.socket.resume();
  }

  // ------------------------------------------------------------------ server → client

  /** Answers from now until endScan are written together. */
  beginScan(): void {
    this.collectingClientOut = true;
  }

  toClient(data: Buffer): void {
    if (this.collectingClientOut) this.clientOut.push(data);
    else this.writeClient(data);
  }

  /**
   * A server chunk has been scanned: what was gathered is written; what the client socket could
   * not take at once still points into `conn`'s read buffer: no more reads from it until it is
   * written (this is also the backpressure to the server).
   */
  endScan(conn: ServerConnection, clientOpen: boolean): void {
    this.flushClientOut(clientOpen);
    const member = this.member;
    if (member !== undefined) {
      // a shared connection's chunks are copies: only a client far behind holds its reads
      if (clientOpen && this.host.socket.writableLength > MAX_UNREAD_OUTPUT) member.pipeline.hold(member);
      return;
    }
    if (clientOpen && this.host.socket.writableLength > 0) {
      this.heldReads = true;
      conn.socket.pause();
    }
  }

  /** Writes what was gathered for the client (nothing when it is gone). */
  flushClientOut(clientOpen: boolean): void {
    this.collectingClientOut = false;
    const out = this.clientOut;
    if (out.length === 0) return;
    if (clientOpen) {
      const joined = joinSmall(out);
      if (joined) this.writeClient(joined);
      else {
        this.host.socket.cork();
        for (const data of out) this.writeClient(data);
        this.host.socket.uncork();
      }
    }
    out.length = 0;
  }

  private writeClient(data: Buffer): void {
    if (!this.host.socket.write(data, this.onClientWritten) && this.conn && this.member === undefined) this.conn.socket.pause();
  }

  /**
   * The client does not read what it is sent (e.g. it writes Syncs in a loop, each answered by
   * pgrelay itself): its messages are not handled, nor its socket read, until its socket drains.
   */
  get clientFull(): boolean {
    return this.host.socket.writableLength > MAX_UNREAD_OUTPUT;
  }

  /** The client socket drained: the attached server is read again, and the client's messages left waiting (clientFull) handled. */
  clientDrained(): void {
    const member = this.member;
    if (member !== undefined) member.pipeline.unhold(member);
    else this.conn?.socket.resume();
    this.host.drained();
  }

  /** A write to the client completed: once nothing borrowed is queued, server reads go on. */
  private readonly onClientWritten = (): void => {
    if (!this.heldReads || this.host.socket.writableLength > 0) return;
    this.heldReads = false;
    if (this.pendingGiveBack.length > 0) {
      const pending = this.pendingGiveBack;
      this.pendingGiveBack = [];
      for (const { conn, pool } of pending) giveBack(conn, pool);
    }
    if (this.member === undefined) this.conn?.socket.resume();
  };
}

/** Pieces up to this many bytes in all are copied into one buffer rather than written as a corked writev. */
const JOIN_BYTES = 4096;

/**
 * One buffer for pieces that go out together: the piece itself when there is one, a copy of them
 * all when they are small (a rewritten Bind and the Execute/Sync after it), else undefined (they
 * are written as they are, corked). One write is cheaper than cork, writev and uncork.
 */
function joinSmall(out: readonly Buffer[]): Buffer | undefined {
  if (out.length === 1) return out[0];
  let total = 0;
  for (const data of out) total += data.length;
  return total <= JOIN_BYTES ? Buffer.concat(out, total) : undefined;
}

function giveBack(conn: ServerConnection, pool: Pool): void {
  // a cancel of this client's query must land before anyone else's query runs there
  conn.whenCancelsSettled(() => {
    pool.release(conn);
    conn.socket.resume();
  });
}
