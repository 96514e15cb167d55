import { serialize } from 'pg-protocol';
import { beforeAll, describe, expect, it } from 'vitest';
import { Classifier } from '../../src/classify/classifier.js';
import { FrameReader } from '../../src/protocol/frame-reader.js';
import { targetOf } from '../../src/routing/unit-route.js';
import { lookAhead, type AheadHost } from '../../src/frontend/unit-lookahead.js';
import type { Classification } from '../../src/classify/classifier.js';

// The look-ahead at an extended unit's later messages (a unit is routed by all of its statements).

let classifier: Classifier;
beforeAll(async () => {
  classifier = await Classifier.create();
});

function host(prepared: Record<string, string> = {}): AheadHost {
  return {
    classify: (text) => classifier.classify(text),
    statement: (name) => (prepared[name] === undefined ? undefined : classifier.classify(prepared[name]!)),
    wantsPrimary: (c: Classification | undefined) => targetOf(c, { beginDeferred: false, defaultReadOnly: false }) === 'primary',
  };
}

const unit = (...parts: Buffer[]) => Buffer.concat(parts);
const read = [serialize.bind({}), serialize.execute({})];

describe('lookAhead', () => {
  it('finds a later write (Parse, or Bind of a named statement prepared before) up to Sync', () => {
    expect(lookAhead(Buffer.alloc(0), unit(...read, serialize.parse({ text: 'INSERT INTO t VALUES (1)' }), serialize.bind({}), serialize.execute({}), serialize.sync()), host())).toBe('write');
    expect(lookAhead(Buffer.alloc(0), unit(...read, serialize.bind({ statement: 'w' }), serialize.execute({}), serialize.sync()), host({ w: 'UPDATE t SET v = 1' }))).toBe('write');
    expect(lookAhead(Buffer.alloc(0), unit(serialize.parse({ name: 'p', text: 'SELECT pg_advisory_lock(1)' }), serialize.sync()), host())).toBe('write');
  });

  it('a Bind of the unnamed statement the unit itself parses is that statement, not the one parsed before', () => {
    const before = host({ '': 'INSERT INTO t VALUES (1)' });
    expect(lookAhead(serialize.parse({ text: 'SELECT 1' }), unit(...read, serialize.sync()), before)).toBe('reads');
    expect(lookAhead(Buffer.alloc(0), unit(...read, serialize.sync()), before)).toBe('write');
  });

  it('answers reads only when the unit ends (Sync, Flush, Query) before any write', () => {
    expect(lookAhead(Buffer.alloc(0), unit(...read, serialize.parse({ text: 'SELECT 2' }), ...read, serialize.sync()), host())).toBe('reads');
    expect(lookAhead(Buffer.alloc(0), unit(...read, serialize.flush(), serialize.parse({ text: 'INSERT INTO t VALUES (1)' })), host())).toBe('reads');
    expect(lookAhead(Buffer.alloc(0), unit(...read, serialize.sync(), serialize.parse({ text: 'INSERT INTO t VALUES (1)' })), host())).toBe('reads');
  });

  it('is incomplete while the unit end is not in, even with a message cut short', () => {
    expect(lookAhead(Buffer.alloc(0), unit(...read), host())).toBe('incomplete');
    const cut = unit(...read, serialize.sync());
    expect(lookAhead(Buffer.alloc(0), cut.subarray(0, cut.length - 2), host())).toBe('incomplete');
    expect(lookAhead(Buffer.alloc(0), Buffer.alloc(0), host())).toBe('incomplete');
  });

  it("takes the current Parse's classification from the caller when given (its text is not classified again), and only for the current message", () => {
    const texts: string[] = [];
    const counting: AheadHost = { ...host(), classify: (text) => (texts.push(text), classifier.classify(text)) };
    const current = serialize.parse({ text: 'SELECT 1' });
    // the caller's classification decides: a write it says is one, whatever the text
    expect(lookAhead(current, unit(...read, serialize.sync()), counting, classifier.classify('INSERT INTO t VALUES (1)'))).toBe('write');
    expect(lookAhead(current, unit(...read, serialize.sync()), counting, classifier.classify('SELECT 1'))).toBe('reads');
    expect(texts).toEqual([]);
    // a later Parse in the unit is classified from its own text
    expect(lookAhead(current, unit(...read, serialize.parse({ text: 'INSERT INTO t VALUES (2)' }), ...read, serialize.sync()), counting, classifier.classify('SELECT 1'))).toBe('write');
    expect(texts).toEqual(['INSERT INTO t VALUES (2)']);
  });

  it('sends a FunctionCall or anything unexpected to the primary', () => {
    expect(lookAhead(Buffer.alloc(0), unit(...read, Buffer.from([0x46, 0, 0, 0, 4])), host())).toBe('write');
  });
});

describe('FrameReader.waitForMore', () => {
  it('returns the held message again only once more bytes are pushed, and shows what is unread', () => {
    const reader = new FrameReader(1024);
    reader.push(unit(serialize.parse({ text: 'SELECT 1' }), serialize.bind({})));
    expect(reader.next()).toBe(true);
    const code = reader.code;
    reader.waitForMore();
    expect(reader.held).toBe(true);
    expect(reader.next()).toBe(false);
    reader.push(serialize.sync());
    expect(reader.unread().length).toBe(reader.pending);
    expect(reader.next()).toBe(true);
    expect(reader.code).toBe(code);
    expect(reader.next()).toBe(true);
    expect(reader.next()).toBe(true);
    expect(String.fromCharCode(reader.code)).toBe('S');
    expect(reader.next()).toBe(false);
  });
});
