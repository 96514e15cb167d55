/**
 * Runs pgbench and reads its results: TPS from its summary, and per-transaction latencies from the
 * files written by `--log` (one line per transaction: client, transaction no, latency in µs, …),
 * of which the median and the 99th percentile are taken.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { percentile } from './stats.js';

export interface Endpoint {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
}

export type Workload = 'select-simple' | 'select-extended' | 'select-prepared' | 'tpcb' | 'latency';

export interface PgbenchRun {
  tps: number;
  transactions: number;
  failed: number;
  /** from the --log files, in microseconds */
  latencyMedianUs: number;
  latencyP99Us: number;
  latencyMeanUs: number;
}

export interface PgbenchOptions {
  clients: number;
  threads: number;
  durationS: number;
  mode: 'simple' | 'extended' | 'prepared';
  selectOnly: boolean;
  /** where the --log files go (emptied afterwards) */
  logDir: string;
  /** a fixed rate (pgbench -R, transactions per second) instead of as fast as possible */
  rate?: number;
}

export class PgbenchError extends Error {}

function run(args: string[], endpoint: Endpoint, timeoutMs: number, cwd?: string): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(
      'pgbench',
      ['-h', endpoint.host, '-p', String(endpoint.port), '-U', endpoint.user, ...args, endpoint.database],
      {
        env: { ...process.env, PGPASSWORD: endpoint.password, PGCONNECT_TIMEOUT: '10', PGSSLMODE: 'disable' },
        timeout: timeoutMs,
        maxBuffer: 16 * 1024 * 1024,
        cwd,
      },
      (error, stdout, stderr) => {
        if (error) reject(new PgbenchError(`pgbench ${args.join(' ')} failed: ${(stderr || error.message).trim().split('\n').slice(-5).join(' | ')}`));
        else resolve({ stdout, stderr });
      },
    );
  });
}

/** pgbench -i: creates and fills the pgbench tables (logged, so the replicas get them). */
export async function initialise(endpoint: Endpoint, scale: number): Promise<void> {
  await run(['-i', '-s', String(scale), '-q'], endpoint, 600_000);
}

export async function pgbench(endpoint: Endpoint, options: PgbenchOptions): Promise<PgbenchRun> {
  fs.rmSync(options.logDir, { recursive: true, force: true });
  fs.mkdirSync(options.logDir, { recursive: true });
  const args = [
    '-n',
    '-c', String(options.clients),
    '-j', String(options.threads),
    '-T', String(options.durationS),
    '-M', options.mode,
    '--log',
    '--log-prefix', path.join(options.logDir, 'tx'),
  ];
  if (options.selectOnly) args.push('-S');
  if (options.rate !== undefined) args.push('-R', String(options.rate));
  const { stdout } = await run(args, endpoint, (options.durationS + 120) * 1000, options.logDir);
  const tps = /tps = ([\d.]+) \(without initial connection time\)/.exec(stdout);
  const processed = /number of transactions actually processed: (\d+)/.exec(stdout);
  const failed = /number of failed transactions: (\d+)/.exec(stdout);
  if (!tps || !processed) throw new PgbenchError(`unexpected pgbench output: ${stdout.slice(-500)}`);
  const latencies = readLatencies(options.logDir);
  fs.rmSync(options.logDir, { recursive: true, force: true });
  if (latencies.length === 0) throw new PgbenchError('pgbench wrote no per-transaction log');
  let sum = 0;
  for (let i = 0; i < latencies.length; i++) sum += latencies[i]!;
  return {
    tps: Number(tps[1]),
    transactions: Number(processed[1]),
    failed: failed ? Number(failed[1]) : 0,
    latencyMedianUs: percentile(latencies, 50),
    latencyP99Us: percentile(latencies, 99),
    latencyMeanUs: sum / latencies.length,
  };
}

/** Latency (3rd field, µs) of every transaction in the --log files, sorted. */
function readLatencies(dir: string): Float64Array {
  const values: number[] = [];
  for (const file of fs.readdirSync(dir)) {
    if (!file.startsWith('tx.')) continue;
    const text = fs.readFileSync(path.join(dir, file), 'latin1');
    let at = 0;
    while (at < text.length) {
      let end = text.indexOf('\n', at);
      if (end < 0) end = text.length;
      // client_id transaction_no time script_no time_epoch time_us
      const first = text.indexOf(' ', at);
      const second = first < 0 ? -1 : text.indexOf(' ', first + 1);
      const third = second < 0 ? -1 : text.indexOf(' ', second + 1);
      if (third > 0 && third < end) {
        const latency = Number(text.slice(second + 1, third));
        if (Number.isFinite(latency)) values.push(latency);
      }
      at = end + 1;
    }
  }
  return Float64Array.from(values).sort();
}
