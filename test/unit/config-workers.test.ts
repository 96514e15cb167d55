import { availableParallelism } from 'node:os';
import { describe, expect, it } from 'vitest';
import { diffConfig } from '../../src/config/diff.js';
import { parseConfig } from '../../src/config/load.js';
import { resolveWorkers } from '../../src/config/workers-key.js';
import { configFailure } from '../support/config-failure.js';
import { poolShare } from '../../src/workers/worker-config.js';

const base = `nodes:
  - name: primary
    host: 127.0.0.1
    role: primary
users:
  - name: app
    password: secret
`;

describe('workers (config key)', () => {
  it('defaults to 1: one process, as before the key existed', () => {
    expect(parseConfig(base).workers).toBe(1);
  });

  it('takes a whole number, a quoted number, auto, and ${ENV}', () => {
    expect(parseConfig(`${base}workers: 4\n`).workers).toBe(4);
    expect(parseConfig(`${base}workers: "2"\n`).workers).toBe(2);
    expect(parseConfig(`${base}workers: auto\n`).workers).toBe('auto');
    expect(parseConfig(`${base}workers: \${N}\n`, { env: { N: '3' } }).workers).toBe(3);
    expect(resolveWorkers('auto')).toBe(Math.min(128, availableParallelism()));
    expect(resolveWorkers(3)).toBe(3);
  });

  it('refuses anything else, naming the key and its line', () => {
    expect(configFailure(`${base}workers: 0\n`)).toBe("workers at line 8, column 10: expected an integer from 1 to 128, or auto (one per CPU), got 0");
    expect(configFailure(`${base}workers: 1.5\n`)).toMatch(/workers at line 8, column 10: expected an integer from 1 to 128.*got 1\.5/);
    expect(configFailure(`${base}workers: 129\n`)).toMatch(/workers at line 8, column 10: expected .* got 129/);
    expect(configFailure(`${base}workers: many\n`)).toMatch(/workers at line 8, column 10: expected .* got "many"/);
    expect(configFailure(`${base}workers:\n  n: 2\n`)).toMatch(/workers at line 9, column 3: expected .* got a map or list/);
  });

  it('refuses consistency global with more than one process (its fence is per process)', () => {
    expect(configFailure(`${base}workers: 2\nrouting:\n  consistency: global\n`)).toMatch(/routing\.consistency at line 10, column 16: consistency global needs one process \(workers: 1, here 2\)/);
    expect(parseConfig(`${base}workers: 1\nrouting:\n  consistency: global\n`).routing.consistency).toBe('global');
    expect(parseConfig(`${base}workers: 2\nrouting:\n  consistency: session\n`).workers).toBe(2);
  });

  it('is a restart-only key for a reload', () => {
    const one = parseConfig(base);
    const two = parseConfig(`${base}workers: 2\n`);
    expect(diffConfig(one, two).restartRequired).toEqual(['workers']);
  });

  it('divides pool.size, pool.max_per_node and client.max_connections among the workers', () => {
    // 20 over 3 workers: 7 + 7 + 6, the total stays 20
    expect([1, 2, 3].map((slot) => poolShare(20, 3, slot))).toEqual([7, 7, 6]);
    // never below one connection per worker
    expect([1, 2, 3].map((slot) => poolShare(2, 3, slot))).toEqual([1, 1, 1]);
    // 0 (no limit) stays 0
    expect(poolShare(0, 4, 2)).toBe(0);
    expect(poolShare(8, 1, 1)).toBe(8);
  });
});
