/**
 * Process entry: the command line and signals. The only file that touches process.* for control.
 *
 *   pgrelay start --config FILE [--grace-ms MS]
 *                                   run the proxy; SIGHUP reloads FILE, SIGTERM/SIGINT stop gracefully
 *   pgrelay demo [--replicas N] [--standby 0|1] [--port P] [--admin-port P]
 *   pgrelay classify                JSON string per line on stdin → decision per line on stdout
 *   pgrelay check-config [--connect] FILE
 *                                   validate FILE; --connect: also the roles' grants on the servers
 *   pgrelay status [--admin URL]
 *   pgrelay cluster add-replica|add-standby|remove NODE [--name NAME] [--admin URL]
 *                                   the RDS workflows on the demo's local cluster (cluster-command.ts)
 *   status and cluster send PGRELAY_ADMIN_TOKEN (the environment, not a flag: flags show in `ps`)
 */
import cluster from 'node:cluster';
import { App } from './app.js';
import { runClassifyCli } from './classify/cli.js';
import { checkConfigCommand, checkConfigConnectCommand } from './config/check.js';
import { loadConfig } from './config/load.js';
import { InvalidConfigError } from './config/issues.js';
import { runDemo } from './demo.js';
import { printStatus } from './admin/status-command.js';
import { CLUSTER_USAGE, runClusterCommand } from './cluster-command.js';
import { handleSignals } from './admin/signal-handlers.js';
import { resolveWorkers } from './config/workers-key.js';
import { createLogger } from './util/log.js';
import { Leader } from './workers/leader.js';
import { runWorker, type WorkerProcess } from './workers/worker.js';

/** SIGTERM lets running transactions finish for this long (below Kubernetes' 30 s default grace). */
const DEFAULT_GRACE_MS = 20_000;

const USAGE = `usage:
  pgrelay start --config FILE [--grace-ms 20000]
  pgrelay demo [--replicas N] [--standby 0|1] [--port PORT] [--admin-port PORT]
  pgrelay classify            (one JSON string per line on stdin)
  pgrelay check-config [--connect] FILE
  pgrelay status [--admin http://127.0.0.1:9930]
${CLUSTER_USAGE}
  status and cluster send the admin token from the environment variable PGRELAY_ADMIN_TOKEN
`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  const flags = parseFlags(rest);
  switch (command) {
    case 'start':
      return start(flags.get('config') ?? flags.get('_0'), intFlag(flags, 'grace-ms', DEFAULT_GRACE_MS));
    case 'demo':
      return runDemo({
        replicas: intFlag(flags, 'replicas', 2),
        standby: intFlag(flags, 'standby', 1) !== 0,
        port: intFlag(flags, 'port', 6432),
        adminPort: intFlag(flags, 'admin-port', 9930),
        signals: process,
        out: process.stdout,
      });
    case 'classify':
      await runClassifyCli(process.stdin, process.stdout);
      return 0;
    case 'check-config': {
      // `--connect FILE` reads FILE as the flag's value; `FILE --connect` leaves it empty
      const connect = flags.has('connect');
      const file = flags.get('_0') ?? flags.get('config') ?? (flags.get('connect') || undefined);
      if (!file) return usage();
      return connect ? checkConfigConnectCommand(file, process.stdout, process.stderr) : checkConfigCommand(file, process.stdout, process.stderr);
    }
    case 'status':
      return printStatus(flags.get('admin') ?? 'http://127.0.0.1:9930', process.stdout, process.stderr, process.env.PGRELAY_ADMIN_TOKEN || undefined);
    case 'cluster':
      return runClusterCommand(flags.get('_0'), flags.get('_1'), { admin: flags.get('admin') ?? 'http://127.0.0.1:9930', name: flags.get('name'), token: process.env.PGRELAY_ADMIN_TOKEN || undefined }, process.stdout, process.stderr);
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return 0;
    default:
      return usage();
  }
}

function usage(): number {
  process.stderr.write(USAGE);
  return 2;
}

async function start(path: string | undefined, graceMs: number): Promise<number> {
  if (cluster.isWorker) return startWorker();
  if (!path) return usage();
  let config;
  try {
    config = loadConfig(path);
  } catch (error) {
    if (error instanceof InvalidConfigError) {
      for (const line of error.lines()) process.stderr.write(`${line}\n`);
      return 1;
    }
    throw error;
  }
  const log = createLogger({ level: config.log.level, pretty: config.log.format === 'pretty' });
  const workers = resolveWorkers(config.workers);
  // workers: 1 is one process, as before the key existed (no fork)
  const leader = workers > 1 ? await Leader.start(config, { log, configPath: path, count: workers }) : undefined;
  const app = leader?.app ?? (await App.start(config, { log, configPath: path }));
  const address = leader?.listenAddress ?? app.listenAddress!;
  const user = config.users[0]!.name;
  process.stdout.write(`pgrelay ready postgres://${user}:***@${address.address}:${address.port}/${user}\n`);
  const signals = handleSignals(app, {
    signals: process,
    configPath: path,
    graceMs,
    onForcedExit: () => process.exit(1),
  });
  await signals.stopped;
  signals.dispose();
  return 0;
}

/**
 * A worker of `workers: N` (forked by the leader with the same command line): its config comes
 * from the leader. Stop signals are the leader's to handle (it stops every worker, with the
 * grace period); a reload reaches it from the leader, so SIGHUP, SIGINT (a terminal's Ctrl-C
 * reaches the whole process group) and SIGTERM are ignored here. It exits when the leader says
 * stop, or when the leader is gone.
 */
async function startWorker(): Promise<number> {
  for (const signal of ['SIGHUP', 'SIGINT', 'SIGTERM'] as const) process.on(signal, () => undefined);
  const channel: WorkerProcess = {
    send: (message) => void process.send!(message),
    on: (event, listener) => void process.on(event, listener),
    off: (event, listener) => void process.off(event, listener),
  };
  const slot = process.env.PGRELAY_WORKER_SLOT ?? '?';
  let code: number;
  try {
    code = await runWorker(channel, (_slot, config) => createLogger({ level: config.log.level, pretty: config.log.format === 'pretty' }).child({ worker: Number(slot) }));
  } catch (error) {
    // a worker that cannot start (its port taken, …): the leader reports it and stops
    process.stderr.write(`pgrelay worker ${slot}: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  }
  // the IPC channel would keep the process alive (node:cluster exits a worker that disconnects with 0)
  process.disconnect?.();
  return code;
}

function parseFlags(args: string[]): Map<string, string> {
  const flags = new Map<string, string>();
  let positional = 0;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      if (eq > 0) flags.set(arg.slice(2, eq), arg.slice(eq + 1));
      else flags.set(arg.slice(2), args[++i] ?? '');
    } else flags.set(`_${positional++}`, arg);
  }
  return flags;
}

function intFlag(flags: Map<string, string>, name: string, fallback: number): number {
  const value = flags.get(name);
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new Error(`--${name} expects a whole number, got "${value}"`);
  return n;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`pgrelay: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  },
);
