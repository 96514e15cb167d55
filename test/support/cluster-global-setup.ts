import type { TestProject } from 'vitest/node';
import { LocalCluster } from '../../src/local/cluster.js';
import type { SharedCluster } from './shared-cluster.js';

/**
 * One local cluster (primary, synchronous standby, two async replicas) shared by the test files
 * that do not break nodes. Tests that kill, pause or promote nodes build a cluster of their own.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  if (process.env.PGRELAY_TEST_DOCKER === '1') {
    // the same topology from containers (cluster-docker.ts); untested here: no Docker engine
    const { startDockerCluster } = await import('./cluster-docker.js');
    const docker = await startDockerCluster();
    project.provide('sharedCluster', docker.shared);
    return () => docker.stop();
  }
  const cluster = await LocalCluster.create({ replicas: 2, standby: true });
  const shared: SharedCluster = {
    nodes: cluster.nodes.map((n) => ({ name: n.name, role: n.role, host: n.host, port: n.port })),
    user: cluster.user,
    password: cluster.password,
    database: cluster.database,
    superuser: cluster.superuser,
    superuserPassword: cluster.superuserPassword,
  };
  project.provide('sharedCluster', shared);
  return async () => {
    await cluster.stop();
  };
}
