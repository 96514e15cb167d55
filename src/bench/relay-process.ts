/**
 * pgrelay in its own child process (`node dist/main.js start --config FILE`), so that its CPU time
 * and RSS are its own; optionally under `node --cpu-prof`.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { Service } from './service.js';

export interface RelayNode {
  name: string;
  host: string;
  port: number;
  role: 'primary' | 'standby' | 'replica';
}

export interface RelayProcessOptions {
  name: string;
  dir: string;
  nodes: readonly RelayNode[];
  user: string;
  password: string;
  poolSize: number;
  /** `workers:` (default 1: one process) */
  workers?: number;
  /** pool.pipeline_depth (undefined: the default) */
  pipelineDepth?: number;
  /** pool.pipeline_after (undefined: the default) */
  pipelineAfter?: number;
  /** write a V8 CPU profile into this directory when the process exits */
  cpuProfileDir?: string;
}

export interface RelayProcess {
  service: Service;
  port: number;
  configFile: string;
}

const MAIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'main.js');

export async function startRelayProcess(options: RelayProcessOptions): Promise<RelayProcess> {
  const document = {
    listen: { host: '127.0.0.1', port: 0 },
    admin: { host: '127.0.0.1', port: 0 },
    nodes: options.nodes.map((n) => ({ name: n.name, host: n.host, port: n.port, role: n.role })),
    users: [{ name: options.user, password: options.password }],
    pool: { mode: 'transaction', size: options.poolSize, checkout_timeout_ms: 30_000, ...(options.pipelineDepth === undefined ? {} : { pipeline_depth: options.pipelineDepth }), ...(options.pipelineAfter === undefined ? {} : { pipeline_after: options.pipelineAfter }) },
    // a benchmark must not fail over in the middle of a run on a busy machine
    failover: { mode: 'off' },
    log: { level: 'warn', format: 'json' },
    workers: options.workers ?? 1,
  };
  const configFile = path.join(options.dir, `${options.name}.yaml`);
  fs.writeFileSync(configFile, stringify(document), { mode: 0o600 });
  const nodeArgs = options.cpuProfileDir ? ['--cpu-prof', '--cpu-prof-dir', options.cpuProfileDir] : [];
  const service = Service.start(options.name, process.execPath, [...nodeArgs, MAIN, 'start', '--config', configFile], {
    logFile: path.join(options.dir, `${options.name}.out`),
    stopSignal: 'SIGTERM',
  });
  let ready: string;
  try {
    ready = await service.waitForLine(/^pgrelay ready /, 60_000);
  } catch (error) {
    await service.stop();
    throw error;
  }
  const port = Number(/:(\d+)\/[^/]*$/.exec(ready)?.[1]);
  if (!Number.isInteger(port) || port <= 0) {
    await service.stop();
    throw new Error(`cannot read the port from pgrelay's ready line: ${ready}`);
  }
  return { service, port, configFile };
}
