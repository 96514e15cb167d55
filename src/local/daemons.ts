/**
 * The daemons of a local Patroni cluster (etcd, patroni): started fully detached, on ports from
 * below the ephemeral range, after checking that the programs are installed.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomInt } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import type { PgBinaries } from './pg-binaries.js';

const HOST = '127.0.0.1';
/**
 * Ports for the daemons come from below Linux's ephemeral range (32768–60999 by default), which
 * port-0 allocations and every outgoing connection on this busy machine draw from: a port found
 * free there was seen taken by someone else before PostgreSQL bound it ("could not create any
 * TCP/IP sockets"), and Patroni does not recover such a member by itself.
 */
const PORT_RANGE: readonly [number, number] = [20_000, 32_000];
const handedOut = new Set<number>();

/**
 * Starts a daemon fully detached: its own session (setsid), stdin from /dev/null, stdout and
 * stderr appended to `logFile`, as the postgres OS user when this process is root.
 */
export function startDaemon(bins: PgBinaries, command: string, args: string[], opts: { cwd: string; logFile: string; env?: Record<string, string> }): number {
  const log = fs.openSync(opts.logFile, 'a', 0o600);
  bins.chown(opts.logFile);
  let child: ChildProcess;
  try {
    const env: NodeJS.ProcessEnv = {};
    for (const [key, value] of Object.entries(process.env)) if (!key.startsWith('PG') && !key.startsWith('ETCD') && !key.startsWith('PATRONI')) env[key] = value;
    child = spawn(command, args, {
      cwd: opts.cwd,
      env: { ...env, ...opts.env },
      detached: true,
      stdio: ['ignore', log, log],
      ...(bins.runAs ? { uid: bins.runAs.uid, gid: bins.runAs.gid } : {}),
    });
  } finally {
    fs.closeSync(log);
  }
  child.on('error', () => {});
  child.unref();
  if (child.pid === undefined) throw new Error(`could not start ${command}`);
  return child.pid;
}

/** A free loopback port from PORT_RANGE, not handed out before by this process. */
export async function harnessPort(): Promise<number> {
  for (let attempt = 0; attempt < 1000; attempt++) {
    const port = randomInt(PORT_RANGE[0], PORT_RANGE[1]);
    if (handedOut.has(port) || !(await canBind(port))) continue;
    handedOut.add(port);
    return port;
  }
  throw new Error(`no free port in ${PORT_RANGE[0]}–${PORT_RANGE[1]}`);
}

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.unref();
    server.once('error', () => resolve(false));
    server.listen(port, HOST, () => server.close(() => resolve(true)));
  });
}

export function requirePrograms(): void {
  for (const program of ['patroni', 'etcd']) {
    if (spawnSync('which', [program], { stdio: 'ignore' }).status !== 0) {
      throw new Error(`${program} is not installed: apt-get install -y patroni etcd-server python3-etcd (.ci/run does this)`);
    }
  }
}
