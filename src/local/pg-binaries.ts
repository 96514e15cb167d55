/**
 * Finds the machine's PostgreSQL server binaries and runs them as the right OS user.
 *
 * PostgreSQL refuses to run as root, so when this process is root every program (initdb, pg_ctl,
 * pg_basebackup, pg_rewind, and through pg_ctl the postmaster) runs as the `postgres` OS user, and
 * every file we write for it is chowned to that user.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export type PgProgram = 'initdb' | 'pg_ctl' | 'pg_basebackup' | 'pg_rewind' | 'postgres';

const REQUIRED_PROGRAMS: readonly PgProgram[] = ['initdb', 'pg_ctl', 'pg_basebackup', 'pg_rewind', 'postgres'];

/** Reloading primary_conninfo (repoint) and wal_keep_size need PostgreSQL 13 or later. */
const MIN_MAJOR_VERSION = 13;

/** Output kept from a command, so that a chatty program cannot grow memory without bound. */
const MAX_OUTPUT_CHARS = 64 * 1024;

const DEFAULT_COMMAND_TIMEOUT_MS = 180_000;

export interface RunAsUser {
  name: string;
  uid: number;
  gid: number;
}

export interface RunOptions {
  /** Extra environment variables (e.g. PGPASSFILE); never put a password in `args`. */
  env?: Record<string, string>;
  /** Working directory; it must be reachable by the user the program runs as. */
  cwd?: string;
  timeoutMs?: number;
  /** Called with each piece of the program's stderr as it arrives (progress output). */
  onStderr?: (text: string) => void;
}

export interface CommandResult {
  stdout: string;
  stderr: string;
}

/** A PostgreSQL program exited with a failure; the message carries its stderr (never a password). */
export class PgCommandError extends Error {
  constructor(
    readonly program: string,
    readonly args: readonly string[],
    readonly exitCode: number | null,
    readonly output: string,
  ) {
    super(`${program} ${args.join(' ')} failed (exit ${exitCode ?? 'signal'}): ${output.trim().slice(-2000)}`);
    this.name = 'PgCommandError';
  }
}

export class PgBinaries {
  private constructor(
    readonly binDir: string,
    readonly majorVersion: number,
    /** Set when this process is root: the OS user the server programs run as. */
    readonly runAs: RunAsUser | undefined,
  ) {}

  /**
   * Locates the server binaries (highest installed version first) and decides which OS user runs
   * them. Throws with an installation hint when none are found.
   */
  static find(binDir?: string): PgBinaries {
    const dir = binDir ?? candidateBinDirs().find(hasAllPrograms);
    if (dir === undefined || !hasAllPrograms(dir)) {
      throw new Error(
        'No PostgreSQL server binaries found (looked in /usr/lib/postgresql/*/bin, /usr/pgsql-*/bin, ' +
          '`pg_config --bindir` and PATH). Install them with: apt-get install -y postgresql',
      );
    }
    const majorVersion = readMajorVersion(dir);
    if (majorVersion < MIN_MAJOR_VERSION) {
      throw new Error(`PostgreSQL ${majorVersion} in ${dir} is too old; the local cluster needs ${MIN_MAJOR_VERSION} or later`);
    }
    return new PgBinaries(dir, majorVersion, resolveRunAsUser());
  }

  path(program: PgProgram): string {
    return path.join(this.binDir, program);
  }

  /** Runs a program to completion; rejects with PgCommandError on a non-zero exit or a timeout. */
  run(program: PgProgram, args: readonly string[], options: RunOptions = {}): Promise<CommandResult> {
    return new Promise((resolve, reject) => {
      const child = spawn(this.path(program), args, {
        ...this.spawnIdentity(),
        cwd: options.cwd ?? '/',
        env: this.environment(options.env),
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (chunk: Buffer) => (stdout = appendCapped(stdout, chunk)));
      child.stderr.on('data', (chunk: Buffer) => {
        stderr = appendCapped(stderr, chunk);
        options.onStderr?.(chunk.toString('utf8'));
      });
      const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS);
      child.on('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      // 'close' (not 'exit') so that all output has arrived. pg_ctl start is safe here: with -l
      // the postmaster's stdout/stderr go to the log file, so it does not hold our pipes open.
      child.on('close', (code) => {
        clearTimeout(timer);
        if (code === 0) resolve({ stdout, stderr });
        else reject(new PgCommandError(program, args, code, stderr + stdout));
      });
    });
  }

  /** Synchronous variant for the process-exit safety net; returns the exit status, never throws. */
  runSync(program: PgProgram, args: readonly string[], options: RunOptions = {}): number | null {
    const result = spawnSync(this.path(program), args, {
      ...this.spawnIdentity(),
      cwd: options.cwd ?? '/',
      env: this.environment(options.env),
      stdio: 'ignore',
      timeout: options.timeoutMs ?? 30_000,
    });
    return result.status;
  }

  /** Gives a file or directory we created to the user the server runs as (no-op when not root). */
  chown(target: string): void {
    if (this.runAs !== undefined) fs.chownSync(target, this.runAs.uid, this.runAs.gid);
  }

  /** Writes a file readable by the server user; `mode` 0o600 for secrets such as a passfile. */
  writeFile(target: string, text: string, mode = 0o600): void {
    fs.writeFileSync(target, text, { mode });
    fs.chmodSync(target, mode); // writeFileSync keeps the old mode of an existing file
    this.chown(target);
  }

  /** Creates a directory owned by the server user. */
  mkdir(target: string, mode = 0o700): void {
    fs.mkdirSync(target, { recursive: true, mode });
    fs.chmodSync(target, mode);
    this.chown(target);
  }

  /** True when the server user can enter and write `dir` (all its parents must be traversable). */
  canUseDirectory(dir: string): boolean {
    if (this.runAs === undefined) {
      try {
        fs.accessSync(dir, fs.constants.W_OK | fs.constants.X_OK);
        return true;
      } catch {
        return false;
      }
    }
    const result = spawnSync('test', ['-w', dir, '-a', '-x', dir], { ...this.spawnIdentity(), cwd: '/', stdio: 'ignore' });
    return result.status === 0;
  }

  private spawnIdentity(): { uid?: number; gid?: number } {
    return this.runAs === undefined ? {} : { uid: this.runAs.uid, gid: this.runAs.gid };
  }

  /**
   * The caller's environment minus libpq/server variables (PGHOST, PGPORT, PGDATA, PGPASSWORD…),
   * which would silently redirect or alter what the programs do.
   */
  private environment(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = {};
    for (const [key, value] of Object.entries(process.env)) {
      if (!key.startsWith('PG')) env[key] = value;
    }
    // root's HOME is not readable by postgres; libpq then falls back to the passwd entry.
    if (this.runAs !== undefined) delete env['HOME'];
    return { ...env, ...extra };
  }
}

function appendCapped(current: string, chunk: Buffer): string {
  const next = current + chunk.toString('utf8');
  return next.length > MAX_OUTPUT_CHARS ? next.slice(-MAX_OUTPUT_CHARS) : next;
}

/** Candidate bin directories, highest version first, then pg_config's and PATH's. */
function candidateBinDirs(): string[] {
  const versioned = [
    ...versionedDirs('/usr/lib/postgresql', (entry) => entry, (entry) => path.join('/usr/lib/postgresql', entry, 'bin')),
    ...versionedDirs('/usr', (entry) => entry.match(/^pgsql-(.+)$/)?.[1], (entry) => path.join('/usr', entry, 'bin')),
  ].sort((a, b) => b.version - a.version);
  const dirs = versioned.map((candidate) => candidate.dir);
  const fromPgConfig = spawnSync('pg_config', ['--bindir'], { encoding: 'utf8' });
  if (fromPgConfig.status === 0) dirs.push(fromPgConfig.stdout.trim());
  for (const dir of (process.env['PATH'] ?? '').split(path.delimiter)) if (dir !== '') dirs.push(dir);
  return dirs;
}

function versionedDirs(
  root: string,
  versionOf: (entry: string) => string | undefined,
  binDirOf: (entry: string) => string,
): { version: number; dir: string }[] {
  let entries: string[];
  try {
    entries = fs.readdirSync(root);
  } catch {
    return [];
  }
  const found: { version: number; dir: string }[] = [];
  for (const entry of entries) {
    const version = Number.parseFloat(versionOf(entry) ?? '');
    if (Number.isFinite(version)) found.push({ version, dir: binDirOf(entry) });
  }
  return found;
}

function hasAllPrograms(dir: string): boolean {
  return REQUIRED_PROGRAMS.every((program) => {
    try {
      fs.accessSync(path.join(dir, program), fs.constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

function readMajorVersion(binDir: string): number {
  const result = spawnSync(path.join(binDir, 'postgres'), ['--version'], { encoding: 'utf8' });
  const match = /\(PostgreSQL\)\s+(\d+)/.exec(result.stdout ?? '');
  if (match === null) throw new Error(`Cannot tell the PostgreSQL version of ${binDir}: ${result.stderr ?? ''}`);
  return Number(match[1]);
}

/** When root, the `postgres` OS user (created by the distribution's postgresql package). */
function resolveRunAsUser(): RunAsUser | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const uid = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
  const gid = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' });
  if (uid.status !== 0 || gid.status !== 0) {
    throw new Error(
      'Running as root, but there is no "postgres" OS user to run PostgreSQL as ' +
        '(PostgreSQL refuses root). Create it with: apt-get install -y postgresql',
    );
  }
  return { name: 'postgres', uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
}
