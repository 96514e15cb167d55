import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ProxyError, SqlState } from '../../src/errors.js';
import { BackendCode } from '../../src/protocol/codes.js';
import { isSmall, ServerMessageScanner, type ServerMessageSink } from '../../src/protocol/server-scanner.js';

// The server → client scanner of a session, on plain bytes: whatever the chunk boundaries, the
// client gets exactly the messages that are neither swallowed nor held back, in order, with the
// sink's own bytes right after the message that asked for them; every message ends once, with
// its full length; a small message's body is seen whole.

interface Msg {
  code: number;
  body: Buffer;
  /** the sink swallows it */
  drop: boolean;
  /** a small message the sink holds back (e.g. in_hot_standby, a server FATAL) */
  hold: boolean;
  /** the sink inserts bytes of its own after it */
  insert: boolean;
}

const INSERTED = Buffer.from('<pgrelay>');

function bytesOf(m: { code: number; body: Buffer }): Buffer {
  const head = Buffer.alloc(5);
  head[0] = m.code;
  head.writeInt32BE(m.body.length + 4, 1);
  return Buffer.concat([head, m.body]);
}

/** A sink that follows a script: message i is dropped / held / followed by an insert as `msgs[i]` says. */
class ScriptedSink implements ServerMessageSink {
  private index = 0;
  private started = -1;
  readonly output: Buffer[] = [];
  readonly ended: { code: number; length: number; dropped: boolean }[] = [];
  readonly smallBodies: Buffer[] = [];

  constructor(private readonly msgs: Msg[]) {}

  drop(code: number): boolean {
    this.started++;
    expect(code).toBe(this.msgs[this.started]!.code);
    return this.msgs[this.started]!.drop;
  }

  small(code: number, body: Buffer, start: number, end: number, dropped: boolean): boolean {
    const m = this.msgs[this.index]!;
    expect(code).toBe(m.code);
    expect(dropped).toBe(m.drop);
    this.smallBodies.push(Buffer.from(body.subarray(start, end)));
    return !m.drop && !m.hold;
  }

  end(code: number, length: number, dropped: boolean): boolean {
    this.ended.push({ code, length, dropped });
    return this.msgs[this.index++]!.insert;
  }

  out(data: Buffer): void {
    this.output.push(Buffer.from(data));
  }

  insert(): void {
    this.output.push(INSERTED);
  }
}

function expectedOutput(msgs: Msg[]): Buffer {
  const parts: Buffer[] = [];
  for (const m of msgs) {
    if (!m.drop && !(isSmall(m.code) && m.hold)) parts.push(bytesOf(m));
    if (m.insert) parts.push(INSERTED);
  }
  return Buffer.concat(parts);
}

function run(msgs: Msg[], pieces: Buffer[]): ScriptedSink {
  const scanner = new ServerMessageScanner();
  const sink = new ScriptedSink(msgs);
  for (const piece of pieces) scanner.scan(piece, sink);
  expect(scanner.inMessage).toBe(false);
  return sink;
}

function check(msgs: Msg[], pieces: Buffer[]): void {
  const sink = run(msgs, pieces);
  expect(Buffer.concat(sink.output).equals(expectedOutput(msgs))).toBe(true);
  expect(sink.ended).toEqual(msgs.map((m) => ({ code: m.code, length: m.body.length + 5, dropped: m.drop })));
  expect(sink.smallBodies).toEqual(msgs.filter((m) => isSmall(m.code)).map((m) => m.body));
}

function cutAt(data: Buffer, points: number[]): Buffer[] {
  const sorted = [...new Set(points.map((p) => p % (data.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let at = 0;
  for (const p of sorted) {
    out.push(data.subarray(at, p));
    at = p;
  }
  out.push(data.subarray(at));
  return out;
}

const CODES = [
  BackendCode.ReadyForQuery,
  BackendCode.ParameterStatus,
  BackendCode.ErrorResponse,
  BackendCode.DataRow,
  BackendCode.RowDescription,
  BackendCode.CommandComplete,
  BackendCode.ParseComplete,
  BackendCode.NoticeResponse,
];

const msgArb = fc.record({
  code: fc.constantFrom(...CODES),
  body: fc.uint8Array({ maxLength: 40 }).map((a) => Buffer.from(a)),
  drop: fc.boolean(),
  hold: fc.boolean(),
  insert: fc.boolean(),
});

/** A realistic answer: a row description, rows, a notice, a swallowed state reply, a held parameter, an error. */
const SAMPLE: Msg[] = [
  { code: BackendCode.CommandComplete, body: Buffer.from('SET\0'), drop: true, hold: false, insert: false },
  { code: BackendCode.ReadyForQuery, body: Buffer.from('I'), drop: true, hold: false, insert: false },
  { code: BackendCode.ParseComplete, body: Buffer.alloc(0), drop: false, hold: false, insert: true },
  { code: BackendCode.RowDescription, body: Buffer.from('\0\x01a\0\0\0\0\0\0\0\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0', 'latin1'), drop: false, hold: false, insert: false },
  { code: BackendCode.DataRow, body: Buffer.from('\0\x01\0\0\0\x0212', 'latin1'), drop: false, hold: false, insert: false },
  { code: BackendCode.ParameterStatus, body: Buffer.from('in_hot_standby\0on\0'), drop: false, hold: true, insert: false },
  { code: BackendCode.DataRow, body: Buffer.alloc(300, 7), drop: false, hold: false, insert: false },
  { code: BackendCode.ErrorResponse, body: Buffer.from('SERROR\0C42P01\0Mno\0\0'), drop: false, hold: false, insert: false },
  { code: BackendCode.ReadyForQuery, body: Buffer.from('I'), drop: false, hold: false, insert: true },
];

describe('ServerMessageScanner', () => {
  it('passes a stream whole when it comes in one chunk', () => {
    check(SAMPLE, [Buffer.concat(SAMPLE.map(bytesOf))]);
  });

  it('gives the same output cut at every offset', () => {
    const data = Buffer.concat(SAMPLE.map(bytesOf));
    for (let k = 0; k <= data.length; k++) check(SAMPLE, cutAt(data, [k]));
  });

  it('gives the same output cut at every pair of offsets', () => {
    const data = Buffer.concat(SAMPLE.map(bytesOf));
    for (let a = 0; a <= data.length; a += 5) for (let b = a; b <= data.length; b += 7) check(SAMPLE, cutAt(data, [a, b]));
  });

  it('gives the same output byte by byte', () => {
    const data = Buffer.concat(SAMPLE.map(bytesOf));
    check(SAMPLE, [...data].map((byte) => Buffer.from([byte])));
  });

  it('gives the same output for any messages cut anywhere', () => {
    fc.assert(
      fc.property(fc.array(msgArb, { maxLength: 20 }), fc.array(fc.nat(), { maxLength: 30 }), (msgs, cuts) => {
        check(msgs, cutAt(Buffer.concat(msgs.map(bytesOf)), cuts));
      }),
      { numRuns: 500 },
    );
  });

  it('knows when the stream stopped inside a message, and whether the client has part of it', () => {
    const row = bytesOf({ code: BackendCode.DataRow, body: Buffer.alloc(20) });
    const forwarded = new ServerMessageScanner();
    forwarded.scan(row.subarray(0, 10), new ScriptedSink([{ code: BackendCode.DataRow, body: Buffer.alloc(20), drop: false, hold: false, insert: false }]));
    expect(forwarded.inMessage).toBe(true);
    expect(forwarded.clientHasPart).toBe(true);
    const swallowed = new ScriptedSink([{ code: BackendCode.DataRow, body: Buffer.alloc(20), drop: true, hold: false, insert: false }]);
    const dropping = new ServerMessageScanner();
    dropping.scan(row.subarray(0, 10), swallowed);
    expect(dropping.inMessage).toBe(true);
    expect(dropping.clientHasPart).toBe(false);
    expect(swallowed.output).toEqual([]);
    const header = new ServerMessageScanner();
    header.scan(row.subarray(0, 3), new ScriptedSink([]));
    expect(header.inMessage).toBe(true);
    expect(header.clientHasPart).toBe(true);
    header.reset();
    expect(header.inMessage).toBe(false);
  });

  it('refuses a length below 4 with 08P01, wherever the header is cut', () => {
    const bad = Buffer.from([BackendCode.DataRow, 0, 0, 0, 3]);
    for (let k = 0; k <= bad.length; k++) {
      const scanner = new ServerMessageScanner();
      const sink = new ScriptedSink([]);
      let thrown: unknown;
      try {
        for (const piece of cutAt(bad, [k])) scanner.scan(piece, sink);
      } catch (error) {
        thrown = error;
      }
      expect(thrown).toBeInstanceOf(ProxyError);
      expect((thrown as ProxyError).sqlstate).toBe(SqlState.protocolViolation);
    }
  });
});
