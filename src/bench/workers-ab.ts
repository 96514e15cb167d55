/**
 * `node dist/bench/workers-ab.js [--rounds 3] [--duration 15] [--clients 16] [--pool-size 8]` —
 * pgbench select-only (simple protocol) through pgrelay with `workers: 1` and `workers: 2`, the
 * same primary-only cluster, interleaved round by round; prints each run, the medians and the
 * load average (this machine is shared: read the figures with it).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LocalCluster } from '../local/cluster.js';
import { runCommand } from './command.js';
import { chownTo } from './peers.js';
import { initialise, pgbench, type Endpoint } from './pgbench.js';
import { loadAverage } from './proc.js';
import { startRelayProcess } from './relay-process.js';
import { RunResources } from './run-resources.js';

function flag(name: string, fallback: number): number {
  const at = process.argv.indexOf(`--${name}`);
  if (at < 0) return fallback;
  const value = Number(process.argv[at + 1]);
  if (!Number.isInteger(value) || value <= 0) throw new Error(`--${name} expects a whole number`);
  return value;
}

async function main(): Promise<number> {
  const rounds = flag('rounds', 3);
  const durationS = flag('duration', 15);
  const clients = flag('clients', 16);
  const poolSize = flag('pool-size', 8);
  const say = (line: string) => process.stdout.write(`${line}\n`);
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgrelay-workers-ab-'));
  fs.chmodSync(workDir, 0o755);
  const runAs = process.getuid?.() === 0 ? 'postgres' : undefined;
  chownTo(workDir, runAs);
  const resources = new RunResources(say, () => fs.rmSync(workDir, { recursive: true, force: true }));
  try {
    const cluster = (resources.cluster = await LocalCluster.create({ baseDir: path.join(workDir, 'cluster'), replicas: 0, standby: false }));
    const primary = cluster.nodes.find((n) => n.role === 'primary')!;
    const endpoint = (port: number): Endpoint => ({ host: '127.0.0.1', port, user: cluster.user, password: cluster.password, database: cluster.database });
    await initialise(endpoint(primary.port), 10);
    const nodes = [{ name: primary.name, host: primary.host, port: primary.port, role: primary.role }];
    const targets = [];
    for (const workers of [1, 2]) {
      const relay = await startRelayProcess({ name: `pgrelay-workers-${workers}`, dir: workDir, nodes, user: cluster.user, password: cluster.password, poolSize, workers });
      resources.services.push(relay.service);
      targets.push({ workers, port: relay.port, tps: [] as number[] });
    }
    say(`pgbench -S, simple protocol, ${clients} clients, 2 threads, ${durationS} s, pool.size ${poolSize} (in total), ${rounds} interleaved rounds`);
    for (let round = 1; round <= rounds; round++) {
      for (const target of targets) {
        const run = await pgbench(endpoint(target.port), { clients, threads: 2, durationS, mode: 'simple', selectOnly: true, logDir: path.join(workDir, 'log') });
        target.tps.push(run.tps);
        say(`round ${round} workers ${target.workers}: ${Math.round(run.tps)} tps (median latency ${Math.round(run.latencyMedianUs)} µs), load average ${loadAverage().map((l) => l.toFixed(2)).join(' ')}`);
      }
    }
    for (const target of targets) {
      const sorted = [...target.tps].sort((a, b) => a - b);
      say(`workers ${target.workers}: median ${Math.round(sorted[Math.floor(sorted.length / 2)]!)} tps`);
    }
    say(`cores: ${os.availableParallelism()}, load average at the end ${loadAverage().map((l) => l.toFixed(2)).join(' ')}`);
  } finally {
    await resources.stop();
    fs.rmSync(workDir, { recursive: true, force: true });
  }
  return 0;
}

runCommand('workers-ab', main);
