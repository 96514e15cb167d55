/**
 * A local, RDS-like PostgreSQL cluster built from the machine's server binaries: a primary, a
 * synchronous standby (Multi-AZ) and asynchronous read replicas, each a base backup of the
 * primary streaming through its own replication slot. Used by `pgrelay demo`, the integration
 * tests and the benchmarks.
 *
 * Layout: baseDir/<node>/{data/, postgresql.log, .s.PGSQL.<port>} and baseDir/pgpass (the libpq
 * passfile used for replication and rewind, so no password is ever on a command line).
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { isValidNodeName, MAX_NODE_NAME_LENGTH, nodeFilesIn, prepareBaseDir, removeIfEmpty, removeNodeDirs, type BaseDirLayout } from './base-dir.js';
import type { AddNodeOptions, LocalClusterOptions, LocalNode, LocalRole, NodeRecord } from './cluster-types.js';
import { registerForExitCleanup, unregisterForExitCleanup, type ExitCleanup } from './exit-cleanup.js';
import { findFreePort } from './free-port.js';
import { NodeClient, pollUntil, type ConnectOptions } from './node-client.js';
import { conninfo, passfile, type Settings } from './node-config.js';
import { killProcessesInSync, releaseOrphanSharedMemory, runningPostmasterPid, signalNode, type SignalName } from './node-processes.js';
import {
  baseBackup,
  initdbPrimary,
  isStandby,
  rewind,
  startOnFreePort,
  startPostgres,
  stopPostgres,
  stopPostgresSync,
  updateAutoConf,
  type BaseBackupProgress,
} from './node-setup.js';
import { PgBinaries } from './pg-binaries.js';
import { alterSystem, createRoles, type ClusterRoles, dropSlot, ensureSlot, setSynchronousStandbys, waitForReplay, waitForStreaming } from './replication.js';

export type { AddNodeOptions, LocalClusterOptions, LocalNode, LocalRole } from './cluster-types.js';
export type { SignalName } from './node-processes.js';
export type { BaseBackupProgress } from './node-setup.js';
export { isValidNodeName } from './base-dir.js';

const HOST = '127.0.0.1';
const START_ATTEMPTS = 5;

export class LocalCluster implements ExitCleanup {
  readonly baseDir: string;
  readonly nodes: LocalNode[] = [];
  readonly user: string;
  readonly password: string;
  readonly database: string;
  readonly superuser: string;
  readonly superuserPassword: string;

  private readonly records = new Map<string, NodeRecord>();
  private readonly passFile: string;
  private readonly roles: ClusterRoles;
  private readonly settings: Record<string, string | number>;
  private readonly progress: (step: string) => void;
  private readonly sql: NodeClient;
  private primaryName = 'primary';
  private stopping: Promise<void> | undefined;

  private constructor(
    private readonly bins: PgBinaries,
    private readonly layout: BaseDirLayout,
    options: LocalClusterOptions,
  ) {
    this.baseDir = layout.baseDir;
    this.user = options.user ?? 'app';
    this.password = options.password ?? 'app';
    this.database = options.database ?? 'app';
    this.superuser = options.superuser ?? 'postgres';
    this.superuserPassword = options.superuserPassword ?? 'postgres';
    this.settings = options.settings ?? {};
    this.progress = options.onProgress ?? (() => {});
    this.passFile = path.join(this.baseDir, 'pgpass');
    // A dedicated replication role, unless the application or superuser already has that name.
    const useSuperuser = [this.user, this.superuser].includes('replicator');
    this.roles = {
      user: this.user,
      password: this.password,
      database: this.database,
      superuser: this.superuser,
      replicationUser: useSuperuser ? this.superuser : 'replicator',
      replicationPassword: useSuperuser ? this.superuserPassword : randomBytes(18).toString('base64url'),
    };
    this.sql = new NodeClient(this, (name) => this.node(name));
  }

  /** Builds and starts the whole cluster; on failure everything built so far is torn down. */
  static async create(options: LocalClusterOptions = {}): Promise<LocalCluster> {
    const bins = PgBinaries.find(options.binDir);
    const layout = prepareBaseDir(bins, options.baseDir);
    const cluster = new LocalCluster(bins, layout, options);
    registerForExitCleanup(cluster);
    try {
      await cluster.build(options.standby ?? true, options.replicas ?? 2);
    } catch (err) {
      await cluster.stop().catch(() => {});
      throw err;
    }
    return cluster;
  }

  node(name: string): LocalNode {
    return this.record(name).node;
  }

  /** The node currently in the primary role (moved by promote()). */
  primary(): LocalNode {
    return this.record(this.primaryName).node;
  }

  url(name: string, opts: { superuser?: boolean; database?: string } = {}): string {
    const node = this.node(name);
    const [user, password] = opts.superuser ? [this.superuser, this.superuserPassword] : [this.user, this.password];
    const database = opts.database ?? this.database;
    const credentials = `${encodeURIComponent(user)}:${encodeURIComponent(password)}`;
    return `postgres://${credentials}@${node.host}:${node.port}/${encodeURIComponent(database)}`;
  }

  /** Runs one statement on its own short-lived connection and returns the rows. */
  async query<T = any>(name: string, sql: string, params: unknown[] = [], opts: ConnectOptions = {}): Promise<T[]> {
    return this.sql.query<T>(name, sql, params, opts);
  }

  async stopNode(name: string, mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
    this.progress(`stop ${name}`);
    await stopPostgres(this.bins, this.record(name).files, mode);
  }

  /** Starts a stopped node on its port; copes with a stale postmaster.pid and lingering backends. */
  async startNode(name: string): Promise<void> {
    this.progress(`start ${name}`);
    await startPostgres(this.bins, this.record(name).files);
  }

  /** SIGKILL and SIGTERM go to the postmaster only, SIGSTOP and SIGCONT to every process of the node. */
  async signalNode(name: string, signal: SignalName): Promise<void> {
    await signalNode(this.record(name).files.dataDir, name, signal);
  }

  postmasterPid(name: string): number | undefined {
    return runningPostmasterPid(this.record(name).files.dataDir);
  }

  /** Pauses WAL replay; returns once the node reports it paused (no new rows become visible). */
  async pauseReplay(name: string): Promise<void> {
    await this.sql.superQuery(name, 'SELECT pg_wal_replay_pause()');
    await pollUntil(`${name} to pause replay`, 10_000, async () => {
      const [row] = await this.sql.superQuery<{ state: string }>(name, 'SELECT pg_get_wal_replay_pause_state() AS state');
      return row?.state === 'paused' ? true : undefined;
    });
  }

  async resumeReplay(name: string): Promise<void> {
    await this.sql.superQuery(name, 'SELECT pg_wal_replay_resume()');
  }

  /**
   * Promotes a standby or replica and makes it the primary. The former primary is counted as a
   * 'replica' from then on: stop it, remove it, or rejoin it with repoint() (which rewinds it).
   * The new primary has no synchronous standby until one is repointed to it or added.
   */
  async promote(name: string): Promise<void> {
    const record = this.record(name);
    if (name === this.primaryName) return;
    this.progress(`promote ${name}`);
    const args = ['promote', '-w', '-t', '60', '-s', '-D', record.files.dataDir];
    await this.bins.run('pg_ctl', args, { cwd: record.files.nodeDir });
    // PostgreSQL 15 promotes without waiting for a checkpoint, so pg_control still names the old
    // timeline; pg_rewind (and anything reading pg_control_checkpoint()) would be misled by it.
    await this.query(name, 'CHECKPOINT', [], { superuser: true, database: 'postgres' });
    const former = this.records.get(this.primaryName);
    if (former !== undefined) former.node.role = 'replica';
    record.node.role = 'primary';
    record.upstream = undefined;
    this.primaryName = name;
  }

  /**
   * Someone else promoted `name` (pgrelay's managed failover) and re-pointed the other nodes to
   * it: the cluster's own record follows. `name` is the primary; the other nodes stream from it,
   * as standby or replica as `roleOf` tells (what the servers report); the former primary (dead,
   * or fenced on its old timeline) streams from nothing until it is removed or repointed.
   */
  adoptPrimary(name: string, roleOf: (node: string) => LocalRole | undefined): void {
    const record = this.record(name);
    if (name === this.primaryName) return;
    const former = this.records.get(this.primaryName);
    if (former !== undefined) {
      former.node.role = 'replica';
      former.upstream = undefined;
    }
    record.node.role = 'primary';
    record.upstream = undefined;
    this.primaryName = name;
    for (const other of this.records.values()) {
      if (other === record || other === former) continue;
      other.upstream = name;
      const role = roleOf(other.node.name);
      if (role === 'standby' || role === 'replica') other.node.role = role;
    }
  }

  /**
   * Makes `name` stream from `primaryName`, through a slot created there. A standby just gets a
   * new primary_conninfo and a reload (recovery_target_timeline='latest' makes it follow the new
   * timeline). A node that is not a standby (a former primary) is stopped, rewound with
   * pg_rewind onto the new timeline, and started as a standby.
   */
  async repoint(name: string, primaryName: string): Promise<void> {
    const record = this.record(name);
    const target = this.record(primaryName);
    if (name === primaryName) throw new Error(`cannot repoint ${name} to itself`);
    if (name === this.primaryName) throw new Error(`${name} is the primary; promote another node first`);
    this.progress(`repoint ${name} to ${primaryName}`);
    await ensureSlot(this.sql, primaryName, name);
    const upstreamSettings: Settings = {
      primary_conninfo: this.primaryConninfo(name, target.node),
      primary_slot_name: name,
    };
    if (!isStandby(record.files)) {
      await this.rejoin(record, target.node, upstreamSettings);
    } else if (runningPostmasterPid(record.files.dataDir) !== undefined) {
      await alterSystem(this.sql, name, upstreamSettings);
    } else {
      updateAutoConf(this.bins, record.files, upstreamSettings);
    }
    record.upstream = primaryName;
    if (record.node.role === 'primary') record.node.role = 'replica';
    await this.applySynchronousStandbys();
  }

  /**
   * A new standby or replica of the current primary, streaming when this returns; a standby
   * becomes its synchronous standby (see AddNodeOptions.synchronous). On failure nothing of the
   * new node is left: its processes, its slot and its files are removed.
   */
  async addNode(role: 'standby' | 'replica', opts: AddNodeOptions = {}): Promise<LocalNode> {
    const name = opts.name ?? this.nextNodeName(role === 'standby' ? 'standby' : 'replica');
    const step = this.stepReporter(opts.onStep);
    const isNew = !this.records.has(name);
    const synchronousNow = role === 'standby' && opts.synchronous !== 'later';
    try {
      const record = await this.buildFollower(name, role, this.primaryName, { step, onBaseBackupProgress: opts.onBaseBackupProgress });
      if (synchronousNow) await this.applySynchronousStandbys(step);
      await this.waitForStreaming([name], { step, sync: synchronousNow });
      return record.node;
    } catch (error) {
      if (isNew && this.records.has(name)) await this.removeNode(name, { onStep: opts.onStep }).catch(() => {});
      throw error;
    }
  }

  /** The first free name `prefix1`, `prefix2`, … */
  nextNodeName(prefix: string): string {
    for (let i = 1; ; i++) if (!this.records.has(`${prefix}${i}`)) return `${prefix}${i}`;
  }

  /** Stops a node, drops its slot on the primary (and its upstream) and deletes its files. */
  async removeNode(name: string, opts: { onStep?: (step: string) => void } = {}): Promise<void> {
    const record = this.record(name);
    if (name === this.primaryName) throw new Error(`${name} is the primary; promote another node first`);
    const step = this.stepReporter(opts.onStep);
    step(`remove ${name}`);
    this.forget(name);
    // First release the primary from waiting on it, should it be its synchronous standby.
    await this.applySynchronousStandbys(step);
    step(`stop ${name}`);
    await stopPostgres(this.bins, record.files, 'immediate');
    for (const holder of new Set([this.primaryName, record.upstream])) {
      if (holder !== undefined && this.records.has(holder) && this.postmasterPid(holder) !== undefined) {
        step(`drop slot ${name} on ${holder}`);
        await dropSlot(this.sql, holder, name);
      }
    }
    step(`delete files of ${name}`);
    removeNodeDirs(record.files);
  }

  /**
   * Waits until the node has replayed everything the primary had written when called. LSNs alone
   * would mislead across a failover: a node stuck on a diverged old timeline can be "ahead" of
   * the new primary, so the node must also be receiving the primary's timeline.
   */
  async waitForReplay(name: string, timeoutMs = 30_000): Promise<void> {
    if (name === this.primaryName) return;
    await waitForReplay(this.sql, this.primaryName, name, timeoutMs);
  }

  /** Stops every node (immediate), kills leftovers and removes the files. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.progress('stop cluster');
      const records = [...this.records.values()];
      await Promise.all(records.map((record) => stopPostgres(this.bins, record.files, 'immediate').catch(() => {})));
      this.stopSync(); // kills anything still there and removes the files
    })();
    return this.stopping;
  }

  /** Synchronous teardown for the process-exit safety net (ExitCleanup). */
  stopSync(): void {
    unregisterForExitCleanup(this);
    for (const record of this.records.values()) {
      stopPostgresSync(this.bins, record.files);
      killProcessesInSync(record.files.dataDir);
      releaseOrphanSharedMemory(record.files.dataDir);
      removeNodeDirs(record.files);
    }
    fs.rmSync(this.passFile, { force: true });
    if (this.layout.createdDir !== undefined) fs.rmSync(this.layout.createdDir, { recursive: true, force: true });
    else removeIfEmpty(this.baseDir);
    if (this.layout.socketRoot !== undefined) fs.rmSync(this.layout.socketRoot, { recursive: true, force: true });
  }

  // ---- building ----

  private async build(standby: boolean, replicas: number): Promise<void> {
    this.bins.writeFile(
      this.passFile,
      passfile([
        { host: HOST, user: this.roles.replicationUser, password: this.roles.replicationPassword },
        { host: HOST, user: this.superuser, password: this.superuserPassword },
      ]),
    );
    const primary = await this.defineNode('primary', 'primary', undefined);
    await this.initPrimary(primary);
    this.progress('start primary');
    await this.startNew(primary);
    this.progress('create roles and database');
    await createRoles(this.sql, 'primary', this.roles);

    const followers: [string, 'standby' | 'replica'][] = [];
    if (standby) followers.push(['standby1', 'standby']);
    for (let i = 1; i <= replicas; i++) followers.push([`replica${i}`, 'replica']);
    // Base backups run side by side: each is mostly waiting on its own checkpoint and copy. All
    // must have settled before a failure tears the cluster down, or a node could start after it.
    const built = await Promise.allSettled(followers.map(([name, role]) => this.buildFollower(name, role, 'primary')));
    const failure = built.find((result) => result.status === 'rejected');
    if (failure !== undefined) throw failure.reason;
    await this.applySynchronousStandbys();
    if (followers.length > 0) await this.waitForStreaming(followers.map(([name]) => name));
  }

  private async initPrimary(record: NodeRecord): Promise<void> {
    this.progress('initdb primary');
    const passwordFile = path.join(this.baseDir, '.initdb-password');
    this.bins.writeFile(passwordFile, `${this.superuserPassword}\n`);
    try {
      await initdbPrimary(this.bins, record.files, { superuser: this.superuser, passwordFile, settings: this.settings });
    } finally {
      fs.rmSync(passwordFile, { force: true });
    }
    updateAutoConf(this.bins, record.files, this.ownSettings(record));
  }

  /** Base backup of `sourceName` through a new slot there, per-node settings, start. */
  private async buildFollower(
    name: string,
    role: 'standby' | 'replica',
    sourceName: string,
    hooks: { step?: (step: string) => void; onBaseBackupProgress?: (progress: BaseBackupProgress) => void } = {},
  ): Promise<NodeRecord> {
    const step = hooks.step ?? this.progress;
    const source = this.record(sourceName).node;
    const record = await this.defineNode(name, role, sourceName);
    step(`replication slot ${name} on ${sourceName}`);
    await ensureSlot(this.sql, sourceName, name);
    step(`base backup ${name}`);
    await baseBackup(this.bins, record.files, {
      sourceConninfo: this.primaryConninfo(name, source),
      slotName: name,
      passFile: this.passFile,
      onProgress: hooks.onBaseBackupProgress,
    });
    updateAutoConf(this.bins, record.files, this.ownSettings(record));
    step(`start ${name}`);
    await this.startNew(record);
    return record;
  }

  /** Registers a node with a free port and creates its directories. */
  private async defineNode(name: string, role: LocalRole, upstream: string | undefined): Promise<NodeRecord> {
    if (!isValidNodeName(name)) {
      throw new Error(`invalid node name "${name}": use [a-z][a-z0-9_]*, at most ${MAX_NODE_NAME_LENGTH} characters`);
    }
    if (this.records.has(name)) throw new Error(`node ${name} already exists`);
    const files = nodeFilesIn(this.layout, name);
    const node: LocalNode = { name, role, host: HOST, port: await findFreePort(HOST), dataDir: files.dataDir, logFile: files.logFile };
    const record: NodeRecord = { node, files, upstream };
    this.records.set(name, record);
    this.nodes.push(node);
    this.bins.mkdir(files.nodeDir);
    if (files.socketDir !== files.nodeDir) this.bins.mkdir(files.socketDir);
    return record;
  }

  /** First start of a new node: a port taken since we picked it is replaced by another. */
  private async startNew(record: NodeRecord): Promise<void> {
    await startOnFreePort(this.bins, record.files, async () => (record.node.port = await findFreePort(HOST)), START_ATTEMPTS);
  }

  /**
   * Settings that belong to one node and must not be inherited through a base backup or rewind.
   * In particular synchronous_standby_names is cleared: a copy of the primary's would make this
   * node, once promoted, wait forever for a synchronous partner on every commit.
   */
  private ownSettings(record: NodeRecord): Settings {
    const settings: Settings = {
      port: record.node.port,
      unix_socket_directories: record.files.socketDir,
      cluster_name: record.node.name,
      synchronous_standby_names: '',
    };
    if (record.upstream !== undefined) {
      settings['primary_conninfo'] = this.primaryConninfo(record.node.name, this.record(record.upstream).node);
      settings['primary_slot_name'] = record.node.name;
    }
    return settings;
  }

  /** How `name` connects to its upstream; application_name is what synchronous_standby_names matches. */
  private primaryConninfo(name: string, upstream: LocalNode): string {
    return conninfo({
      host: upstream.host,
      port: upstream.port,
      user: this.roles.replicationUser,
      passfile: this.passFile,
      application_name: name,
    });
  }

  // ---- topology changes ----

  private async rejoin(record: NodeRecord, target: LocalNode, upstreamSettings: Settings): Promise<void> {
    this.progress(`rewind ${record.node.name}`);
    await stopPostgres(this.bins, record.files, 'fast');
    // pg_rewind reads the source's timeline from its pg_control, which a freshly promoted node
    // (promoted by us or by pgrelay's pg_promote()) only updates at its next checkpoint.
    await this.query(target.name, 'CHECKPOINT', [], { superuser: true, database: 'postgres' });
    const source = conninfo({ host: target.host, port: target.port, user: this.superuser, dbname: 'postgres' });
    await rewind(this.bins, record.files, source, this.passFile);
    updateAutoConf(this.bins, record.files, { ...this.ownSettings(record), ...upstreamSettings });
    await startPostgres(this.bins, record.files);
  }

  /**
   * Points the primary's synchronous_standby_names at the standbys that follow it (a standby
   * added with `synchronous: 'later'` becomes synchronous here); returns once the primary runs
   * with it.
   */
  async applySynchronousStandbys(step: (step: string) => void = this.progress): Promise<void> {
    const primary = this.records.get(this.primaryName);
    if (primary === undefined || this.postmasterPid(this.primaryName) === undefined) return;
    const standbys = [...this.records.values()]
      .filter((r) => r.node.role === 'standby' && r.upstream === this.primaryName)
      .map((r) => r.node.name);
    await setSynchronousStandbys(this.sql, this.primaryName, standbys, step);
  }

  /**
   * Until the primary streams to each named node, and a synchronous standby (if any; `sync`
   * overrides whether one is expected) is 'sync'.
   */
  private async waitForStreaming(names: readonly string[], opts: { step?: (step: string) => void; sync?: boolean } = {}): Promise<void> {
    (opts.step ?? this.progress)('wait for streaming');
    const followsPrimary = (record: NodeRecord) => record.upstream === this.primaryName;
    const expectSync = opts.sync ?? [...this.records.values()].some((r) => r.node.role === 'standby' && followsPrimary(r));
    const expected = () => names.filter((name) => this.records.has(name) && followsPrimary(this.record(name)));
    await waitForStreaming(this.sql, this.primaryName, names, expected, expectSync);
  }

  // ---- helpers ----

  private record(name: string): NodeRecord {
    const record = this.records.get(name);
    if (record === undefined) {
      throw new Error(`no node named "${name}" in this cluster (nodes: ${[...this.records.keys()].join(', ')})`);
    }
    return record;
  }

  private forget(name: string): void {
    this.records.delete(name);
    const index = this.nodes.findIndex((node) => node.name === name);
    if (index >= 0) this.nodes.splice(index, 1);
  }

  /** The cluster's own progress, and the caller's for one call. */
  private stepReporter(onStep: ((step: string) => void) | undefined): (step: string) => void {
    if (onStep === undefined) return this.progress;
    return (step) => {
      this.progress(step);
      onStep(step);
    };
  }
}
