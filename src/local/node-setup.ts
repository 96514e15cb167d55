/**
 * One node's life on disk: initdb, base backup, rewind, start, stop, and its per-node settings.
 * Knows nothing about cluster topology; LocalCluster decides who follows whom.
 */
import fs from 'node:fs';
import path from 'node:path';
import { hbaConf, commonSettings, formatSettings, mergeSettings, type Settings } from './node-config.js';
import {
  findProcessesIn,
  killProcessesIn,
  readPostmasterPid,
  releaseOrphanSharedMemory,
  runningPostmasterPid,
  signalProcesses,
} from './node-processes.js';
import type { PgBinaries } from './pg-binaries.js';

export interface NodeFiles {
  name: string;
  /** Holds the data directory, the log file and (when short enough) the Unix socket. */
  nodeDir: string;
  dataDir: string;
  logFile: string;
  /** The node's own unix_socket_directories entry (nothing else lives there). */
  socketDir: string;
}

/** Starting a node failed; `portInUse` says a retry on another port may work. */
export class NodeStartError extends Error {
  constructor(
    readonly nodeName: string,
    readonly portInUse: boolean,
    logTail: string,
    cause: unknown,
  ) {
    super(`starting node ${nodeName} failed${logTail === '' ? '' : `; its log says:\n${logTail}`}`, { cause });
    this.name = 'NodeStartError';
  }
}

export interface InitdbOptions {
  superuser: string;
  /** A file (readable by the server user) holding the superuser's password. */
  passwordFile: string;
  settings: Record<string, string | number>;
}

/** A new primary: initdb, pg_hba.conf, and the settings every node shares (base backups copy them). */
export async function initdbPrimary(bins: PgBinaries, files: NodeFiles, options: InitdbOptions): Promise<void> {
  await bins.run(
    'initdb',
    [
      '-D', files.dataDir,
      '-U', options.superuser,
      `--pwfile=${options.passwordFile}`,
      '--auth-local=trust',
      '--auth-host=scram-sha-256',
      '-E', 'UTF8',
      '--locale=C',
      '--no-sync',
    ],
    { cwd: files.nodeDir },
  );
  bins.writeFile(path.join(files.dataDir, 'pg_hba.conf'), hbaConf());
  const confPath = path.join(files.dataDir, 'postgresql.conf');
  fs.appendFileSync(confPath, '\n# pgrelay local cluster\n' + formatSettings(commonSettings(options.settings)));
}

export interface BaseBackupOptions {
  /** conninfo of the node to copy (host, port, user, application_name; password via passfile). */
  sourceConninfo: string;
  slotName: string;
  passFile: string;
  /** Runs pg_basebackup with --progress and reports each of its progress lines (about one a second, and the last). */
  onProgress?: (progress: BaseBackupProgress) => void;
}

/** One `--progress` line of pg_basebackup: what it has copied of its up-front estimate of the total. */
export interface BaseBackupProgress {
  doneBytes: number;
  totalBytes: number;
  /** since pg_basebackup was started */
  elapsedMs: number;
}

/** `  30770/30770 kB (100%), 1/1 tablespace` (a new line per report when stderr is not a terminal). */
const PROGRESS_LINE = /(\d+)\/(\d+) kB \(\d+%\)/;

/**
 * A copy of a running node, the RDS way: `-R` writes standby.signal and primary_conninfo, WAL is
 * streamed alongside (`-X stream`) through the node's own replication slot.
 */
export async function baseBackup(bins: PgBinaries, files: NodeFiles, options: BaseBackupOptions): Promise<void> {
  const args = ['-D', files.dataDir, '-d', options.sourceConninfo, '-X', 'stream', '-c', 'fast', '-R', '-S', options.slotName, '--no-sync'];
  const { onProgress } = options;
  let onStderr: ((text: string) => void) | undefined;
  if (onProgress !== undefined) {
    args.push('--progress');
    const startedAt = performance.now();
    let pending = '';
    onStderr = (text) => {
      const lines = (pending + text).split(/[\r\n]/);
      pending = lines.pop() ?? '';
      for (const line of lines) {
        const match = PROGRESS_LINE.exec(line);
        if (match !== null) {
          onProgress({ doneBytes: Number(match[1]) * 1024, totalBytes: Number(match[2]) * 1024, elapsedMs: performance.now() - startedAt });
        }
      }
    };
  }
  await bins.run('pg_basebackup', args, { cwd: files.nodeDir, env: { PGPASSFILE: options.passFile }, onStderr });
}

/**
 * Rewinds a stopped former primary onto the timeline of `sourceConninfo` (which must name a
 * superuser), so that it can follow it as a standby. pg_rewind copies the source's configuration
 * files, so the caller rewrites the per-node settings afterwards.
 */
export async function rewind(bins: PgBinaries, files: NodeFiles, sourceConninfo: string, passFile: string): Promise<void> {
  await bins.run('pg_rewind', ['--target-pgdata', files.dataDir, '--source-server', sourceConninfo, '--no-sync'], {
    cwd: files.nodeDir,
    env: { PGPASSFILE: passFile },
  });
  bins.writeFile(path.join(files.dataDir, 'standby.signal'), '');
}

/**
 * Per-node settings live in postgresql.auto.conf: it is the last file read, so they win over
 * anything copied from another node, and ALTER SYSTEM keeps editing the same file later.
 * Only for a stopped node, or followed by a reload.
 */
export function updateAutoConf(bins: PgBinaries, files: NodeFiles, settings: Settings): void {
  const autoConf = path.join(files.dataDir, 'postgresql.auto.conf');
  const current = fs.existsSync(autoConf) ? fs.readFileSync(autoConf, 'utf8') : '';
  bins.writeFile(autoConf, mergeSettings(current, settings));
}

export function isStandby(files: NodeFiles): boolean {
  return fs.existsSync(path.join(files.dataDir, 'standby.signal'));
}

/**
 * Starts the node and waits until it accepts connections. Copes with what a `kill -9` leaves:
 * backends that outlived their postmaster (they hold the old shared memory, which makes the new
 * postmaster refuse to start) and a stale postmaster.pid (whose PID may be a zombie or reused).
 */
export async function startPostgres(bins: PgBinaries, files: NodeFiles): Promise<void> {
  if (runningPostmasterPid(files.dataDir) !== undefined) return;
  await killProcessesIn(files.dataDir);
  clearStaleLockFiles(files);
  const logOffset = fileSize(files.logFile);
  try {
    await bins.run('pg_ctl', ['start', '-w', '-t', '120', '-s', '-D', files.dataDir, '-l', files.logFile], {
      cwd: files.nodeDir,
    });
  } catch (err) {
    const logTail = readFrom(files.logFile, logOffset).trim().split('\n').slice(-20).join('\n');
    await killProcessesIn(files.dataDir); // a half-started postmaster must not linger
    clearStaleLockFiles(files);
    throw new NodeStartError(files.name, /Address already in use|could not bind/i.test(logTail), logTail, err);
  }
}

/**
 * First start of a new node: a port taken since it was picked is replaced by `newPort()` (which
 * records it), up to `attempts` times.
 */
export async function startOnFreePort(bins: PgBinaries, files: NodeFiles, newPort: () => Promise<number>, attempts: number): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await startPostgres(bins, files);
      return;
    } catch (err) {
      if (!(err instanceof NodeStartError && err.portInUse) || attempt >= attempts) throw err;
      updateAutoConf(bins, files, { port: await newPort() });
    }
  }
}

/**
 * Stops the node with pg_ctl, then kills whatever is left (lingering backends of a killed
 * postmaster, a shutdown that timed out). A frozen (SIGSTOP) node is thawed first: a stopped
 * process cannot act on the shutdown signal.
 */
export async function stopPostgres(bins: PgBinaries, files: NodeFiles, mode: 'fast' | 'immediate'): Promise<void> {
  signalProcesses(findProcessesIn(files.dataDir), 'SIGCONT');
  if (runningPostmasterPid(files.dataDir) !== undefined) {
    const timeoutSeconds = mode === 'immediate' ? '10' : '60';
    try {
      const args = ['stop', '-w', '-s', '-t', timeoutSeconds, '-m', mode, '-D', files.dataDir];
      await bins.run('pg_ctl', args, { cwd: files.nodeDir });
    } catch {
      // fall through: whatever still runs is killed below
    }
  }
  await killProcessesIn(files.dataDir);
  clearStaleLockFiles(files);
}

/** Synchronous stop for the process-exit safety net. */
export function stopPostgresSync(bins: PgBinaries, files: NodeFiles): void {
  signalProcesses(findProcessesIn(files.dataDir), 'SIGCONT');
  if (runningPostmasterPid(files.dataDir) !== undefined) {
    bins.runSync('pg_ctl', ['stop', '-w', '-s', '-t', '5', '-m', 'immediate', '-D', files.dataDir], { cwd: files.nodeDir });
  }
}

/**
 * Removes the lock files of a dead postmaster: postmaster.pid (and the shared memory it names)
 * and the socket lock file `.s.PGSQL.<port>.lock`. PostgreSQL checks both with kill(pid, 0),
 * which succeeds on a zombie or a reused PID, and then refuses to start.
 */
export function clearStaleLockFiles(files: NodeFiles): void {
  if (runningPostmasterPid(files.dataDir) !== undefined) return;
  if (findProcessesIn(files.dataDir).length > 0) return; // still attached to the segment
  if (readPostmasterPid(files.dataDir) !== undefined) {
    releaseOrphanSharedMemory(files.dataDir);
    fs.rmSync(path.join(files.dataDir, 'postmaster.pid'), { force: true });
  }
  let entries: string[] = [];
  try {
    entries = fs.readdirSync(files.socketDir);
  } catch {
    return;
  }
  for (const entry of entries) {
    if (entry.startsWith('.s.PGSQL.')) fs.rmSync(path.join(files.socketDir, entry), { force: true });
  }
}

function fileSize(file: string): number {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
}

function readFrom(file: string, offset: number): string {
  try {
    return fs.readFileSync(file).subarray(offset).toString('utf8');
  } catch {
    return '';
  }
}
