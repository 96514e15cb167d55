import { describe, expect, it } from 'vitest';
import { Metrics } from '../../src/metrics/metrics.js';
import { parsePrometheusText, valueOf } from '../support/prometheus-text.js';

// The strict parser the metrics integration test relies on: it must accept good expositions and
// refuse broken ones, or that test proves nothing.
describe('strict Prometheus text parser', () => {
  const good = [
    '# HELP a_total Things.\\nWith a second line and a \\\\ backslash.',
    '# TYPE a_total counter',
    'a_total{node="n1",route="replica"} 3',
    'a_total{node="n\\"2\\\\",route="primary"} 1.5e3',
    '# just a comment',
    '# HELP h Durations.',
    '# TYPE h histogram',
    'h_bucket{node="x",le="0.1"} 1',
    'h_bucket{node="x",le="1"} 4',
    'h_bucket{node="x",le="+Inf"} 5',
    'h_sum{node="x"} 2.5',
    'h_count{node="x"} 5',
    '# TYPE g gauge',
    'g NaN',
    'g2 -Inf 1700000000000',
    '',
  ].join('\n');

  it('reads families, types, help, labels with escapes, special values', () => {
    const families = parsePrometheusText(good);
    expect(families.get('a_total')).toMatchObject({ type: 'counter', help: 'Things.\nWith a second line and a \\ backslash.' });
    expect(valueOf(families, 'a_total', { node: 'n"2\\' })).toBe(1500);
    expect(families.get('h')!.samples).toHaveLength(5);
    expect(Number.isNaN(valueOf(families, 'g'))).toBe(true);
    expect(valueOf(families, 'g2')).toBe(-Infinity);
    expect(families.get('g2')!.type).toBe('untyped');
  });

  const broken: [string, string][] = [
    ['no final line feed', '# TYPE a gauge\na 1'],
    ['bad metric name', '# TYPE 1a gauge\n1a 1\n'],
    ['bad value', '# TYPE a gauge\na one\n'],
    ['negative counter', '# TYPE a_total counter\na_total -1\n'],
    ['TYPE after samples', 'a 1\n# TYPE a gauge\n'],
    ['second TYPE', '# TYPE a gauge\n# TYPE a gauge\na 1\n'],
    ['second HELP', '# HELP a x\n# HELP a y\na 1\n'],
    ['unknown type', '# TYPE a meter\na 1\n'],
    ['duplicate series', '# TYPE a gauge\na{x="1"} 1\na{x="1"} 2\n'],
    ['label twice', '# TYPE a gauge\na{x="1",x="2"} 1\n'],
    ['bad escape', '# TYPE a gauge\na{x="\\t"} 1\n'],
    ['unterminated label value', '# TYPE a gauge\na{x="1} 1\n'],
    ['family split in two', '# TYPE a gauge\na{x="1"} 1\n# TYPE b gauge\nb 1\na{x="2"} 1\n'],
    ['histogram without +Inf', '# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 1\nh_count 1\n'],
    ['histogram not cumulative', '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n'],
    ['histogram count differs', '# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 3\n'],
    ['histogram without sum', '# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_count 2\n'],
    ['bad timestamp', '# TYPE a gauge\na 1 soon\n'],
  ];
  it.each(broken)('refuses: %s', (_name, text) => {
    expect(() => parsePrometheusText(text)).toThrow();
  });

  it('accepts what pgrelay\u2019s registry exposes, every family with help and a type', async () => {
    const metrics = new Metrics({ processMetrics: true });
    metrics.queries.labels('primary', 'primary').inc();
    metrics.observeUnit('replica1', 0.003);
    metrics.countUnitReason('replica', 'read');
    const families = parsePrometheusText(await metrics.registry.metrics());
    expect(families.size).toBeGreaterThan(30);
    for (const f of families.values()) {
      expect(f.name.startsWith('pgrelay_'), f.name).toBe(true);
      expect(f.help, f.name).toBeTruthy();
      expect(f.type, f.name).not.toBe('untyped');
    }
    expect(valueOf(families, 'pgrelay_query_duration_seconds_count', { node: 'replica1' })).toBe(1);
    expect(valueOf(families, 'pgrelay_units_total', { route: 'replica', reason: 'read' })).toBe(1);
  });
});
