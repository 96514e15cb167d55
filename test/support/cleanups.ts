/**
 * What a test file starts (clusters, relays, clients, stopped nodes to resume), stopped after its
 * tests in the reverse order of registration; one that fails does not keep the others from
 * running.
 *
 *   const cleanups = useCleanups();
 *   beforeAll(async () => { cluster = await LocalCluster.create(); cleanups.push(() => cluster.stop()); });
 */
import { afterAll } from 'vitest';

export interface Cleanups {
  push(cleanup: () => Promise<unknown>): void;
}

export function useCleanups(): Cleanups {
  const registered: (() => Promise<unknown>)[] = [];
  afterAll(async () => {
    for (const cleanup of registered.reverse()) await cleanup().catch(() => undefined);
  });
  return { push: (cleanup) => void registered.push(cleanup) };
}
