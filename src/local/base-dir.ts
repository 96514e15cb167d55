/**
 * Where a LocalCluster keeps its files: the base directory (owned by the server user), a
 * directory per node, and a short socket directory under /tmp when the base directory is too long
 * for a Unix socket path. Node names are bounded so that every socket path fits.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { NodeFiles } from './node-setup.js';
import type { PgBinaries } from './pg-binaries.js';

/** Node names double as replication slot and application names: keep them to [a-z0-9_]. */
const NODE_NAME = /^[a-z][a-z0-9_]{0,39}$/;
export const MAX_NODE_NAME_LENGTH = 40;
/** sockaddr_un.sun_path holds 108 bytes including the terminating NUL. */
const MAX_SOCKET_PATH = 107;
const SOCKET_FILE_LENGTH = '/.s.PGSQL.65535'.length;

/** Whether `name` can name a new node ([a-z][a-z0-9_]*, at most 40 characters). */
export function isValidNodeName(name: string): boolean {
  return NODE_NAME.test(name);
}

export interface BaseDirLayout {
  baseDir: string;
  /** The topmost directory we created for baseDir (baseDir or a parent): stop() removes it whole. */
  createdDir: string | undefined;
  /** A short directory under /tmp for sockets when baseDir is too long for a socket path. */
  socketRoot: string | undefined;
}

/**
 * The cluster's base directory, owned by the server user. Its parents must be traversable by that
 * user (a mkdtemp under /root would not be), which is checked here with a clear message.
 */
export function prepareBaseDir(bins: PgBinaries, requested: string | undefined): BaseDirLayout {
  let createdDir: string | undefined;
  if (requested === undefined) {
    createdDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgrelay-'));
  } else {
    createdDir = fs.mkdirSync(requested, { recursive: true });
  }
  // /proc/PID/cwd shows resolved paths; node processes are found by comparing with it.
  if (createdDir !== undefined) createdDir = fs.realpathSync(createdDir);
  const baseDir = fs.realpathSync(requested ?? createdDir!);
  fs.chmodSync(baseDir, 0o755);
  bins.chown(baseDir);
  if (!bins.canUseDirectory(baseDir)) {
    if (createdDir !== undefined) fs.rmSync(createdDir, { recursive: true, force: true });
    throw new Error(
      `the ${bins.runAs?.name ?? 'current'} OS user cannot write to ${baseDir}: every parent directory must be ` +
        'traversable (chmod o+x), or pass another baseDir',
    );
  }
  const longestSocketPath = path.join(baseDir, 'x'.repeat(MAX_NODE_NAME_LENGTH)).length + SOCKET_FILE_LENGTH;
  let socketRoot: string | undefined;
  if (longestSocketPath > MAX_SOCKET_PATH) {
    socketRoot = fs.mkdtempSync('/tmp/pgr-');
    fs.chmodSync(socketRoot, 0o755);
    bins.chown(socketRoot);
  }
  return { baseDir, createdDir, socketRoot };
}

/** Where node `name` keeps its data, log and socket, under the cluster's layout. */
export function nodeFilesIn(layout: BaseDirLayout, name: string): NodeFiles {
  const nodeDir = path.join(layout.baseDir, name);
  const socketDir = layout.socketRoot === undefined ? nodeDir : path.join(layout.socketRoot, name);
  return { name, nodeDir, dataDir: path.join(nodeDir, 'data'), logFile: path.join(nodeDir, 'postgresql.log'), socketDir };
}

export function removeNodeDirs(files: NodeFiles): void {
  fs.rmSync(files.nodeDir, { recursive: true, force: true });
  if (files.socketDir !== files.nodeDir) fs.rmSync(files.socketDir, { recursive: true, force: true });
}

export function removeIfEmpty(dir: string): void {
  try {
    fs.rmdirSync(dir);
  } catch {
    // not empty or already gone: leave what is not ours
  }
}
