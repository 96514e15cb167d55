import { describe, expect, it } from 'vitest';
import type { Classification, SessionEffect } from '../../src/classify/classifier.js';
import { ClientStatements } from '../../src/frontend/client-statements.js';
import { StatementRegistry } from '../../src/frontend/prepared-statements.js';
import { FrontendCode } from '../../src/protocol/codes.js';

// One client's statement names against server connections (plain holders of `prepared` and
// `unnamedToken`, as a ServerConnection has them).

function cls(effects: SessionEffect[] = [], statements = 1): Classification {
  return { route: 'replica', pin: false, reason: 'test', effects, statements, userFunctions: [] };
}

function holder() {
  return { prepared: new Set<string>(), unnamedToken: 0 };
}

function parseMessage(name: string, text: string): Buffer {
  const body = Buffer.concat([Buffer.from(`${name}\0${text}\0`), Buffer.from([0, 0])]);
  const head = Buffer.alloc(5);
  head[0] = FrontendCode.Parse;
  head.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}

describe('ClientStatements: the unnamed statement', () => {
  it('is parsed again on a connection that holds another client’s (or none of this one’s)', () => {
    const mine = new ClientStatements();
    const a = holder();
    const b = holder();
    const parse = parseMessage('', 'SELECT 1');
    mine.parsedUnnamed(parse, { classification: cls(), text: 'SELECT 1' }, a);
    expect(mine.restoreUnnamed(a)).toBeUndefined();
    const again = mine.restoreUnnamed(b);
    expect(again?.equals(parse)).toBe(true);
    expect(mine.restoreUnnamed(b)).toBeUndefined();
    // another client parses its own unnamed statement on b: this client's must be sent again
    new ClientStatements().parsedUnnamed(parseMessage('', 'SELECT 2'), { classification: cls(), text: 'SELECT 2' }, b);
    expect(mine.restoreUnnamed(b)?.equals(parse)).toBe(true);
  });

  it('is closed there (not bound) when the client has none and the connection holds another’s', () => {
    const other = new ClientStatements();
    const conn = holder();
    other.parsedUnnamed(parseMessage('', 'SELECT 2'), { classification: cls(), text: 'SELECT 2' }, conn);
    const fresh = new ClientStatements();
    const close = fresh.restoreUnnamed(conn);
    expect(close?.[0]).toBe(FrontendCode.Close);
  });

  it('Close goes to the server only where the connection holds this client’s', () => {
    const mine = new ClientStatements();
    const a = holder();
    mine.parsedUnnamed(parseMessage('', 'SELECT 1'), { classification: cls(), text: 'SELECT 1' }, a);
    expect(mine.closeUnnamed(holder())).toBe(false);
    mine.parsedUnnamed(parseMessage('', 'SELECT 1'), { classification: cls(), text: 'SELECT 1' }, a);
    expect(mine.closeUnnamed(a)).toBe(true);
    expect(a.unnamedToken).toBe(0);
    expect(mine.unnamedPayload).toBeUndefined();
  });
});

describe('ClientStatements: named statements', () => {
  it('prepares a shared statement once per connection', () => {
    const registry = new StatementRegistry();
    const statement = registry.intern('SELECT 1', Buffer.from('SELECT 1\0\0\0'), cls());
    const mine = new ClientStatements();
    const conn = holder();
    expect(mine.prepareOn(conn, statement)).toBe(statement.parse);
    expect(mine.prepareOn(conn, statement)).toBeUndefined();
    expect(mine.prepareOn(holder(), statement)).toBe(statement.parse);
  });

  it('forgets a name whose Parse failed, unless a later Parse in flight maps it again', () => {
    const registry = new StatementRegistry();
    const statement = registry.intern('SELECT 1', Buffer.from('SELECT 1\0\0\0'), cls());
    const mine = new ClientStatements();
    mine.set('s1', statement);
    mine.parseFailed('s1', statement, true);
    expect(mine.get('s1')).toBe(statement);
    mine.parseFailed('s1', statement, false);
    expect(mine.has('s1')).toBe(false);
  });

  it('DEALLOCATE names the client’s own statement (or ALL, unpinned), or refuses another client’s server-side name', () => {
    const registry = new StatementRegistry();
    const statement = registry.intern('SELECT 1', Buffer.from('SELECT 1\0\0\0'), cls());
    const mine = new ClientStatements();
    mine.set('s1', statement);
    expect(mine.deallocateTarget(cls([{ type: 'deallocate', name: 's1' }]), false)).toEqual({ name: 's1', statement });
    expect(mine.deallocateTarget(cls([{ type: 'deallocate', name: 'other' }]), false)).toBeUndefined();
    expect(mine.deallocateTarget(cls([{ type: 'deallocate', name: null }]), false)).toEqual({ name: null, statement: undefined });
    expect(mine.deallocateTarget(cls([{ type: 'deallocate', name: null }]), true)).toBeUndefined();
    expect(mine.deallocateTarget(cls([{ type: 'deallocate', name: 's1' }], 2), false)).toBeUndefined();
    expect(mine.refusedDeallocate(cls([{ type: 'deallocate', name: statement.name }]), true)).toMatchObject({ sqlstate: '26000' });
    // in any statement of a multi-statement text
    expect(mine.refusedDeallocate(cls([{ type: 'deallocate', name: statement.name }], 2), false)).toMatchObject({ sqlstate: '26000' });
    expect(mine.refusedDeallocate(cls([{ type: 'deallocate', name: null }], 2), false)).toMatchObject({ sqlstate: '0A000' });
    expect(mine.refusedDeallocate(cls([{ type: 'deallocate', name: null }]), true)).toBeUndefined();
    expect(mine.refusedDeallocate(cls([{ type: 'deallocate', name: 'plain_name' }]), true)).toBeUndefined();
    expect(mine.refusedDeallocate(cls([{ type: 'deallocate', name: 's1' }]), true)).toBeUndefined();
  });
});

describe('bounds on prepared statements', () => {
  const rest = (text: string) => Buffer.from(`${text}\0\0\0`);

  it('a server connection keeps at most `max` statements, the least recently used go (never the one just prepared)', () => {
    const mine = new ClientStatements();
    const registry = new StatementRegistry();
    const conn = holder();
    const s = ['SELECT 1', 'SELECT 2', 'SELECT 3', 'SELECT 4'].map((t) => registry.intern(t, rest(t), cls()));
    expect(mine.prepareOn(conn, s[0]!)).toBe(s[0]!.parse);
    expect(mine.prepareOn(conn, s[1]!)).toBe(s[1]!.parse);
    expect(mine.prepareOn(conn, s[2]!)).toBe(s[2]!.parse);
    expect(mine.evictFrom(conn, 3, s[2]!.name)).toEqual([]);
    // s[0] used again: s[1] is now the least recently used
    expect(mine.prepareOn(conn, s[0]!)).toBeUndefined();
    expect(mine.prepareOn(conn, s[3]!)).toBe(s[3]!.parse);
    expect(mine.evictFrom(conn, 3, s[3]!.name)).toEqual([s[1]!.name]);
    expect([...conn.prepared]).toEqual([s[2]!.name, s[0]!.name, s[3]!.name]);
    expect(mine.evictFrom(conn, 1, s[3]!.name)).toEqual([s[2]!.name, s[0]!.name]);
    expect(mine.evictFrom(conn, 0, s[3]!.name)).toEqual([]); // 0: no cap
  });

  it('the registry is bounded in bytes; a text parsed again after it went gets a new server-side name', () => {
    const registry = new StatementRegistry(() => 4000);
    const first = registry.intern('SELECT 0', rest('SELECT 0'), cls());
    for (let i = 1; i < 100; i++) registry.intern(`SELECT ${i}`, rest(`SELECT ${i}`), cls());
    expect(registry.bytes).toBeLessThanOrEqual(4000);
    expect(registry.size).toBeLessThan(100);
    expect(registry.size).toBeGreaterThan(5);
    const again = registry.intern('SELECT 0', rest('SELECT 0'), cls());
    expect(again.name).not.toBe(first.name);
    // a recently used one stays
    const recent = registry.intern('SELECT 99', rest('SELECT 99'), cls());
    expect(registry.intern('SELECT 99', rest('SELECT 99'), cls())).toBe(recent);
  });
});
