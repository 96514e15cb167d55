import { countPipelinedUnit } from '../metrics/metrics.js';
import { BackendCode, TxStatus } from '../protocol/codes.js';
import { parseComplete } from '../protocol/messages.js';
import { isHoldable, MAX_HELD_BYTES, MAX_RERUNS, rerunOf } from './pipeline-rerun.js';
import type { ServerConnection, ServerDataHandler } from './server-connection.js';

/** A shape whose recent units took longer than this on a server is not pipelined (ms). */
export const PIPELINE_MAX_LATENCY_MS = 5;

/**
 * Units a pipelined connection takes while units that cannot share it wait for the pool: past
 * this many it takes no more, empties, and goes back to the pool (so they are not starved).
 */
const UNITS_BEFORE_WAITERS = 32;

/** Bytes kept at most for one gathered write to a busy connection (see ServerPipeline.gather). */
const GATHER_MAX_BYTES = 16 * 1024;

/** Weight of a new sample in a shape's latency average. */
const LATENCY_WEIGHT = 0.3;

/** One client session's place on a pipelined connection. */
export interface PipelineMember {
  readonly pipeline: ServerPipeline;
  readonly handler: ServerDataHandler;
  /** the shape of the unit placed as self-contained: it marks the next unit the member ends */
  approved: object | undefined;
  /** bytes of a unit are written, its Query or Sync not yet */
  unterminated: boolean;
  /** units written whose ReadyForQuery has not come yet */
  owed: number;
  /** the client reads too slowly: the connection is not read until it catches up */
  holding: boolean;
  /** the session let go: what it is still owed is read and dropped */
  left: boolean;
  /** its client asked for a cancel: a 57014 it gets is its own */
  cancelAsked: boolean;
  /** copies of the bytes written for its unit not yet ended (to write it again: see pipeline-rerun.ts) */
  written: Buffer[];
}

/** A unit written to the connection, answered when its ReadyForQuery arrives. */
interface Entry {
  member: PipelineMember;
  /** the unit's shape when it was placed as self-contained; undefined: anything else */
  shape: object | undefined;
  /** when the server started on it (it reached the head of the line) */
  startedAt: number;
  /** the unit's bytes, for a self-contained unit */
  bytes: Buffer | undefined;
  /** times it was written again after a cancel meant for another unit */
  reruns: number;
  /** a cancel sent for a unit ahead may hit it: its answer is held while it has no outcome (see pipeline-rerun.ts) */
  held: Buffer[] | undefined;
  heldBytes: number;
}

/**
 * Units of several clients on one server connection, answered in the order they were written
 * (PostgreSQL answers one unit after the other; each ends with ReadyForQuery). The pipeline is the
 * connection's data handler: it looks only at frame headers, cuts each chunk at ReadyForQuery,
 * and hands every piece to the session whose unit it answers.
 *
 * Safety (see also unit-pipelining.ts, which decides what may be queued):
 * - only self-contained units are queued behind others: one simple Query or one extended run to
 *   its Sync, outside a transaction, with no session effect, of a shape whose recent latency is
 *   short, and never behind a unit that is not like that or that has run long already;
 * - a ReadyForQuery with a status other than I closes the pipeline to newcomers; when units of
 *   other clients were already queued behind it, the connection is destroyed (the server rolls
 *   the transaction and what ran in it back) and every session handles it as a lost connection
 *   (reads run again elsewhere, the others get an error);
 * - a session that goes away with units still queued leaves them to be read and dropped, as long
 *   as they were self-contained and other clients' units are queued with them (else the
 *   connection goes);
 * - a client that reads slowly gets copies (never views of the read buffer) up to a bound, past
 *   which the connection is paused for it.
 * The connection goes back to its pool (or is discarded) once the last session let go and every
 * unit is answered.
 */
export class ServerPipeline implements ServerDataHandler {
  private static readonly pipelines = new WeakMap<ServerConnection, ServerPipeline>();
  /** recent server-side latency per shape (ms, a moving average) */
  static readonly latency = new WeakMap<object, number>();
  /** units queued behind another since start (tests and diagnostics) */
  static queuedUnits = 0;
  /** units written again after a cancel meant for the unit ahead of them, since start */
  static rerunUnits = 0;

  /** chunks are copies: several sessions hold pieces of one chunk while their clients read them */
  readonly borrowsChunks = false;
  private readonly entries: Entry[] = [];
  private readonly members: PipelineMember[] = [];
  /** nothing more is queued here (a unit that is not self-contained, a status other than I) */
  private closed = false;
  /** the connection is not reusable once the pipeline empties */
  private discardAtEnd = false;
  private finished = false;
  private holders = 0;
  /** bytes kept to be written at the end of this turn of the event loop (see gather) */
  private gathered: Buffer[] | undefined;
  private gatheredBytes = 0;
  /**
   * cancels sent for a unit here whose 57014 has not been seen: units written meanwhile are held,
   * as are units written while any cancel for the backend is on its way (see pipeline-rerun.ts)
   */
  private cancelShadow = 0;
  /** units written since the connection was lent */
  private units = 0;
  // frame scan state, across chunks
  private code = 0;
  private rest = 0;
  private status: number = TxStatus.Idle;
  private readonly header = Buffer.alloc(5);
  private headerHave = 0;

  private constructor(
    readonly conn: ServerConnection,
    /** the connection goes back to its pool (`reusable`) or is discarded */
    private readonly onEmpty: (reusable: boolean) => void,
  ) {}

  /** The pipeline of a lent connection, if it has one. */
  static of(conn: ServerConnection): ServerPipeline | undefined {
    return ServerPipeline.pipelines.get(conn);
  }

  /** A session's unit `shape` (self-contained) runs on `conn`: behind whatever is queued there. */
  static join(conn: ServerConnection, handler: ServerDataHandler, shape: object, onEmpty: (reusable: boolean) => void): PipelineMember {
    let pipeline = ServerPipeline.pipelines.get(conn);
    if (pipeline === undefined) {
      pipeline = new ServerPipeline(conn, onEmpty);
      ServerPipeline.pipelines.set(conn, pipeline);
      conn.setHandler(pipeline);
    } else if (pipeline.entries.length > 0) ServerPipeline.queuedUnits++;
    const member: PipelineMember = { pipeline, handler, approved: shape, unterminated: false, owed: 0, holding: false, left: false, cancelAsked: false, written: [] };
    pipeline.members.push(member);
    return member;
  }

  /** Recent latency of a shape (ms), undefined before its first sample. */
  static latencyOf(shape: object): number | undefined {
    return ServerPipeline.latency.get(shape);
  }

  /** Units written and not answered yet. */
  get depth(): number {
    return this.entries.length;
  }

  /**
   * Bytes of a unit for the server: while it is busy with units already written, they are kept
   * (a copy: `data` may be a view of the client's read buffer) until this turn of the event loop
   * ends and then written together with those of the other clients written meanwhile, in one
   * system call (the server would not start on them sooner). False: not kept (nothing running,
   * or too big): the caller writes them now.
   */
  gather(data: Buffer): boolean {
    const gathered = this.gathered;
    if (gathered === undefined) {
      if (this.entries.length === 0 || data.length > GATHER_MAX_BYTES) return false;
      this.gathered = [Buffer.from(data)];
      this.gatheredBytes = data.length;
      setImmediate(this.flushGathered);
      return true;
    }
    if (this.gatheredBytes + data.length > GATHER_MAX_BYTES) this.flushGathered();
    else {
      gathered.push(Buffer.from(data));
      this.gatheredBytes += data.length;
      return true;
    }
    return false;
  }

  private readonly flushGathered = (): void => {
    const gathered = this.gathered;
    if (gathered === undefined) return;
    this.gathered = undefined;
    if (this.conn.closed) return;
    this.conn.write(gathered.length === 1 ? gathered[0]! : Buffer.concat(gathered, this.gatheredBytes));
  };

  /**
   * Whether a self-contained unit of `shape` may be queued here now: at most `depth` units on
   * the connection, outside a transaction, nothing but short self-contained units ahead (the one
   * running not running long), no client reading slowly, no cancel on its way. `othersWait`:
   * units wait for the pool.
   */
  mayQueue(shape: object, depth: number, now: number, othersWait: boolean): boolean {
    const conn = this.conn;
    if (this.closed || this.finished || this.holders > 0 || conn.closed || conn.cancelsPending || conn.txStatus !== TxStatus.Idle) return false;
    if (othersWait && this.units >= UNITS_BEFORE_WAITERS) {
      this.closed = true;
      return false;
    }
    if (this.entries.length >= depth || !isShort(shape)) return false;
    for (const member of this.members) if (member.unterminated) return false;
    const entries = this.entries;
    if (entries.length > 0 && now - entries[0]!.startedAt >= PIPELINE_MAX_LATENCY_MS) return false;
    for (const entry of entries) if (entry.shape === undefined || !isShort(entry.shape)) return false;
    return true;
  }

  /** Whether the member's unit is the one the server runs now (a cancel may go to it). */
  isRunning(member: PipelineMember): boolean {
    return this.entries.length > 0 && this.entries[0]!.member === member;
  }

  /**
   * The member's client asks for a cancel of its unit; true when the unit runs now and the cancel
   * may go to the server. Units written behind it, now or until its 57014 is seen, are held and
   * written again should the cancel hit them instead (see pipeline-rerun.ts).
   */
  cancelling(member: PipelineMember): boolean {
    member.cancelAsked = true;
    if (!this.isRunning(member)) return false;
    this.cancelShadow++;
    const entries = this.entries;
    for (let i = 1; i < entries.length; i++) this.holdAnswer(entries[i]!);
    return true;
  }

  /** The member wrote bytes of a unit (its end: `ended`, a Query, Sync or FunctionCall, is on the socket). */
  wrote(member: PipelineMember, ended: boolean): void {
    if (!ended) {
      member.unterminated = true;
      return;
    }
    member.unterminated = false;
    const shape = member.approved;
    member.approved = undefined;
    if (shape === undefined) this.closed = true;
    member.owed++;
    this.units++;
    const entries = this.entries;
    for (const ahead of entries) {
      if (ahead.member === member) continue;
      countPipelinedUnit(this.conn.node);
      break;
    }
    const written = member.written;
    const bytes = shape === undefined || written.length === 0 ? undefined : written.length === 1 ? written[0] : Buffer.concat(written);
    member.written = [];
    const entry: Entry = { member, shape, startedAt: performance.now(), bytes, reruns: 0, held: undefined, heldBytes: 0 };
    entries.push(entry);
    if (this.cancelShadow > 0 || this.conn.cancelsPending) this.holdAnswer(entry);
  }

  /** Copies of bytes written for the member's unit under way (see wrote). */
  record(member: PipelineMember, data: Buffer): void {
    member.written.push(Buffer.from(data));
  }

  /** The answer of a unit behind a cancel is held while it has no outcome (it may be written again). */
  private holdAnswer(entry: Entry): void {
    if (entry.bytes !== undefined && entry.reruns < MAX_RERUNS && !entry.member.cancelAsked) entry.held ??= [];
  }

  /** A held answer is handed on (a statement completed, it grew past the bound, or it is final). */
  private release(conn: ServerConnection, entry: Entry, last?: Buffer): void {
    const held = entry.held!;
    entry.held = undefined;
    entry.heldBytes = 0;
    if (last !== undefined) held.push(last);
    if (held.length > 0) this.deliver(conn, entry.member, held.length === 1 ? held[0]! : Buffer.concat(held));
  }

  /**
   * The held answer of `entry`, whole to its ReadyForQuery (`last` its end), is a cancel meant for
   * a unit ahead: the unit is written again at the end of the line, when nothing written since
   * could run it inside a transaction or split another's unit. True: it was written again.
   */
  private rerun(conn: ServerConnection, entry: Entry, last: Buffer): boolean {
    const member = entry.member;
    if (this.status !== TxStatus.Idle || member.left || member.cancelAsked || member.owed !== 0 || conn.closed || this.finished) return false;
    for (const other of this.members) if (other.unterminated) return false;
    for (const later of this.entries) if (later.shape === undefined) return false;
    const answer = entry.held!.length === 0 ? last : Buffer.concat([...entry.held!, last]);
    const rerun = rerunOf(entry.bytes!, answer);
    if (rerun === undefined) return false;
    if (this.cancelShadow > 0) this.cancelShadow--;
    entry.held = undefined;
    entry.heldBytes = 0;
    // the named statements it parsed exist now: the session learns so before the new answer
    for (let i = 0; i < rerun.parsed; i++) this.deliver(conn, member, Buffer.from(parseComplete));
    member.owed++;
    ServerPipeline.rerunUnits++;
    const again: Entry = { member, shape: entry.shape, startedAt: performance.now(), bytes: rerun.unit, reruns: entry.reruns + 1, held: undefined, heldBytes: 0 };
    this.entries.push(again);
    if (this.cancelShadow > 0 || conn.cancelsPending) this.holdAnswer(again);
    this.flushGathered(); // bytes kept for units written before it go first
    conn.write(rerun.unit);
    return true;
  }

  /** The member's client buffers too much: the connection is not read until it drained (unhold). */
  hold(member: PipelineMember): void {
    if (member.holding) return;
    member.holding = true;
    if (this.holders++ === 0) this.conn.socket.pause();
  }

  unhold(member: PipelineMember): void {
    if (!member.holding) return;
    member.holding = false;
    if (--this.holders === 0 && !this.finished) this.conn.socket.resume();
  }

  /**
   * The session lets go (`reusable`: it knows nothing wrong with the connection). Units it is
   * still owed (it went away, say) are read and dropped when they were self-contained, and the
   * connection serves on; a unit it left half written, or one that was not self-contained, makes
   * the connection go.
   */
  leave(member: PipelineMember, reusable: boolean): void {
    if (member.left) return;
    this.unhold(member);
    member.left = true;
    const at = this.members.indexOf(member);
    if (at >= 0) this.members.splice(at, 1);
    if (this.finished) return;
    if (!this.conn.closed) {
      const unknown = member.unterminated || (member.owed > 0 && this.entries.some((entry) => entry.member === member && entry.shape === undefined));
      // answers still owed and nobody else's unit on the connection: it goes, as a connection lent
      // to one client would (a long result is not read to its end for no one)
      const alone = member.owed > 0 && this.entries.every((entry) => entry.member === member);
      if (unknown || alone || (!reusable && member.owed === 0 && this.conn.txStatus !== TxStatus.Idle)) {
        this.closed = true;
        this.discardAtEnd = true;
        this.conn.destroy(); // the others learn it as a lost connection (onServerClose)
      } else if (!reusable && member.owed === 0) {
        // nothing owed, and yet the session does not trust the connection (it was pinned, say)
        this.closed = true;
        this.discardAtEnd = true;
      }
    }
    this.finishIfEmpty();
  }

  private finishIfEmpty(): void {
    if (this.finished || this.members.length > 0 || (this.entries.length > 0 && !this.conn.closed)) return;
    this.finished = true;
    ServerPipeline.pipelines.delete(this.conn);
    if (this.holders > 0) {
      this.holders = 0;
      this.conn.socket.resume();
    }
    this.onEmpty(!this.discardAtEnd && !this.conn.closed);
  }

  onServerClose(conn: ServerConnection, error: Error | undefined): void {
    this.closed = true;
    for (const member of this.members.slice()) if (!member.left) member.handler.onServerClose(conn, error);
    this.finishIfEmpty();
  }

  onServerData(conn: ServerConnection, chunk: Buffer): void {
    const n = chunk.length;
    let i = 0;
    let from = 0;
    while (i < n) {
      if (this.rest === 0) {
        let length: number;
        if (this.headerHave === 0 && n - i >= 5) {
          this.code = chunk[i]!;
          length = chunk.readInt32BE(i + 1);
          i += 5;
        } else {
          const header = this.header;
          while (this.headerHave < 5 && i < n) header[this.headerHave++] = chunk[i++]!;
          if (this.headerHave < 5) break;
          this.headerHave = 0;
          this.code = header[0]!;
          length = header.readInt32BE(1);
        }
        if (length < 4) return this.badData(conn);
        this.rest = length - 4;
        const head = this.entries[0];
        // a held answer with a statement's outcome is handed on: it cannot be written again
        if (head?.held !== undefined && !isHoldable(this.code)) this.release(conn, head);
        if (this.rest > 0) continue;
      } else {
        if (this.code === BackendCode.ReadyForQuery && this.rest === 1) this.status = chunk[i]!;
        const take = Math.min(this.rest, n - i);
        i += take;
        this.rest -= take;
        if (this.rest > 0) break;
      }
      if (this.code !== BackendCode.ReadyForQuery) continue;
      // a unit is answered: its bytes go to its session, the next unit's to the next one
      if (this.unitAnswered(conn, chunk, from, i)) return;
      from = i;
    }
    if (from >= n) return;
    const head = this.entries[0];
    if (head?.held !== undefined) {
      head.held.push(Buffer.from(chunk.subarray(from, n)));
      head.heldBytes += n - from;
      if (head.heldBytes > MAX_HELD_BYTES) this.release(conn, head);
    } else this.deliver(conn, head !== undefined ? head.member : this.members[this.members.length - 1], chunk.subarray(from, n));
  }

  /** A ReadyForQuery ended at `end`: true when nothing more of this chunk is read here. */
  private unitAnswered(conn: ServerConnection, chunk: Buffer, from: number, end: number): boolean {
    const entry = this.entries.shift();
    const now = performance.now();
    if (entry !== undefined) {
      entry.member.owed--;
      if (entry.shape !== undefined) {
        const before = ServerPipeline.latency.get(entry.shape);
        const sample = now - entry.startedAt;
        ServerPipeline.latency.set(entry.shape, before === undefined ? sample : before + (sample - before) * LATENCY_WEIGHT);
      }
      if (this.entries.length > 0) this.entries[0]!.startedAt = now;
    }
    const member = entry?.member;
    let othersBehind = false;
    if (this.status !== TxStatus.Idle) {
      // a unit opened (or left) a transaction: nothing more joins, and what other clients queued
      // behind it must not run inside it
      this.closed = true;
      for (const later of this.entries) if (later.member !== member) othersBehind = true;
    }
    if (entry?.held === undefined) this.deliver(conn, member, chunk.subarray(from, end));
    else if (!this.rerun(conn, entry, chunk.subarray(from, end))) this.release(conn, entry, chunk.subarray(from, end));
    // the backend waits for more with every cancel taken: a signal can no longer hit a later unit
    if (this.entries.length === 0 && !conn.cancelsPending) this.cancelShadow = 0;
    if (othersBehind && !conn.closed) {
      this.discardAtEnd = true;
      conn.destroy();
      return true;
    }
    if (this.finished || conn.closed) return true;
    this.finishIfEmpty();
    return this.finished;
  }

  private deliver(conn: ServerConnection, member: PipelineMember | undefined, piece: Buffer): void {
    if (member === undefined || member.left) return;
    member.handler.onServerData(conn, piece);
  }

  /** What cannot be a PostgreSQL message: the connection goes, every session sees it lost. */
  private badData(conn: ServerConnection): void {
    this.closed = true;
    this.discardAtEnd = true;
    conn.destroy();
  }
}

function isShort(shape: object): boolean {
  const latency = ServerPipeline.latency.get(shape);
  return latency !== undefined && latency < PIPELINE_MAX_LATENCY_MS;
}
