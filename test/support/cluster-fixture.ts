/**
 * Vitest fixture: one local cluster per test file, built in beforeAll and torn down in afterAll.
 *
 *   const cluster = useLocalCluster({ replicas: 1 });
 *   it('…', async () => { await cluster().query('primary', 'SELECT 1'); });
 */
import { afterAll, beforeAll } from 'vitest';
import { LocalCluster, type LocalClusterOptions } from '../../src/local/cluster.js';

export function useLocalCluster(options: LocalClusterOptions = {}): () => LocalCluster {
  let cluster: LocalCluster | undefined;
  beforeAll(async () => {
    cluster = await LocalCluster.create(options);
  });
  afterAll(async () => {
    await cluster?.stop();
  });
  return () => {
    if (cluster === undefined) throw new Error('the local cluster is not built yet (use it inside tests or hooks)');
    return cluster;
  };
}
