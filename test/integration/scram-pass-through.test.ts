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
