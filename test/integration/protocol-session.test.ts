import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dataRow, errorFields, primaryOnly, RawClient, rawMessage, serialize, type BackendMessage, type RawLogin, startProtocolRelay } from '../support/protocol-client.js';
import type { Relay } from '../support/relay.js';
import { queryNode, sharedCluster } from '../support/shared-cluster.js';

// The session's protocol bookkeeping, where transaction pooling could show through: named and
// unnamed statements across units and server connections, DEALLOCATE / DISCARD ALL, SET inside
// transactions, empty queries, a Query inside an extended run. The first group sends the same
// bytes to PostgreSQL directly and through pgrelay and wants the same answers.
const shared = sharedCluster();
const cluster = primaryOnly(shared);
const primary = cluster.nodes[0]!;
const relays: Relay[] = [];
const raws: RawClient[] = [];
const clients: pg.Client[] = [];
let relay: Relay;

const login: RawLogin = { user: cluster.user, password: cluster.password, database: cluster.database };

async function rawTo(port: number): Promise<RawClient> {
  const client = await RawClient.connect(port, login);
  raws.push(client);
  return client;
}

async function relayWith(overrides: Record<string, unknown>): Promise<Relay> {
  const r = await startProtocolRelay(cluster, overrides);
  relays.push(r);
  return r;
}

async function pgTo(r: Relay): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: r.url() });
  clients.push(client);
  await client.connect();
  return client;
}

/** A readable summary of backend messages: type, plus what tells answers apart. */
function summary(messages: BackendMessage[]): string[] {
  return messages.map((m) => {
    switch (m.type) {
      case 'E': {
        const f = errorFields(m.body);
        return `E ${f.get('C')} ${f.get('M')}`;
      }
      case 'D':
        return `D ${JSON.stringify(dataRow(m.body))}`;
      case 'C':
        return `C ${m.body.toString('utf8', 0, m.body.length - 1)}`;
      case 'Z':
        return `Z ${String.fromCharCode(m.body[0]!)}`;
      case 'T':
        return `T ${m.body.readInt16BE(0)}`;
      default:
        return m.type;
    }
  });
}

/** Sends `bytes` and reads answers up to the `readyCount`-th ReadyForQuery. */
async function run(client: RawClient, bytes: Buffer[], readyCount: number): Promise<string[]> {
  client.send(Buffer.concat(bytes));
  const out: BackendMessage[] = [];
  for (let i = 0; i < readyCount; i++) out.push(...(await client.until('Z')));
  return summary(out);
}

/**
 * The same bytes to PostgreSQL and to pgrelay (fresh clients): the answers must be equal. Each
 * step is written at once (a pipeline) and read up to its `readyCount`-th ReadyForQuery.
 */
async function sameAsPostgres(bytes: Buffer[], readyCount: number, ...more: [Buffer[], number][]): Promise<string[]> {
  const direct = await rawTo(primary.port);
  const relayed = await rawTo(relay.port);
  const got: string[] = [];
  for (const [stepBytes, stepReady] of [[bytes, readyCount] as [Buffer[], number], ...more]) {
    const expected = await run(direct, stepBytes, stepReady);
    const answers = await run(relayed, stepBytes, stepReady);
    expect(answers).toEqual(expected);
    got.push(...answers);
  }
  direct.destroy();
  relayed.destroy();
  return got;
}

const parse = (name: string, text: string, types: number[] = []) => serialize.parse({ name, text, types });
const bind = (statement: string, values: (string | null)[] = [], portal = '') => serialize.bind({ statement, values, portal });
const execute = (portal = '') => serialize.execute({ portal });
const sync = () => serialize.sync();
const query = (text: string) => serialize.query(text);
const describeStatement = (name: string) => serialize.describe({ type: 'S', name });
const describePortal = (name = '') => serialize.describe({ type: 'P', name });
const closeStatement = (name: string) => serialize.close({ type: 'S', name });

/** FunctionCall ('F'): function oid, text arguments, text result. */
function functionCall(oid: number, args: string[]): Buffer {
  const parts = [Buffer.alloc(8)];
  parts[0]!.writeInt32BE(oid, 0);
  parts[0]!.writeInt16BE(0, 4); // argument formats: all text
  parts[0]!.writeInt16BE(args.length, 6);
  for (const arg of args) {
    const value = Buffer.from(arg);
    const length = Buffer.alloc(4);
    length.writeInt32BE(value.length, 0);
    parts.push(length, value);
  }
  parts.push(Buffer.from([0, 0])); // result format: text
  return rawMessage('F', Buffer.concat(parts));
}

beforeAll(async () => {
  // one server connection shared by every client: what one leaves behind, the next one meets
  relay = await relayWith({ pool: { size: 1, checkout_timeout_ms: 30_000 } });
});

afterAll(async () => {
  for (const r of raws) r.destroy();
  await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
  await Promise.all(relays.map((r) => r.stop()));
});

describe('answers equal to PostgreSQL', () => {
  it('Describe of a named statement before any Bind', async () => {
    const got = await sameAsPostgres([parse('s1', "SELECT $1::int AS a, 'x'::text AS b"), describeStatement('s1'), sync(), bind('s1', ['5']), execute(), sync()], 2);
    expect(got).toEqual(['1', 't', 'T 2', 'Z I', '2', 'D ["5","x"]', 'C SELECT 1', 'Z I']);
  });

  it('Close of a statement, then Bind (26000) and a Parse of the same name with another text', async () => {
    const got = await sameAsPostgres(
      [parse('s1', 'SELECT 1 AS one'), sync(), closeStatement('s1'), sync(), bind('s1'), execute(), sync(), parse('s1', 'SELECT 2 AS two'), bind('s1'), describePortal(), execute(), sync()],
      4,
    );
    expect(got).toContain('E 26000 prepared statement "s1" does not exist');
    expect(got.slice(-4)).toEqual(['T 1', 'D ["2"]', 'C SELECT 1', 'Z I']);
  });

  it('DEALLOCATE of a protocol-level statement, also pipelined behind other work, and twice', async () => {
    const got = await sameAsPostgres(
      [parse('s1', 'SELECT 1'), sync(), query('DEALLOCATE s1'), bind('s1'), execute(), sync(), parse('s2', 'SELECT 2'), bind('s2'), execute(), sync(), query('DEALLOCATE s2'), query('DEALLOCATE s2'), query('DEALLOCATE PREPARE s1')],
      7,
    );
    expect(got.filter((m) => m.startsWith('C DEALLOCATE'))).toHaveLength(2);
    expect(got).toContain('E 26000 prepared statement "s2" does not exist');
  });

  it('DEALLOCATE in a failed transaction fails and keeps the statement', async () => {
    const got = await sameAsPostgres([parse('s1', 'SELECT 11'), sync(), query('BEGIN'), query('SELECT 1/0'), query('DEALLOCATE s1'), query('ROLLBACK'), bind('s1'), execute(), sync()], 6);
    // refused in the failed transaction (25P02), so s1 still runs after the ROLLBACK
    expect(got).toContain('E 25P02 current transaction is aborted, commands ignored until end of transaction block');
    expect(got.filter((m) => m.startsWith('C DEALLOCATE'))).toEqual([]);
    expect(got.slice(-3)).toEqual(['D ["11"]', 'C SELECT 1', 'Z I']);
  });

  it('DISCARD ALL forgets the statements and the settings', async () => {
    const got = await sameAsPostgres(
      [parse('s1', 'SELECT 1'), sync(), query("SET application_name = 'before discard'"), query('DISCARD ALL'), bind('s1'), execute(), sync(), parse('s1', 'SELECT 3'), bind('s1'), execute(), sync(), query('SHOW application_name')],
      6,
    );
    expect(got).toContain('E 26000 prepared statement "s1" does not exist');
    expect(got).toContain('D ["3"]');
    expect(got).not.toContain('D ["before discard"]');
  });

  it('empty query strings, simple and extended', async () => {
    const got = await sameAsPostgres([query(''), query(' ; '), parse('', ''), bind(''), execute(), sync()], 3);
    expect(got).toEqual(['I', 'Z I', 'I', 'Z I', '1', '2', 'I', 'Z I']);
  });

  it('a Query while extended messages before it have no Sync yet', async () => {
    const got = await sameAsPostgres([parse('', 'SELECT 1'), bind(''), execute(), query('SELECT 2'), parse('', 'SELECT 3'), bind(''), execute(), sync()], 2);
    expect(got).toEqual(['1', '2', 'D ["1"]', 'C SELECT 1', 'T 1', 'D ["2"]', 'C SELECT 1', 'Z I', '1', '2', 'D ["3"]', 'C SELECT 1', 'Z I']);
  });

  it('an error in the middle of a pipeline skips to its Sync only; a skipped Parse leaves no statement', async () => {
    const got = await sameAsPostgres(
      [parse('', 'SELECT 1'), bind(''), execute(), sync(), parse('', 'SELECT 1/0'), bind(''), execute(), parse('e', 'SELECT 9'), bind('e'), execute(), sync(), parse('', 'SELECT 3'), bind(''), execute(), sync()],
      3,
      [[bind('e'), execute(), sync()], 1],
      [[parse('e', 'SELECT 9'), sync(), parse('e2', 'SELECT 1/(0'), sync(), parse('e2', 'SELECT 10'), sync(), bind('e2'), execute(), sync()], 4],
    );
    expect(got).toContain('E 26000 prepared statement "e" does not exist');
    expect(got.at(-3)).toBe('D ["10"]');
  });

  it('errors in a transaction, then ROLLBACK; the unnamed statement in the next unit', async () => {
    const got = await sameAsPostgres(
      [query('BEGIN'), parse('', 'SELECT 1/0'), bind(''), execute(), sync(), query('SELECT 1'), query('ROLLBACK'), parse('', 'SELECT $1::text AS t'), sync(), describeStatement(''), sync(), bind('', ['u']), execute(), sync()],
      7,
    );
    // the error fails the transaction, the next statement is refused, ROLLBACK ends it, and the
    // unnamed statement parsed after it runs with its parameter
    expect(got).toContain('E 22012 division by zero');
    expect(got).toContain('E 25P02 current transaction is aborted, commands ignored until end of transaction block');
    expect(got).toContain('C ROLLBACK');
    expect(got.slice(-3)).toEqual(['D ["u"]', 'C SELECT 1', 'Z I']);
  });

  it('Close of the unnamed statement, then Bind of it (26000)', async () => {
    const got = await sameAsPostgres([parse('', 'SELECT 1'), sync(), closeStatement(''), sync(), bind(''), execute(), sync()], 3);
    expect(got).toContain('E 26000 unnamed prepared statement does not exist');
  });

  it('NoticeResponse within a result, and a FunctionCall', async () => {
    const [row] = await queryNode<{ oid: number }>(shared, primary.name, "SELECT 'abs(integer)'::regprocedure::oid::int AS oid");
    const got = await sameAsPostgres([query("DO $$ BEGIN RAISE NOTICE 'from a DO block'; END $$"), functionCall(row!.oid, ['-42']), query('SELECT 1')], 3);
    expect(got.slice(0, 3)).toEqual(['N', 'C DO', 'Z I']);
    expect(got.slice(3, 5)).toEqual(['V', 'Z I']);
  });

  it('a Bind whose statement name is not NUL-terminated: 08P01 (pgrelay closes the client, as for any malformed message)', async () => {
    const direct = await rawTo(primary.port);
    const relayed = await rawTo(relay.port);
    const bytes = [rawMessage('B', Buffer.from('p\0s')), sync()];
    const expected = await run(direct, bytes, 1);
    expect(expected[0]).toMatch(/^E 08P01/);
    relayed.send(Buffer.concat(bytes));
    const messages = await relayed.closedByServer();
    expect(summary(messages)).toEqual(['E 08P01 invalid string in message']);
    expect(errorFields(messages[0]!.body).get('S')).toBe('FATAL');
  });
});

describe('statements across server connections', () => {
  it('never binds another client’s unnamed statement left on the shared connection', async () => {
    const other = await rawTo(relay.port);
    expect(await run(other, [parse('', "SELECT 'other client secret' AS s"), sync()], 1)).toEqual(['1', 'Z I']);
    const client = await rawTo(relay.port);
    const got = await run(client, [bind(''), execute(), sync()], 1);
    expect(got).toEqual(['E 26000 unnamed prepared statement does not exist', 'Z I']);
    // the other client's statement is still its own
    expect(await run(other, [bind(''), execute(), sync()], 1)).toEqual(['2', 'D ["other client secret"]', 'C SELECT 1', 'Z I']);
    // a client closing its (absent) unnamed statement does not close the other one's
    expect(await run(client, [closeStatement(''), sync()], 1)).toEqual(['3', 'Z I']);
    expect(await run(other, [describeStatement(''), bind(''), execute(), sync()], 1)).toEqual(['t', 'T 1', '2', 'D ["other client secret"]', 'C SELECT 1', 'Z I']);
  });

  it('binds an unnamed statement parsed in an earlier unit when the Bind lands on another connection', async () => {
    const two = await relayWith({ pool: { size: 2, checkout_timeout_ms: 30_000 } });
    const client = await rawTo(two.port);
    const holder = await pgTo(two);
    expect(await run(client, [parse('', 'SELECT pg_backend_pid() AS pid, $1::int + 100 AS v'), sync()], 1)).toEqual(['1', 'Z I']);
    // the connection that ran the Parse is the warmest idle one: the holder takes it and keeps it
    await holder.query('BEGIN');
    const holderPid = (await holder.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
    const messages: BackendMessage[] = [];
    client.send(Buffer.concat([bind('', ['5']), execute(), sync()]));
    messages.push(...(await client.until('Z')));
    const row = dataRow(messages.find((m) => m.type === 'D')!.body);
    expect(row[1]).toBe('105');
    expect(Number(row[0])).not.toBe(holderPid);
    await holder.query('COMMIT');
  });

  it('keeps unnamed statements apart with 8 concurrent clients on 2 server connections', async () => {
    const two = await relayWith({ pool: { size: 2, checkout_timeout_ms: 30_000 } });
    const many = await Promise.all(Array.from({ length: 8 }, () => rawTo(two.port)));
    await Promise.all(
      many.map(async (client, c) => {
        for (let i = 0; i < 25; i++) {
          expect(await run(client, [parse('', `SELECT $1::int + ${c * 1000} AS v`), sync()], 1)).toEqual(['1', 'Z I']);
          expect(await run(client, [bind('', [String(i)]), execute(), sync()], 1)).toEqual(['2', `D ["${c * 1000 + i}"]`, 'C SELECT 1', 'Z I']);
        }
      }),
    );
  });

  it('prepares a statement again once it parses, after a first Parse failed on that connection', async () => {
    await queryNode(shared, primary.name, 'DROP TABLE IF EXISTS proto_session_later');
    const client = await rawTo(relay.port);
    const text = 'SELECT count(*) AS n FROM proto_session_later';
    expect(await run(client, [parse('later', text), sync()], 1)).toEqual(['E 42P01 relation "proto_session_later" does not exist', 'Z I']);
    await queryNode(shared, primary.name, 'CREATE TABLE proto_session_later (id int)');
    expect(await run(client, [parse('later', text), bind('later'), execute(), sync()], 1)).toEqual(['1', '2', 'D ["0"]', 'C SELECT 1', 'Z I']);
  });

  it('answers a Parse + Sync without a server connection when the text parsed before, while another client holds the only one', async () => {
    const tiny = await relayWith({ pool: { size: 1, checkout_timeout_ms: 60_000 } });
    const warm = await rawTo(tiny.port);
    expect(await run(warm, [parse('p', 'SELECT $1::int * 2 AS v'), sync()], 1)).toEqual(['1', 'Z I']);
    const holder = await pgTo(tiny);
    await holder.query('BEGIN');
    const client = await rawTo(tiny.port);
    // no server connection is free: the Parse is answered by pgrelay
    expect(await run(client, [parse('mine', 'SELECT $1::int * 2 AS v'), sync()], 1)).toEqual(['1', 'Z I']);
    const bound = run(client, [bind('mine', ['21']), execute(), sync()], 1);
    await holder.query('COMMIT');
    expect(await bound).toEqual(['2', 'D ["42"]', 'C SELECT 1', 'Z I']);
  });
});

describe('settings across server connections', () => {
  /** Makes the shared connection carry another client's state, so the next unit replays its own. */
  async function churn(other: pg.Client): Promise<void> {
    await other.query("SET application_name = 'churn'");
    await other.query('SELECT 1');
  }

  it('a SET in a transaction that is rolled back does not stick', async () => {
    const client = await pgTo(relay);
    const other = await pgTo(relay);
    const show = async () => (await client.query('SHOW search_path')).rows[0].search_path as string;
    const before = await show();
    await client.query('BEGIN');
    await client.query('SET search_path TO pg_catalog');
    expect(await show()).toBe('pg_catalog');
    await client.query('ROLLBACK');
    expect(await show()).toBe(before);
    await churn(other);
    expect(await show()).toBe(before);
  });

  it('a SET in a transaction that failed and then got COMMIT (a rollback) does not stick', async () => {
    const client = await pgTo(relay);
    const other = await pgTo(relay);
    const show = async () => (await client.query('SHOW statement_timeout')).rows[0].statement_timeout as string;
    await client.query('BEGIN');
    await client.query("SET statement_timeout = '4321ms'");
    await expect(client.query('SELECT 1/0')).rejects.toMatchObject({ code: '22012' });
    const commit = await client.query('COMMIT');
    expect(commit.command).toBe('ROLLBACK');
    expect(await show()).toBe('0');
    await churn(other);
    expect(await show()).toBe('0');
  });

  it('a SET in a committed transaction sticks, also on the next connection', async () => {
    const client = await pgTo(relay);
    const other = await pgTo(relay);
    await client.query('BEGIN');
    await client.query("SET statement_timeout = '5432ms'");
    await client.query('COMMIT');
    await churn(other);
    expect((await client.query('SHOW statement_timeout')).rows[0].statement_timeout).toBe('5432ms');
    expect((await other.query('SHOW statement_timeout')).rows[0].statement_timeout).toBe('0');
  });

  it('SET LOCAL lasts until the end of its transaction only', async () => {
    const client = await pgTo(relay);
    const other = await pgTo(relay);
    await client.query('BEGIN');
    await client.query("SET LOCAL statement_timeout = '1234ms'");
    expect((await client.query('SHOW statement_timeout')).rows[0].statement_timeout).toBe('1234ms');
    await client.query('COMMIT');
    expect((await client.query('SHOW statement_timeout')).rows[0].statement_timeout).toBe('0');
    await churn(other);
    expect((await client.query('SHOW statement_timeout')).rows[0].statement_timeout).toBe('0');
  });
});
