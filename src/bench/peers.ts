/**
 * PgBouncer and Pgpool-II from Debian's packages, configured by the bench in its own directory
 * (owned by the postgres OS user, which runs them). See the project's notes on running the peers (PEERS.md) for the facts these
 * configurations follow.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { Service } from './service.js';

export interface PeerNode {
  name: string;
  host: string;
  port: number;
  role: 'primary' | 'standby' | 'replica';
}

export interface PeerSetup {
  dir: string;
  /** the OS user that runs the peers ('postgres' when we are root) */
  runAs: string | undefined;
  user: string;
  password: string;
  database: string;
  port: number;
}

const PROGRAMS = { pgbouncer: 'pgbouncer', pgpool: 'pgpool' } as const;
const PACKAGES = ['pgbouncer', 'pgpool2'];

function which(program: string): string | undefined {
  for (const dir of ['/usr/sbin', '/usr/bin', ...(process.env['PATH'] ?? '').split(':')]) {
    const candidate = path.join(dir, program);
    if (dir !== '' && fs.existsSync(candidate)) return candidate;
  }
  return undefined;
}

export interface PeerAvailability {
  pgbouncer: string | undefined;
  pgpool: string | undefined;
  /** why a peer is missing, for the report */
  notes: string[];
}

/**
 * Finds pgbouncer and pgpool; when missing and we are root (and `install` is set), installs the
 * Debian packages with the daemons' own services kept from starting (a policy-rc.d that says no,
 * for the duration of the install only).
 */
export function ensurePeers(install: boolean, say: (line: string) => void): PeerAvailability {
  const notes: string[] = [];
  let missing = Object.values(PROGRAMS).filter((p) => which(p) === undefined);
  if (missing.length > 0 && install) {
    if (process.getuid?.() !== 0) {
      notes.push(`not installed and not root: run  sudo apt-get install -y ${PACKAGES.join(' ')}  to include PgBouncer and Pgpool-II`);
    } else {
      say(`installing ${PACKAGES.join(' ')} (apt-get; the packages' own services are not started)`);
      const policy = '/usr/sbin/policy-rc.d';
      const ownPolicy = !fs.existsSync(policy);
      if (ownPolicy) fs.writeFileSync(policy, '#!/bin/sh\nexit 101\n', { mode: 0o755 });
      try {
        const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
        const update = spawnSync('apt-get', ['update'], { env, encoding: 'utf8', timeout: 300_000 });
        if (update.status !== 0) notes.push(`apt-get update failed: ${(update.stderr ?? '').trim().split('\n').slice(-2).join(' ')}`);
        const result = spawnSync('apt-get', ['install', '-y', '--no-install-recommends', ...PACKAGES], { env, encoding: 'utf8', timeout: 600_000 });
        if (result.status !== 0) notes.push(`apt-get install ${PACKAGES.join(' ')} failed: ${(result.stderr ?? '').trim().split('\n').slice(-3).join(' ')}`);
      } finally {
        if (ownPolicy) fs.rmSync(policy, { force: true });
      }
      // a package whose service started anyway (no policy-rc.d support) must not hold our ports
      for (const service of ['pgbouncer', 'pgpool2']) spawnSync('service', [service, 'stop'], { stdio: 'ignore', timeout: 30_000 });
    }
    missing = Object.values(PROGRAMS).filter((p) => which(p) === undefined);
  } else if (missing.length > 0) {
    notes.push(`${missing.join(', ')} not installed (--no-install): apt-get install -y ${PACKAGES.join(' ')}`);
  }
  return { pgbouncer: which(PROGRAMS.pgbouncer), pgpool: which(PROGRAMS.pgpool), notes };
}

export function programVersion(binary: string): string {
  const result = spawnSync(binary, ['--version'], { encoding: 'utf8' });
  const out = `${result.stdout ?? ''}${result.stderr ?? ''}`;
  return /(\d+\.\d+(\.\d+)?)/.exec(out)?.[1] ?? (out.trim() || 'unknown');
}

/** PgBouncer < 1.21 has no protocol-level prepared statements in transaction pooling. */
export function pgbouncerSupportsPrepared(version: string): boolean {
  const [major = 0, minor = 0] = version.split('.').map(Number);
  return major > 1 || (major === 1 && minor >= 21);
}

/** Writes a file the peers' OS user owns (mode 600 unless told). */
function writeOwned(file: string, text: string, runAs: string | undefined, mode = 0o600): void {
  fs.writeFileSync(file, text, { mode });
  chownTo(file, runAs);
}

export function chownTo(target: string, runAs: string | undefined): void {
  if (runAs === undefined || process.getuid?.() !== 0) return;
  const id = execFileSync('id', ['-u', runAs], { encoding: 'utf8' }).trim();
  const gid = execFileSync('id', ['-g', runAs], { encoding: 'utf8' }).trim();
  fs.chownSync(target, Number(id), Number(gid));
}

/** Polls with a real login and query until the proxy answers. */
async function answers(setup: PeerSetup): Promise<boolean> {
  const client = new pg.Client({ host: '127.0.0.1', port: setup.port, user: setup.user, password: setup.password, database: setup.database, connectionTimeoutMillis: 3000 });
  client.on('error', () => {});
  try {
    await client.connect();
    await client.query('SELECT 1');
    return true;
  } finally {
    await client.end().catch(() => {});
  }
}

/** PgBouncer in transaction pooling in front of the primary. */
export async function startPgbouncer(
  binary: string,
  setup: PeerSetup,
  primary: PeerNode,
  options: { poolSize: number; preparedStatements: boolean },
): Promise<Service> {
  const dir = path.join(setup.dir, 'pgbouncer');
  fs.mkdirSync(dir, { mode: 0o755 });
  chownTo(dir, setup.runAs);
  writeOwned(path.join(dir, 'userlist.txt'), `"${setup.user}" "${setup.password}"\n`, setup.runAs);
  const ini = [
    '[databases]',
    `${setup.database} = host=${primary.host} port=${primary.port} dbname=${setup.database}`,
    '',
    '[pgbouncer]',
    'listen_addr = 127.0.0.1',
    `listen_port = ${setup.port}`,
    `unix_socket_dir = ${dir}`,
    'auth_type = scram-sha-256',
    `auth_file = ${path.join(dir, 'userlist.txt')}`,
    'pool_mode = transaction',
    `default_pool_size = ${options.poolSize}`,
    'min_pool_size = 0',
    'reserve_pool_size = 0',
    'max_client_conn = 5000',
    'max_db_connections = 0',
    'ignore_startup_parameters = extra_float_digits',
    `logfile = ${path.join(dir, 'pgbouncer.log')}`,
    `pidfile = ${path.join(dir, 'pgbouncer.pid')}`,
    'log_connections = 0',
    'log_disconnections = 0',
    'log_pooler_errors = 1',
    'stats_period = 600',
    ...(options.preparedStatements ? ['max_prepared_statements = 200'] : []),
    '',
  ].join('\n');
  writeOwned(path.join(dir, 'pgbouncer.ini'), ini, setup.runAs);
  const service = Service.start('pgbouncer', binary, [path.join(dir, 'pgbouncer.ini')], {
    cwd: dir,
    logFile: path.join(setup.dir, 'pgbouncer.out'),
    runAs: setup.runAs,
    stopSignal: 'SIGTERM', // immediate shutdown (SIGINT would wait for clients)
  });
  try {
    await service.waitUntil('PgBouncer to answer', 30_000, () => answers(setup));
  } catch (error) {
    await service.stop();
    throw error;
  }
  return service;
}

/**
 * Pgpool-II in streaming-replication mode with load balancing: the primary at weight 0 (it takes
 * writes only), standby and replicas at weight 1.
 */
export async function startPgpool(binary: string, setup: PeerSetup, nodes: readonly PeerNode[], options: { children: number }): Promise<Service> {
  const dir = path.join(setup.dir, 'pgpool');
  fs.mkdirSync(dir, { mode: 0o755 });
  chownTo(dir, setup.runAs);
  const backends = nodes.flatMap((node, i) => [
    `backend_hostname${i} = '${node.host}'`,
    `backend_port${i} = ${node.port}`,
    `backend_weight${i} = ${node.role === 'primary' ? 0 : 1}`,
    `backend_flag${i} = 'DISALLOW_TO_FAILOVER'`,
    `backend_application_name${i} = '${node.name}'`,
  ]);
  const conf = [
    "backend_clustering_mode = 'streaming_replication'",
    "listen_addresses = '127.0.0.1'",
    `port = ${setup.port}`,
    `unix_socket_directories = '${dir}'`,
    "pcp_listen_addresses = ''",
    `pcp_port = ${setup.port + 1}`,
    `pcp_socket_dir = '${dir}'`,
    `pid_file_name = '${path.join(dir, 'pgpool.pid')}'`,
    `logdir = '${dir}'`,
    "log_destination = 'stderr'",
    'log_connections = off',
    'log_statement = off',
    ...backends,
    'enable_pool_hba = on',
    "pool_passwd = 'pool_passwd'",
    `num_init_children = ${options.children}`,
    'max_pool = 1',
    'child_life_time = 0',
    'child_max_connections = 0',
    'connection_life_time = 0',
    'client_idle_limit = 0',
    'connection_cache = on',
    'load_balance_mode = on',
    'statement_level_load_balance = off',
    // reads inside a transaction go to the primary after its first write (the default, said aloud)
    "disable_load_balance_on_write = 'transaction'",
    'sr_check_period = 10',
    `sr_check_user = '${setup.user}'`,
    "sr_check_password = ''",
    `sr_check_database = '${setup.database}'`,
    'delay_threshold = 0',
    'health_check_period = 0',
    'failover_on_backend_error = off',
    "failover_command = ''",
    'use_watchdog = off',
    'memory_cache_enabled = off',
    'ssl = off',
    '',
  ].join('\n');
  writeOwned(path.join(dir, 'pgpool.conf'), conf, setup.runAs);
  writeOwned(path.join(dir, 'pool_hba.conf'), ['local all all trust', 'host all all 127.0.0.1/32 scram-sha-256', ''].join('\n'), setup.runAs);
  // clear-text passwords: Pgpool-II needs them to log in to the backends with SCRAM
  writeOwned(path.join(dir, 'pool_passwd'), `${setup.user}:TEXT${setup.password}\n`, setup.runAs);
  writeOwned(path.join(dir, 'pcp.conf'), '', setup.runAs);
  const service = Service.start(
    'pgpool',
    binary,
    ['-n', '-D', '-f', path.join(dir, 'pgpool.conf'), '-a', path.join(dir, 'pool_hba.conf'), '-F', path.join(dir, 'pcp.conf')],
    { cwd: dir, logFile: path.join(setup.dir, 'pgpool.out'), runAs: setup.runAs, stopSignal: 'SIGINT' /* fast shutdown */ },
  );
  try {
    await service.waitUntil('Pgpool-II to answer', 60_000, () => answers(setup));
  } catch (error) {
    await service.stop();
    throw error;
  }
  return service;
}

/** The main pid from Pgpool-II's pid file (which ends with a NUL byte). */
export function pgpoolPid(setup: PeerSetup): number | undefined {
  try {
    const pid = Number(fs.readFileSync(path.join(setup.dir, 'pgpool', 'pgpool.pid'), 'latin1').replace(/\0/g, '').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}
