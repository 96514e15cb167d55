import type { Topology } from '../cluster/topology.js';
import { ProxyError, SqlState } from '../errors.js';

interface Waiter {
  callback: (error?: Error) => void;
  timer: NodeJS.Timeout;
}

/**
 * Units for the primary while none is known (a failover under way) wait here, each for at most
 * `failover.wait_ms`: they go on as soon as the topology has a primary again, or fail with
 * 57P03 when the wait is over. Idle clients see a pause, not an error.
 */
export class PrimaryWaiters {
  private waiters: Waiter[] = [];
  private readonly onChange = () => this.wake();

  constructor(
    private readonly topology: Topology,
    private readonly waitMs: () => number,
  ) {
    topology.on('change', this.onChange);
  }

  /** Calls back when a primary is known (at once when one is), or with an error after the wait. */
  wait(callback: (error?: Error) => void): void {
    if (this.topology.primary()) {
      callback();
      return;
    }
    const waitMs = this.waitMs();
    const waiter: Waiter = {
      callback,
      timer: setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        callback(new ProxyError(SqlState.cannotConnectNow, `no primary is available (waited ${waitMs} ms for failover)`, { retryable: true }));
      }, waitMs),
    };
    this.waiters.push(waiter);
  }

  get count(): number {
    return this.waiters.length;
  }

  private wake(): void {
    if (this.waiters.length === 0 || !this.topology.primary()) return;
    const waiters = this.waiters;
    this.waiters = [];
    for (const waiter of waiters) {
      clearTimeout(waiter.timer);
      waiter.callback();
    }
  }

  /** Shutdown: nobody waits any more (their clients are being closed). */
  close(): void {
    this.topology.off('change', this.onChange);
    for (const waiter of this.waiters) clearTimeout(waiter.timer);
    this.waiters = [];
  }
}
