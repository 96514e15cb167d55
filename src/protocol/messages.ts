import { ProxyError, SqlState } from '../errors.js';
import { AuthCode, BackendCode, TxStatus } from './codes.js';

/**
 * Builders for the messages pgrelay itself sends to clients, and small readers for the fields it
 * looks at. The writer reserves the 5-byte header and fills code and length at the end.
 */
export class MessageWriter {
  private buf: Buffer;
  private at = 0;

  constructor(initial = 256) {
    this.buf = Buffer.allocUnsafe(initial);
  }

  private ensure(n: number): void {
    if (this.at + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.at + n));
    this.buf.copy(next, 0, 0, this.at);
    this.buf = next;
  }

  begin(code: number): this {
    this.ensure(5);
    this.buf[this.at] = code;
    this.at += 5;
    this.messageStart = this.at - 4;
    return this;
  }
  private messageStart = -1;

  int8(v: number): this {
    this.ensure(1);
    this.buf[this.at++] = v;
    return this;
  }
  int16(v: number): this {
    this.ensure(2);
    this.buf.writeInt16BE(v, this.at);
    this.at += 2;
    return this;
  }
  int32(v: number): this {
    this.ensure(4);
    this.buf.writeInt32BE(v, this.at);
    this.at += 4;
    return this;
  }
  cstring(s: string): this {
    const n = Buffer.byteLength(s);
    this.ensure(n + 1);
    this.buf.write(s, this.at);
    this.at += n;
    this.buf[this.at++] = 0;
    return this;
  }
  bytes(b: Uint8Array): this {
    this.ensure(b.length);
    this.buf.set(b, this.at);
    this.at += b.length;
    return this;
  }
  /** Closes the current message: back-fills its length. */
  end(): this {
    this.buf.writeInt32BE(this.at - this.messageStart, this.messageStart);
    this.messageStart = -1;
    return this;
  }
  /** A copy of everything written; the writer is reset. */
  take(): Buffer {
    const out = Buffer.from(this.buf.subarray(0, this.at));
    this.at = 0;
    return out;
  }
}

export function message(code: number, body?: (w: MessageWriter) => void): Buffer {
  const w = new MessageWriter(64).begin(code);
  body?.(w);
  return w.end().take();
}

// Body-less and constant messages, built once.
export const parseComplete = message(BackendCode.ParseComplete);
export const bindComplete = message(BackendCode.BindComplete);
export const closeComplete = message(BackendCode.CloseComplete);
export const noData = message(BackendCode.NoData);
export const readyIdle = message(BackendCode.ReadyForQuery, (w) => w.int8(TxStatus.Idle));
export const readyInTransaction = message(BackendCode.ReadyForQuery, (w) => w.int8(TxStatus.InTransaction));
export const readyFailed = message(BackendCode.ReadyForQuery, (w) => w.int8(TxStatus.Failed));
export const authenticationOk = message(BackendCode.Authentication, (w) => w.int32(AuthCode.Ok));
export const sslRefused = Buffer.from('N');
export const sslAccepted = Buffer.from('S');

export function readyForQuery(status: number): Buffer {
  return status === TxStatus.Idle ? readyIdle : status === TxStatus.InTransaction ? readyInTransaction : readyFailed;
}

export function parameterStatus(name: string, value: string): Buffer {
  return message(BackendCode.ParameterStatus, (w) => w.cstring(name).cstring(value));
}

export function backendKeyData(processId: number, secretKey: number): Buffer {
  return message(BackendCode.BackendKeyData, (w) => w.int32(processId).int32(secretKey));
}

export function commandComplete(tag: string): Buffer {
  return message(BackendCode.CommandComplete, (w) => w.cstring(tag));
}

export function authenticationSasl(mechanisms: string[]): Buffer {
  return message(BackendCode.Authentication, (w) => {
    w.int32(AuthCode.SASL);
    for (const m of mechanisms) w.cstring(m);
    w.int8(0);
  });
}

export function authenticationSaslContinue(data: string): Buffer {
  return message(BackendCode.Authentication, (w) => w.int32(AuthCode.SASLContinue).bytes(Buffer.from(data)));
}

export function authenticationSaslFinal(data: string): Buffer {
  return message(BackendCode.Authentication, (w) => w.int32(AuthCode.SASLFinal).bytes(Buffer.from(data)));
}

export function authenticationMd5(salt: Buffer): Buffer {
  return message(BackendCode.Authentication, (w) => w.int32(AuthCode.MD5Password).bytes(salt));
}

export function authenticationCleartext(): Buffer {
  return message(BackendCode.Authentication, (w) => w.int32(AuthCode.CleartextPassword));
}

export function negotiateProtocolVersion(newestMinor: number, unsupportedOptions: string[]): Buffer {
  return message(BackendCode.NegotiateProtocolVersion, (w) => {
    w.int32((3 << 16) | newestMinor).int32(unsupportedOptions.length);
    for (const o of unsupportedOptions) w.cstring(o);
  });
}

export interface ErrorFields {
  severity: 'ERROR' | 'FATAL' | 'PANIC' | 'WARNING' | 'NOTICE' | 'LOG' | 'INFO' | 'DEBUG';
  code: string;
  message: string;
  detail?: string;
  hint?: string;
}

/** ErrorResponse (or NoticeResponse with `notice`) in the layout PostgreSQL uses (S, V, C, M, D, H). */
export function errorResponse(fields: ErrorFields, notice = false): Buffer {
  return message(notice ? BackendCode.NoticeResponse : BackendCode.ErrorResponse, (w) => {
    w.int8(0x53).cstring(fields.severity); // S
    w.int8(0x56).cstring(fields.severity); // V
    w.int8(0x43).cstring(fields.code); // C
    w.int8(0x4d).cstring(fields.message); // M
    if (fields.detail) w.int8(0x44).cstring(fields.detail); // D
    if (fields.hint) w.int8(0x48).cstring(fields.hint); // H
    w.int8(0);
  });
}

/** Reads the fields of an ErrorResponse/NoticeResponse body. */
export function readErrorFields(buf: Buffer, start: number, end: number): Map<string, string> {
  const fields = new Map<string, string>();
  let at = start;
  while (at < end) {
    const type = buf[at]!;
    if (type === 0) break;
    const stop = buf.indexOf(0, at + 1);
    if (stop < 0 || stop >= end) break;
    fields.set(String.fromCharCode(type), buf.toString('utf8', at + 1, stop));
    at = stop + 1;
  }
  return fields;
}

/**
 * A NUL-terminated string starting at `at`; returns the string and the offset after its NUL.
 * A string that runs past the message is a protocol violation of the peer (08P01, FATAL).
 */
export function readCString(buf: Buffer, at: number, end: number): [string, number] {
  const stop = at < end ? buf.indexOf(0, at) : -1;
  if (stop < 0 || stop >= end) throw new ProxyError(SqlState.protocolViolation, 'invalid string in message', { severity: 'FATAL' });
  return [buf.toString('utf8', at, stop), stop + 1];
}
