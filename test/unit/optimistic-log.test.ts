import { beforeAll, describe, expect, it } from 'vitest';
import { Classifier } from '../../src/classify/classifier.js';
import { OptimisticLog } from '../../src/frontend/optimistic-log.js';
import { BackendCode, FrontendCode, TxStatus } from '../../src/protocol/codes.js';
import { FrameReader } from '../../src/protocol/frame-reader.js';
import { message } from '../../src/protocol/messages.js';
import { firstDifference, RowDigest, SUSPENDED_ROWS } from '../../src/protocol/row-digest.js';
import { ServerMessageScanner, type ServerMessageSink } from '../../src/protocol/server-scanner.js';
import { deferredBeginTag, isPlainRead, staysOnReplica, targetOf } from '../../src/routing/unit-route.js';

// The parts of optimistic transactions that need no server: the row digest (order-insensitive,
// sensitive to any byte, a row count and statement boundaries), the scanner feeding it while it
// forwards (whatever the chunk boundaries, swallowed rows not counted), the replay log (what it
// keeps to run again: simple Queries as sent, a portal's first Execute as a self-contained
// Parse/Bind/Execute/Sync, its later parts alone), and the routing rules (what is a plain read, what stays, which BEGINs
// are held).

function dataRow(values: (string | null)[]): Buffer {
  return message(BackendCode.DataRow, (w) => {
    w.int16(values.length);
    for (const v of values) {
      if (v === null) w.int32(-1);
      else {
        const b = Buffer.from(v);
        w.int32(b.length).bytes(b);
      }
    }
  });
}

const commandComplete = (tag: string): Buffer => message(BackendCode.CommandComplete, (w) => w.cstring(tag));

/** Digests rows as the replay does (whole frames): per statement, the rows given. */
function digestOf(statements: (string | null)[][][]): number[] {
  const digest = new RowDigest();
  for (const rows of statements) {
    for (const row of rows) {
      const frame = dataRow(row);
      digest.add(frame, 5, frame.length);
      digest.rowEnd();
    }
    digest.statementEnd();
  }
  return digest.results.slice();
}

class PassSink implements ServerMessageSink {
  constructor(private readonly dropCode = -1) {}
  drop(code: number): boolean {
    return code === this.dropCode;
  }
  small(): boolean {
    return true;
  }
  end(): boolean {
    return false;
  }
  out(): void {}
  insert(): void {}
}

describe('RowDigest', () => {
  it('does not depend on row order, but on every byte, the row count and which statement a row belongs to', () => {
    const base = digestOf([[['1', 'a'], ['2', 'b'], ['3', null]]]);
    expect(firstDifference(base, digestOf([[['3', null], ['1', 'a'], ['2', 'b']]]))).toBe(-1);
    expect(firstDifference(base, digestOf([[['1', 'a'], ['2', 'c'], ['3', null]]]))).toBe(0);
    expect(firstDifference(base, digestOf([[['1', 'a'], ['2', 'b'], ['3', '']]]))).toBe(0); // NULL is not ''
    expect(firstDifference(base, digestOf([[['1', 'a'], ['2', 'b']]]))).toBe(0);
    expect(firstDifference(base, digestOf([[['1', 'a'], ['2', 'b'], ['3', null], ['3', null]]]))).toBe(0);
    // the same rows, split differently between two statements
    const two = digestOf([[['1', 'a']], [['2', 'b']]]);
    expect(firstDifference(two, digestOf([[], [['1', 'a'], ['2', 'b']]]))).toBe(0);
    expect(firstDifference(two, digestOf([[['1', 'a']], [['2', 'b']], []]))).toBe(2);
    // a duplicated row does not cancel out (sums, not xor)
    expect(firstDifference(digestOf([[['x'], ['x']]]), digestOf([[['y'], ['y']]]))).toBe(0);
  });

  it('fed by the scanner while forwarding, whatever the chunk boundaries, equals the digest of whole frames', () => {
    const rows = [['10', 'ten'], ['20', null], ['30', 'x'.repeat(300)]];
    const stream = Buffer.concat([...rows.map(dataRow), commandComplete('SELECT 3'), dataRow(['7']), commandComplete('SELECT 1')]);
    const expected = digestOf([rows, [['7']]]);
    for (let cut = 1; cut < stream.length; cut += 7) {
      const scanner = new ServerMessageScanner();
      scanner.digest = new RowDigest();
      const sink = new PassSink();
      scanner.scan(stream.subarray(0, cut), sink);
      scanner.scan(stream.subarray(cut), sink);
      expect(firstDifference(expected, scanner.digest.results)).toBe(-1);
    }
  });

  it('does not count what the session swallows; an error is a result of its own, with the rows before it', () => {
    const scanner = new ServerMessageScanner();
    scanner.digest = new RowDigest();
    const swallowed = Buffer.concat([dataRow(['1']), commandComplete('SELECT 1')]);
    scanner.scan(swallowed, new PassSink(BackendCode.DataRow));
    expect(scanner.digest.results).toEqual([0, 0, 0]);
    const error = message(BackendCode.ErrorResponse, (w) => w.int8(0x53).cstring('ERROR').int8(0x43).cstring('22012').int8(0));
    const stream = Buffer.concat([dataRow(['1']), dataRow(['2']), error]);
    scanner.scan(stream, new PassSink());
    const failedAfterTwo = scanner.digest.results.slice(3);
    expect(failedAfterTwo[0]).toBe(-3);
    // the same rows then the error elsewhere (split anywhere) answer alike
    for (let cut = 1; cut < stream.length; cut += 5) {
      const again = new ServerMessageScanner();
      again.digest = new RowDigest();
      again.scan(stream.subarray(0, cut), new PassSink());
      again.scan(stream.subarray(cut), new PassSink());
      expect(firstDifference(failedAfterTwo, again.digest.results)).toBe(-1);
    }
    // no error there, or an error after another row: different
    const completed = new ServerMessageScanner();
    completed.digest = new RowDigest();
    completed.scan(Buffer.concat([dataRow(['1']), dataRow(['2']), commandComplete('SELECT 2')]), new PassSink());
    expect(firstDifference(failedAfterTwo, completed.digest.results)).toBe(0);
    const later = new ServerMessageScanner();
    later.digest = new RowDigest();
    later.scan(Buffer.concat([dataRow(['1']), dataRow(['2']), dataRow(['3']), error]), new PassSink());
    expect(firstDifference(failedAfterTwo, later.digest.results)).toBe(0);
  });

  it('counts a part of a portal that stopped at its row limit as a result of its own, told from a completed statement', () => {
    const suspended = message(BackendCode.PortalSuspended, () => {});
    const scan = (parts: Buffer[]) => {
      const scanner = new ServerMessageScanner();
      scanner.digest = new RowDigest();
      scanner.scan(Buffer.concat(parts), new PassSink());
      return scanner.digest.results.slice();
    };
    const parts = scan([dataRow(['1']), dataRow(['2']), suspended, dataRow(['3']), commandComplete('SELECT 1')]);
    expect(parts).toHaveLength(6);
    expect(parts[0]).toBe(SUSPENDED_ROWS + 2);
    expect(parts[3]).toBe(1);
    // the same rows, in one part, or the first part ending the portal instead of stopping: another answer
    expect(firstDifference(parts, scan([dataRow(['1']), dataRow(['2']), dataRow(['3']), commandComplete('SELECT 3')]))).toBe(0);
    expect(firstDifference(parts, scan([dataRow(['1']), dataRow(['2']), commandComplete('SELECT 2'), commandComplete('SELECT 0')]))).toBe(0);
    expect(firstDifference(parts, scan([dataRow(['1']), dataRow(['2']), suspended, dataRow(['3']), commandComplete('SELECT 1')]))).toBe(-1);
  });
});

/** Client frames as one buffer, read back one by one into `log`. */
function record(log: OptimisticLog, frames: Buffer[]): void {
  const reader = new FrameReader();
  reader.push(Buffer.concat(frames));
  while (reader.next()) log.record(reader.code, reader.buffer, reader.start, reader.end);
}

const query = (sql: string): Buffer => message(FrontendCode.Query, (w) => w.cstring(sql));
const parse = (name: string, sql: string, types: number[] = []): Buffer =>
  message(FrontendCode.Parse, (w) => {
    w.cstring(name).cstring(sql).int16(types.length);
    for (const t of types) w.int32(t);
  });
const bind = (portal: string, statement: string, params: string[], resultFormat = 0): Buffer =>
  message(FrontendCode.Bind, (w) => {
    w.cstring(portal).cstring(statement).int16(0).int16(params.length);
    for (const p of params) w.int32(Buffer.byteLength(p)).bytes(Buffer.from(p));
    w.int16(1).int16(resultFormat);
  });
const execute = (portal: string, limit = 0): Buffer => message(FrontendCode.Execute, (w) => w.cstring(portal).int32(limit));
const sync = message(FrontendCode.Sync);
const close = (portal: string): Buffer => message(FrontendCode.Close, (w) => w.int8(0x50).cstring(portal));

describe('OptimisticLog', () => {
  const known = new Map([['s_before', Buffer.concat([Buffer.from('SELECT v FROM t WHERE id = $1\0'), Buffer.from([0, 1, 0, 0, 0, 23])])]]);
  const statements = { parseBody: (name: string) => known.get(name) };

  it('keeps a simple Query as sent, and the first Execute of a portal as a self-contained Parse of the unnamed statement, Bind of the portal, Execute, Sync', () => {
    const log = new OptimisticLog(statements);
    record(log, [query('SAVEPOINT a'), parse('', 'SELECT $1::int', [23]), bind('', '', ['5'], 1), execute(''), sync, bind('p1', 's_before', ['7']), execute('p1'), sync]);
    expect(log.unreplayable).toBeUndefined();
    expect(log.runs()).toHaveLength(3);
    expect(log.runs()[0]).toEqual(query('SAVEPOINT a'));
    expect(log.runs()[1]).toEqual(Buffer.concat([parse('', 'SELECT $1::int', [23]), bind('', '', ['5'], 1), execute(''), sync]));
    // a statement parsed before the transaction, bound to a named portal: its text and types from the client's statements
    expect(log.runs()[2]).toEqual(Buffer.concat([parse('', 'SELECT v FROM t WHERE id = $1', [23]), bind('p1', '', ['7']), execute('p1'), sync]));
    expect(log.bytes).toBe(log.runs().reduce((n, r) => n + r.length, 0));
    log.reset();
    expect(log.runs()).toHaveLength(0);
    expect(log.bytes).toBe(0);
  });

  it('keeps a portal read in parts in the same parts, to its end or not, between other statements or not; a Close of it; a portal bound again is a new one', () => {
    const log = new OptimisticLog(statements);
    // pgjdbc with a fetch size: a named portal, an Execute of 5 rows at a time, each up to its Sync
    record(log, [parse('S_1', 'SELECT v FROM t', []), bind('C_1', 'S_1', []), execute('C_1', 5), sync, execute('C_1', 5), sync, query('SELECT 1'), execute('C_1', 5), sync]);
    expect(log.unreplayable).toBeUndefined();
    expect(log.runs()).toEqual([
      Buffer.concat([parse('', 'SELECT v FROM t', []), bind('C_1', '', []), execute('C_1', 5), sync]),
      Buffer.concat([execute('C_1', 5), sync]),
      query('SELECT 1'),
      Buffer.concat([execute('C_1', 5), sync]),
    ]);
    // a long read in parts (a fetch size over a big result) stays small: each part like the one before it adds no bytes
    const long = new OptimisticLog(statements);
    const parts = Array.from({ length: 10_000 }, () => [execute('C_1', 100), sync]).flat();
    record(long, [parse('S_1', 'SELECT v FROM t', []), bind('C_1', 'S_1', []), execute('C_1', 100), sync, ...parts]);
    expect(long.bytes).toBe(Buffer.concat([parse('', 'SELECT v FROM t', []), bind('C_1', '', []), execute('C_1', 100), sync, execute('C_1', 100), sync]).length);
    expect(long.runs()).toHaveLength(10_001);
    expect(long.runs()[10_000]).toEqual(Buffer.concat([execute('C_1', 100), sync]));
    // two portals read in turns, then one closed
    const interleaved = new OptimisticLog(statements);
    record(interleaved, [parse('S_1', 'SELECT v FROM t', []), bind('A', 'S_1', []), bind('B', 'S_1', []), execute('A', 5), execute('B', 5), execute('A', 5), close('A'), sync]);
    expect(interleaved.unreplayable).toBeUndefined();
    expect(interleaved.runs()).toEqual([
      Buffer.concat([parse('', 'SELECT v FROM t', []), bind('A', '', []), execute('A', 5), sync]),
      Buffer.concat([parse('', 'SELECT v FROM t', []), bind('B', '', []), execute('B', 5), sync]),
      Buffer.concat([execute('A', 5), sync]),
      Buffer.concat([close('A'), sync]),
    ]);
    // the unnamed portal bound again: its Execute is kept whole again
    const rebound = new OptimisticLog(statements);
    record(rebound, [parse('', 'SELECT 1', []), bind('', '', []), execute(''), sync, bind('', '', []), execute(''), sync]);
    expect(rebound.unreplayable).toBeUndefined();
    expect(rebound.runs()).toEqual([Buffer.concat([parse('', 'SELECT 1', []), bind('', '', []), execute(''), sync]), Buffer.concat([parse('', 'SELECT 1', []), bind('', '', []), execute(''), sync])]);
  });

  it('cannot be run again after a portal it cannot rebuild; a row limit is kept; a failed statement is kept', () => {
    const limited = new OptimisticLog(statements);
    record(limited, [parse('', 'SELECT 1'), bind('', '', []), execute('', 10), sync]);
    // pgjdbc runs its SAVEPOINTs and COMMITs with a limit of 1: kept as it is
    expect(limited.unreplayable).toBeUndefined();
    expect(limited.runs()).toEqual([Buffer.concat([parse('', 'SELECT 1'), bind('', '', []), execute('', 10), sync])]);
    const unknown = new OptimisticLog(statements);
    record(unknown, [bind('', 'never_parsed', []), execute(''), sync]);
    expect(unknown.unreplayable).toMatch(/portal/);
    // a statement that failed, rolled back to a savepoint: kept, to fail again in the same place
    const failed = new OptimisticLog(statements);
    record(failed, [query('SELECT 1/0'), query('ROLLBACK TO SAVEPOINT a')]);
    failed.digest.statementFailed();
    failed.digest.statementEnd();
    expect(failed.unreplayable).toBeUndefined();
    expect(failed.runs()).toEqual([query('SELECT 1/0'), query('ROLLBACK TO SAVEPOINT a')]);
  });
});

describe('optimistic routing rules', () => {
  let classifier: Classifier;
  beforeAll(async () => {
    classifier = await Classifier.create();
  });
  const c = (sql: string) => classifier.classify(sql);

  it('a plain read: a read without session effects, pins, cursors or answers that depend on the server or the moment', () => {
    for (const sql of ['SELECT v FROM t WHERE id = 1', 'SELECT count(*) FROM t', "SELECT current_setting('app.x')", 'SHOW work_mem']) expect([sql, isPlainRead(c(sql))]).toEqual([sql, true]);
    for (const sql of ['SELECT now()', 'SELECT CURRENT_TIMESTAMP', 'SELECT random()', 'SELECT inet_server_port()', 'SELECT pg_backend_pid()', 'DECLARE c CURSOR FOR SELECT 1', 'SELECT 1 FROM t FOR UPDATE', "SELECT nextval('s')", 'INSERT INTO t VALUES (1)']) {
      expect([sql, isPlainRead(c(sql))]).toEqual([sql, false]);
    }
  });

  it('stays on the replica: plain reads, savepoints, SET LOCAL, FETCH, COMMIT, ROLLBACK; anything else moves', () => {
    for (const sql of ['SELECT 1', 'SAVEPOINT a', 'RELEASE SAVEPOINT a', 'ROLLBACK TO SAVEPOINT a', 'SET LOCAL work_mem = 1000', 'FETCH 1 FROM c', 'COMMIT', 'ROLLBACK']) expect([sql, staysOnReplica(c(sql))]).toEqual([sql, true]);
    for (const sql of ['UPDATE t SET v = 1', 'SET work_mem = 1000', 'LOCK t', 'SELECT now()', 'PREPARE p AS SELECT 1', 'LISTEN x']) expect([sql, staysOnReplica(c(sql))]).toEqual([sql, false]);
    expect(staysOnReplica(undefined)).toBe(true);
  });

  it('holds BEGIN with READ COMMITTED or REPEATABLE READ when optimistic; SERIALIZABLE never; the first plain read, or a transaction setting a replica runs alike, picks a replica', () => {
    const facts = { idle: true, pinned: false, beginDeferred: false, defaultReadOnly: false, clientTxStatus: TxStatus.Idle };
    for (const sql of ['BEGIN ISOLATION LEVEL REPEATABLE READ', 'START TRANSACTION ISOLATION LEVEL READ COMMITTED']) {
      expect(deferredBeginTag(c(sql), sql, { ...facts, optimistic: true })).toBeDefined();
      expect(deferredBeginTag(c(sql), sql, { ...facts, optimistic: false })).toBeUndefined();
    }
    expect(deferredBeginTag(c('BEGIN ISOLATION LEVEL SERIALIZABLE'), 'BEGIN ISOLATION LEVEL SERIALIZABLE', { ...facts, optimistic: true })).toBeUndefined();
    // a transaction that says it will write goes to the primary at once
    expect(deferredBeginTag(c('BEGIN READ WRITE'), 'BEGIN READ WRITE', { ...facts, optimistic: true })).toBeUndefined();
    const held = { beginDeferred: true, defaultReadOnly: false };
    expect(targetOf(c('SELECT 1'), { ...held, optimistic: true })).toBe('replica');
    expect(targetOf(c('SELECT 1'), { ...held, optimistic: false })).toBe('primary');
    expect(targetOf(c('SELECT now()'), { ...held, optimistic: true })).toBe('primary');
    expect(targetOf(c('SAVEPOINT a'), { ...held, optimistic: true })).toBe('primary');
    // an ORM's setting right after BEGIN (TypeORM, Sequelize, Rails' isolation, SET LOCAL timeouts): a replica runs it alike
    expect(targetOf(c('SET TRANSACTION ISOLATION LEVEL READ COMMITTED'), { ...held, optimistic: true })).toBe('replica');
    expect(targetOf(c("SET LOCAL statement_timeout = '5s'"), { ...held, optimistic: true })).toBe('replica');
    expect(targetOf(c("SET LOCAL statement_timeout = '5s'"), { ...held, optimistic: false })).toBe('primary');
    expect(targetOf(c('SET TRANSACTION ISOLATION LEVEL SERIALIZABLE'), { ...held, optimistic: true })).toBe('primary');
    expect(targetOf(c('SET TRANSACTION READ WRITE'), { ...held, optimistic: true })).toBe('primary');
  });
});
