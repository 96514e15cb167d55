import { afterEach, describe, expect, it, vi } from 'vitest';
import { Topology } from '../../src/cluster/topology.js';
import { ProxyError } from '../../src/errors.js';
import { PrimaryWaiters } from '../../src/frontend/primary-waiters.js';

function cluster(): Topology {
  return new Topology([
    { name: 'primary', host: '127.0.0.1', port: 5432, role: 'primary', weight: 1 },
    { name: 'standby', host: '127.0.0.1', port: 5433, role: 'standby', weight: 1 },
  ]);
}

afterEach(() => {
  vi.useRealTimers();
});

describe('PrimaryWaiters', () => {
  it('goes on at once while a primary is known', () => {
    const waiters = new PrimaryWaiters(cluster(), () => 1000);
    const callback = vi.fn();
    waiters.wait(callback);
    expect(callback).toHaveBeenCalledWith();
    expect(waiters.count).toBe(0);
  });

  it('waits during a failover and goes on when the new primary is known', () => {
    vi.useFakeTimers();
    const topology = cluster();
    topology.node('primary')!.up = false;
    const waiters = new PrimaryWaiters(topology, () => 1000);
    const callback = vi.fn();
    waiters.wait(callback);
    vi.advanceTimersByTime(500);
    expect(callback).not.toHaveBeenCalled();
    topology.changed(); // a change without a primary wakes nobody
    expect(callback).not.toHaveBeenCalled();
    topology.setPrimary('standby');
    expect(callback).toHaveBeenCalledWith();
    vi.advanceTimersByTime(1000);
    expect(callback).toHaveBeenCalledTimes(1);
  });

  it('fails with 57P03 after failover.wait_ms, read when the wait starts', () => {
    vi.useFakeTimers();
    const topology = cluster();
    topology.node('primary')!.up = false;
    let waitMs = 300;
    const waiters = new PrimaryWaiters(topology, () => waitMs);
    const callback = vi.fn();
    waiters.wait(callback);
    waitMs = 10_000;
    vi.advanceTimersByTime(299);
    expect(callback).not.toHaveBeenCalled();
    vi.advanceTimersByTime(1);
    const error = callback.mock.calls[0]![0] as ProxyError;
    expect(error).toBeInstanceOf(ProxyError);
    expect(error.sqlstate).toBe('57P03');
    expect(error.message).toMatch(/waited 300 ms/);
    expect(waiters.count).toBe(0);
  });

  it('close() drops the waiters and their timers', () => {
    vi.useFakeTimers();
    const topology = cluster();
    topology.node('primary')!.up = false;
    const waiters = new PrimaryWaiters(topology, () => 300);
    const callback = vi.fn();
    waiters.wait(callback);
    waiters.close();
    vi.advanceTimersByTime(1000);
    topology.setPrimary('standby');
    expect(callback).not.toHaveBeenCalled();
  });
});
