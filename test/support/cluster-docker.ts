/**
 * The shared test cluster from containers, for users who have Docker: `PGRELAY_TEST_DOCKER=1 npm test`
 * makes cluster-global-setup.ts build it here instead of from the machine's PostgreSQL binaries.
 * Same topology and credentials as the local cluster: a primary, a synchronous standby (standby1)
 * and two asynchronous replicas, user app/app, database app, superuser postgres/postgres. The nodes
 * are made by the compose stack's own scripts (docker/init/), so the two stay the same.
 *
 * Untested here: the machines this project is built on have no Docker engine; the local-binary
 * backend is the default and what CI runs. testcontainers is an optional dependency, loaded only
 * when this backend is chosen. Only the shared cluster comes from containers: tests that kill or
 * promote nodes build a LocalCluster of their own either way.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import type { SharedCluster } from './shared-cluster.js';

const IMAGE = process.env.PGRELAY_TEST_DOCKER_IMAGE ?? 'postgres:15';
const INIT_DIR = fileURLToPath(new URL('../../docker/init/', import.meta.url));
const POSTGRES_PORT = 5432;
const STARTUP_TIMEOUT_MS = 180_000;
const REPLICATION_TIMEOUT_MS = 120_000;

const CREDENTIALS = {
  user: 'app',
  password: 'app',
  database: 'app',
  superuser: 'postgres',
  superuserPassword: 'postgres',
  replicationUser: 'replicator',
  replicationPassword: 'replicator',
} as const;

const FOLLOWERS = [
  { name: 'standby1', role: 'standby' },
  { name: 'replica1', role: 'replica' },
  { name: 'replica2', role: 'replica' },
] as const;

export interface DockerCluster {
  shared: SharedCluster;
  /** Stops every container and the network; idempotent. */
  stop(): Promise<void>;
}

interface Stoppable {
  stop(): Promise<unknown>;
}

export async function startDockerCluster(): Promise<DockerCluster> {
  let modules: [typeof import('@testcontainers/postgresql'), typeof import('testcontainers')];
  try {
    modules = await Promise.all([import('@testcontainers/postgresql'), import('testcontainers')]);
  } catch (error) {
    throw new Error(
      'PGRELAY_TEST_DOCKER=1 needs the optional dependencies @testcontainers/postgresql and testcontainers ' +
        `(npm ci installs them unless optional dependencies are omitted): ${error instanceof Error ? error.message : String(error)}`,
    );
  }
  const [{ PostgreSqlContainer }, { Network }] = modules;

  // Stopped in reverse order of start: containers first, then their network.
  const started: Stoppable[] = [];
  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      for (const item of started.reverse()) await item.stop().catch(() => {});
    })());

  try {
    const network = await new Network().start();
    started.push(network);
    const replicationEnv = { REPLICATION_USER: CREDENTIALS.replicationUser, REPLICATION_PASSWORD: CREDENTIALS.replicationPassword };
    const node = (alias: string) =>
      new PostgreSqlContainer(IMAGE)
        .withNetwork(network)
        .withNetworkAliases(alias)
        .withUsername(CREDENTIALS.superuser)
        .withPassword(CREDENTIALS.superuserPassword)
        .withDatabase(CREDENTIALS.database)
        .withStartupTimeout(STARTUP_TIMEOUT_MS);

    const primary = await node('primary')
      .withEnvironment({ ...replicationEnv, APP_USER: CREDENTIALS.user, APP_PASSWORD: CREDENTIALS.password, SYNC_STANDBY: 'standby1' })
      .withCopyFilesToContainer([{ source: path.join(INIT_DIR, 'primary.sh'), target: '/docker-entrypoint-initdb.d/10-pgrelay-primary.sh', mode: 0o755 }])
      .start();
    started.push(primary);

    // Base backups side by side; every container that did start is stopped on failure.
    const results = await Promise.allSettled(
      FOLLOWERS.map(({ name }) =>
        node(name)
          .withEnvironment({ ...replicationEnv, NODE_NAME: name, PRIMARY_HOST: 'primary' })
          .withCopyFilesToContainer([{ source: path.join(INIT_DIR, 'follower.sh'), target: '/pgrelay-init/follower.sh', mode: 0o755 }])
          .withEntrypoint(['bash', '/pgrelay-init/follower.sh'])
          .withCommand(['postgres'])
          .start(),
      ),
    );
    const followers = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    started.push(...followers);
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;

    const shared: SharedCluster = {
      nodes: [
        { name: 'primary', role: 'primary', host: primary.getHost(), port: primary.getMappedPort(POSTGRES_PORT) },
        ...FOLLOWERS.map(({ name, role }, i) => ({ name, role, host: followers[i]!.getHost(), port: followers[i]!.getMappedPort(POSTGRES_PORT) })),
      ],
      user: CREDENTIALS.user,
      password: CREDENTIALS.password,
      database: CREDENTIALS.database,
      superuser: CREDENTIALS.superuser,
      superuserPassword: CREDENTIALS.superuserPassword,
    };
    await waitForReplication(shared);
    return { shared, stop };
  } catch (error) {
    await stop();
    const message = error instanceof Error ? error.message : String(error);
    throw new Error(`PGRELAY_TEST_DOCKER=1: building the test cluster from containers (${IMAGE}) failed: ${message}`, { cause: error });
  }
}

/** Until the primary sees standby1 as its synchronous standby and both replicas streaming. */
async function waitForReplication(cluster: SharedCluster): Promise<void> {
  const primary = cluster.nodes.find((n) => n.role === 'primary')!;
  const expected = FOLLOWERS.map(({ name, role }) => `${name}:${role === 'standby' ? 'sync' : 'async'}`).sort();
  const deadline = Date.now() + REPLICATION_TIMEOUT_MS;
  let seen: string[] = [];
  for (;;) {
    const client = new pg.Client({ host: primary.host, port: primary.port, user: cluster.superuser, password: cluster.superuserPassword, database: 'postgres' });
    try {
      await client.connect();
      const { rows } = await client.query<{ application_name: string; sync_state: string }>(
        "SELECT application_name, sync_state FROM pg_stat_replication WHERE state = 'streaming'",
      );
      seen = rows.map((r) => `${r.application_name}:${r.sync_state}`).sort();
      if (JSON.stringify(seen) === JSON.stringify(expected)) return;
    } catch {
      // the primary may still be restarting after its initialisation
    } finally {
      await client.end().catch(() => {});
    }
    if (Date.now() > deadline) {
      throw new Error(`containers: replication not up after ${REPLICATION_TIMEOUT_MS} ms (streaming: ${seen.join(', ') || 'none'}; expected ${expected.join(', ')})`);
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}
