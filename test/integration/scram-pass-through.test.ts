import { execFile } from 'node:child_process';
import pg from 'pg';
import postgres from 'postgres';
import { beforeAll, describe, expect, it } from 'vitest';
import { useCleanups } from '../support/cleanups.js';
import { primaryOnly, STEADY } from '../support/protocol-client.js';
import { startRelay, type Relay } from '../support/relay.js';
import { queryNode, sharedCluster } from '../support/shared-cluster.js';

// SCRAM pass-through: a user whose entry in pgrelay's file is only the SCRAM verifier PostgreSQL
// stores (no password anywhere in pgrelay) logs in with pg, postgres.js and psql; pgrelay
// verifies the client's proof, derives its ClientKey and logs in to the server with it. Before,
// the verifier string itself was sent to the server as a password and the login failed.
const cleanups = useCleanups();
const cluster = primaryOnly(sharedCluster());
const ROLE = 'pgrelay_pass_through';
const PASSWORD = 'pass-through secret ✓';
let relay: Relay;
let verifier: string;

function url(password: string): string {
  return relay.url({ user: ROLE, password });
}

beforeAll(async () => {
  await queryNode(cluster, 'primary', `DROP ROLE IF EXISTS ${ROLE}`, [], true);
  await queryNode(cluster, 'primary', `SET password_encryption = 'scram-sha-256'; CREATE ROLE ${ROLE} LOGIN PASSWORD '${PASSWORD}'`, [], true);
  cleanups.push(() => queryNode(cluster, 'primary', `DROP ROLE IF EXISTS ${ROLE}`, [], true));
  verifier = (await queryNode<{ v: string }>(cluster, 'primary', 'SELECT rolpassword AS v FROM pg_authid WHERE rolname = $1', [ROLE], true))[0]!.v;
  expect(verifier).toMatch(/^SCRAM-SHA-256\$\d+:/);
  relay = await startRelay(
    { ...cluster, user: ROLE, password: verifier },
    // pgrelay's own monitoring needs a password of its own: the app role's
    { ...STEADY, health: { ...STEADY.health, user: cluster.user, password: cluster.password } },
  );
  cleanups.push(() => relay.stop());
});

describe('a verifier-only user', () => {
  it('logs in with node-postgres and runs as itself on the server', async () => {
    const client = new pg.Client({ connectionString: url(PASSWORD) });
    await client.connect();
    cleanups.push(() => client.end());
    const { rows } = await client.query<{ who: string; port: number }>('SELECT current_user AS who, inet_server_port() AS port');
    expect(rows).toEqual([{ who: ROLE, port: cluster.nodes[0]!.port }]);
  });

  it('logs in with postgres.js', async () => {
    const sql = postgres(url(PASSWORD), { max: 1, onnotice: () => undefined });
    cleanups.push(() => sql.end({ timeout: 5 }));
    expect(await sql`SELECT current_user AS who`).toEqual([{ who: ROLE }]);
  });

  it('logs in with psql', async () => {
    const result = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile('psql', ['-X', '-q', '--no-align', '--tuples-only', url(PASSWORD), '-c', 'SELECT current_user'], { env: { ...process.env, PGCONNECT_TIMEOUT: '10' }, timeout: 60_000 }, (error, stdout, stderr) =>
        resolve({ code: error ? 1 : 0, stdout, stderr }),
      );
    });
    expect(result).toMatchObject({ code: 0, stdout: `${ROLE}\n` });
  });

  it('refuses a wrong password with 28P01, and the server never saw the verifier as a password', async () => {
    const client = new pg.Client({ connectionString: url('not the password') });
    client.on('error', () => undefined);
    const error = await client.connect().then(
      () => undefined,
      (e: unknown) => e as { code?: string },
    );
    expect(error?.code).toBe('28P01');
  });
});

describe('auth_query: a user that is not in the file', () => {
  let looked: Relay;

  beforeAll(async () => {
    // the least-privilege lookup of the README: a SECURITY DEFINER function, a role that may only call it
    const setup = [
      'DROP SCHEMA IF EXISTS pgrelay_test_auth CASCADE',
      'DROP ROLE IF EXISTS pgrelay_auth_lookup',
      "CREATE ROLE pgrelay_auth_lookup LOGIN PASSWORD 'lookup-password'",
      'CREATE SCHEMA pgrelay_test_auth',
      `CREATE FUNCTION pgrelay_test_auth.get_auth(p_user text, OUT usename name, OUT passwd text)
         RETURNS record LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog
         AS $$ SELECT usename, passwd FROM pg_catalog.pg_shadow WHERE usename = p_user $$`,
      'REVOKE ALL ON FUNCTION pgrelay_test_auth.get_auth(text) FROM PUBLIC',
      'GRANT USAGE ON SCHEMA pgrelay_test_auth TO pgrelay_auth_lookup',
      'GRANT EXECUTE ON FUNCTION pgrelay_test_auth.get_auth(text) TO pgrelay_auth_lookup',
    ];
    for (const statement of setup) await queryNode(cluster, 'primary', statement, [], true);
    cleanups.push(async () => {
      await queryNode(cluster, 'primary', 'DROP SCHEMA IF EXISTS pgrelay_test_auth CASCADE', [], true);
      await queryNode(cluster, 'primary', 'DROP ROLE IF EXISTS pgrelay_auth_lookup', [], true);
    });
    // the app user is the only one in the file; the role above is found with auth_query
    looked = await startRelay(cluster, {
      ...STEADY,
      auth_query: { user: 'pgrelay_auth_lookup', password: 'lookup-password', query: 'SELECT usename, passwd FROM pgrelay_test_auth.get_auth($1)' },
    });
    cleanups.push(() => looked.stop());
  });

  const lookedUrl = (password: string, user = ROLE) => looked.url({ user, password });

  it('logs in with node-postgres, postgres.js and psql, as itself on the server', async () => {
    const client = new pg.Client({ connectionString: lookedUrl(PASSWORD) });
    await client.connect();
    cleanups.push(() => client.end());
    expect((await client.query<{ who: string }>('SELECT current_user AS who')).rows).toEqual([{ who: ROLE }]);

    const sql = postgres(lookedUrl(PASSWORD), { max: 1, onnotice: () => undefined });
    cleanups.push(() => sql.end({ timeout: 5 }));
    expect(await sql`SELECT current_user AS who`).toEqual([{ who: ROLE }]);

    const result = await new Promise<{ code: number; stdout: string }>((resolve) => {
      execFile('psql', ['-X', '-q', '--no-align', '--tuples-only', lookedUrl(PASSWORD), '-c', 'SELECT current_user'], { env: { ...process.env, PGCONNECT_TIMEOUT: '10' }, timeout: 60_000 }, (error, stdout) =>
        resolve({ code: error ? 1 : 0, stdout }),
      );
    });
    expect(result).toEqual({ code: 0, stdout: `${ROLE}\n` });
  });

  it('a wrong password and a user that does not exist get the same refusal', async () => {
    const attempt = async (user: string, password: string) => {
      const client = new pg.Client({ connectionString: lookedUrl(password, user) });
      client.on('error', () => undefined);
      return client.connect().then(
        () => undefined,
        (e: unknown) => e as { code?: string; message: string },
      );
    };
    const wrong = await attempt(ROLE, 'not the password');
    const unknown = await attempt('pgrelay_no_such_role', PASSWORD);
    expect(wrong).toMatchObject({ code: '28P01', message: `password authentication failed for user "${ROLE}"` });
    expect(unknown).toMatchObject({ code: '28P01', message: 'password authentication failed for user "pgrelay_no_such_role"' });
  });

  it('sees a password changed on the server at the next login', async () => {
    await queryNode(cluster, 'primary', `ALTER ROLE ${ROLE} PASSWORD 'changed on the server'`, [], true);
    try {
      const client = new pg.Client({ connectionString: lookedUrl('changed on the server') });
      await client.connect();
      expect((await client.query<{ one: number }>('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
      await client.end();
    } finally {
      await queryNode(cluster, 'primary', `ALTER ROLE ${ROLE} PASSWORD '${PASSWORD}'`, [], true);
    }
  });
});
