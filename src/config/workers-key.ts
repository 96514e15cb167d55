import { availableParallelism } from 'node:os';
import { isScalar } from 'yaml';
import { substituteEnv } from './env.js';
import { INVALID, type Spec } from './reader.js';
import type { Config } from './types.js';

/** One slot per worker is encoded in the BackendKeyData process id (src/workers/backend-keys.ts). */
export const MAX_WORKERS = 128;

const EXPECTED = `an integer from 1 to ${MAX_WORKERS}, or auto (one per CPU)`;

/** `workers:` — a whole number of processes, or `auto`. */
export function workerCount(): Spec<number | 'auto'> {
  return {
    expected: EXPECTED,
    read(slot, ctx) {
      let value: unknown = isScalar(slot.node) ? slot.node.value : slot.node;
      let shown: string;
      if (typeof value === 'string') {
        const result = substituteEnv(value, ctx.env);
        if (!result.ok) {
          for (const problem of result.problems) ctx.report(slot.path, slot.at, problem);
          return INVALID;
        }
        shown = JSON.stringify(result.value.length > 60 ? `${result.value.slice(0, 57)}...` : result.value);
        value = result.value.trim();
        if (value === 'auto') return 'auto';
        if (/^\d+$/.test(value as string)) value = Number(value);
      } else shown = value === null || value === undefined ? 'an empty value' : typeof value === 'object' ? 'a map or list' : String(value);
      if (typeof value === 'number' && Number.isInteger(value) && value >= 1 && value <= MAX_WORKERS) return value;
      ctx.report(slot.path, slot.at, `expected ${EXPECTED}, got ${shown}`);
      return INVALID;
    },
  };
}

/** The number of worker processes `workers:` asks for on this machine. */
export function resolveWorkers(workers: number | 'auto'): number {
  return workers === 'auto' ? Math.min(MAX_WORKERS, availableParallelism()) : workers;
}

/**
 * `routing.consistency: global` promises that a read sees every write acknowledged through this
 * pgrelay, to anyone. Its fence is one per process: a write acknowledged by one worker could be
 * followed (through the application) by a read on another worker before that worker hears of it.
 * Rather than a weaker promise under the same name, workers mode refuses it.
 */
export function globalNeedsOneProcess(config: Pick<Config, 'workers' | 'routing'>): string | undefined {
  if (config.routing.consistency !== 'global' || resolveWorkers(config.workers) <= 1) return undefined;
  return `consistency global needs one process (workers: 1, here ${config.workers === 'auto' ? `auto = ${resolveWorkers('auto')}` : config.workers}): its fence is shared only by the clients of one process; use session (read-your-writes per client), which works with any number of workers`;
}
