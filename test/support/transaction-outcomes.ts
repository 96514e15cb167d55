import type { Relay } from './relay.js';

/** pgrelay_transactions_total by outcome (replica, moved, conflict, primary) so far. */
export async function transactionOutcomes(relay: Relay): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const v of (await relay.app.metrics.transactions.get()).values) out[String(v.labels.outcome)] = v.value;
  return out;
}

/** What grew between two readings of counters (only the keys that changed). */
export function grew(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(after)) if (v !== (before[k] ?? 0)) out[k] = v - (before[k] ?? 0);
  return out;
}
