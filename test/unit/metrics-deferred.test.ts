import { describe, expect, it } from 'vitest';
import { Metrics } from '../../src/metrics/metrics.js';

/** The value of one sample line of the Prometheus text, or undefined when absent. */
function sample(text: string, line: string): number | undefined {
  const found = text.split('\n').find((l) => l.startsWith(`${line} `));
  return found === undefined ? undefined : Number(found.slice(line.length + 1));
}

describe('per-unit counters (counted in plain numbers, handed to prom-client when read)', () => {
  it('show every unit at each scrape, once, together with direct increments', async () => {
    const metrics = new Metrics({ processMetrics: false });
    for (let i = 0; i < 5; i++) metrics.countUnit('primary', 'primary');
    metrics.countUnit('replica1', 'replica');
    metrics.countUnitReason('replica', 'read');
    metrics.countUnitReason('replica', 'read');
    metrics.queries.labels('primary', 'primary').inc(); // a direct increment adds up with the pending ones
    let text = await metrics.registry.metrics();
    expect(sample(text, 'pgrelay_queries_total{node="primary",route="primary"}')).toBe(6);
    expect(sample(text, 'pgrelay_queries_total{node="replica1",route="replica"}')).toBe(1);
    expect(sample(text, 'pgrelay_units_total{route="replica",reason="read"}')).toBe(2);

    // a second scrape does not count them again; units counted in between are added
    metrics.countUnit('replica1', 'replica');
    text = await metrics.registry.metrics();
    expect(sample(text, 'pgrelay_queries_total{node="primary",route="primary"}')).toBe(6);
    expect(sample(text, 'pgrelay_queries_total{node="replica1",route="replica"}')).toBe(2);
    expect(sample(text, 'pgrelay_units_total{route="replica",reason="read"}')).toBe(2);

    // the JSON form reads them the same way
    metrics.countUnitReason('primary', 'write');
    const json = await metrics.registry.getMetricsAsJSON();
    const units = json.find((m) => m.name === 'pgrelay_units_total')!;
    expect((units.values as { labels: Record<string, string>; value: number }[]).find((v) => v.labels['reason'] === 'write')?.value).toBe(1);
  });

  it('pool waits by node and client bytes in and out', async () => {
    const metrics = new Metrics({ processMetrics: false });
    metrics.countPoolWait('primary');
    metrics.countPoolWait('primary');
    metrics.countPoolWait('replica1');
    metrics.addBytesIn(100);
    metrics.addBytesIn(20);
    metrics.addBytesOut(7);
    let text = await metrics.registry.metrics();
    expect(sample(text, 'pgrelay_pool_waits_total{node="primary"}')).toBe(2);
    expect(sample(text, 'pgrelay_pool_waits_total{node="replica1"}')).toBe(1);
    expect(sample(text, 'pgrelay_client_bytes_received_total')).toBe(120);
    expect(sample(text, 'pgrelay_client_bytes_sent_total')).toBe(7);
    metrics.addBytesOut(3);
    text = await metrics.registry.metrics();
    expect(sample(text, 'pgrelay_client_bytes_received_total')).toBe(120);
    expect(sample(text, 'pgrelay_client_bytes_sent_total')).toBe(10);
    expect(sample(text, 'pgrelay_pool_waits_total{node="primary"}')).toBe(2);
  });

  it('primary reads by reason, also through the counter\u2019s own get()', async () => {
    const metrics = new Metrics({ processMetrics: false });
    metrics.countPrimaryRead('no_replica');
    metrics.countPrimaryRead('lag');
    metrics.countPrimaryRead('lag');
    const values = (await metrics.primaryReads.get()).values;
    expect(values.find((v) => v.labels.reason === 'lag')?.value).toBe(2);
    expect(values.find((v) => v.labels.reason === 'no_replica')?.value).toBe(1);
    expect(sample(await metrics.registry.metrics(), 'pgrelay_primary_reads_total{reason="lag"}')).toBe(2);
  });

  it('transactions of a held BEGIN by outcome, through get() and a scrape, each counted once', async () => {
    const metrics = new Metrics({ processMetrics: false });
    for (let i = 0; i < 3; i++) metrics.countTransaction('primary');
    metrics.countTransaction('moved');
    const values = (await metrics.transactions.get()).values;
    expect(values.find((v) => v.labels.outcome === 'primary')?.value).toBe(3);
    expect(values.find((v) => v.labels.outcome === 'moved')?.value).toBe(1);
    metrics.countTransaction('conflict');
    const text = await metrics.registry.metrics();
    expect(sample(text, 'pgrelay_transactions_total{outcome="primary"}')).toBe(3);
    expect(sample(text, 'pgrelay_transactions_total{outcome="conflict"}')).toBe(1);
  });
});
