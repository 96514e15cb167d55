/**
 * `npm run drill` — managed failover timings (issue 6).
 *
 *   npm run drill -- [--rounds 5] [--stop-rounds 1] [--writers 4] [--readers 2] [--no-switchover] [--no-standby] [--out bench-results]
 *
 * Each round builds a fresh local cluster (primary, synchronous standby, two async replicas) and
 * starts pgrelay in this process with the default health settings (every 1 s, timeout 1 s,
 * 3 failures) and failover.mode managed, while clients write (INSERT … RETURNING, as fast as they
 * can, each on its own connection) and read through it:
 * - kill rounds: `kill -9` of the primary's postmaster. Write unavailability = from the kill to
 *   the first write acknowledged by the new primary (any client), and to every client's first
 *   (the worst client). Target ≤ 1 s.
 * - stop rounds: SIGSTOP of every process of the primary (connects hang instead of being
 *   refused): detection time against interval × failures + timeout.
 * - a switchover round: POST /admin/switchover under the same load: longest pause of a client,
 *   errors (target: none).
 * - a standby round: `kill -9` of the synchronous standby (commits wait for it): the longest pause
 *   of a client until a replica is the synchronous standby, then `kill -9` of the primary: the
 *   replica is promoted with every acknowledged write.
 * Every round checks that every acknowledged write is on the new primary. Prints a markdown
 * table and writes OUT/failover-drill-latest.{md,json} and a dated copy.
 */
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { stringify } from 'yaml';
import { App } from '../app.js';
import type { NodeDownEvent } from '../cluster/health-checker.js';
import { parseConfig } from '../config/load.js';
import { LocalCluster } from '../local/cluster.js';
import { createLogger, silentLogger, type Logger } from '../util/log.js';
import { median } from './stats.js';
import { adminHeaders, DRILL_ADMIN_TOKEN, ms, sleep, until } from './drill-common.js';

interface Options {
  rounds: number;
  stopRounds: number;
  writers: number;
  readers: number;
  switchover: boolean;
  standby: boolean;
  out: string;
}

interface KillRound {
  round: number;
  /** from the kill to the primary marked down, and pgrelay's own decision-to-writes figure */
  detectMs: number;
  promoteMs: number;
  /** from the kill to the first write acknowledged by the new primary (any client) */
  unavailableMs: number;
  /** from the kill to the last client's first acknowledged write on the new primary */
  worstClientMs: number;
  writerErrors: number;
  readerErrors: number;
  acknowledged: number;
  lost: number;
}

interface StopRound {
  round: number;
  detectMs: number;
  /** interval × failures + timeout */
  boundMs: number;
  unavailableMs: number;
  writerErrors: number;
  readerErrors: number;
  acknowledged: number;
  lost: number;
}

interface SwitchoverRound {
  from: string;
  to: string;
  /** pgrelay's own figure: how long units for the primary were held */
  pausedMs: number;
  /** the longest time between two acknowledged writes of one client */
  longestPauseMs: number;
  errors: number;
  acknowledged: number;
  lost: number;
}

interface StandbyRound {
  /** the longest time between two acknowledged writes of one client (the standby's loss, then the failover) */
  standbyPauseMs: number;
  /** the node made the synchronous standby, and the one promoted after the primary's kill */
  synchronous: string;
  promoted: string | undefined;
  errors: number;
  acknowledged: number;
  lost: number;
}

const TABLE = 'failover_drill';
const HEALTH = { interval_ms: 1000, timeout_ms: 1000, failures: 3 };

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  const started = Date.now();
  const say = (text: string): void => console.error(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${text}`);
  const log = process.env['PGRELAY_DRILL_LOG'] ? createLogger({ level: process.env['PGRELAY_DRILL_LOG'], pretty: true }) : silentLogger;
  const kills: KillRound[] = [];
  const stops: StopRound[] = [];
  let switchover: SwitchoverRound | undefined;
  let standby: StandbyRound | undefined;
  for (let round = 1; round <= options.rounds; round++) {
    const result = await withSetup(options, log, say, (setup) => killRound(setup, round));
    kills.push(result);
    say(`kill round ${round}: writes again after ${ms(result.unavailableMs)} (worst client ${ms(result.worstClientMs)}; detected ${ms(result.detectMs)}, promoted ${ms(result.promoteMs)}); lost ${result.lost}`);
  }
  for (let round = 1; round <= options.stopRounds; round++) {
    const result = await withSetup(options, log, say, (setup) => stopRound(setup, round));
    stops.push(result);
    say(`stop round ${round}: detected after ${ms(result.detectMs)} (bound ${ms(result.boundMs)}), writes again after ${ms(result.unavailableMs)}; lost ${result.lost}`);
  }
  if (options.switchover) {
    switchover = await withSetup(options, log, say, (setup) => switchoverRound(setup));
    say(`switchover ${switchover.from} → ${switchover.to}: held ${ms(switchover.pausedMs)}, longest client pause ${ms(switchover.longestPauseMs)}, errors ${switchover.errors}, lost ${switchover.lost}`);
  }
  if (options.standby) {
    standby = await withSetup(options, log, say, (setup) => standbyRound(setup));
    say(`standby round: longest client pause ${ms(standby.standbyPauseMs)}, ${standby.synchronous} synchronous, ${standby.promoted ?? 'nothing'} promoted after the primary's kill, errors ${standby.errors}, lost ${standby.lost}`);
  }
  const report = { date: new Date().toISOString(), options, health: HEALTH, kills, stops, switchover, standby, summary: summarise(kills, stops) };
  const text = markdown(report);
  fs.mkdirSync(options.out, { recursive: true });
  const stamp = report.date.replace(/[:.]/g, '-');
  for (const name of ['failover-drill-latest', `failover-drill-${stamp}`]) {
    fs.writeFileSync(path.join(options.out, `${name}.json`), JSON.stringify(report, null, 2) + '\n');
    fs.writeFileSync(path.join(options.out, `${name}.md`), text);
  }
  process.stdout.write(text);
  const lost = kills.reduce((n, k) => n + k.lost, 0) + stops.reduce((n, s) => n + s.lost, 0) + (switchover?.lost ?? 0) + (standby?.lost ?? 0);
  if (lost > 0) {
    console.error(`LOST ${lost} acknowledged writes`);
    process.exitCode = 1;
  }
}

interface Setup {
  cluster: LocalCluster;
  app: App;
  url: string;
  options: Options;
  say: (text: string) => void;
}

/** A fresh cluster and pgrelay for one round; both are gone afterwards, whatever happens. */
async function withSetup<T>(options: Options, log: Logger, say: (text: string) => void, run: (setup: Setup) => Promise<T>): Promise<T> {
  say('building a local cluster (primary, synchronous standby, two replicas)');
  const cluster = await LocalCluster.create({ replicas: 2, standby: true });
  let app: App | undefined;
  try {
    await cluster.query('primary', `CREATE TABLE ${TABLE} (id bigserial PRIMARY KEY, writer int NOT NULL)`);
    const document = {
      listen: { host: '127.0.0.1', port: 0 },
      admin: { host: '127.0.0.1', port: 0, token: DRILL_ADMIN_TOKEN },
      nodes: cluster.nodes.map((n) => ({ name: n.name, host: n.host, port: n.port, role: n.role })),
      users: [{ name: cluster.user, password: cluster.password }],
      health: HEALTH,
      failover: { mode: 'managed', user: cluster.superuser, password: cluster.superuserPassword },
      pool: { size: options.writers + options.readers + 4 },
    };
    app = await App.start(parseConfig(stringify(document), { source: 'failover-drill' }), { log, processMetrics: false });
    const url = `postgres://${cluster.user}:${cluster.password}@127.0.0.1:${app.listenAddress!.port}/${cluster.database}`;
    return await run({ cluster, app, url, options, say });
  } finally {
    for (const node of cluster.nodes) await cluster.signalNode(node.name, 'SIGCONT').catch(() => {});
    await app?.stop();
    await cluster.stop();
  }
}

async function killRound(setup: Setup, round: number): Promise<KillRound> {
  const { cluster, app } = setup;
  const load = await Load.start(setup.url, setup.options);
  try {
    await until(30_000, 'writes and reads to flow', () => load.acks.length > 200 && load.reads > 50);
    const down = nextDown(app);
    setup.say(`kill round ${round}: kill -9 of the primary`);
    const killedAt = performance.now();
    await cluster.signalNode('primary', 'SIGKILL');
    const newPort = cluster.node('standby1').port;
    await until(30_000, 'every client to write on the new primary', () => load.firstAckOn(newPort, killedAt).length === setup.options.writers);
    const firsts = load.firstAckOn(newPort, killedAt);
    await load.stop();
    const event = await down;
    const lost = await load.lostOn(cluster, 'standby1');
    return {
      round,
      detectMs: event.downAt - killedAt,
      promoteMs: app.failover.lastFailover?.durationMs ?? NaN,
      unavailableMs: Math.min(...firsts) - killedAt,
      worstClientMs: Math.max(...firsts) - killedAt,
      writerErrors: load.writerErrors,
      readerErrors: load.readerErrors,
      acknowledged: load.acks.length,
      lost,
    };
  } finally {
    await load.stop();
  }
}

async function stopRound(setup: Setup, round: number): Promise<StopRound> {
  const { cluster, app } = setup;
  const load = await Load.start(setup.url, setup.options);
  try {
    await until(30_000, 'writes and reads to flow', () => load.acks.length > 200 && load.reads > 50);
    const down = nextDown(app);
    setup.say(`stop round ${round}: SIGSTOP of the primary`);
    const stoppedAt = performance.now();
    await cluster.signalNode('primary', 'SIGSTOP');
    const newPort = cluster.node('standby1').port;
    await until(60_000, 'writes on the new primary', () => load.firstAckOn(newPort, stoppedAt).length > 0);
    const firsts = load.firstAckOn(newPort, stoppedAt);
    const event = await down;
    await load.stop();
    await cluster.signalNode('primary', 'SIGCONT');
    const lost = await load.lostOn(cluster, 'standby1');
    return {
      round,
      detectMs: event.downAt - stoppedAt,
      boundMs: HEALTH.interval_ms * HEALTH.failures + HEALTH.timeout_ms,
      unavailableMs: Math.min(...firsts) - stoppedAt,
      writerErrors: load.writerErrors,
      readerErrors: load.readerErrors,
      acknowledged: load.acks.length,
      lost,
    };
  } finally {
    await load.stop();
  }
}

async function switchoverRound(setup: Setup): Promise<SwitchoverRound> {
  const { cluster, app } = setup;
  const load = await Load.start(setup.url, setup.options);
  try {
    await until(30_000, 'writes and reads to flow', () => load.acks.length > 200 && load.reads > 50);
    setup.say('switchover under load (POST /admin/switchover)');
    const response = await fetch(`http://127.0.0.1:${app.adminAddress!.port}/admin/switchover`, { method: 'POST', headers: adminHeaders(DRILL_ADMIN_TOKEN) });
    const answer = (await response.json()) as { status: string; from: string; to: string; pausedMs: number; error?: string };
    if (response.status !== 200) throw new Error(`switchover failed: ${answer.error ?? response.status}`);
    const after = performance.now();
    const newPort = cluster.node(answer.to).port;
    await until(30_000, 'every client to write on the new primary', () => load.firstAckOn(newPort, after - 60_000).length === setup.options.writers);
    await sleep(500);
    await load.stop();
    return {
      from: answer.from,
      to: answer.to,
      pausedMs: answer.pausedMs,
      longestPauseMs: load.longestPause(),
      errors: load.writerErrors + load.readerErrors,
      acknowledged: load.acks.length,
      lost: await load.lostOn(cluster, answer.to),
    };
  } finally {
    await load.stop();
  }
}

async function standbyRound(setup: Setup): Promise<StandbyRound> {
  const { cluster, app } = setup;
  const load = await Load.start(setup.url, setup.options);
  try {
    await until(30_000, 'writes and reads to flow', () => load.acks.length > 200 && load.reads > 50);
    setup.say('standby round: kill -9 of the synchronous standby');
    const killedAt = performance.now();
    await cluster.signalNode('standby1', 'SIGKILL');
    const syncNames = async () => (await cluster.query<{ v: string }>('primary', "SELECT current_setting('synchronous_standby_names') AS v"))[0]!.v;
    // once pgrelay's failover has the evidence (the replica reported synchronous, caught up)
    await until(30_000, 'a replica to be the synchronous standby', () => app.failover.syncKeeper.settled?.standby !== undefined, 20);
    const changedAt = performance.now();
    await until(30_000, 'every client to write again', () => load.firstAckOn(cluster.node('primary').port, changedAt).length === setup.options.writers);
    const standbyPauseMs = load.longestPause();
    const synchronous = (await syncNames()).replace(/"/g, '');
    setup.say(`standby round: ${synchronous} is the synchronous standby; kill -9 of the primary`);
    await cluster.signalNode('primary', 'SIGKILL');
    await until(30_000, 'a new primary', () => app.topology.primaryName !== 'primary');
    await until(30_000, 'writes on the new primary', () => load.firstAckOn(cluster.node(app.topology.primaryName!).port, killedAt).length > 0);
    await load.stop();
    const promoted = app.topology.primaryName;
    return { standbyPauseMs, synchronous, promoted, errors: load.writerErrors + load.readerErrors, acknowledged: load.acks.length, lost: await load.lostOn(cluster, promoted!) };
  } finally {
    await load.stop();
  }
}

function nextDown(app: App): Promise<NodeDownEvent> {
  return new Promise((resolve) => app.health.once('down', resolve));
}

/** Clients writing and reading through pgrelay, each on its own connection, as fast as they can. */
class Load {
  readonly acks: { id: number; writer: number; port: number; at: number }[] = [];
  reads = 0;
  writerErrors = 0;
  readerErrors = 0;
  private stopped = false;
  private readonly loops: Promise<void>[] = [];
  private readonly clients: pg.Client[] = [];

  static async start(url: string, options: Options): Promise<Load> {
    const load = new Load();
    for (let i = 0; i < options.writers + options.readers; i++) {
      const client = new pg.Client({ connectionString: url });
      client.on('error', () => {});
      load.clients.push(client);
      await client.connect();
    }
    load.clients.forEach((client, i) => load.loops.push(i < options.writers ? load.writer(client, i) : load.reader(client)));
    return load;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.loops);
    await Promise.all(this.clients.map((c) => c.end().catch(() => {})));
    this.clients.length = 0;
  }

  /** Per writer, when its first write after `since` was acknowledged by the node on `port`. */
  firstAckOn(port: number, since: number): number[] {
    const first = new Map<number, number>();
    for (const ack of this.acks) if (ack.port === port && ack.at > since && !first.has(ack.writer)) first.set(ack.writer, ack.at);
    return [...first.values()];
  }

  longestPause(): number {
    let longest = 0;
    const last = new Map<number, number>();
    for (const ack of this.acks) {
      const previous = last.get(ack.writer);
      if (previous !== undefined) longest = Math.max(longest, ack.at - previous);
      last.set(ack.writer, ack.at);
    }
    return longest;
  }

  async lostOn(cluster: LocalCluster, node: string): Promise<number> {
    const rows = await cluster.query<{ id: string }>(node, `SELECT id FROM ${TABLE}`);
    const present = new Set(rows.map((r) => Number(r.id)));
    return this.acks.filter((a) => !present.has(a.id)).length;
  }

  private async writer(client: pg.Client, index: number): Promise<void> {
    while (!this.stopped) {
      try {
        const result = await client.query<{ id: string; port: number }>(`INSERT INTO ${TABLE} (writer) VALUES ($1) RETURNING id, inet_server_port() AS port`, [index]);
        this.acks.push({ id: Number(result.rows[0]!.id), writer: index, port: result.rows[0]!.port, at: performance.now() });
      } catch {
        this.writerErrors++;
        await sleep(5);
      }
    }
  }

  private async reader(client: pg.Client): Promise<void> {
    while (!this.stopped) {
      try {
        await client.query(`SELECT count(*) FROM ${TABLE}`);
        this.reads++;
      } catch {
        this.readerErrors++;
        await sleep(5);
      }
    }
  }
}

function summarise(kills: KillRound[], stops: StopRound[]) {
  const unavailable = kills.map((k) => k.unavailableMs);
  return {
    killUnavailableMedianMs: median(unavailable),
    killUnavailableMaxMs: Math.max(...unavailable),
    killWorstClientMaxMs: Math.max(...kills.map((k) => k.worstClientMs)),
    killDetectMedianMs: median(kills.map((k) => k.detectMs)),
    stopDetectMedianMs: median(stops.map((s) => s.detectMs)),
    lost: kills.reduce((n, k) => n + k.lost, 0) + stops.reduce((n, s) => n + s.lost, 0),
  };
}

function markdown(report: { date: string; options: Options; kills: KillRound[]; stops: StopRound[]; switchover: SwitchoverRound | undefined; standby: StandbyRound | undefined; summary: ReturnType<typeof summarise> }): string {
  const lines = [
    `## Failover drill (${report.date})`,
    '',
    `Managed failover, health every ${HEALTH.interval_ms} ms, timeout ${HEALTH.timeout_ms} ms, ${HEALTH.failures} failures; ${report.options.writers} writers and ${report.options.readers} readers through pgrelay; a fresh cluster per round.`,
    '',
    '| kill -9 round | primary marked down | pgrelay promotes (decision → writes) | writes again (first client) | every client writing again | writer errors | reader errors | acknowledged | lost |',
    '|---|---|---|---|---|---|---|---|---|',
    ...report.kills.map((k) => `| ${k.round} | ${ms(k.detectMs)} | ${ms(k.promoteMs)} | ${ms(k.unavailableMs)} | ${ms(k.worstClientMs)} | ${k.writerErrors} | ${k.readerErrors} | ${k.acknowledged} | ${k.lost} |`),
    `| **median / max** | ${ms(report.summary.killDetectMedianMs)} | | **${ms(report.summary.killUnavailableMedianMs)} / ${ms(report.summary.killUnavailableMaxMs)}** | max ${ms(report.summary.killWorstClientMaxMs)} | | | | ${report.summary.lost} |`,
    '',
  ];
  if (report.stops.length > 0) {
    lines.push(
      '| SIGSTOP round | primary marked down | bound (interval × failures + timeout) | writes again | writer errors | reader errors | acknowledged | lost |',
      '|---|---|---|---|---|---|---|---|',
      ...report.stops.map((s) => `| ${s.round} | ${ms(s.detectMs)} | ${ms(s.boundMs)} | ${ms(s.unavailableMs)} | ${s.writerErrors} | ${s.readerErrors} | ${s.acknowledged} | ${s.lost} |`),
      '',
    );
  }
  if (report.switchover) {
    const s = report.switchover;
    lines.push(
      '| switchover | units held | longest client pause | client errors | acknowledged | lost |',
      '|---|---|---|---|---|---|',
      `| ${s.from} → ${s.to} | ${ms(s.pausedMs)} | ${ms(s.longestPauseMs)} | ${s.errors} | ${s.acknowledged} | ${s.lost} |`,
      '',
    );
  }
  if (report.standby) {
    const s = report.standby;
    lines.push(
      '| kill -9 of the synchronous standby | longest client pause | synchronous standby then | promoted after the primary\'s kill -9 | client errors | acknowledged | lost |',
      '|---|---|---|---|---|---|---|',
      `| standby1 | ${ms(s.standbyPauseMs)} | ${s.synchronous} | ${s.promoted ?? 'nothing'} | ${s.errors} | ${s.acknowledged} | ${s.lost} |`,
      '',
    );
  }
  return lines.join('\n');
}

function parseOptions(argv: string[]): Options {
  const options: Options = { rounds: 5, stopRounds: 1, writers: 4, readers: 2, switchover: true, standby: true, out: 'bench-results' };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const value = (): string => {
      const next = argv[++i];
      if (next === undefined) throw new Error(`${arg} needs a value`);
      return next;
    };
    if (arg === '--rounds') options.rounds = positive(arg, value());
    else if (arg === '--stop-rounds') options.stopRounds = Number(value());
    else if (arg === '--writers') options.writers = positive(arg, value());
    else if (arg === '--readers') options.readers = Number(value());
    else if (arg === '--no-switchover') options.switchover = false;
    else if (arg === '--no-standby') options.standby = false;
    else if (arg === '--out') options.out = value();
    else throw new Error(`unknown option ${arg}\nusage: npm run drill -- [--rounds 5] [--stop-rounds 1] [--writers 4] [--readers 2] [--no-switchover] [--no-standby] [--out bench-results]`);
  }
  return options;
}

function positive(name: string, text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer`);
  return n;
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? (error.stack ?? error.message) : String(error));
  process.exit(1);
});
