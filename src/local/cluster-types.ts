/** The shapes a LocalCluster speaks in: its nodes, roles, options, and its record of one node. */
import type { BaseBackupProgress, NodeFiles } from './node-setup.js';

export type LocalRole = 'primary' | 'standby' | 'replica';

export interface LocalNode {
  name: string;
  role: LocalRole;
  host: string;
  port: number;
  dataDir: string;
  logFile: string;
}

export interface LocalClusterOptions {
  /** Default: a fresh directory under os.tmpdir(). */
  baseDir?: string;
  /** Asynchronous read replicas; default 2. */
  replicas?: number;
  /** A synchronous standby; default true. */
  standby?: boolean;
  /** Application credentials; default app/app/app. */
  user?: string;
  password?: string;
  database?: string;
  /** Default postgres/postgres. */
  superuser?: string;
  superuserPassword?: string;
  /** Extra postgresql.conf settings for every node. */
  settings?: Record<string, string | number>;
  /** One call per visible step ("initdb primary", "base backup replica1", …). */
  onProgress?: (step: string) => void;
  /** Use these server binaries instead of searching for the newest installed. */
  binDir?: string;
}

export interface AddNodeOptions {
  /** Default: the first free standbyN / replicaN. */
  name?: string;
  /** Each step of this call, in the words of the cluster's onProgress ("base backup replica3", "start replica3", …). */
  onStep?: (step: string) => void;
  /** pg_basebackup's --progress reports while the node's snapshot is copied. */
  onBaseBackupProgress?: (progress: BaseBackupProgress) => void;
  /**
   * A standby only. 'now' (default): it becomes the primary's synchronous standby at once.
   * 'later': synchronous_standby_names is left alone until applySynchronousStandbys(), so that
   * commits do not wait while the new standby works through its backlog.
   */
  synchronous?: 'now' | 'later';
}

export interface NodeRecord {
  node: LocalNode;
  files: NodeFiles;
  /** The node this one streams from (undefined for a primary). */
  upstream: string | undefined;
}
