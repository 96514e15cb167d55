/**
 * The hold of a scheduled Patroni switchover: from HOLD_AHEAD_MS before its set time the leader
 * gets no new units (those running there finish), until a new leader takes writes or the
 * switchover is found not to happen.
 */
import type { Logger } from '../util/log.js';
import type { PatroniClusterView } from './patroni-client.js';

/**
 * How long before a scheduled switchover's time each pgrelay stops giving the leader new units:
 * the time units already running there have to finish before Patroni stops it.
 */
export const HOLD_AHEAD_MS = 1_000;
/** A hold for a switchover that did not happen ends this long after its set time. */
const HOLD_LIMIT_MS = 30_000;

export interface Hold {
  from: string;
  /** performance.now() */
  startedAt: number;
  /** the scheduled time, epoch milliseconds */
  atMs: number;
}

export class SwitchoverHold {
  /** a scheduled switchover is near: the leader gets no new units */
  current: Hold | undefined;
  /** the last hold, once released (performance.now() figures) */
  last: { from: string; startedAt: number; releasedAt: number } | undefined;

  constructor(private readonly log: Logger) {}

  /**
   * Starts holding units for the leader once a switchover scheduled away from it is near; ends a
   * hold whose switchover did not happen (Patroni dropped it, or its time is long past).
   */
  update(leader: string | undefined, scheduled: PatroniClusterView['scheduledSwitchover']): void {
    const now = Date.now();
    if (!this.current) {
      if (scheduled && leader !== undefined && (scheduled.from === undefined || scheduled.from === leader) && now >= scheduled.atMs - HOLD_AHEAD_MS && now <= scheduled.atMs + HOLD_LIMIT_MS) {
        this.current = { from: leader, startedAt: performance.now(), atMs: scheduled.atMs };
        this.log.warn({ leader, to: scheduled.to ?? null, at: new Date(scheduled.atMs).toISOString() }, 'switchover is near: holding units for the primary');
      }
      return;
    }
    const expired = now > this.current.atMs + HOLD_LIMIT_MS;
    if (expired || (leader === this.current.from && !scheduled)) {
      this.log.warn({ leader, expired }, 'the scheduled switchover did not happen: the leader takes writes again');
      this.release();
    }
  }

  release(): Hold | undefined {
    const hold = this.current;
    if (hold) this.last = { from: hold.from, startedAt: hold.startedAt, releasedAt: performance.now() };
    this.current = undefined;
    return hold;
  }
}
