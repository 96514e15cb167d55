import { randomBytes } from 'node:crypto';
import { stringify } from 'yaml';
import { App } from './app.js';
import { registerClusterRoutes } from './demo-cluster-routes.js';
import { parseConfig } from './config/load.js';
import type { Config } from './config/types.js';
import { LocalCluster, type LocalNode } from './local/cluster.js';
import { createLogger } from './util/log.js';

export interface DemoOptions {
  replicas: number;
  standby: boolean;
  port: number;
  adminPort: number;
  /** where SIGINT/SIGTERM come from (the process, in main.ts) */
  signals: NodeJS.EventEmitter;
  out: NodeJS.WritableStream;
}

/**
 * `pgrelay demo`: a local RDS-like cluster (primary, synchronous standby, async replicas) from the
 * machine's PostgreSQL binaries, and pgrelay in front of it. Ctrl-C stops both and removes the
 * cluster's files.
 */
export async function runDemo(options: DemoOptions): Promise<number> {
  const { out } = options;
  const started = Date.now();
  const shape =
    !options.standby && options.replicas === 0
      ? 'a lone primary: single-AZ'
      : `primary${options.standby ? ', synchronous standby' : ''}, ${options.replicas} async replica${options.replicas === 1 ? '' : 's'}`;
  out.write(`pgrelay demo: building a local cluster (${shape})\n`);
  const cluster = await LocalCluster.create({
    replicas: options.replicas,
    standby: options.standby,
    onProgress: (step) => out.write(`  … ${step}\n`),
  });
  out.write(`  … cluster files in ${cluster.baseDir} (removed on stop)\n`);
  let app: App | undefined;
  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      out.write('pgrelay demo: stopping pgrelay and the cluster\n');
      await app?.stop(2000);
      await cluster.stop();
      out.write('pgrelay demo: stopped, nothing left running\n');
    })());
  try {
    // the admin API changes nothing without a token: one per run, printed below
    const adminToken = randomBytes(24).toString('base64url');
    const config = demoConfig(cluster, { ...options, adminToken });
    app = await App.start(config, { log: createLogger({ level: 'warn', pretty: true }) });
    registerClusterRoutes(app.admin, app, cluster);
    const address = app.listenAddress!;
    const adminUrl = `http://${app.adminAddress!.address}:${app.adminAddress!.port}`;
    out.write(`  … pgrelay listening (admin ${adminUrl}/status) after ${((Date.now() - started) / 1000).toFixed(1)} s\n\n`);
    out.write(nodeTable(cluster.nodes));
    const admin = options.adminPort === 9930 ? '' : ` --admin ${adminUrl}`;
    out.write(`\n  pgrelay cluster add-replica${admin}     create a read replica from a snapshot\n`);
    out.write(`  pgrelay cluster add-standby${admin}     single-AZ to Multi-AZ (synchronous standby)\n`);
    out.write(`  pgrelay cluster remove NODE${admin}     drain, detach and delete a node\n`);
    out.write(`  (they send the admin token from the environment: export PGRELAY_ADMIN_TOKEN=${adminToken})\n`);
    out.write(`\npgrelay ready postgres://${cluster.user}:${cluster.password}@${address.address}:${address.port}/${cluster.database}\n`);
  } catch (error) {
    await stop();
    throw error;
  }
  await new Promise<void>((resolve) => {
    const onSignal = () => void stop().then(resolve);
    options.signals.once('SIGINT', onSignal);
    options.signals.once('SIGTERM', onSignal);
  });
  return 0;
}

export function demoConfig(cluster: LocalCluster, options: { port: number; adminPort: number; adminToken: string }): Config {
  const document = {
    listen: { host: '127.0.0.1', port: options.port },
    admin: { host: '127.0.0.1', port: options.adminPort, token: options.adminToken },
    nodes: cluster.nodes.map((n) => ({ name: n.name, host: n.host, port: n.port, role: n.role })),
    users: [{ name: cluster.user, password: cluster.password }],
    failover: { user: cluster.superuser, password: cluster.superuserPassword },
    log: { level: 'warn', format: 'pretty' },
  };
  return parseConfig(stringify(document), { source: 'demo' });
}

function nodeTable(nodes: readonly LocalNode[]): string {
  const rows = nodes.map((n) => [n.name, n.role === 'standby' ? 'standby (sync)' : n.role === 'replica' ? 'replica (async)' : n.role, `${n.host}:${n.port}`]);
  const header = ['node', 'role', 'address'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => '  ' + cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd() + '\n';
  return line(header) + rows.map(line).join('');
}
