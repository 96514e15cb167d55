import { Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { FastHistogram } from '../../src/metrics/fast-histogram.js';

const BUCKETS = [0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** The same observations through prom-client's Histogram and FastHistogram, in two registries. */
function both(observations: [string, number][]) {
  const reference = new Registry();
  const fast = new Registry();
  const h = new Histogram({ name: 'x_seconds', help: 'help text', labelNames: ['node'], buckets: BUCKETS, registers: [reference] });
  const f = new FastHistogram('x_seconds', 'help text', 'node', BUCKETS, [fast]);
  for (const [node, value] of observations) {
    h.labels(node).observe(value);
    f.observe(node, value);
  }
  return { reference, fast, f };
}

// values on bucket bounds (le is inclusive), between them, above the last, zero, repeated
const OBSERVATIONS: [string, number][] = [
  ['primary', 0],
  ['primary', 0.0002],
  ['primary', 0.00021],
  ['replica1', 0.003],
  ['primary', 0.0025],
  ['replica1', 10],
  ['replica1', 11.5],
  ['primary', 0.7],
  ['replica2', 0.0001],
  ['primary', 0.0002],
];

describe('FastHistogram', () => {
  it('prints exactly what prom-client\u2019s Histogram prints for the same observations', async () => {
    const { reference, fast } = both(OBSERVATIONS);
    const text = await fast.metrics();
    expect(text).toBe(await reference.metrics());
    expect(text).toContain('x_seconds_bucket{le="0.0002",node="primary"} 3');
    expect(text).toContain('x_seconds_count{node="replica1"} 3');
  });

  it('gives the same JSON (getMetricsAsJSON)', async () => {
    const { reference, fast } = both(OBSERVATIONS);
    const strip = (metrics: { values?: unknown[] }[]) => metrics.map((m) => ({ ...m, values: (m.values as { exemplar?: unknown }[]).map(({ exemplar: _unused, ...v }) => v) }));
    expect(strip((await fast.getMetricsAsJSON()) as never)).toEqual(strip((await reference.getMetricsAsJSON()) as never));
  });

  it('is emptied by resetMetrics, and refuses what is not a number', async () => {
    const { fast, f } = both(OBSERVATIONS);
    fast.resetMetrics();
    expect(await fast.metrics()).toBe('# HELP x_seconds help text\n# TYPE x_seconds histogram\n');
    expect(() => f.observe('primary', Number.NaN)).toThrow(TypeError);
  });
});
