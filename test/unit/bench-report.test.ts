import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { summariseProfile } from '../../src/bench/profile.js';
import { checkTargets, floorLines, summarise, type RunRecord, type TargetId, type WorkloadId } from '../../src/bench/report.js';
import { median, percentile } from '../../src/bench/stats.js';

const run = (round: number, target: TargetId, tps: number, extra: Partial<RunRecord> = {}): RunRecord => ({
  round,
  workload: 'select-simple',
  target,
  tps,
  transactions: tps * 10,
  latencyMedianUs: 1e6 / tps,
  latencyP99Us: 3e6 / tps,
  ...extra,
});

const targets = { 'select-simple': ['direct', 'pgrelay-primary', 'pgbouncer'] } as Record<WorkloadId, TargetId[]>;

describe('bench report', () => {
  it('takes ratios within a round, then the median over the rounds', () => {
    // round 2 is a slow round for everyone: its absolute numbers must not skew the ratios
    const runs = [
      run(1, 'direct', 10_000),
      run(1, 'pgrelay-primary', 8_000, { proxyCpuS: 4, proxyUserS: 3, proxySystemS: 1 }),
      run(1, 'pgbouncer', 7_000),
      run(2, 'direct', 2_000),
      run(2, 'pgrelay-primary', 1_800, { proxyCpuS: 1, proxyUserS: 0.5, proxySystemS: 0.5 }),
      run(2, 'pgbouncer', 1_000),
      run(3, 'direct', 9_000),
      run(3, 'pgrelay-primary', 6_300, { proxyCpuS: 3, proxyUserS: 2, proxySystemS: 1 }),
      run(3, 'pgbouncer', 9_000),
    ];
    const rows = summarise(runs, ['select-simple'], targets);
    const relay = rows.find((r) => r.target === 'pgrelay-primary')!;
    expect(relay.ratioToDirect).toBeCloseTo(0.8); // 0.8, 0.9, 0.7
    expect(relay.ratioToDirectRange).toEqual([0.7, 0.9]);
    expect(relay.ratioToPgbouncer).toBeCloseTo(8_000 / 7_000); // 1.14, 1.8, 0.7
    expect(relay.tpsMedian).toBe(6_300);
    expect(relay.proxyCpuUsPerTx).toBeCloseTo(50); // 50, 55.6, 47.6
    expect(relay.proxyUserUsPerTx).toBeCloseTo((2 * 1e6) / 63_000);
    const checks = checkTargets(rows, runs, { clients: 100, rssBeforeBytes: 0, rssWithClientsBytes: 6_000_000, rssAfterCloseBytes: 0, perClientBytes: 60_000 });
    expect(checks[0]).toMatchObject({ measured: '0.80', met: true }); // PgBouncer's ratio is 0.70
    expect(checks.find((c) => c.target.startsWith('RSS'))).toMatchObject({ met: false });
    expect(checks.find((c) => c.target.includes('prepared') && c.target.includes('0.75'))).toMatchObject({ met: undefined, measured: 'n/a' });
  });

  it("judges issue 19's targets within each round: pgrelay against PgBouncer, read scaling against primary only, added latency", () => {
    const runs = [
      run(1, 'direct', 10_000),
      run(1, 'pgrelay-primary', 6_000),
      run(1, 'pgrelay-pipelined', 7_500),
      run(1, 'pgrelay-read', 5_000),
      run(1, 'pgbouncer', 7_000),
      run(2, 'direct', 5_000),
      run(2, 'pgrelay-primary', 3_000),
      run(2, 'pgrelay-pipelined', 3_400),
      run(2, 'pgrelay-read', 3_300),
      run(2, 'pgbouncer', 3_500),
      { ...run(1, 'direct', 8_000), workload: 'latency-1-client', latencyMedianUs: 100 },
      { ...run(1, 'pgrelay-primary', 5_000), workload: 'latency-1-client', latencyMedianUs: 140 },
      { ...run(1, 'pgbouncer', 7_000), workload: 'latency-1-client', latencyMedianUs: 110 },
    ] as RunRecord[];
    const all = { 'select-simple': ['direct', 'pgrelay-primary', 'pgrelay-pipelined', 'pgrelay-read', 'pgbouncer'], 'latency-1-client': ['direct', 'pgrelay-primary', 'pgbouncer'] } as Record<WorkloadId, TargetId[]>;
    const rows = summarise(runs, ['select-simple', 'latency-1-client'], all);
    const checks = checkTargets(rows, runs, undefined);
    const find = (...words: string[]) => checks.find((c) => c.target.startsWith('issue 19') && words.every((w) => c.target.includes(w)))!;
    // pipelined: 7500/7000 = 1.07 and 3400/3500 = 0.97 → median 1.02; primary only: 0.86, 0.86
    expect(find('-M simple', 'pipelined', 'PgBouncer')).toMatchObject({ measured: '1.02×', met: true });
    expect(find('-M simple', '(primary only) TPS', 'PgBouncer')).toMatchObject({ measured: '0.86×', met: false });
    // read scaling against primary only: 5000/6000 = 0.83 and 3300/3000 = 1.10 → 0.97
    expect(find('-M simple', 'read scaling')).toMatchObject({ measured: '0.97×', met: false });
    expect(find('added latency')).toMatchObject({ wanted: '≤ +10 µs', measured: '+40 µs', met: false });
    expect(find('TPC-B')).toMatchObject({ met: undefined, measured: 'n/a' });
  });

  it("sets pgrelay's CPU per transaction against the byte copy's (the runtime's floor) and the byte copy's TPS against PgBouncer's", () => {
    const runs = [
      run(1, 'direct', 10_000),
      run(1, 'pgrelay-primary', 6_000, { proxyCpuS: 2.4, proxyUserS: 1.2, proxySystemS: 1.2 }), // 40 µs per transaction
      run(1, 'pgbouncer', 8_000, { proxyCpuS: 1.2, proxyUserS: 0.2, proxySystemS: 1 }), // 15 µs
      run(1, 'byte-copy', 7_600, { proxyCpuS: 1.52, proxyUserS: 0.61, proxySystemS: 0.91 }), // 20 µs
    ];
    const rows = summarise(runs, ['select-simple'], { 'select-simple': ['direct', 'pgrelay-primary', 'pgbouncer', 'byte-copy'] } as Record<WorkloadId, TargetId[]>);
    const [line] = floorLines(rows);
    expect(line).toContain('byte copy 0.76 of direct, 0.95× PgBouncer, CPU 20.0 µs (user 8.0) per transaction');
    expect(line).toContain('pgrelay (primary only) 0.60 of direct, 0.75× PgBouncer, CPU 40.0 µs (user 20.0)');
    expect(line).toContain('PgBouncer 0.80 of direct, CPU 15.0 µs (user 2.5)');
    expect(line).toContain('pgrelay above the floor: **20.0 µs** per transaction');
    // without a byte copy run there is nothing to say
    expect(floorLines(summarise(runs.slice(0, 3), ['select-simple'], targets))).toEqual([]);
  });

  it('percentile is nearest-rank, median averages the middle pair', () => {
    const sorted = Float64Array.from({ length: 100 }, (_, i) => i + 1);
    expect(percentile(sorted, 50)).toBe(50);
    expect(percentile(sorted, 99)).toBe(99);
    expect(percentile(sorted, 100)).toBe(100);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([Number.NaN, 5])).toBe(5);
  });
});

describe('profile summary', () => {
  let dir: string | undefined;
  afterEach(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  });

  it('counts self time of the samples inside the window only, per transaction', () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-profile-'));
    const file = path.join(dir, 'x.cpuprofile');
    const frame = (id: number, functionName: string, url: string) => ({ id, callFrame: { functionName, url, lineNumber: 9, columnNumber: 0, scriptId: '0' } });
    // samples at 1000 + 10, 20, … µs: ids 2 (hot), 3 (cold, only before the window), 4 (idle)
    fs.writeFileSync(
      file,
      JSON.stringify({
        startTime: 1000,
        endTime: 1100,
        nodes: [frame(1, '(root)', ''), frame(2, 'onServerData', 'file:///x/dist/frontend/session.js'), frame(3, 'load', 'node:internal/modules'), frame(4, '(idle)', '')],
        samples: [3, 3, 2, 2, 4, 2, 2, 4, 2, 3],
        timeDeltas: [10, 10, 10, 10, 10, 10, 10, 10, 10, 10],
      }),
    );
    const summary = summariseProfile(file, 10, { fromUs: 1025, toUs: 1090, transactions: 10 });
    // the window holds samples 3..9 (at 1030 … 1090): 2,2,4,2,2,4,2
    expect(summary.totalMs).toBeCloseTo(0.1);
    expect(summary.top[0]).toMatchObject({ function: 'onServerData', location: 'frontend/session.js:10', selfMs: 0.1 });
    expect(summary.top[0]!.selfUsPerTx).toBe(5);
    expect(summary.busyUsPerTx).toBe(5);
    expect(summary.top.find((e) => e.function === 'load')).toBeUndefined();
    expect(summary.byArea['idle']).toBeCloseTo(28.6, 0);
  });
});
