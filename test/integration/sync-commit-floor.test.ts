import { execFile } from 'node:child_process';
import pg from 'pg';
import postgres from 'postgres';
import { beforeAll, describe, expect, it } from 'vitest';
import { useCleanups } from '../support/cleanups.js';
import { startProtocolRelay } from '../support/protocol-client.js';
import type { Relay } from '../support/relay.js';
import { queryNode, sharedCluster } from '../support/shared-cluster.js';

// The no-loss promise against clients: with routing.min_synchronous_commit at its default (on), a
// client cannot lower synchronous_commit through pgrelay — SET, SET LOCAL, set_config (also with
// a bind parameter), ALTER ROLE … SET, the startup parameter and PGOPTIONS — with pg,
// postgres.js and psql; each gets 42501 and a clear message, and its session stays usable with
// the setting unchanged on the server. With the floor off, the same SET goes through.
const cleanups = useCleanups();
const cluster = sharedCluster();
const MESSAGE = /^SET synchronous_commit = off is not allowed: pgrelay keeps synchronous_commit at on or above \(routing\.min_synchronous_commit\)/;
let relay: Relay;

async function pgClient(target: Relay, options: pg.ClientConfig = {}): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: target.url(), ...options });
  client.on('error', () => undefined);
  await client.connect();
  cleanups.push(() => client.end());
  return client;
}

async function failure(attempt: Promise<unknown>): Promise<{ code?: string; message: string }> {
  const error = await attempt.then(
    () => undefined,
    (e: unknown) => e as { code?: string; message: string },
  );
  expect(error, 'expected the statement to be refused').toBeDefined();
  return error!;
}

function psql(url: string, args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '--no-align', '--tuples-only', url, ...args], { env: { ...process.env, PGCONNECT_TIMEOUT: '10', ...env }, timeout: 60_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

beforeAll(async () => {
  relay = await startProtocolRelay(cluster);
  cleanups.push(() => relay.stop());
});

describe('node-postgres', () => {
  it('SET synchronous_commit = off is refused with 42501; the session stays usable and at on', async () => {
    const client = await pgClient(relay);
    const error = await failure(client.query('SET synchronous_commit = off'));
    expect(error.code).toBe('42501');
    expect(error.message).toMatch(MESSAGE);
    const { rows } = await client.query<{ synchronous_commit: string }>('SHOW synchronous_commit');
    expect(rows).toEqual([{ synchronous_commit: 'on' }]);
    // the floor and above are allowed
    await client.query('SET synchronous_commit = remote_apply');
    expect((await client.query<{ synchronous_commit: string }>('SHOW synchronous_commit')).rows).toEqual([{ synchronous_commit: 'remote_apply' }]);
  });

  it('SET LOCAL in a transaction is refused and aborts it, as a failed statement does', async () => {
    const client = await pgClient(relay);
    await client.query('BEGIN');
    expect((await failure(client.query('SET LOCAL synchronous_commit = local'))).code).toBe('42501');
    expect((await failure(client.query('SELECT 1'))).code).toBe('25P02');
    await client.query('ROLLBACK');
    expect((await client.query<{ n: number }>('SELECT 1 AS n')).rows).toEqual([{ n: 1 }]);
  });

  it('set_config with a literal or a bind parameter (extended protocol) is refused', async () => {
    const client = await pgClient(relay);
    expect(await failure(client.query("SELECT set_config('synchronous_commit', 'off', false)"))).toMatchObject({ code: '42501' });
    const bound = await failure(client.query("SELECT set_config('synchronous_commit', $1, false)", ['off']));
    expect(bound.code).toBe('42501');
    expect(bound.message).toContain('with a value that is not a constant cannot be checked');
    // a named prepared statement too, and it stays refused when run again
    for (let i = 0; i < 2; i++) {
      expect((await failure(client.query({ name: 'lower', text: "SELECT set_config('synchronous_commit', $1, false)", values: ['local'] }))).code).toBe('42501');
    }
    expect((await client.query<{ synchronous_commit: string }>('SHOW synchronous_commit')).rows).toEqual([{ synchronous_commit: 'on' }]);
  });

  it('ALTER ROLE … SET synchronous_commit = off is refused before it reaches the server', async () => {
    const client = await pgClient(relay);
    expect((await failure(client.query(`ALTER ROLE ${cluster.user} SET synchronous_commit = off`))).code).toBe('42501');
    const settings = await queryNode<{ setconfig: string[] | null }>(cluster, 'primary', "SELECT setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole WHERE r.rolname = $1", [cluster.user], true);
    expect(settings.flatMap((s) => s.setconfig ?? []).filter((c) => c.startsWith('synchronous_commit'))).toEqual([]);
  });

  it('a startup parameter below the floor (options -c) is refused at connect', async () => {
    const client = new pg.Client({ connectionString: relay.url(), options: '-c synchronous_commit=off' });
    client.on('error', () => undefined);
    const error = await failure(client.connect());
    expect(error.code).toBe('42501');
    expect(error.message).toMatch(/^startup parameter synchronous_commit=off is not allowed/);
  });
});

describe('postgres.js (extended protocol)', () => {
  it('SET and set_config below the floor are refused; the connection goes on at on', async () => {
    const sql = postgres(relay.url(), { max: 1, onnotice: () => undefined });
    cleanups.push(() => sql.end({ timeout: 5 }));
    const error = await failure(sql`SET synchronous_commit = off`);
    expect(error).toMatchObject({ code: '42501' });
    expect(error.message).toMatch(MESSAGE);
    expect(await failure(sql`SELECT set_config('synchronous_commit', ${'local'}, false)`)).toMatchObject({ code: '42501' });
    expect(await sql`SHOW synchronous_commit`).toEqual([{ synchronous_commit: 'on' }]);
  });
});

describe('psql', () => {
  it('SET synchronous_commit = off is refused; PGOPTIONS=-c synchronous_commit=off cannot connect', async () => {
    const set = await psql(relay.url(), ['-c', 'SET synchronous_commit = off']);
    expect(set.code).not.toBe(0);
    expect(set.stderr).toMatch(/ERROR: {2}SET synchronous_commit = off is not allowed/);
    const options = await psql(relay.url(), ['-c', 'SELECT 1'], { PGOPTIONS: '-c synchronous_commit=off' });
    expect(options.code).not.toBe(0);
    expect(options.stderr).toContain('startup parameter synchronous_commit=off is not allowed');
    const allowed = await psql(relay.url(), ['-c', 'SET synchronous_commit = remote_apply', '-c', 'SHOW synchronous_commit']);
    expect(allowed).toMatchObject({ code: 0, stdout: 'remote_apply\n' });
  });
});

describe('routing.min_synchronous_commit: off', () => {
  it('lets the same SET through (the refusals above are the floor, not an accident)', async () => {
    const open = await startProtocolRelay(cluster, { routing: { min_synchronous_commit: 'off' } });
    cleanups.push(() => open.stop());
    const client = await pgClient(open);
    await client.query('SET synchronous_commit = off');
    expect((await client.query<{ synchronous_commit: string }>('SHOW synchronous_commit')).rows).toEqual([{ synchronous_commit: 'off' }]);
  });
});
