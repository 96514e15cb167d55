import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { startProtocolRelay } from '../support/protocol-client.js';
import type { Relay } from '../support/relay.js';
import { queryNode, sharedCluster } from '../support/shared-cluster.js';

// psql through pgrelay: libpq's own protocol use (sslmode=prefer negotiation, simple queries,
// COPY for \copy, \gset, ON_ERROR_ROLLBACK savepoints) with scripts as users write them.
const cluster = sharedCluster();
let relay: Relay;
let dir: string;

interface PsqlResult {
  code: number;
  stdout: string;
  stderr: string;
}

function psql(args: string[], input?: string): Promise<PsqlResult> {
  return new Promise((resolve) => {
    const child = execFile(
      'psql',
      ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '--no-align', '--tuples-only', relay.url(), ...args],
      { env: { ...process.env, PGCONNECT_TIMEOUT: '10', PGAPPNAME: 'pgrelay-psql-test' }, timeout: 60_000 },
      (error, stdout, stderr) => resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
    if (input !== undefined) child.stdin!.end(input);
  });
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'pgrelay-psql-'));
  relay = await startProtocolRelay(cluster, { pool: { size: 2 } });
  await queryNode(cluster, 'primary', 'DROP TABLE IF EXISTS proto_psql; CREATE TABLE proto_psql (id int PRIMARY KEY, label text)');
});

afterAll(async () => {
  await relay?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('psql through pgrelay', () => {
  it('runs several -c commands in one session', async () => {
    const result = await psql(['-c', 'SET application_name = psql_multi_c', '-c', 'SELECT 1 + 1', '-c', 'SHOW application_name']);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout.split('\n').filter(Boolean)).toEqual(['2', 'psql_multi_c']);
  });

  it('sends a multi-statement query as one simple Query and prints every result', async () => {
    const result = await psql(['-c', "INSERT INTO proto_psql VALUES (1, 'a'), (2, 'b'); SELECT count(*) FROM proto_psql; SELECT label FROM proto_psql WHERE id = 2"]);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout.split('\n').filter(Boolean)).toEqual(['2', 'b']);
    // \; inside a script joins statements into one Query too
    const script = await psql([], 'SELECT 10 \\; SELECT 20;\n');
    expect(script.code).toBe(0);
    expect(script.stdout.split('\n').filter(Boolean)).toEqual(['10', '20']);
  });

  it('copies in and out with \\copy', async () => {
    const source = join(dir, 'in.tsv');
    const target = join(dir, 'out.tsv');
    writeFileSync(source, Array.from({ length: 10_000 }, (_, i) => `${1000 + i}\trow ${i}\n`).join(''));
    const script = [`\\copy proto_psql FROM '${source}'`, 'SELECT count(*), sum(id) FROM proto_psql WHERE id >= 1000;', `\\copy (SELECT id, label FROM proto_psql WHERE id >= 1000 ORDER BY id) TO '${target}'`, 'SELECT 1;'].join('\n');
    const result = await psql([], script);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    const sum = Array.from({ length: 10_000 }, (_, i) => 1000 + i).reduce((a, b) => a + b, 0);
    expect(result.stdout.split('\n').filter(Boolean)).toEqual([`10000|${sum}`, '1']);
    expect(readFileSync(target, 'utf8')).toBe(readFileSync(source, 'utf8'));
  });

  it('fails \\copy FROM with bad data, then the session continues', async () => {
    const bad = join(dir, 'bad.tsv');
    writeFileSync(bad, '5\tfine\nnot-a-number\toops\n');
    const script = ['\\set ON_ERROR_STOP 0', `\\copy proto_psql FROM '${bad}'`, 'SELECT count(*) FROM proto_psql WHERE id = 5;'].join('\n');
    const result = await psql([], script);
    expect(result.stderr).toMatch(/invalid input syntax for type integer/);
    expect(result.stdout.trim()).toBe('0');
  });

  it('stores a result with \\gset and uses the variables', async () => {
    const script = ["SELECT 42 AS answer, 'pgrelay' AS name \\gset", '\\echo :answer :name', 'SELECT :answer * 2;', "SELECT current_setting('application_name') AS app \\gset p_", '\\echo :p_app'].join('\n');
    const result = await psql([], script);
    expect(result.stderr).toBe('');
    expect(result.stdout.split('\n').filter(Boolean)).toEqual(['42 pgrelay', '84', 'pgrelay-psql-test']);
  });

  it('reports errors and continues: without ON_ERROR_STOP, and inside a transaction with ON_ERROR_ROLLBACK', async () => {
    const script = [
      '\\set ON_ERROR_STOP 0',
      'SELECT * FROM proto_psql_missing;',
      'SELECT 1;',
      '\\set ON_ERROR_ROLLBACK on',
      'BEGIN;',
      "INSERT INTO proto_psql VALUES (100, 'before');",
      'SELECT 1 / 0;',
      "INSERT INTO proto_psql VALUES (101, 'after');",
      'COMMIT;',
      'SELECT string_agg(label, \',\' ORDER BY id) FROM proto_psql WHERE id IN (100, 101);',
      'BEGIN;',
      "INSERT INTO proto_psql VALUES (102, 'lost');",
      '\\set ON_ERROR_ROLLBACK off',
      'SELECT 1 / 0;',
      'SELECT 2;',
      'COMMIT;',
      'SELECT count(*) FROM proto_psql WHERE id = 102;',
    ].join('\n');
    const result = await psql([], script);
    expect(result.stderr).toMatch(/relation "proto_psql_missing" does not exist/);
    expect(result.stderr).toMatch(/division by zero/);
    expect(result.stderr).toMatch(/current transaction is aborted/);
    expect(result.stdout.split('\n').filter(Boolean)).toEqual(['1', 'before,after', '0']);
  });

  it('stops at the first error with ON_ERROR_STOP=1 and exits with 3', async () => {
    const result = await psql([], 'SELECT 1;\nSELECT 1 / 0;\nSELECT 2;\n');
    expect(result.code).toBe(3);
    expect(result.stdout.split('\n').filter(Boolean)).toEqual(['1']);
    expect(result.stderr).toMatch(/division by zero/);
  });
});

describe('pg_dump through pgrelay', () => {
  function run(command: string, args: string[]): Promise<PsqlResult> {
    return new Promise((resolve) => {
      execFile(command, args, { env: { ...process.env, PGCONNECT_TIMEOUT: '10' }, timeout: 60_000, maxBuffer: 1 << 24 }, (error, stdout, stderr) =>
        resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      );
    });
  }

  it('dumps a table as text, and as a directory with two jobs (pg_dump sets restrict_nonsystem_relation_kind through set_config over pg_settings)', async () => {
    await queryNode(cluster, 'primary', "DROP TABLE IF EXISTS proto_dump; CREATE TABLE proto_dump (id int PRIMARY KEY, label text); INSERT INTO proto_dump VALUES (1, 'one'), (2, 'two'), (3, 'three')");
    const text = await run('pg_dump', ['-t', 'proto_dump', relay.url()]);
    expect(text.stderr).toBe('');
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/CREATE TABLE public\.proto_dump/);
    expect(text.stdout).toMatch(/COPY public\.proto_dump \(id, label\) FROM stdin;\n1\tone\n2\ttwo\n3\tthree\n\\\.\n/);
    // a leader and two workers, each in a transaction of its own for the whole dump: three server connections
    const wider = await startProtocolRelay(cluster, { pool: { size: 4 } });
    onTestFinished(() => wider.stop());
    const target = join(dir, 'dump.dir');
    const directory = await run('pg_dump', ['-Fd', '-j', '2', '-t', 'proto_dump', '-t', 'proto_psql', '-f', target, wider.url()]);
    expect(directory.stderr).toBe('');
    expect(directory.code).toBe(0);
    const listed = await run('pg_restore', ['-l', target]);
    expect(listed.stdout).toMatch(/TABLE DATA public proto_dump/);
    expect(listed.stdout).toMatch(/TABLE DATA public proto_psql/);
  });
});
