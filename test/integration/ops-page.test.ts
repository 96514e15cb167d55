import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { LocalCluster } from '../../src/local/cluster.js';
import { parsePrometheusText, valueOf } from '../support/prometheus-text.js';
import { startRelay, type Relay } from '../support/relay.js';

// The live topology page at GET / of the admin port, in headless Chromium (Debian's chromium,
// driven by playwright-core). A cluster of this file's own: the test pauses a replica's replay and
// watches its lag bar grow past max_lag on the page, then come back. Screenshots go to
// test-artifacts/ for a person to look at.
const ARTIFACTS = fileURLToPath(new URL('../../test-artifacts/', import.meta.url));
const MAX_LAG_MS = 2000;
let cluster: LocalCluster;
let relay: Relay;
let browser: Browser;
let page: Page;
let writer: pg.Client;
let writing = true;
let writes: Promise<void> = Promise.resolve();
const requests: string[] = [];
const pageErrors: string[] = [];

beforeAll(async () => {
  cluster = await LocalCluster.create({ standby: true, replicas: 1 });
  relay = await startRelay(cluster, { routing: { max_lag_ms: MAX_LAG_MS, consistency: 'eventual' } });
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  page = await browser.newPage({ viewport: { width: 1100, height: 700 } });
  page.on('request', (request) => requests.push(request.url()));
  page.on('pageerror', (error) => pageErrors.push(error.message));
  await cluster.query('primary', 'CREATE TABLE ops_page (id serial PRIMARY KEY, at timestamptz DEFAULT now())');
  // steady writes and reads through pgrelay: the page shows their rates, and the primary's WAL
  // moves on while a replica's replay is paused
  writer = new pg.Client({ connectionString: relay.url() });
  writer.on('error', () => undefined);
  await writer.connect();
  writes = (async () => {
    while (writing) {
      await writer.query('INSERT INTO ops_page DEFAULT VALUES');
      await writer.query('SELECT count(*) FROM ops_page');
      await writer.query('SELECT pg_sleep(0.02)');
    }
  })();
});

afterAll(async () => {
  writing = false;
  await writes.catch(() => undefined);
  await writer?.end().catch(() => undefined);
  await browser?.close();
  await relay?.stop();
  await cluster?.stop();
});

/** What the test reads of a page element (the test's TS setup has no DOM library). */
interface DomBox {
  dataset: Record<string, string | undefined>;
  className: string;
  getBoundingClientRect(): { width: number };
}

/** A replica card's lag as the page shows it. */
async function lagOf(node: string): Promise<{ ms: number | undefined; fraction: number | undefined; width: number; health: string | null; classes: string }> {
  return page.$eval(`[data-node="${node}"]`, (card) => {
    const fill = card.querySelector('.lag-fill') as unknown as DomBox;
    const track = card.querySelector('.lag-track') as unknown as DomBox;
    return {
      ms: fill.dataset.lagMs ? Number(fill.dataset.lagMs) : undefined,
      fraction: fill.dataset.lagFraction ? Number(fill.dataset.lagFraction) : undefined,
      width: fill.getBoundingClientRect().width / track.getBoundingClientRect().width,
      health: card.getAttribute('data-health'),
      classes: fill.className,
    };
  });
}

describe('topology page', () => {
  it('draws the nodes with health and rates, and a replica\u2019s lag bar grows while its replay is paused', async () => {
    await page.goto(`${relay.adminUrl}/`);
    await page.waitForSelector('[data-node="primary"][data-role="primary"]');
    await page.waitForSelector('[data-node="standby1"][data-role="standby"]');
    await page.waitForSelector('[data-node="replica1"][data-role="replica"]');
    expect(await page.textContent('#primary')).toBe('primary');
    expect(await page.textContent('#health')).toBe('writes OK');
    expect(await page.locator('#lines line').count()).toBe(2);

    // rates come from two /status documents a second apart: the page updates without a reload
    await vi.waitFor(async () => {
      const writesPerS = await page.$eval('[data-node="primary"] [data-writes-per-s]', (e) => Number((e as unknown as DomBox).dataset.writesPerS || 0));
      expect(writesPerS).toBeGreaterThan(0);
    }, { timeout: 30_000, interval: 250 });
    await vi.waitFor(async () => {
      const lag = await lagOf('replica1');
      expect(lag.health).toBe('up');
      expect(lag.fraction).toBeDefined();
      expect(lag.fraction!).toBeLessThan(0.5);
    }, { timeout: 30_000, interval: 250 });
    const before = await lagOf('replica1');
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: `${ARTIFACTS}topology-page.png`, fullPage: true });

    await cluster.pauseReplay('replica1');
    try {
      // the lag monitor sees the replay stop; the page's bar for replica1 fills up past max_lag
      await vi.waitFor(async () => {
        const lag = await lagOf('replica1');
        expect(lag.ms!).toBeGreaterThan(MAX_LAG_MS);
        expect(lag.fraction).toBe(1);
        expect(lag.classes).toContain('over');
        expect(lag.health).toBe('stale');
        expect(lag.width).toBeGreaterThan(before.width + 0.3); // the bar is drawn that long (after its transition)
      }, { timeout: 60_000, interval: 250 });
      expect(await page.textContent('[data-node="replica1"] .lag-text')).toContain('of 2.00 s');
      // the standby (replaying) stays fresh on the same page
      expect((await lagOf('standby1')).health).toBe('up');
      // the same lag in /metrics
      const metrics = parsePrometheusText(await (await fetch(`${relay.adminUrl}/metrics`)).text());
      expect(valueOf(metrics, 'pgrelay_replica_lag_seconds', { node: 'replica1' })).toBeGreaterThan(MAX_LAG_MS / 1000);
      await page.screenshot({ path: `${ARTIFACTS}topology-page-replica-lagging.png`, fullPage: true });
    } finally {
      await cluster.resumeReplay('replica1');
    }
    await vi.waitFor(async () => {
      const lag = await lagOf('replica1');
      expect(lag.health).toBe('up');
      expect(lag.fraction!).toBeLessThan(0.5);
    }, { timeout: 60_000, interval: 250 });

    // served offline: every request the page made went to the admin port
    expect(requests.length).toBeGreaterThan(3);
    expect(requests.filter((url) => !url.startsWith(`${relay.adminUrl}/`))).toEqual([]);
    expect(pageErrors).toEqual([]);
  }, 240_000);
});
