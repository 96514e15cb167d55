import { serialize } from 'pg-protocol';
import { describe, expect, it } from 'vitest';
import { findExtendedBegin } from '../../src/frontend/extended-begin.js';

// Which extended-protocol messages make a BEGIN pgrelay may hold (see findExtendedBegin): the
// current message (a Parse or a Bind) and the client bytes after it.

const parse = (name: string, types: number[] = []): Buffer => serialize.parse({ name, text: 'BEGIN', types });
const bind = (statement: string, values: string[] = [], portal = ''): Buffer => serialize.bind({ portal, statement, values });
const execute = (portal = '', rows = 0): Buffer => serialize.execute({ portal, rows });
const none = (): boolean => false;

describe('findExtendedBegin', () => {
  it('Parse, Bind, Execute of the same statement and portal: three messages', () => {
    expect(findExtendedBegin(parse(''), Buffer.concat([bind(''), execute(), serialize.sync()]), none)).toEqual({ messages: 3, parsed: '', described: false });
    expect(findExtendedBegin(parse('S_2'), Buffer.concat([bind('S_2'), execute('', 1)]), none)).toEqual({ messages: 3, parsed: 'S_2', described: false });
  });

  it('a Describe of the portal before the Execute (libpq, psycopg 3): one message more', () => {
    const describe = serialize.describe({ type: 'P', name: '' });
    expect(findExtendedBegin(parse(''), Buffer.concat([bind(''), describe, execute(), serialize.sync()]), none)).toEqual({ messages: 4, parsed: '', described: true });
    expect(findExtendedBegin(bind('S_2'), Buffer.concat([describe, execute()]), (name) => name === 'S_2')).toEqual({ messages: 3, parsed: undefined, described: true });
    expect(findExtendedBegin(parse(''), Buffer.concat([bind(''), describe]), none)).toBe('incomplete');
  });

  it('Bind and Execute of a statement prepared as a BEGIN: two messages', () => {
    const rest = Buffer.concat([execute(), serialize.parse({ name: '', text: 'SELECT 1', types: [] })]);
    expect(findExtendedBegin(bind('S_2'), rest, (name) => name === 'S_2')).toEqual({ messages: 2, parsed: undefined, described: false });
    expect(findExtendedBegin(bind('S_3'), rest, (name) => name === 'S_2')).toBeUndefined();
  });

  it('messages not all in yet: incomplete', () => {
    expect(findExtendedBegin(parse(''), Buffer.alloc(0), none)).toBe('incomplete');
    expect(findExtendedBegin(parse(''), bind(''), none)).toBe('incomplete');
    expect(findExtendedBegin(parse(''), Buffer.concat([bind(''), execute().subarray(0, 6)]), none)).toBe('incomplete');
  });

  it('anything else is not held', () => {
    // parameter types, parameters, another statement, a Describe of the statement or of another portal, or a Flush between, another portal
    expect(findExtendedBegin(parse('', [23]), Buffer.concat([bind(''), execute()]), none)).toBeUndefined();
    expect(findExtendedBegin(parse(''), Buffer.concat([bind('', ['1']), execute()]), none)).toBeUndefined();
    expect(findExtendedBegin(parse(''), Buffer.concat([bind('S_1'), execute()]), none)).toBeUndefined();
    expect(findExtendedBegin(parse(''), Buffer.concat([bind(''), serialize.describe({ type: 'S', name: '' }), execute()]), none)).toBeUndefined();
    expect(findExtendedBegin(parse(''), Buffer.concat([bind(''), serialize.describe({ type: 'P', name: 'p9' }), execute()]), none)).toBeUndefined();
    expect(findExtendedBegin(parse(''), Buffer.concat([bind(''), serialize.describe({ type: 'P', name: '' }), serialize.flush(), execute()]), none)).toBeUndefined();
    expect(findExtendedBegin(parse(''), Buffer.concat([serialize.flush(), bind(''), execute()]), none)).toBeUndefined();
    expect(findExtendedBegin(parse(''), Buffer.concat([bind('', [], 'p1'), execute('p2')]), none)).toBeUndefined();
  });

  it('a later message cut short or without its terminator is not held (the session judges it)', () => {
    const broken = Buffer.from([0x42, 0, 0, 0, 6, 0x41, 0x41]);
    expect(findExtendedBegin(parse(''), Buffer.concat([broken, execute()]), none)).toBeUndefined();
    const negative = Buffer.from([0x42, 0xff, 0xff, 0xff, 0xf0]);
    expect(findExtendedBegin(parse(''), negative, none)).toBeUndefined();
    const huge = Buffer.from([0x42, 0x01, 0, 0, 0]);
    expect(findExtendedBegin(parse(''), huge, none)).toBeUndefined();
  });
});
