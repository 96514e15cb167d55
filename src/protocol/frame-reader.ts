import { ProxyError, SqlState } from '../errors.js';

/**
 * Cuts a byte stream into typed messages (1 code byte + int32 length that includes itself).
 * Framing is by cursor: when nothing is left over, the socket chunk is adopted as is. The chunks
 * of a frame that spans several are collected and copied into one buffer once, when the frame is
 * complete (or once to read a header split across chunks), so every byte is copied at most twice
 * however many chunks a large message comes in. A frame larger than `maxMessageBytes` is refused
 * as soon as its header is in, before any of its body is buffered.
 *
 * Usage: `reader.push(chunk)`, then `while (reader.next()) { reader.code, reader.buffer,
 * reader.start, reader.end }` — the body is `buffer[start, end)` and is valid until the next call.
 */
export class FrameReader {
  code = 0;
  buffer: Buffer = EMPTY;
  /** offset of the first byte of the current message (its code byte) */
  frameStart = 0;
  /** body of the current message: [start, end) */
  start = 0;
  end = 0;
  /** bytes copied so far to join chunks (for tests and diagnostics) */
  bytesCopied = 0;
  /** the current message is to be returned again once more bytes are in (see waitForMore) */
  held = false;

  private chunk: Buffer = EMPTY;
  private offset = 0;
  private length = 0;
  /** chunks received after `chunk`, not yet joined to it */
  private parts: Buffer[] = [];
  private partsBytes = 0;

  constructor(private readonly maxMessageBytes: number = 1 << 30) {}

  push(data: Buffer): void {
    this.held = false;
    if (this.offset >= this.length && this.partsBytes === 0) {
      this.chunk = data;
      this.offset = 0;
      this.length = data.length;
      return;
    }
    this.parts.push(data);
    this.partsBytes += data.length;
  }

  /** Advances to the next complete message; false when more bytes are needed. */
  next(): boolean {
    if (this.held) return false;
    let inChunk = this.length - this.offset;
    if (inChunk < 5) {
      if (inChunk + this.partsBytes < 5) return false;
      this.join();
      inChunk = this.length - this.offset;
    }
    const declared = this.chunk.readInt32BE(this.offset + 1);
    if (declared < 4 || declared > this.maxMessageBytes) {
      throw new ProxyError(
        SqlState.protocolViolation,
        declared < 4 ? `invalid message length ${declared}` : `message of ${declared} bytes exceeds the limit of ${this.maxMessageBytes}`,
        { severity: 'FATAL' },
      );
    }
    if (inChunk < declared + 1) {
      if (inChunk + this.partsBytes < declared + 1) return false;
      this.join();
    }
    const chunk = this.chunk;
    const at = this.offset;
    this.code = chunk[at]!;
    this.buffer = chunk;
    this.frameStart = at;
    this.start = at + 5;
    this.end = at + 1 + declared;
    this.offset = this.end;
    return true;
  }

  /** Copies the unread bytes of `chunk` and every collected part into one buffer. */
  private join(): void {
    const remaining = this.length - this.offset;
    const merged = Buffer.allocUnsafe(remaining + this.partsBytes);
    this.chunk.copy(merged, 0, this.offset, this.length);
    let at = remaining;
    for (const part of this.parts) {
      part.copy(merged, at);
      at += part.length;
    }
    this.bytesCopied += merged.length;
    this.parts = [];
    this.partsBytes = 0;
    this.chunk = merged;
    this.offset = 0;
    this.length = merged.length;
  }

  /** The current message is returned again by next(), but only once more bytes are pushed. */
  waitForMore(): void {
    this.offset = this.frameStart;
    this.held = true;
  }

  /** Steps back to the start of the current message, so that next() returns it again. */
  rewind(): void {
    this.offset = this.frameStart;
  }

  /** Puts bytes back in front of those not yet returned (messages to be handled again). */
  unshift(data: Buffer): void {
    this.held = false;
    if (this.partsBytes > 0) this.join();
    const remaining = this.length - this.offset;
    if (remaining === 0) {
      this.chunk = data;
      this.offset = 0;
      this.length = data.length;
      return;
    }
    const merged = Buffer.allocUnsafe(data.length + remaining);
    data.copy(merged, 0);
    this.chunk.copy(merged, data.length, this.offset, this.length);
    this.chunk = merged;
    this.offset = 0;
    this.length = merged.length;
  }

  /** The bytes not yet returned as messages, to look ahead at (a copy when they span chunks; nothing changes). */
  unread(): Buffer {
    const rest = this.chunk.subarray(this.offset, this.length);
    return this.partsBytes === 0 ? rest : Buffer.concat([rest, ...this.parts]);
  }

  /** Bytes received but not yet returned as messages. */
  get pending(): number {
    return this.length - this.offset + this.partsBytes;
  }

  /** Takes the unread bytes out (used when a TLS upgrade or a hand-off changes the reader). */
  drain(): Buffer {
    if (this.partsBytes > 0) this.join();
    const rest = this.chunk.subarray(this.offset, this.length);
    this.chunk = EMPTY;
    this.offset = 0;
    this.length = 0;
    return rest;
  }
}

/**
 * The untyped first packet of a connection: int32 length (including itself), then int32 code and
 * a body. Returns the packet or undefined when more bytes are needed.
 */
export function readStartupPacket(data: Buffer, maxBytes: number): { code: number; body: Buffer; consumed: number } | undefined {
  if (data.length < 8) {
    if (data.length >= 4) checkStartupLength(data.readInt32BE(0), maxBytes);
    return undefined;
  }
  const length = data.readInt32BE(0);
  checkStartupLength(length, maxBytes);
  if (data.length < length) return undefined;
  return { code: data.readInt32BE(4), body: data.subarray(8, length), consumed: length };
}

function checkStartupLength(length: number, maxBytes: number): void {
  if (length < 8 || length > maxBytes) {
    throw new ProxyError(SqlState.protocolViolation, `invalid startup packet length ${length}`, { severity: 'FATAL' });
  }
}

/** Parses the key/value pairs of a StartupMessage body (after the protocol code). */
export function parseStartupParameters(body: Buffer): Map<string, string> {
  const params = new Map<string, string>();
  let at = 0;
  for (;;) {
    const keyEnd = body.indexOf(0, at);
    if (keyEnd < 0) throw new ProxyError(SqlState.protocolViolation, 'invalid startup packet layout: missing terminator', { severity: 'FATAL' });
    if (keyEnd === at) break; // the final empty name
    const key = body.toString('utf8', at, keyEnd);
    const valueEnd = body.indexOf(0, keyEnd + 1);
    if (valueEnd < 0) throw new ProxyError(SqlState.protocolViolation, `invalid startup packet layout: missing value for "${key.slice(0, 64)}"`, { severity: 'FATAL' });
    params.set(key, body.toString('utf8', keyEnd + 1, valueEnd));
    at = valueEnd + 1;
  }
  return params;
}

const EMPTY = Buffer.alloc(0);
