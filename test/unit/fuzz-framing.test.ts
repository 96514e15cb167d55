import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import { parseOptions } from '../../src/frontend/client-handshake.js';
import { ProxyError, SqlState } from '../../src/errors.js';
import { FrameReader, parseStartupParameters, readStartupPacket } from '../../src/protocol/frame-reader.js';

// Property tests for the code that reads untrusted client bytes before anything else looks at
// them: typed-message framing, the untyped startup packet, its key/value body and `options`.
// Whatever the bytes, the only exception allowed is a ProxyError with SQLSTATE 08P01, and a bad
// length is refused as soon as the header is in, before any of the body is buffered.

interface Frame {
  code: number;
  body: Uint8Array;
}

function encode(frames: Frame[]): Buffer {
  return Buffer.concat(
    frames.map(({ code, body }) => {
      const head = Buffer.alloc(5);
      head[0] = code;
      head.writeInt32BE(body.length + 4, 1);
      return Buffer.concat([head, body]);
    }),
  );
}

/** Cuts `data` at the given (sorted, deduplicated) offsets. */
function split(data: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (data.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let at = 0;
  for (const p of points) {
    out.push(data.subarray(at, p));
    at = p;
  }
  out.push(data.subarray(at));
  return out;
}

function isProtocolViolation(error: unknown): boolean {
  return error instanceof ProxyError && error.sqlstate === SqlState.protocolViolation && error.severity === 'FATAL';
}

const frame = fc.record({ code: fc.integer({ min: 0, max: 255 }), body: fc.uint8Array({ maxLength: 300 }) });

describe('FrameReader', () => {
  it('yields exactly the frames that were sent, however the stream is cut', () => {
    fc.assert(
      fc.property(fc.array(frame, { maxLength: 20 }), fc.array(fc.nat(), { maxLength: 30 }), (frames, cuts) => {
        const reader = new FrameReader(1024);
        const seen: Frame[] = [];
        for (const piece of split(encode(frames), cuts)) {
          reader.push(piece);
          while (reader.next()) seen.push({ code: reader.code, body: Uint8Array.from(reader.buffer.subarray(reader.start, reader.end)) });
        }
        expect(seen).toEqual(frames.map((f) => ({ code: f.code, body: Uint8Array.from(f.body) })));
        expect(reader.pending).toBe(0);
      }),
      { numRuns: 300 },
    );
  });

  it('yields frames put back with unshift again, before the bytes still pending', () => {
    fc.assert(
      fc.property(fc.array(frame, { minLength: 1, maxLength: 12 }), fc.array(fc.nat(), { maxLength: 20 }), fc.nat(), fc.nat(), (frames, cuts, a, b) => {
        const reader = new FrameReader(1024);
        const seen: Frame[] = [];
        const pieces = split(encode(frames), cuts);
        // frames [from, to) are handed out, then put back (a session replaying its units)
        const from = a % frames.length;
        const to = from + 1 + (b % (frames.length - from));
        let index = 0;
        let replayed = false;
        let window: Buffer[] = [];
        for (const piece of pieces) {
          reader.push(piece);
          while (reader.next()) {
            if (index >= from && index < to && !replayed) window.push(Buffer.from(reader.buffer.subarray(reader.frameStart, reader.end)));
            else seen.push({ code: reader.code, body: Uint8Array.from(reader.buffer.subarray(reader.start, reader.end)) });
            index++;
            if (index === to && !replayed) {
              replayed = true;
              index = from;
              reader.unshift(Buffer.concat(window));
              window = [];
            }
          }
        }
        expect(seen).toEqual(frames.map((f) => ({ code: f.code, body: Uint8Array.from(f.body) })));
        expect(reader.pending).toBe(0);
      }),
      { numRuns: 300 },
    );
  });

  it('copies each byte of a large message split into many chunks at most twice (not once per chunk)', () => {
    const body = Buffer.alloc(4 << 20, 7);
    body.writeUInt32BE(0xdeadbeef, body.length - 4);
    const data = encode([{ code: 0x64, body }, { code: 0x63, body: new Uint8Array(0) }]);
    const chunkBytes = 4096;
    const copy = vi.spyOn(Buffer.prototype, 'copy');
    try {
      const reader = new FrameReader(8 << 20);
      const seen: { code: number; length: number; tail: number }[] = [];
      // a header split across chunks too: the first cut is inside it
      const cuts = [3, ...Array.from({ length: Math.ceil(data.length / chunkBytes) }, (_, i) => 3 + (i + 1) * chunkBytes)];
      for (const piece of split(data, cuts)) {
        reader.push(piece);
        while (reader.next()) seen.push({ code: reader.code, length: reader.end - reader.start, tail: reader.end - reader.start >= 4 ? reader.buffer.readUInt32BE(reader.end - 4) : 0 });
      }
      expect(seen).toEqual([{ code: 0x64, length: body.length, tail: 0xdeadbeef }, { code: 0x63, length: 0, tail: 0 }]);
      const copied = copy.mock.results.reduce((sum, r) => sum + (r.value as number), 0);
      expect(copied).toBeLessThanOrEqual(2 * data.length);
      expect(reader.bytesCopied).toBe(copied);
    } finally {
      copy.mockRestore();
    }
  });

  it('refuses a declared length below 4 or above the limit from the 5-byte header alone', () => {
    const badLength = fc.oneof(fc.integer({ min: -0x80000000, max: 3 }), fc.integer({ min: 1025, max: 0x7fffffff }));
    fc.assert(
      fc.property(fc.array(frame, { maxLength: 5 }), fc.integer({ min: 0, max: 255 }), badLength, (before, code, declared) => {
        const reader = new FrameReader(1024);
        const head = Buffer.alloc(5);
        head[0] = code;
        head.writeInt32BE(declared, 1);
        // only the header of the bad message is pushed: no body is needed to refuse it
        reader.push(Buffer.concat([encode(before), head]));
        let good = 0;
        let thrown: unknown;
        try {
          while (reader.next()) good++;
        } catch (error) {
          thrown = error;
        }
        expect(good).toBe(before.length);
        expect(isProtocolViolation(thrown), String(thrown)).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it('throws nothing but 08P01 on arbitrary bytes, and never returns a frame past the data', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2000 }), fc.array(fc.nat(), { maxLength: 10 }), (bytes, cuts) => {
        const reader = new FrameReader(1 << 16);
        try {
          for (const piece of split(Buffer.from(bytes), cuts)) {
            reader.push(piece);
            while (reader.next()) {
              expect(reader.end).toBeLessThanOrEqual(reader.buffer.length);
              expect(reader.start).toBeLessThanOrEqual(reader.end);
            }
          }
        } catch (error) {
          expect(isProtocolViolation(error), String(error)).toBe(true);
        }
      }),
      { numRuns: 500 },
    );
  });
});

describe('startup packet', () => {
  it('refuses a length below 8 or above the limit from the first 4 bytes', () => {
    const badLength = fc.oneof(fc.integer({ min: -0x80000000, max: 7 }), fc.integer({ min: 10_001, max: 0x7fffffff }));
    fc.assert(
      fc.property(badLength, fc.uint8Array({ maxLength: 4 }), (length, rest) => {
        const head = Buffer.alloc(4);
        head.writeInt32BE(length, 0);
        expect(() => readStartupPacket(Buffer.concat([head, rest]), 10_000)).toThrow(ProxyError);
        try {
          readStartupPacket(head, 10_000);
        } catch (error) {
          expect(isProtocolViolation(error)).toBe(true);
          return;
        }
        throw new Error(`length ${length} was not refused from 4 bytes`);
      }),
      { numRuns: 300 },
    );
  });

  it('throws nothing but 08P01 on arbitrary bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        try {
          const packet = readStartupPacket(Buffer.from(bytes), 10_000);
          if (packet) {
            expect(packet.consumed).toBeGreaterThanOrEqual(8);
            expect(packet.consumed).toBeLessThanOrEqual(bytes.length);
            try {
              parseStartupParameters(packet.body);
            } catch (error) {
              expect(isProtocolViolation(error), String(error)).toBe(true);
            }
          }
        } catch (error) {
          expect(isProtocolViolation(error), String(error)).toBe(true);
        }
      }),
      { numRuns: 500 },
    );
  });

  const key = fc.string({ unit: 'grapheme', minLength: 1, maxLength: 30 }).filter((s) => !s.includes('\0'));
  const value = fc.string({ unit: 'grapheme', maxLength: 60 }).filter((s) => !s.includes('\0'));

  it('reads back the parameters that were written', () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.tuple(key, value), { selector: ([k]) => k, maxLength: 10 }), (pairs) => {
        const body = Buffer.concat([...pairs.flatMap(([k, v]) => [Buffer.from(`${k}\0`), Buffer.from(`${v}\0`)]), Buffer.from([0])]);
        expect(parseStartupParameters(body)).toEqual(new Map(pairs));
      }),
      { numRuns: 300 },
    );
  });

  it('refuses a body whose last name or value is not terminated', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(key, value), { maxLength: 5 }), key, fc.boolean(), (pairs, last, withValue) => {
        const body = Buffer.concat([
          ...pairs.flatMap(([k, v]) => [Buffer.from(`${k}\0`), Buffer.from(`${v}\0`)]),
          Buffer.from(withValue ? `${last}\0unterminated` : last),
        ]);
        expect(() => parseStartupParameters(body)).toThrow(expect.objectContaining({ sqlstate: SqlState.protocolViolation }));
      }),
      { numRuns: 200 },
    );
  });
});

describe('options startup parameter', () => {
  const word = fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 20 }).filter((s) => /^[a-z_][a-z0-9_.]*$/.test(s));
  const setting = fc.string({ unit: 'grapheme', maxLength: 30 }).filter((s) => !s.includes('\0'));

  it('never throws, whatever the text', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', maxLength: 200 }), (text) => {
        const parsed = parseOptions(text);
        for (const [k] of parsed) expect(k.length).toBeGreaterThan(0);
      }),
      { numRuns: 500 },
    );
  });

  it('reads back -c name=value pairs with escaped spaces and backslashes', () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.tuple(word, setting), { selector: ([k]) => k, maxLength: 5 }), (pairs) => {
        const escape = (s: string) => s.replace(/[\\ \t]/g, (c) => `\\${c}`);
        const text = pairs.map(([k, v]) => `-c ${escape(`${k}=${v}`)}`).join(' ');
        expect(parseOptions(text)).toEqual(new Map(pairs));
      }),
      { numRuns: 300 },
    );
  });
});
