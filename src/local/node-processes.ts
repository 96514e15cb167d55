/**
 * Finding and killing the processes of one node (Linux /proc).
 *
 * Why not `pgrep -f dataDir`: only the postmaster's command line names the data directory; its
 * backends overwrite their titles ("postgres: app app 127.0.0.1(5432) idle"). But the postmaster
 * chdirs into its data directory and every backend inherits that, so `/proc/PID/cwd` identifies
 * all of a node's processes, including backends left behind after a `kill -9` of the postmaster.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const POLL_MS = 20;

/** The PID in the first line of `postmaster.pid`, whether or not that process still lives. */
export function readPostmasterPid(dataDir: string): number | undefined {
  const lines = readPidFileLines(dataDir);
  const pid = Number(lines?.[0]);
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

/**
 * Alive and not a zombie. A killed postmaster is re-parented to PID 1, which in containers often
 * does not reap children: `kill(pid, 0)` then still succeeds on the zombie.
 */
export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The state letter follows the command name, which is in parentheses and may contain spaces.
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** Every live process whose working directory is `dir` or below it (never this process). */
export function findProcessesIn(dir: string): number[] {
  const pids: number[] = [];
  let entries: string[];
  try {
    entries = fs.readdirSync('/proc');
  } catch {
    return pids;
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    let cwd: string;
    try {
      cwd = fs.readlinkSync(`/proc/${pid}/cwd`); // fails for zombies and vanished processes
    } catch {
      continue;
    }
    if (cwd === dir || cwd.startsWith(dir + path.sep)) pids.push(pid);
  }
  return pids;
}

/** The postmaster of `dataDir` if it is running (the PID file's process, living in that dir). */
export function runningPostmasterPid(dataDir: string): number | undefined {
  const pid = readPostmasterPid(dataDir);
  if (pid === undefined || !isProcessAlive(pid)) return undefined;
  let cwd: string | undefined;
  try {
    cwd = fs.readlinkSync(`/proc/${pid}/cwd`);
  } catch {
    cwd = undefined; // unreadable: trust the PID file
  }
  return cwd === undefined || cwd === dataDir ? pid : undefined;
}

export function signalProcesses(pids: readonly number[], signal: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}

export type SignalName = 'SIGKILL' | 'SIGSTOP' | 'SIGCONT' | 'SIGTERM';

/**
 * Signals the node whose data directory is `dataDir`. SIGKILL and SIGTERM go to the postmaster only
 * (SIGKILL is "kill -9 the primary": its backends then die on their own, or are killed by a later
 * stop or start). SIGSTOP and SIGCONT go to every process of the node: freezing only the postmaster
 * would leave open connections working.
 */
export async function signalNode(dataDir: string, name: string, signal: SignalName): Promise<void> {
  if (signal === 'SIGSTOP' || signal === 'SIGCONT') {
    const pids = findProcessesIn(dataDir);
    if (pids.length === 0) throw new Error(`node ${name} is not running`);
    signalProcesses(pids, signal);
    return;
  }
  const pid = runningPostmasterPid(dataDir);
  if (pid === undefined) throw new Error(`node ${name} is not running`);
  process.kill(pid, signal);
  if (signal === 'SIGKILL' && !(await waitForExit(pid, 5_000))) {
    throw new Error(`postmaster ${pid} of ${name} survived SIGKILL`);
  }
}

/** SIGCONT (a stopped process cannot die) then SIGKILL everything in `dir`; waits until gone. */
export async function killProcessesIn(dir: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pids = findProcessesIn(dir);
    if (pids.length === 0) return;
    if (Date.now() > deadline) throw new Error(`processes ${pids.join(', ')} in ${dir} do not die`);
    signalProcesses(pids, 'SIGCONT');
    signalProcesses(pids, 'SIGKILL');
    await delay(POLL_MS);
  }
}

/** Synchronous variant for the process-exit handler (no event loop there). */
export function killProcessesInSync(dir: string, timeoutMs = 5_000): void {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pids = findProcessesIn(dir);
    if (pids.length === 0 || Date.now() > deadline) return;
    signalProcesses(pids, 'SIGCONT');
    signalProcesses(pids, 'SIGKILL');
    sleepSync(POLL_MS);
  }
}

/** Resolves once `pid` has exited (or become a zombie); false on timeout. */
export async function waitForExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isProcessAlive(pid)) {
    if (Date.now() > deadline) return false;
    await delay(POLL_MS);
  }
  return true;
}

/**
 * After a postmaster died without cleaning up (kill -9) and the node is then deleted rather than
 * restarted, its System V shared memory segment would stay until reboot; `postmaster.pid` names
 * it (line 7: key and id). Removed only when it still matches and nobody is attached.
 */
export function releaseOrphanSharedMemory(dataDir: string): void {
  const fields = readPidFileLines(dataDir)?.[6]?.trim().split(/\s+/);
  if (fields === undefined || fields.length < 2) return;
  const [key, shmid] = fields.map(Number);
  let table: string;
  try {
    table = fs.readFileSync('/proc/sysvipc/shm', 'utf8');
  } catch {
    return;
  }
  for (const line of table.split('\n').slice(1)) {
    const cols = line.trim().split(/\s+/).map(Number);
    // columns: key shmid perms size cpid lpid nattch ...
    if (cols[0] === key && cols[1] === shmid && cols[6] === 0) {
      spawnSync('ipcrm', ['-m', String(shmid)], { stdio: 'ignore' });
    }
  }
}

function readPidFileLines(dataDir: string): string[] | undefined {
  try {
    return fs.readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n');
  } catch {
    return undefined;
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}
