import { describe, expect, it } from 'vitest';
import { webappMarkdown, type WebappResult, type WebappRun } from '../../src/bench/webapp.js';

const result = (mode: WebappResult['mode'], onReplicas: number, stale: number, requestsPerS: number, errors = 0): WebappResult => ({
  mode,
  requests: requestsPerS * 10,
  requestsPerS,
  reads: requestsPerS * 48,
  stale,
  scansByNode: {},
  onReplicas,
  errors,
});

describe('webapp bench table', () => {
  it('shows per delay, target and mode the median share on replicas and rate, and the summed stale reads', () => {
    const runs: WebappRun[] = [
      { round: 1, delayMs: 0, target: 'pgrelay-read', result: result('autocommit', 0.5, 0, 600) },
      { round: 2, delayMs: 0, target: 'pgrelay-read', result: result('autocommit', 0.9, 0, 700) },
      { round: 3, delayMs: 0, target: 'pgrelay-read', result: result('autocommit', 0.6, 0, 650) },
      { round: 1, delayMs: 20, target: 'pgpool', result: result('transactions', 0.93, 300, 500) },
      { round: 2, delayMs: 20, target: 'pgpool', result: result('transactions', 0.95, 27, 520, 2) },
      { round: 1, delayMs: 20, target: 'pgrelay-read', error: 'connection refused' },
    ];
    const lines = webappMarkdown(runs, { 'pgrelay-read': 'pgrelay', pgpool: 'Pgpool-II' });
    expect(lines).toContain('| none | pgrelay | autocommit | 650 | 60.0 % | 0 | 0 |');
    // two rounds: the lower median, stale and errors summed
    expect(lines).toContain('| 20 ms | Pgpool-II | transactions | 500 | 93.0 % | 327 | 2 |');
    expect(lines.find((l) => l.startsWith('| 20 ms | pgrelay |'))).toMatch(/failed: connection refused/);
  });
});
