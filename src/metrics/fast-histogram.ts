import type { Registry } from 'prom-client';

/** One label value's observations: counts per bucket (not cumulative; the last is above every bound). */
interface Series {
  /** the label as prom-client's registry wants it (one object per series: it caches its text) */
  readonly labels: Record<string, string>;
  readonly counts: Float64Array;
  sum: number;
  count: number;
}

interface ValuePair {
  labels: Record<string, string | number>;
  sharedLabels: Record<string, string>;
  value: number;
  metricName: string;
}

/**
 * A Prometheus histogram with one label, cheap enough to observe once per unit. prom-client's
 * Histogram allocates a closure and a labels object per observation, builds and hashes a label
 * string, and finds the bucket through an object keyed by the bound as a string: in the CPU
 * profile of pgbench -S through pgrelay it was the largest JS function pgrelay owns. This one
 * keeps a Float64Array per label value; it registers itself in prom-client registries as a metric
 * and exports the same text (`_bucket{le=…}` cumulative, `+Inf`, `_sum`, `_count`).
 */
export class FastHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  readonly labelNames: string[];
  private readonly series = new Map<string, Series>();

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly label: string,
    private readonly buckets: readonly number[],
    registers: readonly Registry[],
  ) {
    this.labelNames = [label];
    for (let i = 1; i < buckets.length; i++) if (!(buckets[i]! > buckets[i - 1]!)) throw new Error(`${name}: buckets must increase`);
    for (const registry of registers) registry.registerMetric(this as never);
  }

  observe(labelValue: string, value: number): void {
    if (!Number.isFinite(value)) throw new TypeError(`${this.name}: not a finite number: ${value}`);
    let series = this.series.get(labelValue);
    if (series === undefined) {
      series = { labels: { [this.label]: labelValue }, counts: new Float64Array(this.buckets.length + 1), sum: 0, count: 0 };
      this.series.set(labelValue, series);
    }
    const bounds = this.buckets;
    let i = 0;
    while (i < bounds.length && value > bounds[i]!) i++;
    series.counts[i]!++;
    series.sum += value;
    series.count++;
  }

  /** What prom-client's registry prints (labels of the series apart, as its Histogram does). */
  getForPromString(): { name: string; help: string; type: string; aggregator: string; values: ValuePair[] } {
    const values: ValuePair[] = [];
    const bucketName = `${this.name}_bucket`;
    for (const series of this.series.values()) {
      let cumulative = 0;
      for (let i = 0; i < this.buckets.length; i++) {
        cumulative += series.counts[i]!;
        values.push({ labels: { le: this.buckets[i]! }, sharedLabels: series.labels, value: cumulative, metricName: bucketName });
      }
      values.push({ labels: { le: '+Inf' }, sharedLabels: series.labels, value: series.count, metricName: bucketName });
      values.push({ labels: {}, sharedLabels: series.labels, value: series.sum, metricName: `${this.name}_sum` });
      values.push({ labels: {}, sharedLabels: series.labels, value: series.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  /** The JSON form (getMetricsAsJSON): every label of a value in `labels`. */
  get(): { name: string; help: string; type: string; aggregator: string; values: { labels: Record<string, string | number>; value: number; metricName: string }[] } {
    const data = this.getForPromString();
    return { ...data, values: data.values.map(({ labels, sharedLabels, value, metricName }) => ({ labels: { ...labels, ...sharedLabels }, value, metricName })) };
  }

  reset(): void {
    this.series.clear();
  }
}
