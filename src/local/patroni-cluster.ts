/**
 * A local Patroni cluster: one etcd member and three (or more) Patroni-managed PostgreSQL nodes on
 * loopback, from the machine's Debian packages (`etcd-server`, `patroni`, `python3-etcd`) and
 * PostgreSQL server binaries. Used by the Patroni integration tests and `npm run drill:patroni`.
 *
 * Facts it is built on (Patroni 3.0.2, etcd 3.4 on these machines):
 * - Patroni talks to etcd 3.4 through its `etcd3:` section over plain HTTP (the gRPC gateway).
 * - `synchronous_mode: true`: the leader has one synchronous standby; only it may be promoted.
 * - No /dev/watchdog here: `watchdog: off`. `loop_wait + 2 × retry_timeout ≤ ttl` (10 / 2 / 4).
 * - Everything runs as the `postgres` OS user when this process is root, fully detached (own
 *   session, stdin from /dev/null, output to a log file per daemon), in a temp dir this owns.
 * - The first node is started alone until it holds the leader key in etcd (it bootstrapped), then
 *   the others clone from it. A post_bootstrap script creates the application role and database;
 *   Patroni itself creates the superuser and the replication role.
 * - `use_pg_rewind: true` (with wal_log_hints) so a killed leader that comes back rejoins.
 *
 * Layout: baseDir/etcd/{data/, etcd.log}, baseDir/<member>/{data/, patroni.yml, patroni.log,
 * pgpass, .s.PGSQL.<port>}, baseDir/post-bootstrap.sh.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { stringify } from 'yaml';
import { harnessPort, requirePrograms, startDaemon } from './daemons.js';
import { registerForExitCleanup, unregisterForExitCleanup, type ExitCleanup } from './exit-cleanup.js';
import { httpJson } from './http-json.js';
import { isProcessAlive, killProcessesIn, killProcessesInSync, releaseOrphanSharedMemory, runningPostmasterPid, signalProcesses } from './node-processes.js';
import { HOST, NAMESPACE, patroniConfig, postBootstrapScript, SCOPE, type ConfigInputs } from './patroni-config.js';
import type { MemberRecord, PatroniClusterOptions, PatroniMember } from './patroni-types.js';
import { PgBinaries } from './pg-binaries.js';

export { httpJson } from './http-json.js';
export type { PatroniClusterOptions, PatroniMember } from './patroni-types.js';

const POLL_MS = 100;
export class PatroniCluster implements ExitCleanup {
  readonly user = 'app';
  readonly password = 'app';
  readonly database = 'app';
  readonly superuser = 'postgres';
  readonly superuserPassword = 'postgres';
  readonly scope = SCOPE;
  /** the etcd client URL (http://127.0.0.1:PORT) */
  etcdUrl = '';
  private etcdPid: number | undefined;
  private etcdDir = '';
  private readonly records = new Map<string, MemberRecord>();
  private readonly replicationPassword = randomBytes(18).toString('base64url');
  private readonly progress: (step: string) => void;
  private stopping: Promise<void> | undefined;

  private constructor(
    private readonly bins: PgBinaries,
    readonly baseDir: string,
    private readonly options: PatroniClusterOptions,
  ) {
    this.progress = options.onProgress ?? (() => {});
  }

  /** Starts etcd and the Patroni members; returns once every member streams and a sync standby exists. */
  static async create(options: PatroniClusterOptions = {}): Promise<PatroniCluster> {
    requirePrograms();
    const bins = PgBinaries.find();
    const baseDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgrelay-patroni-'));
    fs.chmodSync(baseDir, 0o755);
    bins.chown(baseDir);
    const cluster = new PatroniCluster(bins, baseDir, options);
    registerForExitCleanup(cluster);
    try {
      await cluster.build(options.members ?? 3);
    } catch (error) {
      // the files go with stop(): keep what the daemons said
      const tails = cluster.logTails();
      await cluster.stop().catch(() => {});
      if (error instanceof Error) error.message += `\n${tails}`;
      throw error;
    }
    return cluster;
  }

  /** Patroni REST API base URLs, one per member (what pgrelay's `patroni.endpoints` lists). */
  get endpoints(): string[] {
    return [...this.records.values()].map((m) => `http://${HOST}:${m.apiPort}`);
  }

  memberNames(): string[] {
    return [...this.records.keys()];
  }

  /** The PostgreSQL port of a member. */
  port(name: string): number {
    return this.record(name).pgPort;
  }

  apiUrl(name: string): string {
    return `http://${HOST}:${this.record(name).apiPort}`;
  }

  url(name: string, opts: { superuser?: boolean; database?: string } = {}): string {
    const [user, password] = opts.superuser ? [this.superuser, this.superuserPassword] : [this.user, this.password];
    return `postgres://${encodeURIComponent(user)}:${encodeURIComponent(password)}@${HOST}:${this.port(name)}/${encodeURIComponent(opts.database ?? this.database)}`;
  }

  /** `GET /cluster` from the first member that answers. */
  async members(): Promise<PatroniMember[]> {
    let last: unknown;
    for (const member of this.records.values()) {
      if (member.patroniPid === undefined) continue;
      try {
        const body = (await httpJson('GET', `http://${HOST}:${member.apiPort}/cluster`)) as { members?: PatroniMember[] };
        return body.members ?? [];
      } catch (error) {
        last = error;
      }
    }
    throw new Error(`no Patroni member answers GET /cluster: ${String(last)}`);
  }

  /** The current leader by Patroni (its REST API), if there is one. */
  async leader(): Promise<PatroniMember | undefined> {
    return (await this.members()).find((m) => m.role === 'leader');
  }

  /** The member name holding the leader key in etcd (Patroni's own answer, without its REST API). */
  async leaderKey(): Promise<string | undefined> {
    const key = Buffer.from(`${NAMESPACE}${SCOPE}/leader`).toString('base64');
    const body = (await httpJson('POST', `${this.etcdUrl}/v3/kv/range`, { key })) as { kvs?: { value?: string }[] };
    const value = body.kvs?.[0]?.value;
    return value === undefined ? undefined : Buffer.from(value, 'base64').toString('utf8');
  }

  /**
   * kill -9 of the leader's Patroni process and every process of its PostgreSQL (postmaster and
   * backends): what a host crash looks like to the others. Returns the killed member's name.
   */
  async killLeader(): Promise<string> {
    const leader = await this.leader();
    if (!leader) throw new Error('there is no leader to kill');
    await this.killMember(leader.name);
    return leader.name;
  }

  /** kill -9 of one member's Patroni and PostgreSQL processes. */
  async killMember(name: string): Promise<void> {
    const member = this.record(name);
    this.progress(`kill -9 ${name}`);
    const postmaster = runningPostmasterPid(member.dataDir);
    const pids = [member.patroniPid, postmaster].filter((p): p is number => p !== undefined);
    signalProcesses(pids, 'SIGKILL');
    member.patroniPid = undefined;
    await killProcessesIn(member.dataDir);
  }

  /** Starts a member's Patroni again (after killMember/killLeader); Patroni rewinds it if needed. */
  async restartMember(name: string): Promise<void> {
    const member = this.record(name);
    if (member.patroniPid !== undefined && isProcessAlive(member.patroniPid)) throw new Error(`member ${name} is running`);
    this.progress(`start patroni ${name}`);
    await killProcessesIn(member.dataDir); // leftovers of a killed postmaster
    this.startPatroni(member);
  }

  /**
   * Asks Patroni for a switchover from the current leader (to `target`, default the synchronous
   * standby) and waits until the new leader runs.
   */
  async switchover(target?: string): Promise<string> {
    const leader = await this.leader();
    if (!leader) throw new Error('there is no leader to switch over from');
    const body: Record<string, string> = { leader: leader.name };
    if (target !== undefined) body['candidate'] = target;
    this.progress(`switchover from ${leader.name}${target ? ` to ${target}` : ''}`);
    await httpJson('POST', `${this.apiUrl(leader.name)}/switchover`, body, 60_000);
    return this.waitFor('a new leader after switchover', 60_000, async () => {
      const next = (await this.members()).find((m) => m.role === 'leader' && m.state === 'running');
      return next && next.name !== leader.name ? next.name : undefined;
    });
  }

  /**
   * Patroni's maintenance mode (`PATCH /config {"pause": true}`): Patroni stops managing PostgreSQL
   * (no failover, no demotion), e.g. to start a split brain by hand in a test.
   */
  async setPaused(paused: boolean): Promise<void> {
    const leader = await this.leader();
    const api = leader ? this.apiUrl(leader.name) : this.endpoints[0]!;
    this.progress(paused ? 'pause Patroni' : 'resume Patroni');
    await httpJson('PATCH', `${api}/config`, { pause: paused });
    await this.waitFor(`Patroni ${paused ? 'paused' : 'resumed'}`, 60_000, async () => {
      const body = (await httpJson('GET', `${api}/cluster`)) as { pause?: boolean };
      return (body.pause === true) === paused ? true : undefined;
    });
  }

  /** Promotes a member's PostgreSQL behind Patroni's back (pg_promote as superuser): a split brain. */
  async promoteByHand(name: string): Promise<void> {
    this.progress(`pg_promote() on ${name}`);
    await this.query(name, 'SELECT pg_promote(true, 60)', [], { superuser: true, database: 'postgres' });
  }

  /**
   * Waits until `count` members run with a known timeline, the leader's is the highest, and (with
   * more than one member) a sync standby exists: the cluster is settled.
   */
  async waitForHealthy(timeoutMs = 120_000, count = this.records.size): Promise<PatroniMember[]> {
    return this.waitFor(`${count} healthy Patroni members`, timeoutMs, async () => {
      const members = await this.members().catch(() => undefined);
      if (!members || members.length < count) return undefined;
      const leader = members.find((m) => m.role === 'leader');
      if (!leader || members.some((m) => m.state !== 'running' && m.state !== 'streaming')) return undefined;
      if (count > 1 && !members.some((m) => m.role === 'sync_standby')) return undefined;
      if (members.some((m) => m.role !== 'leader' && typeof m.lag !== 'number')) return undefined;
      return members;
    });
  }

  /** Runs one statement on its own connection to a member and returns the rows. */
  async query<T = any>(name: string, sql: string, params: unknown[] = [], opts: { superuser?: boolean; database?: string } = {}): Promise<T[]> {
    const client = new pg.Client({ connectionString: this.url(name, opts), connectionTimeoutMillis: 10_000, query_timeout: 60_000 });
    client.on('error', () => {});
    await client.connect();
    try {
      return (await client.query(sql, params)).rows as T[];
    } finally {
      await client.end().catch(() => {});
    }
  }

  /** Kills every daemon and removes the files; idempotent. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      for (const member of this.records.values()) {
        if (member.patroniPid !== undefined) signalProcesses([member.patroniPid], 'SIGKILL');
        member.patroniPid = undefined;
        await killProcessesIn(member.dataDir).catch(() => {});
      }
      if (this.etcdPid !== undefined) signalProcesses([this.etcdPid], 'SIGKILL');
      if (this.etcdDir) await killProcessesIn(this.etcdDir).catch(() => {});
      this.stopSync();
    })();
    return this.stopping;
  }

  /** Synchronous teardown for the process-exit safety net. */
  stopSync(): void {
    unregisterForExitCleanup(this);
    for (const member of this.records.values()) {
      if (member.patroniPid !== undefined) signalProcesses([member.patroniPid], 'SIGKILL');
      member.patroniPid = undefined;
      killProcessesInSync(member.dataDir);
      releaseOrphanSharedMemory(member.dataDir);
    }
    if (this.etcdPid !== undefined) signalProcesses([this.etcdPid], 'SIGKILL');
    this.etcdPid = undefined;
    if (this.etcdDir) killProcessesInSync(this.etcdDir);
    fs.rmSync(this.baseDir, { recursive: true, force: true });
  }

  /** The last lines of every daemon's log, for an error message. */
  logTails(lines = 6): string {
    const files = [...this.records.values()].map((m) => [m.name, m.logFile] as const);
    if (this.etcdDir) files.unshift(['etcd', path.join(this.etcdDir, 'etcd.log')]);
    return files
      .map(([name, file]) => {
        let text = '';
        try {
          text = fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
        } catch {
          text = '(no log)';
        }
        return `--- ${name}\n${text}`;
      })
      .join('\n');
  }

  // ---------------------------------------------------------------- building

  private async build(count: number): Promise<void> {
    await this.startEtcd();
    this.writePostBootstrap();
    const names = Array.from({ length: count }, (_, i) => `node${i + 1}`);
    for (const name of names) await this.defineMember(name);
    const first = this.record(names[0]!);
    this.progress(`start patroni ${first.name} (bootstrap)`);
    this.startPatroni(first);
    await this.waitFor(`${first.name} to bootstrap and take the leader key`, 120_000, async () => {
      const key = await this.leaderKey().catch(() => undefined);
      if (key !== first.name) return undefined;
      const members = await this.members().catch(() => undefined);
      return members?.some((m) => m.name === first.name && m.role === 'leader' && m.state === 'running') ? true : undefined;
    });
    // post_bootstrap has run once the leader key is taken; the application role must log in
    await this.waitFor('the application role', 30_000, async () => ((await this.query(first.name, 'SELECT 1').catch(() => undefined)) ? true : undefined));
    for (const name of names.slice(1)) {
      this.progress(`start patroni ${name}`);
      this.startPatroni(this.record(name));
    }
    await this.waitForHealthy();
  }

  private async startEtcd(): Promise<void> {
    this.etcdDir = path.join(this.baseDir, 'etcd');
    this.bins.mkdir(this.etcdDir);
    const clientPort = await harnessPort();
    const peerPort = await harnessPort();
    this.etcdUrl = `http://${HOST}:${clientPort}`;
    const peerUrl = `http://${HOST}:${peerPort}`;
    this.progress('start etcd');
    const args = [
      '--name', 'etcd1',
      '--data-dir', path.join(this.etcdDir, 'data'),
      '--listen-client-urls', this.etcdUrl,
      '--advertise-client-urls', this.etcdUrl,
      '--listen-peer-urls', peerUrl,
      '--initial-advertise-peer-urls', peerUrl,
      '--initial-cluster', `etcd1=${peerUrl}`,
      '--initial-cluster-state', 'new',
      '--initial-cluster-token', path.basename(this.baseDir),
      '--log-outputs', 'stderr',
    ];
    // etcd 3.4 refuses to start on architectures other than amd64 (and arm64 from 3.5) without this
    const env: Record<string, string> = process.arch === 'x64' ? {} : { ETCD_UNSUPPORTED_ARCH: process.arch === 'arm64' ? 'arm64' : process.arch };
    this.etcdPid = startDaemon(this.bins, 'etcd', args, { cwd: this.etcdDir, logFile: path.join(this.etcdDir, 'etcd.log'), env });
    await this.waitFor('etcd to answer', 30_000, async () => {
      const body = (await httpJson('GET', `${this.etcdUrl}/health`).catch(() => undefined)) as { health?: string } | undefined;
      return body?.health === 'true' ? true : undefined;
    });
  }

  private writePostBootstrap(): void {
    const script = postBootstrapScript(path.join(this.bins.binDir, 'psql'), this);
    this.bins.writeFile(path.join(this.baseDir, 'post-bootstrap.sh'), script, 0o700);
  }


  private async defineMember(name: string): Promise<void> {
    const dir = path.join(this.baseDir, name);
    this.bins.mkdir(dir);
    const member: MemberRecord = {
      name,
      pgPort: await harnessPort(),
      apiPort: await harnessPort(),
      dir,
      dataDir: path.join(dir, 'data'),
      configFile: path.join(dir, 'patroni.yml'),
      logFile: path.join(dir, 'patroni.log'),
      patroniPid: undefined,
    };
    this.records.set(name, member);
    this.bins.writeFile(member.configFile, stringify(patroniConfig(member, this.configInputs())), 0o600);
  }


  private startPatroni(member: MemberRecord): void {
    member.patroniPid = startDaemon(this.bins, 'patroni', [member.configFile], { cwd: member.dir, logFile: member.logFile, env: { HOME: member.dir } });
  }


  private configInputs(): ConfigInputs {
    const { options, etcdUrl, baseDir, superuser, superuserPassword, replicationPassword } = this;
    return { options, etcdUrl, baseDir, binDir: this.bins.binDir, superuser, superuserPassword, replicationPassword };
  }

  private record(name: string): MemberRecord {
    const member = this.records.get(name);
    if (!member) throw new Error(`no Patroni member named ${name}`);
    return member;
  }

  /** Polls `probe` until it returns a value; the error names what was awaited and the logs to read. */
  private async waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = await probe().catch(() => undefined);
      if (value !== undefined) return value;
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (logs under ${this.baseDir})`);
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  }
}
