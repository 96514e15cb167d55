/**
 * `npm run bench` — pgrelay beside a direct connection, PgBouncer and Pgpool-II (issues 8 and 19).
 *
 *   npm run bench -- [--rounds 3] [--duration 10] [--latency-duration 5] [--scale 10]
 *                    [--clients 16] [--threads 2] [--tpcb-clients 8] [--pool-size 8] [--pipeline-depth N] [--pipeline-after N]
 *                    [--idle-clients 6000] [--workloads select-simple,select-extended,…]
 *                    [--profile] [--no-peers] [--no-install] [--out bench-results]
 *
 * Starts a local cluster (primary, synchronous standby, two async replicas), fills it with
 * `pgbench -i`, starts pgrelay three times in child processes (primary only with the given pool
 * settings; primary only with reads sharing busy connections, PIPELINED; read scaling over every
 * node), PgBouncer (transaction pooling, primary) and Pgpool-II (streaming replication, load
 * balancing, primary weight 0), then runs pgbench against each target round by round. Writes
 * bench-results/latest.{md,json} and a dated copy, and prints the markdown.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchClassify } from '../classify/bench.js';
import { LocalCluster } from '../local/cluster.js';
import { findFreePort } from '../local/free-port.js';
import { message, parseOrUsage, runCommand, UsageError } from './command.js';
import { measureIdleClients } from './idle-clients.js';
import { chownTo, ensurePeers, pgbouncerSupportsPrepared, programVersion, startPgbouncer, startPgpool, type PeerSetup } from './peers.js';
import { pgbench, initialise, type Endpoint } from './pgbench.js';
import { loadAverage, machineCpu, rssBytes, treeCpuSplit } from './proc.js';
import { newestProfile, summariseProfile } from './profile.js';
import { startRelayProcess, type RelayNode, type RelayProcess } from './relay-process.js';
import { RunResources } from './run-resources.js';
import { Service } from './service.js';
import { checkTargets, markdown, PIPELINED, summarise, TARGET_LABELS, WORKLOAD_LABELS, type BenchReport, type RunRecord, type TargetId, type WorkloadId } from './report.js';
import { prepareWebapp, runWebapp, setApplyDelay, type WebappMode, type WebappNode } from './webapp.js';

interface Options {
  rounds: number;
  durationS: number;
  latencyDurationS: number;
  scale: number;
  clients: number;
  threads: number;
  tpcbClients: number;
  poolSize: number;
  /** pool.pipeline_depth of the pgrelays (undefined: the default) */
  pipelineDepth?: number;
  /** pool.pipeline_after of the pgrelays (undefined: the default) */
  pipelineAfter?: number;
  idleClients: number;
  workloads: WorkloadId[];
  /** the web-application workload (issue 17), with and without an apply delay on the async replicas */
  webapp: boolean;
  /** the async replicas' recovery_min_apply_delay for the delayed webapp runs */
  webappDelayMs: number;
  profile: boolean;
  peers: boolean;
  install: boolean;
  out: string;
}

const ALL_WORKLOADS: WorkloadId[] = ['select-simple', 'select-extended', 'select-prepared', 'tpcb', 'latency-1-client'];
const WEBAPP = 'webapp';

const USAGE = `usage: npm run bench -- [--rounds N] [--duration S] [--latency-duration S] [--scale N] [--clients N]
       [--threads N] [--tpcb-clients N] [--pool-size N] [--pipeline-depth N] [--pipeline-after N] [--idle-clients N] [--workloads a,b,…]
       [--webapp-delay-ms N] [--profile] [--no-peers] [--no-install] [--out DIR]
workloads: ${[...ALL_WORKLOADS, WEBAPP].join(', ')}`;

function parseOptions(argv: string[]): Options {
  const options: Options = {
    rounds: 3,
    durationS: 10,
    latencyDurationS: 5,
    scale: 10,
    clients: 16,
    threads: 2,
    tpcbClients: 8,
    poolSize: 8,
    idleClients: 6000, // with 2,000 the RSS before them moves the per-client figure by several KB between runs
    workloads: [...ALL_WORKLOADS],
    webapp: true,
    webappDelayMs: 20,
    profile: false,
    peers: true,
    install: true,
    out: 'bench-results',
  };
  const ints: Record<string, keyof Options> = {
    rounds: 'rounds',
    duration: 'durationS',
    'latency-duration': 'latencyDurationS',
    scale: 'scale',
    clients: 'clients',
    threads: 'threads',
    'tpcb-clients': 'tpcbClients',
    'pool-size': 'poolSize',
    'pipeline-depth': 'pipelineDepth',
    'pipeline-after': 'pipelineAfter',
    'idle-clients': 'idleClients',
    'webapp-delay-ms': 'webappDelayMs',
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const [flag, inline] = arg.startsWith('--') && arg.includes('=') ? [arg.slice(2, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)] : [arg.slice(2), undefined];
    const value = () => inline ?? argv[++i] ?? '';
    if (!arg.startsWith('--')) throw new UsageError(`unexpected argument "${arg}"`);
    if (flag in ints) {
      const raw = value();
      const n = Number(raw);
      const min = flag === 'idle-clients' || flag === 'pipeline-depth' || flag === 'pipeline-after' ? 0 : 1;
      if (!Number.isInteger(n) || n < min) throw new UsageError(`--${flag} expects a whole number ≥ ${min}, got "${raw}"`);
      (options as unknown as Record<string, number>)[ints[flag]!] = n;
    } else if (flag === 'workloads') {
      const names = value().split(',').map((s) => s.trim()).filter(Boolean);
      const unknown = names.filter((n) => n !== WEBAPP && !ALL_WORKLOADS.includes(n as WorkloadId));
      if (unknown.length > 0 || names.length === 0) throw new UsageError(`--workloads: unknown ${unknown.join(', ') || '(empty)'}; choose from ${[...ALL_WORKLOADS, WEBAPP].join(', ')}`);
      options.workloads = ALL_WORKLOADS.filter((w) => names.includes(w));
      options.webapp = names.includes(WEBAPP);
    } else if (flag === 'profile') options.profile = true;
    else if (flag === 'no-peers') options.peers = false;
    else if (flag === 'no-install') options.install = false;
    else if (flag === 'out') options.out = value();
    else if (flag === 'help' || flag === 'h') throw new UsageError('');
    else throw new UsageError(`unknown option --${flag}`);
  }
  return options;
}


interface Target {
  id: TargetId;
  endpoint: Endpoint;
  /** the process tree whose CPU is the proxy's */
  cpuRoot?: () => number;
  /** the process whose RSS is reported (pgrelay) */
  rssPid?: () => number;
}

const say = (line: string) => process.stdout.write(`[bench] ${line}\n`);

async function main(argv: string[]): Promise<number> {
  const options = parseOrUsage(() => parseOptions(argv), USAGE);
  if (options === undefined) return 2;
  try {
    execFileSync('pgbench', ['--version'], { stdio: 'ignore' });
  } catch {
    process.stderr.write('pgbench is not installed (Debian: apt-get install postgresql-client-15 or postgresql-15)\n');
    return 1;
  }
  const started = Date.now();
  const report: BenchReport = {
    date: new Date().toISOString(),
    command: `npm run bench${argv.length > 0 ? ` -- ${argv.join(' ')}` : ''}`,
    machine: { cores: os.cpus().length, node: process.versions.node, postgres: pgVersion(), loadAverageStart: loadAverage() },
    settings: { ...options },
    notes: [],
    runs: [],
    summary: [],
    checks: [],
    profiles: [],
  };

  const peers = options.peers ? ensurePeers(options.install, say) : { pgbouncer: undefined, pgpool: undefined, notes: ['PgBouncer and Pgpool-II skipped (--no-peers)'] };
  report.notes.push(...peers.notes);
  for (const note of peers.notes) say(note);
  if (peers.pgbouncer) report.machine.pgbouncer = programVersion(peers.pgbouncer);
  if (peers.pgpool) report.machine.pgpool = programVersion(peers.pgpool);

  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgrelay-bench-'));
  fs.chmodSync(workDir, 0o755);
  const runAs = process.getuid?.() === 0 ? 'postgres' : undefined;
  chownTo(workDir, runAs);
  const resources = new RunResources(say, () => fs.rmSync(workDir, { recursive: true, force: true }));
  const services = resources.services;
  let cluster: LocalCluster | undefined;

  try {
    say(`local cluster (primary, synchronous standby, 2 replicas) in ${workDir}`);
    cluster = resources.cluster = await LocalCluster.create({
      baseDir: path.join(workDir, 'cluster'),
      replicas: 2,
      standby: true,
      // direct (16) + Pgpool-II (num_init_children × 1 per node) + two pgrelays + PgBouncer + idle checks
      settings: { max_connections: 300 },
      onProgress: (step) => say(`  ${step}`),
    });
    const nodes: RelayNode[] = cluster.nodes.map((n) => ({ name: n.name, host: n.host, port: n.port, role: n.role }));
    const primary = nodes.find((n) => n.role === 'primary')!;
    const endpoint = (port: number): Endpoint => ({ host: '127.0.0.1', port, user: cluster!.user, password: cluster!.password, database: cluster!.database });

    say(`pgbench -i -s ${options.scale} on the primary`);
    await initialise(endpoint(primary.port), options.scale);
    for (const node of nodes) await cluster.waitForReplay(node.name, 120_000);

    say('pgrelay (primary only), pgrelay (primary only, pipelined) and pgrelay (read scaling) in child processes');
    const relayPrimary = await startRelayProcess({ name: 'pgrelay-primary', dir: workDir, nodes: [primary], user: cluster.user, password: cluster.password, poolSize: options.poolSize, pipelineDepth: options.pipelineDepth, pipelineAfter: options.pipelineAfter });
    services.push(relayPrimary.service);
    const relayPipelined = await startRelayProcess({ name: 'pgrelay-pipelined', dir: workDir, nodes: [primary], user: cluster.user, password: cluster.password, poolSize: options.poolSize, pipelineDepth: PIPELINED.depth, pipelineAfter: PIPELINED.after });
    services.push(relayPipelined.service);
    const relayRead = await startRelayProcess({ name: 'pgrelay-read', dir: workDir, nodes, user: cluster.user, password: cluster.password, poolSize: options.poolSize, pipelineDepth: options.pipelineDepth, pipelineAfter: options.pipelineAfter });
    services.push(relayRead.service);

    const targets: Target[] = [
      { id: 'direct', endpoint: endpoint(primary.port) },
      relayTarget('pgrelay-primary', relayPrimary, endpoint),
      relayTarget('pgrelay-pipelined', relayPipelined, endpoint),
      relayTarget('pgrelay-read', relayRead, endpoint),
    ];
    // the runtime's floor: a Node.js process that copies bytes, one server connection per client
    const byteCopy = Service.start('byte-copy', process.execPath, [BYTE_COPY, '--target', `${primary.host}:${primary.port}`], { logFile: path.join(workDir, 'byte-copy.out'), stopSignal: 'SIGTERM' });
    services.push(byteCopy);
    const byteCopyPort = Number(/:(\d+)$/.exec(await byteCopy.waitForLine(/^byte-copy ready /, 30_000))?.[1]);
    targets.push({ id: 'byte-copy', endpoint: endpoint(byteCopyPort), cpuRoot: () => byteCopy.rootPid });
    const setup = (port: number): PeerSetup => ({ dir: workDir, runAs, user: cluster!.user, password: cluster!.password, database: cluster!.database, port });
    let bouncerPrepared = false;
    if (peers.pgbouncer) {
      bouncerPrepared = pgbouncerSupportsPrepared(report.machine.pgbouncer ?? '0');
      try {
        say(`PgBouncer ${report.machine.pgbouncer} (transaction pooling, pool size ${options.poolSize})`);
        const port = await findFreePort();
        const service = await startPgbouncer(peers.pgbouncer, setup(port), primary, { poolSize: options.poolSize, preparedStatements: bouncerPrepared });
        services.push(service);
        targets.push({ id: 'pgbouncer', endpoint: endpoint(port), cpuRoot: () => service.rootPid });
      } catch (error) {
        report.notes.push(`PgBouncer did not start: ${message(error)}`);
        say(`PgBouncer did not start: ${message(error)}`);
      }
    }
    if (peers.pgpool) {
      try {
        const children = Math.max(options.clients, options.tpcbClients) * 2;
        say(`Pgpool-II ${report.machine.pgpool} (streaming replication, load balancing, num_init_children ${children})`);
        const port = await findFreePort();
        const service = await startPgpool(peers.pgpool, setup(port), nodes, { children });
        services.push(service);
        targets.push({ id: 'pgpool', endpoint: endpoint(port), cpuRoot: () => service.rootPid });
      } catch (error) {
        report.notes.push(`Pgpool-II did not start: ${message(error)}`);
        say(`Pgpool-II did not start: ${message(error)}`);
      }
    }

    const targetsFor: Record<WorkloadId, TargetId[]> = {
      'select-simple': ['direct', 'pgrelay-primary', 'pgrelay-pipelined', 'pgrelay-read', 'pgbouncer', 'pgpool', 'byte-copy'],
      'select-extended': ['direct', 'pgrelay-primary', 'pgrelay-pipelined', 'pgrelay-read', 'pgbouncer', 'pgpool', 'byte-copy'],
      'select-prepared': ['direct', 'pgrelay-primary', 'pgrelay-pipelined', 'pgrelay-read', 'pgbouncer', 'pgpool', 'byte-copy'],
      // every statement of a TPC-B transaction goes to the primary: one pgrelay, as deployed (read scaling)
      tpcb: ['direct', 'pgrelay-read', 'pgbouncer', 'pgpool', 'byte-copy'],
      'latency-1-client': ['direct', 'pgrelay-primary', 'pgbouncer', 'pgpool', 'byte-copy'],
    };
    const logDir = path.join(workDir, 'pgbench-log');
    const runOne = async (round: number, workload: WorkloadId, targetId: TargetId, durationS: number): Promise<RunRecord> => {
      const record: RunRecord = { round, workload, target: targetId };
      const target = targets.find((t) => t.id === targetId);
      if (!target) {
        record.na = targetId === 'pgbouncer' || targetId === 'pgpool' ? 'not installed or not started' : 'not started';
        return record;
      }
      if (targetId === 'pgbouncer' && workload === 'select-prepared' && !bouncerPrepared) {
        record.na = `PgBouncer ${report.machine.pgbouncer} has no prepared statements in transaction pooling`;
        return record;
      }
      const selectOnly = workload !== 'tpcb';
      const mode = workload === 'select-extended' ? 'extended' : workload === 'select-prepared' ? 'prepared' : 'simple';
      const clients = workload === 'tpcb' ? options.tpcbClients : workload === 'latency-1-client' ? 1 : options.clients;
      const threads = Math.min(options.threads, clients);
      const cpuBefore = target.cpuRoot ? treeCpuSplit(target.cpuRoot()) : undefined;
      const machineBefore = machineCpu();
      try {
        const run = await pgbench(target.endpoint, { clients, threads, durationS, mode, selectOnly, logDir });
        Object.assign(record, run);
      } catch (error) {
        record.error = message(error);
      }
      const machineAfter = machineCpu();
      record.machineBusy = (machineAfter.busy - machineBefore.busy) / Math.max(1, machineAfter.total - machineBefore.total);
      if (target.cpuRoot && cpuBefore !== undefined) {
        const cpuAfter = treeCpuSplit(target.cpuRoot());
        record.proxyUserS = cpuAfter.user - cpuBefore.user;
        record.proxySystemS = cpuAfter.system - cpuBefore.system;
        record.proxyCpuS = record.proxyUserS + record.proxySystemS;
      }
      if (target.rssPid) record.rssBytes = rssBytes(target.rssPid());
      return record;
    };

    if (options.workloads.length > 0) say('warm-up: 2 s of select-only per target');
    if (options.workloads.length > 0) for (const t of targets) await runOne(0, 'select-simple', t.id, 2);
    if (options.workloads.includes('select-prepared')) for (const t of targets) if (t.id !== 'pgbouncer' || bouncerPrepared) await runOne(0, 'select-prepared', t.id, 2);

    for (let round = 1; round <= options.rounds; round++) {
      for (const workload of options.workloads) {
        for (const targetId of targetsFor[workload]) {
          const durationS = workload === 'latency-1-client' ? options.latencyDurationS : options.durationS;
          const record = await runOne(round, workload, targetId, durationS);
          report.runs.push(record);
          const shown = record.na ? `n/a (${record.na})` : record.error ? `FAILED: ${record.error}` : `${record.tps!.toFixed(0)} tps, median ${(record.latencyMedianUs! / 1000).toFixed(3)} ms, p99 ${(record.latencyP99Us! / 1000).toFixed(3)} ms${record.proxyCpuS !== undefined ? `, proxy CPU ${record.proxyCpuS.toFixed(2)} s` : ''}, machine ${(100 * (record.machineBusy ?? 0)).toFixed(0)}% busy`;
          say(`round ${round}/${options.rounds} ${WORKLOAD_LABELS[workload]} — ${TARGET_LABELS[targetId]}: ${shown}`);
        }
      }
    }
    report.summary = summarise(report.runs, options.workloads, targetsFor);

    if (options.webapp) {
      const webNodes: WebappNode[] = cluster.nodes.map((n) => ({ name: n.name, role: n.role, url: cluster!.url(n.name, { superuser: true }) }));
      const asyncReplicas = webNodes.filter((n) => n.role === 'replica');
      say('web application workload: table on the primary');
      await prepareWebapp(cluster.url('primary'));
      for (const node of nodes) await cluster.waitForReplay(node.name, 120_000);
      report.webapp = [];
      for (const delayMs of [0, options.webappDelayMs]) {
        await setApplyDelay(asyncReplicas, delayMs);
        for (let round = 1; round <= options.rounds; round++) {
          for (const mode of ['autocommit', 'transactions'] as WebappMode[]) {
            for (const targetId of ['pgrelay-read', 'pgpool'] as TargetId[]) {
              const target = targets.find((t) => t.id === targetId);
              if (!target) continue;
              try {
                const result = await runWebapp(target.endpoint, webNodes, { clients: options.clients, durationS: options.durationS, mode });
                report.webapp.push({ round, delayMs, target: targetId, result });
                say(`webapp round ${round}/${options.rounds}, apply delay ${delayMs} ms, ${mode} — ${TARGET_LABELS[targetId]}: ${result.requestsPerS.toFixed(0)} req/s, reads on replicas ${(100 * result.onReplicas).toFixed(1)} %, stale ${result.stale}, errors ${result.errors}${result.firstError ? ` (${result.firstError})` : ''}`);
              } catch (error) {
                report.webapp.push({ round, delayMs, target: targetId, error: message(error) });
                say(`webapp round ${round}, ${mode} — ${TARGET_LABELS[targetId]}: FAILED: ${message(error)}`);
              }
            }
          }
        }
      }
      await setApplyDelay(asyncReplicas, 0);
    }

    if (options.idleClients > 0) {
      say(`RSS per idle client: ${options.idleClients} idle clients on pgrelay (primary only)`);
      try {
        report.idleClients = await measureIdleClients({ pid: relayPrimary.service.pid, ...endpoint(relayPrimary.port), clients: options.idleClients });
      } catch (error) {
        report.idleClients = { error: message(error) };
      }
    }

    // the proxies are idle from here on; the rest measures pgrelay alone
    for (const service of services.splice(0)) await service.stop();

    say('classification cost per statement (src/classify/bench.ts)');
    try {
      report.classification = await benchClassify();
    } catch (error) {
      report.classification = { error: message(error) };
    }

    if (options.profile) {
      for (const mode of ['simple', 'extended', 'prepared'] as const) {
        say(`profile: pgrelay (primary only) under node --cpu-prof, select-only -M ${mode}, ${options.durationS} s`);
        const profileDir = path.join(workDir, `profile-${mode}`);
        fs.mkdirSync(profileDir);
        const window: { fromUs?: number; toUs?: number; transactions?: number; tps?: number } = {};
        const relay = await startRelayProcess({ name: `pgrelay-profile-${mode}`, dir: workDir, nodes: [primary], user: cluster.user, password: cluster.password, poolSize: options.poolSize, pipelineDepth: options.pipelineDepth, pipelineAfter: options.pipelineAfter, cpuProfileDir: profileDir });
        services.push(relay.service);
        try {
          await pgbench(endpoint(relay.port), { clients: options.clients, threads: options.threads, durationS: 2, mode, selectOnly: true, logDir });
          window.fromUs = monotonicUs();
          const run = await pgbench(endpoint(relay.port), { clients: options.clients, threads: options.threads, durationS: options.durationS, mode, selectOnly: true, logDir });
          window.toUs = monotonicUs();
          window.transactions = run.transactions;
          window.tps = run.tps;
        } finally {
          await relay.service.stop();
          services.splice(services.indexOf(relay.service), 1);
        }
        const file = newestProfile(profileDir);
        if (!file) {
          report.notes.push(`profile -M ${mode}: no .cpuprofile was written`);
          continue;
        }
        const summary = summariseProfile(file, 25, window);
        const kept = path.join(options.out, `profile-${mode}.cpuprofile`);
        fs.mkdirSync(options.out, { recursive: true });
        fs.copyFileSync(file, kept);
        summary.file = kept;
        report.profiles.push({ mode, summary, tps: window.tps });
      }
    }
  } finally {
    await resources.stop();
    fs.rmSync(workDir, { recursive: true, force: true });
  }

  report.machine.loadAverageEnd = loadAverage();
  report.checks = checkTargets(report.summary, report.runs, report.idleClients);
  report.durationS = Math.round((Date.now() - started) / 1000);
  report.notes.push(
    'pgrelay (primary only) fronts the primary alone, like the direct connection and PgBouncer: the fair row for the select-only ratios. ' +
      'pgrelay (read scaling) fronts every node and sends the reads to the standby and replicas, like Pgpool-II (primary at weight 0): the row compared with Pgpool-II. ' +
      'On one 2-core machine every node shares the same CPUs, so read scaling adds no capacity here; it shows the cost of routing.',
    `Pool size ${options.poolSize} server connections per node for pgrelay and PgBouncer; Pgpool-II has one connection per child per node.${options.pipelineDepth === undefined ? '' : ` pgrelay pool.pipeline_depth ${options.pipelineDepth}.`}${options.pipelineAfter === undefined ? '' : ` pgrelay pool.pipeline_after ${options.pipelineAfter}.`}`,
  );
  const text = markdown(report, options.workloads);
  fs.mkdirSync(options.out, { recursive: true });
  const stamp = report.date.replace(/[:]/g, '-').replace(/\..*$/, '');
  fs.writeFileSync(path.join(options.out, 'latest.md'), `${text}\n`);
  fs.writeFileSync(path.join(options.out, 'latest.json'), `${JSON.stringify(report, null, 2)}\n`);
  fs.writeFileSync(path.join(options.out, `${stamp}.md`), `${text}\n`);
  fs.writeFileSync(path.join(options.out, `${stamp}.json`), `${JSON.stringify(report, null, 2)}\n`);
  process.stdout.write(`\n${text}\n`);
  say(`written ${path.join(options.out, 'latest.md')} and latest.json (${report.durationS} s)`);
  return 0;
}

const BYTE_COPY = path.join(path.dirname(fileURLToPath(import.meta.url)), 'byte-copy.js');

function relayTarget(id: TargetId, relay: RelayProcess, endpoint: (port: number) => Endpoint): Target {
  return { id, endpoint: endpoint(relay.port), cpuRoot: () => relay.service.rootPid, rssPid: () => relay.service.pid };
}

function monotonicUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

function pgVersion(): string {
  try {
    return /(\d+(\.\d+)?)/.exec(execFileSync('pgbench', ['--version'], { encoding: 'utf8' }))?.[1] ?? 'unknown';
  } catch {
    return 'unknown';
  }
}


runCommand('bench', () => main(process.argv.slice(2)));
