/**
 * Soak: pgbench through pgrelay for a bounded time while a replica is killed (SIGKILL of its
 * postmaster) and restarted every few seconds; then checks that nothing leaked and prints a report.
 *
 *   npm run soak -- [--duration 60] [--kill-every 6] [--down 2] [--clients 8] [--writers 2]
 *
 * Own local cluster (primary + two async replicas), pgrelay as a child process (`dist/main.js
 * start`), health checks every 500 ms. Load: read-only pgbench (`-S`, `--clients` clients) in
 * rounds of `--kill-every` seconds; in the middle of each round one replica (alternating) is killed
 * and started again `--down` seconds later; plus a write mix (pgbench's simple-update script,
 * `--writers` clients) for the whole duration. pgbench aborts a client on any error that is not a
 * serialization or deadlock failure, so every read failure shows as an aborted client (or a failed
 * transaction) with its message.
 *
 * Pass criteria (exit code 0):
 * - read failures: only ones that were in flight on the killed node — their error names that node,
 *   or the connection ended mid-result — and no more of them than server connections that pgrelay
 *   saw break on that node (`pgrelay_server_connection_errors_total`); zero write failures;
 * - zero leaked connections: after the load, every app-user connection on every node is one of
 *   pgrelay's idle pool connections (none in a transaction), and none is left once pgrelay stops;
 * - pgrelay's RSS, sampled every second, is reported (first/last/max, a table and a sparkline).
 *
 * The whole run is bounded: load for `--duration` seconds, and a hard deadline of duration + 240 s
 * for setup, checks and teardown, after which everything is stopped and the run fails.
 */
import { execFile, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { LocalCluster } from '../local/cluster.js';
import { rssBytes } from './proc.js';
import { Service } from './service.js';

interface Options {
  durationS: number;
  killEveryS: number;
  downS: number;
  clients: number;
  writers: number;
}

interface PgbenchResult {
  code: number;
  stdout: string;
  stderr: string;
  processed: number;
  failed: number;
  /** "client N … aborted …" lines: the error that stopped each aborted client */
  aborted: string[];
}

interface Round {
  index: number;
  killed: string | undefined;
  reads: PgbenchResult;
  /** pgrelay_server_connection_errors_total of the killed node during the round */
  brokenOnKilled: number;
  /** failures attributed to the kill (their error names the node, or the connection ended) */
  inFlight: string[];
  unexpected: string[];
}

const MAIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'main.js');
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function parseOptions(argv: string[]): Options {
  const options: Options = { durationS: 60, killEveryS: 6, downS: 2, clients: 8, writers: 2 };
  const keys: Record<string, keyof Options> = { duration: 'durationS', 'kill-every': 'killEveryS', down: 'downS', clients: 'clients', writers: 'writers' };
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i]!.replace(/^--/, '').split('=');
    const key = keys[flag!];
    const value = Number(inline ?? argv[++i]);
    if (!key || !Number.isFinite(value) || value < 0) throw new Error(`usage: soak [--duration S] [--kill-every S] [--down S] [--clients N] [--writers N] (bad: ${argv[i]})`);
    options[key] = value;
  }
  if (options.downS >= options.killEveryS - 1) throw new Error('--down must leave at least a second of each round with both replicas up');
  return options;
}

/** Runs pgbench to completion (never throws: the exit code and output are the result). */
function pgbench(port: number, args: string[], children: Set<ChildProcess>, timeoutMs: number): Promise<PgbenchResult> {
  return new Promise((resolve) => {
    const child = execFile(
      'pgbench',
      ['-h', '127.0.0.1', '-p', String(port), '-U', 'app', ...args, 'app'],
      { env: { ...process.env, PGPASSWORD: 'app', PGCONNECT_TIMEOUT: '10', PGSSLMODE: 'disable' }, timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 },
      (error, stdout, stderr) => {
        children.delete(child);
        const code = error ? (typeof (error as { code?: unknown }).code === 'number' ? ((error as { code: number }).code) : 1) : 0;
        const processed = Number(/number of transactions actually processed: (\d+)/.exec(stdout)?.[1] ?? 0);
        const failed = Number(/number of failed transactions: (\d+)/.exec(stdout)?.[1] ?? 0);
        const aborted = stderr.split('\n').filter((line) => /aborted/.test(line) && /client \d+/.test(line));
        resolve({ code, stdout, stderr, processed, failed, aborted });
      },
    );
    children.add(child);
  });
}

/** Sum of a counter's samples with the given label values, from Prometheus text. */
function metricSum(text: string, name: string, labels: Record<string, string>): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (!Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

function sparkline(values: number[]): string {
  const bars = '▁▂▃▄▅▆▇█';
  const min = Math.min(...values);
  const max = Math.max(...values);
  return values.map((v) => bars[max === min ? 0 : Math.round(((v - min) / (max - min)) * (bars.length - 1))]).join('');
}

const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;

async function main(): Promise<number> {
  const options = parseOptions(process.argv.slice(2));
  const log = (text: string) => process.stderr.write(`[soak ${new Date().toISOString().slice(11, 19)}] ${text}\n`);
  const hardDeadline = setTimeout(() => {
    log('hard deadline reached: stopping everything');
    void teardown().finally(() => process.exit(3));
  }, (options.durationS + 240) * 1000);
  hardDeadline.unref();

  const children = new Set<ChildProcess>();
  let sampler: NodeJS.Timeout | undefined;
  let cluster: LocalCluster | undefined;
  let relay: Service | undefined;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgrelay-soak-'));
  let tornDown = false;
  async function teardown(): Promise<void> {
    if (tornDown) return;
    tornDown = true;
    for (const child of children) child.kill('SIGKILL');
    await relay?.stop(10_000).catch(() => undefined);
    await cluster?.stop().catch(() => undefined);
    fs.rmSync(dir, { recursive: true, force: true });
  }
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => void teardown().finally(() => process.exit(130)));

  try {
    log('building a local cluster: primary + 2 async replicas');
    cluster = await LocalCluster.create({ replicas: 2, standby: false });
    const replicas = cluster.nodes.filter((n) => n.role === 'replica').map((n) => n.name);
    const configFile = path.join(dir, 'pgrelay.yaml');
    fs.writeFileSync(
      configFile,
      stringify({
        listen: { host: '127.0.0.1', port: 0 },
        admin: { host: '127.0.0.1', port: 0 },
        nodes: cluster.nodes.map((n) => ({ name: n.name, host: n.host, port: n.port, role: n.role })),
        users: [{ name: cluster.user, password: cluster.password }],
        pool: { size: 10, checkout_timeout_ms: 30_000, connect_timeout_ms: 3000 },
        // replicas under a write load lag a little: keep them in use, the subject is their death
        routing: { max_lag_ms: 30_000 },
        // monitoring logs in as the superuser: every app-user connection is a data-path one
        health: { interval_ms: 500, timeout_ms: 1000, failures: 3, user: cluster.superuser, password: cluster.superuserPassword },
        failover: { mode: 'off' },
        log: { level: 'info', format: 'json' },
      }),
      { mode: 0o600 },
    );
    relay = Service.start('pgrelay', process.execPath, [MAIN, 'start', '--config', configFile], { logFile: path.join(dir, 'pgrelay.out') });
    // the admin address is in pgrelay's "listening" log line (its log stream may flush after the ready line)
    const listening = relay.waitForLine(/"admin":"[^"]+"/, 60_000);
    const ready = await relay.waitForLine(/^pgrelay ready /, 60_000);
    const port = Number(/:(\d+)\/[^/]*$/.exec(ready)?.[1]);
    const adminUrl = `http://${/"admin":"([^"]+)"/.exec(await listening)?.[1]}`;
    const pid = relay.pid;
    log(`pgrelay pid ${pid} on port ${port}, admin ${adminUrl}`);

    const init = await pgbench(port, ['-i', '-s', '2', '-q'], children, 300_000);
    if (init.code !== 0) throw new Error(`pgbench -i failed: ${init.stderr.trim().split('\n').slice(-3).join(' | ')}`);
    for (const name of replicas) await cluster.waitForReplay(name, 60_000);
    const metrics = async () => (await fetch(`${adminUrl}/metrics`)).text();

    // RSS every second for the whole load
    const rss: number[] = [];
    sampler = setInterval(() => {
      const value = rssBytes(pid);
      if (value !== undefined) rss.push(value);
    }, 1000);

    log(`load: ${options.clients} read-only clients in rounds of ${options.killEveryS} s, ${options.writers} writers, for ${options.durationS} s`);
    const writes = pgbench(port, ['-n', '-N', '-c', String(options.writers), '-j', '1', '-T', String(options.durationS), '--max-tries=5', '--failures-detailed'], children, (options.durationS + 120) * 1000);
    const rounds: Round[] = [];
    const loadEnds = Date.now() + options.durationS * 1000;
    for (let index = 0; Date.now() + options.killEveryS * 1000 <= loadEnds + 500; index++) {
      const killed = replicas[index % replicas.length]!;
      const brokenBefore = metricSum(await metrics(), 'pgrelay_server_connection_errors_total', { node: killed });
      const reads = pgbench(port, ['-n', '-S', '-c', String(options.clients), '-j', '2', '-T', String(options.killEveryS), '--max-tries=3', '--failures-detailed'], children, (options.killEveryS + 120) * 1000);
      await sleep(((options.killEveryS - options.downS) / 2) * 1000);
      log(`round ${index + 1}: SIGKILL ${killed}'s postmaster`);
      await cluster.signalNode(killed, 'SIGKILL');
      await sleep(options.downS * 1000);
      await cluster.startNode(killed);
      log(`round ${index + 1}: ${killed} started again`);
      const result = await reads;
      const brokenOnKilled = metricSum(await metrics(), 'pgrelay_server_connection_errors_total', { node: killed }) - brokenBefore;
      // pgbench's closing "Run was aborted; the above results are incomplete" only repeats the aborts
      const otherErrors = result.stderr.split('\n').filter((line) => /error|fatal/i.test(line) && !result.aborted.includes(line) && !/Run was aborted/.test(line));
      const failures = [
        ...result.aborted,
        ...otherErrors,
        ...(result.failed > 0 ? [`${result.failed} failed transactions (not aborted): ${result.stdout.split('\n').filter((l) => /failed|error/i.test(l)).join(' | ')}`] : []),
        ...(result.code !== 0 && result.aborted.length === 0 ? [`pgbench exited with code ${result.code}`] : []),
      ];
      const inFlight = failures.filter((f) => f.includes(`node ${killed}`) || /server closed the connection unexpectedly|connection to server was lost/.test(f));
      rounds.push({ index: index + 1, killed, reads: result, brokenOnKilled, inFlight, unexpected: failures.filter((f) => !inFlight.includes(f)) });
      log(`round ${index + 1}: ${result.processed} read transactions, ${failures.length} failures (${inFlight.length} in flight on ${killed}; pgrelay saw ${brokenOnKilled} of its server connections there break)`);
      // the node is back in use before the next round kills the other one
      await cluster.waitForReplay(killed, 60_000).catch(() => undefined);
    }
    const writeResult = await writes;
    clearInterval(sampler);

    // leaks: the servers' view against pgrelay's pools, then with pgrelay gone
    await sleep(2000);
    const appConnections = async () => {
      const out: Record<string, Record<string, number>> = {};
      for (const node of cluster!.nodes) {
        const rows = await cluster!.query<{ state: string; n: number }>(node.name, "SELECT coalesce(state, '') AS state, count(*)::int AS n FROM pg_stat_activity WHERE usename = $1 GROUP BY 1", [cluster!.user], { superuser: true, database: 'postgres' });
        out[node.name] = Object.fromEntries(rows.map((r) => [r.state, r.n]));
      }
      return out;
    };
    const text = await metrics();
    const whileRunning = await appConnections();
    const leakProblems: string[] = [];
    for (const node of cluster.nodes) {
      const states = whileRunning[node.name]!;
      const pooled = metricSum(text, 'pgrelay_pool_connections', { node: node.name, state: 'idle' }) + metricSum(text, 'pgrelay_pool_connections', { node: node.name, state: 'active' });
      const onServer = Object.values(states).reduce((a, b) => a + b, 0);
      if (Object.keys(states).some((s) => s !== 'idle')) leakProblems.push(`${node.name}: connections not idle: ${JSON.stringify(states)}`);
      if (onServer > pooled) leakProblems.push(`${node.name}: ${onServer} app-user connections on the server, ${pooled} in pgrelay's pools`);
    }
    const clientsLeft = metricSum(text, 'pgrelay_client_connections', {});
    if (clientsLeft !== 0) leakProblems.push(`pgrelay still counts ${clientsLeft} client connections`);
    await relay.stop(10_000);
    let afterStop = await appConnections();
    for (let i = 0; i < 50 && Object.values(afterStop).some((s) => Object.keys(s).length > 0); i++) {
      await sleep(200);
      afterStop = await appConnections();
    }
    for (const node of cluster.nodes) if (Object.keys(afterStop[node.name]!).length > 0) leakProblems.push(`${node.name}: app-user connections left after pgrelay stopped: ${JSON.stringify(afterStop[node.name])}`);

    // report
    const out: string[] = [];
    out.push('', '== pgrelay soak ==', `duration ${options.durationS} s; a replica SIGKILLed every ${options.killEveryS} s and restarted ${options.downS} s later; ${options.clients} read-only clients (pgbench -S), ${options.writers} writers (pgbench -N)`);
    out.push('', 'round  killed     read tx  failures  in flight on killed  pgrelay broken conns  unexpected');
    for (const r of rounds) out.push(`${String(r.index).padStart(5)}  ${(r.killed ?? '-').padEnd(9)}  ${String(r.reads.processed).padStart(7)}  ${String(r.inFlight.length + r.unexpected.length).padStart(8)}  ${String(r.inFlight.length).padStart(19)}  ${String(r.brokenOnKilled).padStart(20)}  ${String(r.unexpected.length).padStart(10)}`);
    const totalReads = rounds.reduce((n, r) => n + r.reads.processed, 0);
    const inFlight = rounds.reduce((n, r) => n + r.inFlight.length, 0);
    const unexpected = rounds.flatMap((r) => r.unexpected.map((u) => `round ${r.index}: ${u}`));
    const overBroken = rounds.filter((r) => r.inFlight.length > r.brokenOnKilled);
    out.push('', `reads: ${totalReads} transactions, ${inFlight} failed in flight on the killed node, ${unexpected.length} other failures`);
    for (const r of rounds) for (const f of r.inFlight.slice(0, 2)) out.push(`  in flight, round ${r.index}: ${f.trim().slice(0, 200)}`);
    for (const u of unexpected.slice(0, 10)) out.push(`  UNEXPECTED ${u.slice(0, 300)}`);
    out.push(`writes: ${writeResult.processed} transactions, ${writeResult.failed} failed, ${writeResult.aborted.length} clients aborted (exit code ${writeResult.code})`);
    for (const a of writeResult.aborted.slice(0, 5)) out.push(`  ${a.slice(0, 300)}`);
    out.push(`leaks: ${leakProblems.length === 0 ? 'none' : leakProblems.join('; ')}`);
    out.push(`  app-user connections after the load: ${JSON.stringify(whileRunning)}; after pgrelay stopped: ${JSON.stringify(afterStop)}`);
    if (rss.length > 0) {
      const first = rss[0]!;
      const last = rss.at(-1)!;
      const max = Math.max(...rss);
      out.push('', `pgrelay RSS, ${rss.length} samples (1/s): first ${mib(first)}, last ${mib(last)}, max ${mib(max)}, last - first ${mib(last - first)}`);
      out.push(`  ${sparkline(rss)}  (${mib(Math.min(...rss))} … ${mib(max)})`);
      const step = Math.max(1, Math.round(rss.length / 12));
      out.push('  second   RSS');
      for (let i = 0; i < rss.length; i += step) out.push(`  ${String(i + 1).padStart(6)}   ${mib(rss[i]!)}`);
      if ((rss.length - 1) % step !== 0) out.push(`  ${String(rss.length).padStart(6)}   ${mib(last)}`);
    }
    const writeFailures = writeResult.failed + writeResult.aborted.length + (writeResult.code !== 0 ? 1 : 0);
    const passed = unexpected.length === 0 && overBroken.length === 0 && writeFailures === 0 && leakProblems.length === 0 && rounds.length > 0;
    if (overBroken.length > 0) out.push(`FAIL: rounds with more in-flight failures than server connections that broke on the killed node: ${overBroken.map((r) => r.index).join(', ')}`);
    out.push('', passed ? 'PASS' : 'FAIL', '');
    process.stdout.write(out.join('\n'));
    return passed ? 0 : 1;
  } finally {
    clearTimeout(hardDeadline);
    clearInterval(sampler);
    await teardown();
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`soak: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exitCode = 2;
  },
);
