import { Writable } from 'node:stream';
import { stringify } from 'yaml';
import { App } from '../../src/app.js';
import { parseConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/types.js';
import { createLogger, silentLogger, type Logger } from '../../src/util/log.js';
import type { SharedCluster } from './shared-cluster.js';

export interface Relay {
  app: App;
  port: number;
  adminUrl: string;
  config: Config;
  /** a connection string through pgrelay */
  url(options?: { user?: string; password?: string; database?: string; params?: string }): string;
  stop(): Promise<void>;
}

type Overrides = Record<string, unknown>;

/** The admin token of every test relay (admin.token): state-changing admin requests need it. */
export const ADMIN_TOKEN = 'pgrelay-test-admin-token';

/** Headers of an authorized state-changing admin request. */
export const ADMIN_HEADERS = { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' } as const;

/** A state-changing admin request with the test token: `body` is sent as JSON (a string as is). */
export function adminRequest(adminUrl: string, method: 'POST' | 'DELETE', path: string, body?: unknown, init: RequestInit = {}): Promise<Response> {
  return fetch(`${adminUrl}${path}`, { ...init, method, headers: ADMIN_HEADERS, body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body) });
}

/** The YAML document a test relay runs with: the cluster's nodes and user, ports picked by the OS. */
export function relayDocument(cluster: Pick<SharedCluster, 'nodes' | 'user' | 'password'> & Partial<Pick<SharedCluster, 'superuser' | 'superuserPassword'>>, overrides: Overrides = {}): Record<string, unknown> {
  const base: Record<string, unknown> = {
    listen: { host: '127.0.0.1', port: 0 },
    admin: { host: '127.0.0.1', port: 0, token: ADMIN_TOKEN },
    nodes: cluster.nodes.map((n) => ({ name: n.name, host: n.host, port: n.port, role: n.role })),
    users: [{ name: cluster.user, password: cluster.password }],
    ...(cluster.superuser ? { failover: { user: cluster.superuser, password: cluster.superuserPassword } } : {}),
  };
  for (const [key, value] of Object.entries(overrides)) {
    const current = base[key];
    base[key] = current && typeof current === 'object' && !Array.isArray(current) && value && typeof value === 'object' && !Array.isArray(value) ? { ...current, ...value } : value;
  }
  return base;
}

/** pgrelay_units_total{reason} so far, summed over the roles of the nodes. */
export async function unitsWithReason(relay: Relay, reason: string): Promise<number> {
  const values = (await relay.app.metrics.unitsByReason.get()).values;
  return values.filter((v) => v.labels.reason === reason).reduce((sum, v) => sum + v.value, 0);
}

/** A logger that keeps pgrelay's JSON log lines (level info and up) for a test to read. */
export function capturedLog(): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n')) if (line.trim()) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { log: createLogger({ level: 'info', destination }), lines };
}

/** Starts pgrelay in this process in front of `cluster` (`log`: where its log goes). Stop it in afterAll/afterEach. */
export async function startRelay(cluster: Pick<SharedCluster, 'nodes' | 'user' | 'password' | 'database'> & Partial<Pick<SharedCluster, 'superuser' | 'superuserPassword'>>, overrides: Overrides = {}, options: { log?: Logger } = {}): Promise<Relay> {
  const config = parseConfig(stringify(relayDocument(cluster, overrides)), { source: 'test' });
  const log = options.log ?? (process.env.PGRELAY_TEST_LOG ? createLogger({ level: process.env.PGRELAY_TEST_LOG, pretty: true }) : silentLogger);
  const app = await App.start(config, { log, processMetrics: false });
  const port = app.listenAddress!.port;
  return {
    app,
    port,
    config,
    adminUrl: `http://127.0.0.1:${app.adminAddress!.port}`,
    url: (options = {}) =>
      `postgres://${encodeURIComponent(options.user ?? cluster.user)}:${encodeURIComponent(options.password ?? cluster.password)}@127.0.0.1:${port}/${options.database ?? cluster.database}${options.params ? `?${options.params}` : ''}`,
    stop: () => app.stop(),
  };
}
