import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { Metrics } from '../../src/metrics/metrics.js';
import { parsePrometheusText } from '../support/prometheus-text.js';

// docker/grafana-dashboard.json and docker/prometheus.yml against what pgrelay really exports:
// a panel on a metric that does not exist (renamed, misspelt) would chart nothing, silently.
const dashboardFile = fileURLToPath(new URL('../../docker/grafana-dashboard.json', import.meta.url));
const prometheusFile = fileURLToPath(new URL('../../docker/prometheus.yml', import.meta.url));

interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
  targets?: { expr: string; refId: string }[];
}

async function exported(): Promise<{ names: Set<string>; types: Map<string, string> }> {
  const metrics = new Metrics({ processMetrics: true });
  const families = parsePrometheusText(await metrics.registry.metrics());
  const names = new Set<string>();
  const types = new Map<string, string>();
  for (const f of families.values()) {
    types.set(f.name, f.type);
    names.add(f.name);
    if (f.type === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) names.add(f.name + suffix);
  }
  return { names, types };
}

describe('Grafana dashboard', () => {
  const dashboard = JSON.parse(readFileSync(dashboardFile, 'utf8')) as { panels: Panel[]; uid: string; title: string; templating: { list: { name: string }[] } };

  it('charts only metrics pgrelay exports, counters through rate() or increase()', async () => {
    const { names, types } = await exported();
    const used = new Set<string>();
    for (const panel of dashboard.panels) {
      for (const target of panel.targets ?? []) {
        const metricsInExpr = target.expr.match(/pgrelay_[a-z0-9_]+/g) ?? [];
        expect(metricsInExpr.length, `${panel.title} ${target.refId}`).toBeGreaterThan(0);
        for (const name of metricsInExpr) {
          expect(names.has(name), `${panel.title}: ${name}`).toBe(true);
          used.add(name.replace(/_(bucket|sum|count)$/, ''));
          if (types.get(name) === 'counter' && name !== 'pgrelay_failovers_total') {
            expect(target.expr, `${panel.title}: counter ${name}`).toMatch(new RegExp(`(rate|increase)\\(${name}\\{`));
          }
        }
        expect(target.expr, panel.title).toContain('instance=~"$instance"');
      }
    }
    // every DESIGN.md metric has a panel
    for (const name of ['pgrelay_client_connections', 'pgrelay_queries_total', 'pgrelay_query_duration_seconds', 'pgrelay_replica_lag_seconds', 'pgrelay_replica_lag_bytes', 'pgrelay_node_up', 'pgrelay_failovers_total', 'pgrelay_pool_connections', 'pgrelay_pinned_sessions']) {
      expect(used.has(name), name).toBe(true);
    }
  });

  it('has unique panel ids and panels that do not overlap on the 24-column grid', () => {
    const ids = dashboard.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    const cells = new Set<string>();
    for (const p of dashboard.panels) {
      expect(p.gridPos.x + p.gridPos.w, p.title).toBeLessThanOrEqual(24);
      for (let x = p.gridPos.x; x < p.gridPos.x + p.gridPos.w; x++) {
        for (let y = p.gridPos.y; y < p.gridPos.y + p.gridPos.h; y++) {
          expect(cells.has(`${x},${y}`), `${p.title} overlaps at ${x},${y}`).toBe(false);
          cells.add(`${x},${y}`);
        }
      }
    }
    expect(dashboard.uid).toBe('pgrelay-overview');
    expect(dashboard.templating.list.map((v) => v.name)).toEqual(['instance']);
  });
});

describe('Prometheus scrape config', () => {
  it('scrapes /metrics of the compose service pgrelay on its admin port', () => {
    const config = parse(readFileSync(prometheusFile, 'utf8')) as { scrape_configs: { job_name: string; metrics_path: string; static_configs: { targets: string[] }[] }[] };
    const job = config.scrape_configs.find((j) => j.job_name === 'pgrelay')!;
    expect(job.metrics_path).toBe('/metrics');
    expect(job.static_configs.flatMap((c) => c.targets)).toEqual(['pgrelay:9930']);
  });
});
