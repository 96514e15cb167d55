import type { Config } from '../config/types.js';

/**
 * One worker's share of a total: `total` spread over `count` workers as evenly as whole numbers
 * allow (20 over 3: 7, 7, 6), never below 1; 0 (no limit) stays 0. `slot` counts from 1.
 */
export function poolShare(total: number, count: number, slot: number): number {
  if (total <= 0 || count <= 1) return total;
  const share = Math.floor(total / count) + (slot - 1 < total % count ? 1 : 0);
  return Math.max(1, share);
}

/**
 * The config one worker runs with: the server connection limits (`pool.size`, `pool.max_per_node`)
 * and `client.max_connections` are totals for the whole pgrelay, divided among the workers, so the
 * number of server connections stays what the file says whatever `workers` is (as PgBouncer users
 * count it); every other key is the file's.
 */
export function workerConfig(config: Config, count: number, slot: number): Config {
  return {
    ...config,
    pool: { ...config.pool, size: poolShare(config.pool.size, count, slot), max_per_node: poolShare(config.pool.max_per_node, count, slot) },
    client: { ...config.client, max_connections: poolShare(config.client.max_connections, count, slot) },
  };
}
