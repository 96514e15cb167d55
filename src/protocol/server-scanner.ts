import { ProxyError, SqlState } from '../errors.js';
import { BackendCode } from './codes.js';
import type { RowDigest } from './row-digest.js';

/**
 * What the scanner asks and tells while it walks a server's byte stream. It looks only at message
 * headers, plus the whole bodies of the three messages whose content matters to a proxy
 * (ReadyForQuery, ParameterStatus, ErrorResponse).
 */
export interface ServerMessageSink {
  /** A message of this code starts: true = swallow it (an answer to a message pgrelay sent). */
  drop(code: number): boolean;
  /**
   * The whole body of a ReadyForQuery, ParameterStatus or ErrorResponse (`dropped` as `drop`
   * said): true = pass the message on to the client.
   */
  small(code: number, body: Buffer, start: number, end: number, dropped: boolean): boolean;
  /**
   * A message has fully passed (`length` with its header). True = the sink has bytes of its own
   * to put right after it: the scanner writes out what is before, then calls `insert`.
   */
  end(code: number, length: number, dropped: boolean): boolean;
  /** Bytes for the client, in order (views of the chunk where possible: borrowed, not copied). */
  out(data: Buffer): void;
  /** The sink's own bytes, after everything before them went to `out` (see `end`). */
  insert(): void;
}

/**
 * The server → client stream cut into messages, whatever the chunk boundaries. Bytes that go on
 * are handed out as runs of the chunk they came in (no copy); a header split across chunks is
 * held back until its type is known, and a small message split across chunks is collected (and
 * then copied once). Pure: no I/O, no timers; one scanner per server connection being read.
 */
export class ServerMessageScanner {
  /** bytes of the current message still to pass */
  private need = 0;
  /** the current message is being swallowed */
  private dropping = false;
  /** the length of the current message, header included */
  private currentLength = 0;
  private currentCode = 0;
  /** a header split across chunks (made when one first is: a slice of Node's shared pool would keep its 8 KB alive) */
  private header: Buffer | undefined;
  private headerLength = 0;
  /** a small body being collected across chunks */
  private small: Buffer | undefined;
  private smallLength = 0;
  /** when set, the DataRows passed on (not swallowed) are hashed into it, statement ends counted and an error the client gets noted (see RowDigest) */
  digest: RowDigest | undefined;
  /** the current message is a DataRow being hashed */
  private digesting = false;

  /** A new stream (another server connection). */
  reset(): void {
    this.need = 0;
    this.dropping = false;
    this.headerLength = 0;
    this.small = undefined;
    this.digesting = false;
  }

  /** The stream stopped inside a message (the connection cannot be reused). */
  get inMessage(): boolean {
    return this.need > 0 || this.headerLength > 0;
  }

  /** The stream stopped inside a message the client has part of (its stream cannot be repaired). */
  get clientHasPart(): boolean {
    return (this.need > 0 && !this.dropping) || this.headerLength > 0;
  }

  /** Walks one chunk; throws a ProxyError (08P01) on a length below 4. */
  scan(chunk: Buffer, sink: ServerMessageSink): void {
    const length = chunk.length;
    let at = 0;
    /** start of the bytes to forward that are not handed out yet */
    let fwdStart = 0;
    while (at < length) {
      if (this.need > 0) {
        // the rest of a message begun in an earlier chunk
        const take = Math.min(this.need, length - at);
        if (this.digesting) this.digest!.add(chunk, at, at + take);
        if (this.small) {
          chunk.copy(this.small, this.smallLength, at, at + take);
          this.smallLength += take;
        }
        at += take;
        this.need -= take;
        if (this.dropping || this.small) fwdStart = at;
        if (this.need === 0 && this.finishCollected(sink)) fwdStart = insertAfter(sink, chunk, fwdStart, at);
        continue;
      }
      let code: number;
      let declared: number;
      let headerInChunk: boolean;
      if (this.headerLength > 0 || length - at < 5) {
        // a header split across chunks: held back until its type is known
        if (fwdStart < at) sink.out(chunk.subarray(fwdStart, at));
        const take = Math.min(5 - this.headerLength, length - at);
        const header = (this.header ??= Buffer.alloc(5));
        chunk.copy(header, this.headerLength, at, at + take);
        this.headerLength += take;
        at += take;
        fwdStart = at;
        if (this.headerLength < 5) break;
        this.headerLength = 0;
        code = header[0]!;
        declared = header.readInt32BE(1);
        headerInChunk = false;
      } else {
        code = chunk[at]!;
        declared = chunk.readInt32BE(at + 1);
        at += 5;
        headerInChunk = true;
      }
      const bodyLength = declared - 4;
      if (bodyLength < 0) throw new ProxyError(SqlState.protocolViolation, 'server sent an invalid message length');
      const messageStart = headerInChunk ? at - 5 : at;
      const drop = sink.drop(code);
      const small = isSmall(code);
      this.currentCode = code;
      this.currentLength = declared + 1;
      this.dropping = drop;
      this.digesting = (code === BackendCode.DataRow || code === BackendCode.CopyData) && !drop && this.digest !== undefined;
      if (small && length - at >= bodyLength) {
        // whole here: decide, then either leave it in the forwarded run or cut it out
        const keep = sink.small(code, chunk, at, at + bodyLength, drop);
        if (keep && code === BackendCode.ErrorResponse && this.digest !== undefined) this.digest.statementFailed();
        if (!keep || !headerInChunk) {
          if (fwdStart < messageStart) sink.out(chunk.subarray(fwdStart, messageStart));
          if (keep) sink.out(framed(code, chunk.subarray(at, at + bodyLength), bodyLength));
          fwdStart = at + bodyLength;
        }
        at += bodyLength;
        if (this.endMessage(sink)) fwdStart = insertAfter(sink, chunk, fwdStart, at);
        continue;
      }
      if (drop || small) {
        if (fwdStart < messageStart) sink.out(chunk.subarray(fwdStart, messageStart));
      } else if (!headerInChunk) {
        sink.out(Buffer.from(this.header!));
      }
      this.small = small ? Buffer.allocUnsafe(bodyLength) : undefined;
      this.smallLength = 0;
      const take = Math.min(bodyLength, length - at);
      if (this.digesting) this.digest!.add(chunk, at, at + take);
      if (this.small) {
        chunk.copy(this.small, 0, at, at + take);
        this.smallLength = take;
      }
      at += take;
      if (drop || small) fwdStart = at;
      if (take === bodyLength) {
        if (this.endMessage(sink)) fwdStart = insertAfter(sink, chunk, fwdStart, at);
      } else this.need = bodyLength - take;
    }
    if (fwdStart < at) sink.out(chunk.subarray(fwdStart, at));
  }

  /** A message whose body came over several chunks has passed (a collected small body is decided now). */
  private finishCollected(sink: ServerMessageSink): boolean {
    const small = this.small;
    if (small) {
      this.small = undefined;
      if (sink.small(this.currentCode, small, 0, this.smallLength, this.dropping)) {
        if (this.currentCode === BackendCode.ErrorResponse && this.digest !== undefined) this.digest.statementFailed();
        sink.out(framed(this.currentCode, small, this.smallLength));
      }
    }
    return this.endMessage(sink);
  }

  private endMessage(sink: ServerMessageSink): boolean {
    const dropped = this.dropping;
    this.dropping = false;
    const digest = this.digest;
    if (digest !== undefined && !dropped) {
      const code = this.currentCode;
      if (this.digesting) digest.rowEnd();
      else if (code === BackendCode.CommandComplete || code === BackendCode.EmptyQueryResponse) digest.statementEnd();
      else if (code === BackendCode.PortalSuspended) digest.portalSuspended();
      this.digesting = false;
    }
    return sink.end(this.currentCode, this.currentLength, dropped);
  }
}

/** The messages whose bodies the scanner hands to the sink whole. */
export function isSmall(code: number): boolean {
  return code === BackendCode.ReadyForQuery || code === BackendCode.ParameterStatus || code === BackendCode.ErrorResponse;
}

/** Writes out the part of the chunk before `at`, then the sink's own bytes; returns the new run start. */
function insertAfter(sink: ServerMessageSink, chunk: Buffer, fwdStart: number, at: number): number {
  if (fwdStart < at) sink.out(chunk.subarray(fwdStart, at));
  sink.insert();
  return at;
}

function framed(code: number, body: Buffer, length: number): Buffer {
  const out = Buffer.allocUnsafe(5 + length);
  out[0] = code;
  out.writeInt32BE(length + 4, 1);
  body.copy(out, 5, 0, length);
  return out;
}
