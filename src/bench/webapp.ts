/**
 * The web-application workload of issue 17 (`npm run bench -- --workloads webapp`): clients that
 * each hold one connection like a web worker, 10 % of requests write (INSERT a row, then 3 reads,
 * the first of that new row), 90 % read (5 reads, the first of the client's own last written row).
 * Mode `autocommit`: statements on their own; mode `transactions`: every request inside
 * BEGIN … COMMIT, as psycopg, JDBC with autocommit off and the web frameworks' per-request
 * transactions do.
 *
 * Where the reads ran is counted on the servers themselves (per-node index scans of the table in
 * pg_stat_user_tables), never through the proxy. A stale read is a read of the client's own last
 * written row that does not find it.
 */
import pg from 'pg';
import type { Endpoint } from './pgbench.js';

export type WebappMode = 'autocommit' | 'transactions';

export interface WebappNode {
  name: string;
  role: 'primary' | 'standby' | 'replica';
  /** a superuser connection string to the node itself */
  url: string;
}

export interface WebappOptions {
  clients: number;
  durationS: number;
  mode: WebappMode;
  /** share of requests that write, 0..1 */
  writeShare?: number;
  /** random source (tests pass a seeded one) */
  random?: () => number;
}

export interface WebappResult {
  mode: WebappMode;
  requests: number;
  requestsPerS: number;
  /** reads the clients sent */
  reads: number;
  /** reads of the client's own last written row that did not see it */
  stale: number;
  /** index scans of the table counted on each node while the workload ran */
  scansByNode: Record<string, number>;
  /** share of the counted reads that ran on a node other than the primary */
  onReplicas: number;
  errors: number;
  firstError?: string;
}

export const WEBAPP_TABLE = 'webapp_items';

/** Creates (again) and fills the table on the primary; the caller waits for the replicas. */
export async function prepareWebapp(primaryUrl: string, rows = 10_000): Promise<void> {
  const client = new pg.Client({ connectionString: primaryUrl });
  await client.connect();
  try {
    await client.query(`DROP TABLE IF EXISTS ${WEBAPP_TABLE}`);
    await client.query(`CREATE TABLE ${WEBAPP_TABLE} (id bigserial PRIMARY KEY, client int NOT NULL, payload text NOT NULL)`);
    await client.query(`INSERT INTO ${WEBAPP_TABLE} (client, payload) SELECT -1, md5(g::text) FROM generate_series(1, $1) g`, [rows]);
    await client.query(`ANALYZE ${WEBAPP_TABLE}`);
  } finally {
    await client.end();
  }
}

/** Index scans of the table per node (each node counts the scans run on itself). */
async function scanCounts(nodes: readonly WebappNode[]): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  await Promise.all(
    nodes.map(async (node) => {
      const client = new pg.Client({ connectionString: node.url });
      await client.connect();
      try {
        await client.query('SELECT pg_stat_clear_snapshot()');
        const row = (await client.query<{ n: string | null }>(`SELECT coalesce(idx_scan, 0) + coalesce(seq_scan, 0) AS n FROM pg_stat_user_tables WHERE relname = $1`, [WEBAPP_TABLE])).rows[0];
        counts[node.name] = Number(row?.n ?? 0);
      } finally {
        await client.end();
      }
    }),
  );
  return counts;
}

/** Runs the workload against one endpoint (a proxy or a node) and locates its reads. */
export async function runWebapp(endpoint: Endpoint, nodes: readonly WebappNode[], options: WebappOptions): Promise<WebappResult> {
  const random = options.random ?? Math.random;
  const writeShare = options.writeShare ?? 0.1;
  const before = await scanCounts(nodes);
  const clients = await Promise.all(
    Array.from({ length: options.clients }, async () => {
      const client = new pg.Client({ host: endpoint.host, port: endpoint.port, user: endpoint.user, password: endpoint.password, database: endpoint.database });
      client.on('error', () => {});
      await client.connect();
      return client;
    }),
  );
  const maxId = Number((await clients[0]!.query<{ n: string }>(`SELECT max(id) AS n FROM ${WEBAPP_TABLE}`)).rows[0]!.n);
  const tally = { requests: 0, reads: 0, stale: 0, errors: 0, firstError: undefined as string | undefined };
  const deadline = performance.now() + options.durationS * 1000;
  const startedAt = performance.now();
  const read = (client: pg.Client, id: number) => client.query<{ payload: string }>(`SELECT payload FROM ${WEBAPP_TABLE} WHERE id = $1`, [id]);
  const other = () => 1 + Math.floor(random() * maxId);

  await Promise.all(
    clients.map(async (client, index) => {
      let lastWritten: number | undefined;
      while (performance.now() < deadline) {
        const transaction = options.mode === 'transactions';
        try {
          if (transaction) await client.query('BEGIN');
          if (random() < writeShare) {
            const id = Number((await client.query<{ id: string }>(`INSERT INTO ${WEBAPP_TABLE} (client, payload) VALUES ($1, $2) RETURNING id`, [index, `written by ${index}`])).rows[0]!.id);
            lastWritten = id;
            const own = await read(client, id);
            if (own.rowCount !== 1) tally.stale++;
            await read(client, other());
            await read(client, other());
            tally.reads += 3;
          } else {
            if (lastWritten !== undefined) {
              const own = await read(client, lastWritten);
              if (own.rowCount !== 1) tally.stale++;
            } else {
              await read(client, other());
            }
            for (let i = 0; i < 4; i++) await read(client, other());
            tally.reads += 5;
          }
          if (transaction) await client.query('COMMIT');
          tally.requests++;
        } catch (error) {
          tally.errors++;
          tally.firstError ??= error instanceof Error ? `${(error as { code?: string }).code ?? ''} ${error.message}`.trim() : String(error);
          if (transaction) await client.query('ROLLBACK').catch(() => {});
        }
      }
    }),
  );
  const elapsedS = (performance.now() - startedAt) / 1000;
  await Promise.all(clients.map((c) => c.end().catch(() => {})));
  // statistics reach the shared counters when a backend goes idle (at most about a second later)
  await new Promise((resolve) => setTimeout(resolve, 1500));
  const after = await scanCounts(nodes);
  const scansByNode: Record<string, number> = {};
  for (const node of nodes) scansByNode[node.name] = (after[node.name] ?? 0) - (before[node.name] ?? 0);
  const total = Object.values(scansByNode).reduce((a, b) => a + b, 0);
  const onPrimary = nodes.filter((n) => n.role === 'primary').reduce((sum, n) => sum + (scansByNode[n.name] ?? 0), 0);
  return {
    mode: options.mode,
    requests: tally.requests,
    requestsPerS: tally.requests / elapsedS,
    reads: tally.reads,
    stale: tally.stale,
    scansByNode,
    onReplicas: total === 0 ? 0 : (total - onPrimary) / total,
    errors: tally.errors,
    ...(tally.firstError !== undefined ? { firstError: tally.firstError } : {}),
  };
}

/** Sets (or clears, with 0) recovery_min_apply_delay on the given standbys and reloads them. */
export async function setApplyDelay(nodes: readonly WebappNode[], delayMs: number): Promise<void> {
  await Promise.all(
    nodes.map(async (node) => {
      const client = new pg.Client({ connectionString: node.url });
      await client.connect();
      try {
        await client.query(delayMs > 0 ? `ALTER SYSTEM SET recovery_min_apply_delay = '${Math.round(delayMs)}ms'` : 'ALTER SYSTEM RESET recovery_min_apply_delay');
        await client.query('SELECT pg_reload_conf()');
      } finally {
        await client.end();
      }
    }),
  );
}

export interface WebappRun {
  round: number;
  /** recovery_min_apply_delay on the asynchronous replicas (the synchronous standby is never delayed) */
  delayMs: number;
  target: string;
  result?: WebappResult;
  error?: string;
}

/** The README table: per apply delay, target and mode, reads on replicas and stale reads over the rounds. */
export function webappMarkdown(runs: readonly WebappRun[], labels: Record<string, string>): string[] {
  const out: string[] = [];
  out.push('## Web application (issue 17): where reads ran, stale reads');
  out.push('');
  out.push(
    'Each client holds one connection (node-postgres, extended protocol); 10 % of requests INSERT a row and read it back plus 2 other rows, 90 % read 5 rows, the first the client\'s own last written row. ' +
      'Reads are located by the servers\' own counters (index scans of the table per node); stale = a read of the client\'s own last row that did not find it. ' +
      'Medians over the rounds; stale and errors are summed.',
  );
  out.push('');
  out.push('| async replicas\' apply delay | target | mode | requests/s | reads on replicas | stale reads | errors |');
  out.push('|---|---|---|---:|---:|---:|---:|');
  const keys = [...new Set(runs.map((r) => `${r.delayMs}\0${r.target}\0${r.result?.mode ?? ''}`))];
  for (const key of keys) {
    const [delay, target, mode] = key.split('\0') as [string, string, string];
    const group = runs.filter((r) => String(r.delayMs) === delay && r.target === target && (r.result?.mode ?? '') === mode);
    const results = group.map((r) => r.result).filter((r): r is WebappResult => r !== undefined);
    const failed = group.filter((r) => r.error !== undefined);
    if (results.length === 0) {
      out.push(`| ${delay === '0' ? 'none' : `${delay} ms`} | ${labels[target] ?? target} | ${mode || '–'} | failed: ${(failed[0]?.error ?? '').slice(0, 120)} | | | |`);
      continue;
    }
    const med = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor((values.length - 1) / 2)]!;
    const errors = results.reduce((n, r) => n + r.errors, 0) + failed.length;
    const firstError = results.find((r) => r.firstError)?.firstError;
    out.push(
      `| ${delay === '0' ? 'none' : `${delay} ms`} | ${labels[target] ?? target} | ${mode} | ${med(results.map((r) => r.requestsPerS)).toFixed(0)} | ` +
        `${(100 * med(results.map((r) => r.onReplicas))).toFixed(1)} % | ${results.reduce((n, r) => n + r.stale, 0)} | ${errors}${firstError ? ` (${firstError.slice(0, 80)})` : ''} |`,
    );
  }
  out.push('');
  return out;
}
