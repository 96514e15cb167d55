/**
 * Whether a replica's lag lets it serve reads, with hysteresis so that a replica hovering around
 * the limit does not flap in and out of the pool:
 * - a fresh replica turns stale when its lag passes the limit: `lagMs > max_lag_ms`, or
 *   `lagBytes > max_lag_bytes` when that is set (non-zero), or when replay is paused while WAL
 *   is waiting (lagBytes > 0);
 * - a stale replica (whatever made it stale) is fresh again only once its lag is back to at most
 *   `REENTRY_FRACTION` (80 %) of each limit, and replay is not paused with WAL waiting.
 * Pure: the lag monitor feeds it readings and keeps the result in the topology.
 */
export const REENTRY_FRACTION = 0.8;

export interface LagLimits {
  maxLagMs: number;
  /** 0 = no byte limit */
  maxLagBytes: number;
}

export interface LagReading {
  lagMs: number;
  lagBytes: number;
  replayPaused: boolean;
}

export interface Verdict {
  fresh: boolean;
  /** why not, when not fresh */
  reason: string | undefined;
}

export function judgeLag(wasFresh: boolean, reading: LagReading, limits: LagLimits): Verdict {
  if (reading.replayPaused && reading.lagBytes > 0) return { fresh: false, reason: `replay is paused ${describe(reading)} behind the primary` };
  const overMs = reading.lagMs > limits.maxLagMs;
  const overBytes = limits.maxLagBytes > 0 && reading.lagBytes > limits.maxLagBytes;
  if (wasFresh) {
    if (overMs) return { fresh: false, reason: `lag ${describe(reading)} exceeds max_lag_ms ${limits.maxLagMs}` };
    if (overBytes) return { fresh: false, reason: `lag ${describe(reading)} exceeds max_lag_bytes ${limits.maxLagBytes}` };
    return { fresh: true, reason: undefined };
  }
  const backMs = reading.lagMs <= limits.maxLagMs * REENTRY_FRACTION;
  const backBytes = limits.maxLagBytes === 0 || reading.lagBytes <= limits.maxLagBytes * REENTRY_FRACTION;
  if (backMs && backBytes) return { fresh: true, reason: undefined };
  return {
    fresh: false,
    reason: `lag ${describe(reading)} not yet back under ${Math.round(REENTRY_FRACTION * 100)}% of ${backMs ? `max_lag_bytes ${limits.maxLagBytes}` : `max_lag_ms ${limits.maxLagMs}`}`,
  };
}

/** The lag check for one statement's own limit (a `max_lag_ms` hint): no hysteresis. */
export function withinLag(reading: { lagMs: number | undefined; lagBytes: number | undefined; replayPaused: boolean }, maxLagMs: number, maxLagBytes: number): boolean {
  if (reading.lagMs === undefined || reading.lagBytes === undefined) return false;
  if (reading.replayPaused && reading.lagBytes > 0) return false;
  if (reading.lagMs > maxLagMs) return false;
  return maxLagBytes === 0 || reading.lagBytes <= maxLagBytes;
}

function describe(reading: LagReading): string {
  return `${Math.round(reading.lagMs)} ms/${reading.lagBytes} bytes`;
}
