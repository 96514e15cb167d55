import { ProxyError, SqlState } from '../errors.js';
import { BackendCode } from '../protocol/codes.js';
import type { FrameReader } from '../protocol/frame-reader.js';
import type { Rerouted } from '../metrics/unit-reason.js';

/** A window whose messages came in pieces of more than this many bytes is not kept. */
const MAX_PIECE_BYTES = 1 << 20;

/**
 * The client messages of the units in flight on one server connection, remembered (as ranges of
 * the client's socket chunks, no copy) while they are all reads outside a transaction, so that
 * they can run again elsewhere when the connection is lost before the client had anything of
 * their answers but heads (ParseComplete, RowDescription, …). After such a replay the heads the
 * client already has are skipped when they come again.
 *
 * The session opens the window when a unit starts on a connection with nothing in flight, adds
 * every client message it handles while it is open, tells it each answer head that reaches the
 * client, and closes it when the units are answered or the connection is given back.
 */
export class ReplayWindow {
  /** the current piece: bytes [start, end) of `buffer`; undefined while the window is closed */
  private buffer: Buffer | undefined;
  private start = 0;
  private end = 0;
  /** earlier pieces, when the messages came in several socket chunks */
  private pieces: Buffer[] = [];
  private pieceBytes = 0;
  private replayable = false;
  /** the units of the window were run again once already */
  private replayed = false;
  /** client bytes sent when the window opened, and the heads of answers sent since (codes, bytes) */
  private clientBytesAtOpen = 0;
  private heads: number[] = [];
  private headBytes = 0;
  /** nothing but heads of answers came from the server since the window opened */
  private onlyHeads = true;
  /** after a replay: the heads the client already has, skipped from `skipAt` on */
  private skipped: number[] = [];
  private skipAt = 0;
  /** the node whose connection was lost under the units run again (their next route avoids it) */
  avoid: string | undefined;
  /** the units run again because a replica refused them (25006, or 0A000 for serializable): the next route is the primary, counted as this */
  toPrimary: Rerouted | undefined;

  get open(): boolean {
    return this.buffer !== undefined;
  }

  /** A unit starts (the reader is at its first message); `replayable`: it may run again. */
  unitStarts(reader: FrameReader, replayable: boolean, clientBytes: number): void {
    if (this.buffer !== undefined) {
      if (!replayable) this.replayable = false;
      return;
    }
    this.buffer = reader.buffer;
    this.start = reader.frameStart;
    this.end = reader.frameStart;
    this.replayable = replayable;
    this.clientBytesAtOpen = clientBytes;
    this.heads.length = 0;
    this.headBytes = 0;
    this.onlyHeads = true;
    if (this.pieces.length > 0) this.pieces = [];
    this.pieceBytes = 0;
  }

  /** The message the reader just returned was handled: it joins the window. */
  add(reader: FrameReader): void {
    if (reader.buffer === this.buffer && reader.frameStart === this.end) {
      this.end = reader.end;
      return;
    }
    if (!this.replayable) return;
    // it came in another socket chunk: the window goes on in a new piece
    this.pieces.push(this.buffer!.subarray(this.start, this.end));
    this.pieceBytes += this.end - this.start;
    if (this.pieceBytes > MAX_PIECE_BYTES) this.replayable = false;
    this.buffer = reader.buffer;
    this.start = reader.frameStart;
    this.end = reader.end;
  }

  /** A message of `bytes` reached the client; a head of an answer is remembered. */
  reachedClient(code: number, bytes: number): void {
    if (this.buffer === undefined) return;
    if (!isAnswerHead(code)) {
      this.onlyHeads = false;
      return;
    }
    this.heads.push(code);
    this.headBytes += bytes;
  }

  close(): void {
    this.buffer = undefined;
    if (this.pieces.length > 0) this.pieces = [];
    this.replayed = false;
    this.skipAt = this.skipped.length;
  }

  /**
   * Whether the units may run again as far as their answers so far tell (all reads outside a
   * transaction, not run again already, nothing but heads of their answers reached the client and
   * no more than those heads were sent to it): `take` then gives their bytes once the heads have
   * been written out.
   */
  mayRunAgain(clientBytes: number): boolean {
    return this.buffer !== undefined && this.replayable && !this.replayed && this.onlyHeads && clientBytes - this.clientBytesAtOpen <= this.headBytes;
  }

  /**
   * The connection was lost: the bytes to handle again, or undefined when the units may not run
   * again (not all reads outside a transaction, run again once already, or the client has had
   * more than heads of their answers). Closes the window and arms the skipping of those heads.
   */
  take(clientBytes: number, lostNode: string): Buffer | undefined {
    const buffer = this.buffer;
    if (buffer === undefined || !this.replayable || this.replayed || clientBytes - this.clientBytesAtOpen !== this.headBytes) return undefined;
    this.buffer = undefined;
    this.replayed = true;
    this.avoid = lostNode;
    const skipped = this.skipped;
    this.skipped = this.heads;
    this.heads = skipped;
    this.heads.length = 0;
    this.skipAt = 0;
    const last = buffer.subarray(this.start, this.end);
    const bytes = this.pieces.length === 0 ? last : Buffer.concat([...this.pieces, last]);
    this.pieces = [];
    return bytes;
  }

  /**
   * Whether the answer message `code` (from the server, or made by pgrelay) is a head the client
   * already has from before a replay. An error instead ends the skipping (the client gets it after
   * what it has, as from PostgreSQL); any other difference cannot be repaired.
   */
  alreadySent(code: number): boolean {
    if (this.skipAt >= this.skipped.length) return false;
    if (code === this.skipped[this.skipAt]) {
      this.skipAt++;
      return true;
    }
    this.skipAt = this.skipped.length;
    if (code === BackendCode.ErrorResponse) return false;
    throw new ProxyError(SqlState.connectionFailure, 'a read run again after a lost server connection was answered differently: the session cannot go on');
  }
}

/** Messages that head an answer and carry nothing of its result: a read may run again after them. */
function isAnswerHead(code: number): boolean {
  return (
    code === BackendCode.ParseComplete ||
    code === BackendCode.BindComplete ||
    code === BackendCode.CloseComplete ||
    code === BackendCode.NoData ||
    code === BackendCode.ParameterDescription ||
    code === BackendCode.RowDescription
  );
}
