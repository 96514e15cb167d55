import { afterAll, beforeAll, describe, expect, it, onTestFinished, vi } from 'vitest';
import type { LocalCluster } from '../../src/local/cluster.js';
import { type BackendMessage, dataRow, errorFields, RawClient, rawMessage, types } from '../support/protocol-client.js';
import type { Relay } from '../support/relay.js';
import { type ShopReplica, startShopReplica } from '../support/shop-replica.js';
import { grew, transactionOutcomes } from '../support/transaction-outcomes.js';

// Optimistic transactions begun with a BEGIN sent through the extended protocol, as pgjdbc up to
// 42.7.6 sends it with autocommit off (its default extended query mode): Parse/Bind/Execute of
// "BEGIN" in front of the transaction's first statement, one Sync for both; once the BEGIN was
// used prepareThreshold times, a named statement: its Parse once, then Bind/Execute only. COMMIT
// comes as Parse/Bind/Execute of a named statement. The statements' and the COMMIT's messages
// below are those pgjdbc 42.7.13 sent through a TCP tap, byte for byte; the BEGIN's are what
// pgjdbc ≤ 42.7.6 sends instead of 42.7.13's simple Query (its sendOneQuery with
// QUERY_NO_METADATA: Parse, Bind, no Describe, Execute). No Java is needed here. Where
// statements ran is read on the servers: pg_stat_user_tables scan counters and
// current_setting('port').

const PASSWORD = { shop: 'shop-pw-81', monitor: 'monitor-pw-82', failover: 'failover-pw-83' };
const WAIT = { timeout: 20_000, interval: 100 };
let fixture: ShopReplica;
let cluster: LocalCluster;
let relay: Relay;
let primaryPort = 0;
let replicaPort = 0;

beforeAll(async () => {
  fixture = await startShopReplica('jx_items', PASSWORD);
  ({ cluster, relay } = fixture);
  primaryPort = cluster.node('primary').port;
  replicaPort = cluster.node('replica1').port;
}, 120_000);

afterAll(async () => {
  await relay?.stop();
  await cluster?.stop();
});

// ---------------------------------------------------------------- pgjdbc's messages

const cstr = (s: string): Buffer => Buffer.from(`${s}\0`);
const int16 = (n: number): Buffer => Buffer.from([(n >> 8) & 0xff, n & 0xff]);
const int32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
};
/** Parse: name, text, parameter type OIDs */
const parse = (name: string, text: string, oids: number[] = []): Buffer => rawMessage('P', Buffer.concat([cstr(name), cstr(text), int16(oids.length), ...oids.map(int32)]));
/** Bind of unnamed portal: int4 parameters in binary (as pgjdbc sends setInt), no result format codes */
const bind = (statement: string, ints: number[] = []): Buffer =>
  rawMessage('B', Buffer.concat([cstr(''), cstr(statement), int16(ints.length), ...ints.map(() => int16(1)), int16(ints.length), ...ints.flatMap((n) => [int32(4), int32(n)]), int16(0)]));
const describePortal = rawMessage('D', Buffer.from('P\0'));
const execute = (rows: number): Buffer => rawMessage('E', Buffer.concat([cstr(''), int32(rows)]));
const sync = rawMessage('S', Buffer.alloc(0));

/** pgjdbc ≤ 42.7.6, autocommit off: BEGIN (unnamed, or `begin` named when prepared) and the transaction's first statement, one Sync. */
function beginAndFirst(sql: string, ints: number[], begin: { prepared?: string; named?: string } = {}): Buffer {
  const head = begin.prepared !== undefined ? [bind(begin.prepared), execute(0)] : [parse(begin.named ?? '', 'BEGIN'), bind(begin.named ?? ''), execute(0)];
  return Buffer.concat([...head, ...statement(sql, ints)]);
}

/** A statement as pgjdbc runs it (unnamed, int4 parameters), without its Sync. */
function statement(sql: string, ints: number[]): Buffer[] {
  return [parse('', sql, ints.map(() => 23)), bind('', ints), describePortal, execute(0)];
}

/** COMMIT as pgjdbc sends it: a named statement, Execute with a row limit of 1 (no results wanted). */
const commit = (first: boolean): Buffer => Buffer.concat([...(first ? [parse('S_1', 'COMMIT')] : []), bind('S_1'), execute(1), sync]);

async function shop(): Promise<RawClient> {
  const c = await RawClient.connect(relay.port, { user: 'shop', password: PASSWORD.shop, database: cluster.database });
  onTestFinished(() => c.destroy());
  return c;
}

async function run(c: RawClient, data: Buffer): Promise<BackendMessage[]> {
  c.send(data);
  return c.until('Z');
}

const tags = (messages: BackendMessage[]): string[] => messages.filter((m) => m.type === 'C').map((m) => m.body.toString('utf8', 0, m.body.length - 1));
const status = (messages: BackendMessage[]): string => String.fromCharCode(messages.at(-1)!.body[0]!);
const rows = (messages: BackendMessage[]): (string | null)[][] => messages.filter((m) => m.type === 'D').map((m) => dataRow(m.body));

function scans(): Promise<Record<string, number>> {
  return fixture.scans();
}

async function scansGrew(before: Record<string, number>, by: { primary?: number; replica1?: number }): Promise<void> {
  await vi.waitFor(async () => {
    const now = await scans();
    for (const [name, n] of Object.entries(by)) expect(now[name]! - before[name]!).toBeGreaterThanOrEqual(n);
  }, WAIT);
}

function outcomes(): Promise<Record<string, number>> {
  return transactionOutcomes(relay);
}


function valueOf(id: number): Promise<number> {
  return fixture.valueOf(id);
}

const PORT = "SELECT current_setting('port')";

describe('optimistic transactions begun through the extended protocol (pgjdbc ≤ 42.7.6)', () => {
  it('a read-only transaction runs and commits on the replica; the BEGIN is answered in order', async () => {
    const c = await shop();
    const before = await scans();
    const metrics = await outcomes();
    const first = await run(c, Buffer.concat([beginAndFirst('SELECT v FROM jx_items WHERE id = $1', [3]), sync]));
    // BEGIN's ParseComplete, BindComplete, CommandComplete, then the SELECT's answers
    expect(types(first)).toEqual(['1', '2', 'C', '1', '2', 'T', 'D', 'C', 'Z']);
    expect(tags(first)).toEqual(['BEGIN', 'SELECT 1']);
    expect(rows(first)).toEqual([['30']]);
    expect(status(first)).toBe('T');
    const port = await run(c, Buffer.concat([...statement(PORT, []), sync]));
    expect(rows(port)).toEqual([[String(replicaPort)]]);
    const done = await run(c, commit(true));
    expect(types(done)).toEqual(['1', '2', 'C', 'Z']);
    expect(tags(done)).toEqual(['COMMIT']);
    expect(status(done)).toBe('I');
    await scansGrew(before, { replica1: 1 });
    expect(grew(metrics, await outcomes())).toEqual({ replica: 1 });
  });

  it('a named BEGIN statement (Parse once, then Bind/Execute only) is held too', async () => {
    const c = await shop();
    const metrics = await outcomes();
    const first = await run(c, Buffer.concat([beginAndFirst(PORT, [], { named: 'S_2' }), sync]));
    expect(types(first)).toEqual(['1', '2', 'C', '1', '2', 'T', 'D', 'C', 'Z']);
    expect(rows(first)).toEqual([[String(replicaPort)]]);
    expect(tags(await run(c, commit(true)))).toEqual(['COMMIT']);
    const again = await run(c, Buffer.concat([beginAndFirst(PORT, [], { prepared: 'S_2' }), sync]));
    expect(types(again)).toEqual(['2', 'C', '1', '2', 'T', 'D', 'C', 'Z']);
    expect(tags(again)).toEqual(['BEGIN', 'SELECT 1']);
    expect(rows(again)).toEqual([[String(replicaPort)]]);
    expect(tags(await run(c, commit(false)))).toEqual(['COMMIT']);
    expect(grew(metrics, await outcomes())).toEqual({ replica: 2 });
  });

  it('Close of statements pgjdbc dropped, in front of the BEGIN: still held', async () => {
    const c = await shop();
    const closeDropped = rawMessage('C', Buffer.from('SS_7\0'));
    const first = await run(c, Buffer.concat([closeDropped, beginAndFirst(PORT, []), sync]));
    expect(types(first)).toEqual(['3', '1', '2', 'C', '1', '2', 'T', 'D', 'C', 'Z']);
    expect(rows(first)).toEqual([[String(replicaPort)]]);
    expect(tags(await run(c, commit(true)))).toEqual(['COMMIT']);
  });

  it('a BEGIN alone up to its Sync is answered with status T; the next statement places the transaction', async () => {
    const c = await shop();
    const begun = await run(c, Buffer.concat([parse('', 'BEGIN'), bind(''), execute(0), sync]));
    expect(types(begun)).toEqual(['1', '2', 'C', 'Z']);
    expect(status(begun)).toBe('T');
    const port = await run(c, Buffer.concat([...statement(PORT, []), sync]));
    expect(rows(port)).toEqual([[String(replicaPort)]]);
    expect(tags(await run(c, commit(true)))).toEqual(['COMMIT']);
  });

  it('a SAVEPOINT behind the held BEGIN, as a Query in the run (pgjdbc autosave) or Parse/Bind/Execute up to its own Sync (psycopg 3): held with it, the transaction on the replica', async () => {
    const c = await shop();
    const metrics = await outcomes();
    const savepointQuery = rawMessage('Q', cstr('SAVEPOINT PGJDBC_AUTOSAVE'));
    const first = [...(await run(c, Buffer.concat([parse('', 'BEGIN'), bind(''), execute(0), savepointQuery, ...statement(PORT, []), sync]))), ...(await c.until('Z'))];
    // the BEGIN's answers, the SAVEPOINT's with its ReadyForQuery, then the statement's
    expect(types(first)).toEqual(['1', '2', 'C', 'C', 'Z', '1', '2', 'T', 'D', 'C', 'Z']);
    expect(tags(first)).toEqual(['BEGIN', 'SAVEPOINT', 'SELECT 1']);
    expect(rows(first)).toEqual([[String(replicaPort)]]);
    expect(tags(await run(c, Buffer.concat([parse('', 'RELEASE SAVEPOINT PGJDBC_AUTOSAVE'), bind(''), execute(1), sync])))).toEqual(['RELEASE']);
    expect(tags(await run(c, commit(true)))).toEqual(['COMMIT']);

    const begun = await run(c, Buffer.concat([parse('', 'BEGIN'), bind(''), execute(0), sync]));
    expect(status(begun)).toBe('T');
    const savepoint = await run(c, Buffer.concat([parse('', 'SAVEPOINT "_pg3_1"'), bind(''), execute(0), sync]));
    expect(types(savepoint)).toEqual(['1', '2', 'C', 'Z']);
    expect(tags(savepoint)).toEqual(['SAVEPOINT']);
    expect(status(savepoint)).toBe('T');
    expect(rows(await run(c, Buffer.concat([...statement(PORT, []), sync])))).toEqual([[String(replicaPort)]]);
    // the savepoint is there
    expect(tags(await run(c, Buffer.concat([parse('', 'ROLLBACK TO SAVEPOINT "_pg3_1"'), bind(''), execute(0), sync])))).toEqual(['ROLLBACK']);
    expect(tags(await run(c, commit(false)))).toEqual(['COMMIT']);
    expect(grew(metrics, await outcomes())).toEqual({ replica: 2 });
  });

  it('read, then write: moves to the primary before the write, the read verified there, commits there', async () => {
    const c = await shop();
    const before = await scans();
    const metrics = await outcomes();
    const first = await run(c, Buffer.concat([beginAndFirst('SELECT v FROM jx_items WHERE id = $1', [4]), sync]));
    expect(rows(first)).toEqual([['40']]);
    const update = await run(c, Buffer.concat([...statement('UPDATE jx_items SET v = v + 1 WHERE id = $1', [7]), sync]));
    expect(tags(update)).toEqual(['UPDATE 1']);
    expect(status(update)).toBe('T');
    expect(rows(await run(c, Buffer.concat([...statement(PORT, []), sync])))).toEqual([[String(primaryPort)]]);
    expect(tags(await run(c, commit(true)))).toEqual(['COMMIT']);
    expect(await valueOf(7)).toBe(71);
    // the read ran on the replica, and once more on the primary (the check)
    await scansGrew(before, { replica1: 1, primary: 1 });
    expect(grew(metrics, await outcomes())).toEqual({ moved: 1 });
  });

  it('a first statement that writes runs the transaction on the primary from the start', async () => {
    const c = await shop();
    const metrics = await outcomes();
    const first = await run(c, Buffer.concat([beginAndFirst('UPDATE jx_items SET v = v + 1 WHERE id = $1', [8]), ...statement(PORT, []), sync]));
    expect(tags(first)).toEqual(['BEGIN', 'UPDATE 1', 'SELECT 1']);
    expect(rows(first)).toEqual([[String(primaryPort)]]);
    expect(tags(await run(c, commit(true)))).toEqual(['COMMIT']);
    expect(await valueOf(8)).toBe(81);
    expect(grew(metrics, await outcomes())).toEqual({ primary: 1 });
  });

  it('another client changes a row the transaction read: 40001 at the write, nothing of it is written', async () => {
    const c = await shop();
    const metrics = await outcomes();
    expect(rows(await run(c, Buffer.concat([beginAndFirst('SELECT v FROM jx_items WHERE id = $1', [5]), sync])))).toEqual([['50']]);
    await cluster.query('primary', 'UPDATE jx_items SET v = v + 1 WHERE id = 5');
    const failed = await run(c, Buffer.concat([...statement('UPDATE jx_items SET v = 999 WHERE id = $1', [6]), sync]));
    const error = failed.find((m) => m.type === 'E');
    expect(error && errorFields(error.body).get('C')).toBe('40001');
    expect(error && errorFields(error.body).get('M')).toMatch(/data it read changed/);
    expect(status(failed)).toBe('E');
    // pgjdbc rolls back with a simple Query
    expect(tags(await c.query('ROLLBACK'))).toEqual(['ROLLBACK']);
    expect(await valueOf(6)).toBe(60);
    expect(await valueOf(5)).toBe(51);
    expect(grew(metrics, await outcomes())).toEqual({ conflict: 1 });
  });
});
