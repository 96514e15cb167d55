import type { LocalCluster } from '../../src/local/cluster.js';

const SUPERUSER = { superuser: true, database: 'postgres' } as const;

/**
 * Sets `recovery_min_apply_delay` on a standby of the cluster (`undefined`: resets it), reloads
 * its configuration and checks the server took it: the standby then applies each commit that
 * late (a read there right after a write misses it).
 */
export async function setApplyDelay(cluster: LocalCluster, name: string, delay: string | undefined): Promise<void> {
  await cluster.query(name, delay === undefined ? 'ALTER SYSTEM RESET recovery_min_apply_delay' : `ALTER SYSTEM SET recovery_min_apply_delay = '${delay}'`, [], SUPERUSER);
  await cluster.query(name, 'SELECT pg_reload_conf()', [], SUPERUSER);
  const [row] = await cluster.query<{ delay: string }>(name, "SELECT current_setting('recovery_min_apply_delay') AS delay", [], SUPERUSER);
  const wanted = delay ?? '0';
  if (row?.delay !== wanted) throw new Error(`${name}: recovery_min_apply_delay is ${row?.delay}, not ${wanted}, after the reload`);
}
