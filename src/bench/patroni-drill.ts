/**
 * `npm run drill:patroni` — how much pgrelay adds to Patroni's own failover time (issue 11).
 *
 *   npm run drill:patroni -- [--rounds 3] [--relays 2] [--poll-ms 1000] [--writers 2] [--out bench-results]
 *
 * Builds a local Patroni cluster (etcd + three PostgreSQL nodes, synchronous mode, ttl 10 s,
 * loop_wait 2 s, retry_timeout 4 s), starts `--relays` pgrelays in this process with
 * `failover.mode: patroni` (defaults otherwise: patroni.poll_ms 1000, health every 1 s), and per
 * round kills -9 the leader's Patroni and PostgreSQL while clients write through every pgrelay.
 * For each round it reports, from the moment of the kill:
 * - Patroni's failover time, two ways: the leader key in etcd naming a new member, and the first
 *   INSERT accepted by a direct connection to the new leader (probed every 10 ms on every member);
 * - each pgrelay's write unavailability: the first INSERT acknowledged through it;
 * - what pgrelay adds: its unavailability minus the direct first write (target ≤ 200 ms).
 * The killed member is restarted (Patroni rewinds it) between rounds. A last round asks one
 * pgrelay for a switchover (POST /admin/switchover) under the same load and reports the longest
 * pause and the errors seen through every pgrelay. Prints a markdown table and writes
 * OUT/patroni-drill-latest.{md,json} and a dated copy.
 */
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { stringify } from 'yaml';
import { App } from '../app.js';
import { parseConfig } from '../config/load.js';
import { PatroniCluster } from '../local/patroni-cluster.js';
import { createLogger, silentLogger, type Logger } from '../util/log.js';
import { median } from './stats.js';
import { adminHeaders, DRILL_ADMIN_TOKEN, ms, sleep, until } from './drill-common.js';

interface Options {
  rounds: number;
  relays: number;
  pollMs: number;
  writers: number;
  out: string;
}

interface KillRound {
  round: number;
  killed: string;
  newLeader: string;
  /** ms from the kill to the leader key naming the new leader in etcd */
  leaderKeyMs: number;
  /** ms from the kill to the first INSERT a direct connection to the new leader got through */
  directWriteMs: number;
  /** per pgrelay: ms from the kill to the first INSERT acknowledged through it */
  relayWriteMs: number[];
  /** per pgrelay: relayWriteMs − directWriteMs */
  addedMs: number[];
  /** per pgrelay: client errors (in-flight writes cut by the kill: SQLSTATE 08…) */
  errors: number[];
  errorCodes: string[];
  acknowledged: number;
  /** acknowledged ids missing from the new leader afterwards (must be 0) */
  lost: number;
}

interface SwitchoverRound {
  from: string;
  to: string;
  /** pgrelay's own figure: how long units for the primary were held */
  pausedMs: number;
  /** per pgrelay: the longest time between two acknowledged writes of one writer */
  longestPauseMs: number[];
  errors: number[];
  acknowledged: number;
  lost: number;
}

const TABLE = 'patroni_drill';
const PROBE_MS = 10;
/** How often the drill's waits look again. */
const POLL_MS = 20;

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  const started = Date.now();
  const say = (text: string): void => console.error(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${text}`);
  const log = process.env['PGRELAY_DRILL_LOG'] ? createLogger({ level: process.env['PGRELAY_DRILL_LOG'], pretty: true }) : silentLogger;
  const cluster = await PatroniCluster.create({ onProgress: say });
  const apps: App[] = [];
  const kills: KillRound[] = [];
  let switchover: SwitchoverRound | undefined;
  try {
    for (let i = 0; i < options.relays; i++) apps.push(await startApp(cluster, options, log));
    const urls = apps.map((app) => relayUrl(cluster, app));
    await exec(urls[0]!, `CREATE TABLE ${TABLE} (id bigserial PRIMARY KEY, relay int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())`);
    for (let round = 1; round <= options.rounds; round++) {
      await settle(cluster, apps);
      say(`round ${round}: kill -9 of the leader under load`);
      const result = await killRound(cluster, apps, urls, options, round);
      kills.push(result);
      say(`round ${round}: leader key ${ms(result.leaderKeyMs)}, direct write ${ms(result.directWriteMs)}, through pgrelay ${result.relayWriteMs.map(ms).join(' / ')} (adds ${result.addedMs.map(ms).join(' / ')})`);
      say(`round ${round}: restarting ${result.killed} (Patroni rewinds it)`);
      await cluster.restartMember(result.killed);
    }
    await settle(cluster, apps);
    say('switchover through pgrelay under load');
    switchover = await switchoverRound(cluster, apps, urls, options);
    say(`switchover ${switchover.from} → ${switchover.to}: held ${ms(switchover.pausedMs)}, longest pause ${switchover.longestPauseMs.map(ms).join(' / ')}, errors ${switchover.errors.join(' / ')}`);
  } finally {
    await Promise.all(apps.map((app) => app.stop()));
    await cluster.stop();
  }
  const report = { date: new Date().toISOString(), options, kills, switchover, summary: summarise(kills) };
  const text = markdown(report);
  fs.mkdirSync(options.out, { recursive: true });
  const stamp = report.date.replace(/[:.]/g, '-');
  for (const name of ['patroni-drill-latest', `patroni-drill-${stamp}`]) {
    fs.writeFileSync(path.join(options.out, `${name}.json`), JSON.stringify(report, null, 2) + '\n');
    fs.writeFileSync(path.join(options.out, `${name}.md`), text);
  }
  process.stdout.write(text);
}

async function startApp(cluster: PatroniCluster, options: Options, log: Logger): Promise<App> {
  const document = {
    listen: { host: '127.0.0.1', port: 0 },
    admin: { host: '127.0.0.1', port: 0, token: DRILL_ADMIN_TOKEN },
    nodes: [],
    users: [{ name: cluster.user, password: cluster.password }],
    failover: { mode: 'patroni' },
    patroni: { endpoints: cluster.endpoints, poll_ms: options.pollMs },
  };
  return App.start(parseConfig(stringify(document), { source: 'patroni-drill' }), { log, processMetrics: false });
}

function relayUrl(cluster: PatroniCluster, app: App): string {
  return `postgres://${cluster.user}:${cluster.password}@127.0.0.1:${app.listenAddress!.port}/${cluster.database}`;
}

/** Until Patroni is healthy and every pgrelay writes to its leader and reads from two fresh replicas. */
async function settle(cluster: PatroniCluster, apps: App[]): Promise<void> {
  const members = await cluster.waitForHealthy(180_000);
  const leader = members.find((m) => m.role === 'leader')!.name;
  await until(60_000, 'every pgrelay to follow the leader with fresh replicas', () =>
    apps.every((app) => app.topology.primaryName === leader && [...app.topology.nodes.values()].filter((n) => n.name !== leader && n.up && n.fresh).length === members.length - 1),
    POLL_MS,
  );
}

async function killRound(cluster: PatroniCluster, apps: App[], urls: string[], options: Options, round: number): Promise<KillRound> {
  const leader = (await cluster.leader())!.name;
  const others = cluster.memberNames().filter((n) => n !== leader);
  const writers = urls.map((url, i) => new Writers(url, i, options.writers));
  const direct = new DirectProbe(cluster, others);
  await direct.connect();
  writers.forEach((w) => w.start());
  await until(20_000, 'writes through every pgrelay', () => writers.every((w) => w.acks.length > 10), POLL_MS);

  // the kill: Patroni's process and every PostgreSQL process of the leader get SIGKILL at killAt;
  // by killDone they are all gone (a write sent before then may still have reached the old leader)
  const killed = leader;
  const killAt = performance.now();
  await cluster.killMember(killed);
  const killDone = performance.now();
  direct.start(killAt);
  let keyAt: number | undefined;
  let newLeader: string | undefined;
  await until(120_000, 'a new leader key in etcd', async () => {
    const key = await cluster.leaderKey().catch(() => undefined);
    if (key !== undefined && key !== killed) {
      keyAt = performance.now();
      newLeader = key;
      return true;
    }
    await sleep(PROBE_MS);
    return false;
  }, POLL_MS);
  await until(60_000, 'writes through every pgrelay and directly after the kill', () => direct.firstWriteAt !== undefined && writers.every((w) => w.firstAckAfter(killDone) !== undefined), POLL_MS);
  await sleep(500);
  await Promise.all(writers.map((w) => w.stop()));
  await direct.stop();

  const directWriteMs = direct.firstWriteAt! - killAt;
  const relayWriteMs = writers.map((w) => w.firstAckAfter(killDone)! - killAt);
  let lost = 0;
  for (const w of writers) lost += await missing(cluster, newLeader!, w.acks.map((a) => a.id));
  return {
    round,
    killed,
    newLeader: newLeader!,
    leaderKeyMs: keyAt! - killAt,
    directWriteMs,
    relayWriteMs,
    addedMs: relayWriteMs.map((r) => r - directWriteMs),
    errors: writers.map((w) => w.errors.length),
    errorCodes: [...new Set(writers.flatMap((w) => w.errors))],
    acknowledged: writers.reduce((n, w) => n + w.acks.length, 0),
    lost,
  };
}

async function switchoverRound(cluster: PatroniCluster, apps: App[], urls: string[], options: Options): Promise<SwitchoverRound> {
  const writers = urls.map((url, i) => new Writers(url, i, options.writers));
  writers.forEach((w) => w.start());
  await until(20_000, 'writes through every pgrelay', () => writers.every((w) => w.acks.length > 10), POLL_MS);
  const response = await fetch(`http://127.0.0.1:${apps[0]!.adminAddress!.port}/admin/switchover`, { method: 'POST', headers: adminHeaders(DRILL_ADMIN_TOKEN), body: '', signal: AbortSignal.timeout(120_000) });
  const answer = (await response.json()) as Record<string, unknown>;
  if (response.status !== 200) throw new Error(`switchover failed: HTTP ${response.status} ${JSON.stringify(answer)}`);
  const to = String(answer['to']);
  await until(30_000, 'every pgrelay to follow the new leader', () => apps.every((app) => app.topology.primaryName === to), POLL_MS);
  await sleep(1000);
  await Promise.all(writers.map((w) => w.stop()));
  let lost = 0;
  for (const w of writers) lost += await missing(cluster, to, w.acks.map((a) => a.id));
  return {
    from: String(answer['from']),
    to,
    pausedMs: Number(answer['pausedMs']),
    longestPauseMs: writers.map((w) => w.longestPause()),
    errors: writers.map((w) => w.errors.length),
    acknowledged: writers.reduce((n, w) => n + w.acks.length, 0),
    lost,
  };
}

/** Clients inserting through one pgrelay as fast as they can; errors are counted, never thrown. */
class Writers {
  readonly acks: { id: number; writer: number; sentAt: number; at: number }[] = [];
  readonly errors: string[] = [];
  private stopped = false;
  private loops: Promise<void>[] = [];

  constructor(
    private readonly url: string,
    private readonly relay: number,
    private readonly count: number,
  ) {}

  start(): void {
    for (let i = 0; i < this.count; i++) this.loops.push(this.loop(i));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.loops);
  }

  firstAckAfter(at: number): number | undefined {
    return this.acks.find((a) => a.sentAt > at)?.at;
  }

  longestPause(): number {
    let longest = 0;
    for (let i = 0; i < this.count; i++) {
      const times = this.acks.filter((a) => a.writer === i).map((a) => a.at);
      for (let k = 1; k < times.length; k++) longest = Math.max(longest, times[k]! - times[k - 1]!);
    }
    return longest;
  }

  private async loop(writer: number): Promise<void> {
    const client = new pg.Client({ connectionString: this.url });
    client.on('error', () => {});
    await client.connect();
    try {
      while (!this.stopped) {
        const sentAt = performance.now();
        try {
          const result = await client.query<{ id: string }>(`INSERT INTO ${TABLE} (relay) VALUES ($1) RETURNING id`, [this.relay]);
          this.acks.push({ id: Number(result.rows[0]!.id), writer, sentAt, at: performance.now() });
        } catch (error) {
          this.errors.push((error as { code?: string }).code ?? 'no SQLSTATE');
          await sleep(PROBE_MS);
        }
      }
    } finally {
      await client.end().catch(() => {});
    }
  }
}

/** INSERTs straight to each surviving member every PROBE_MS: when the new leader first takes one. */
class DirectProbe {
  firstWriteAt: number | undefined;
  private readonly clients = new Map<string, pg.Client>();
  private stopped = false;
  private loops: Promise<void>[] = [];

  constructor(
    private readonly cluster: PatroniCluster,
    private readonly members: string[],
  ) {}

  async connect(): Promise<void> {
    for (const name of this.members) {
      const client = new pg.Client({ connectionString: this.cluster.url(name) });
      client.on('error', () => {});
      await client.connect();
      this.clients.set(name, client);
    }
  }

  start(after: number): void {
    for (const client of this.clients.values()) {
      this.loops.push(
        (async () => {
          while (!this.stopped && this.firstWriteAt === undefined) {
            try {
              await client.query(`INSERT INTO ${TABLE} (relay) VALUES (-1)`);
              const at = performance.now();
              if (at > after && (this.firstWriteAt === undefined || at < this.firstWriteAt)) this.firstWriteAt = at;
            } catch {
              await sleep(PROBE_MS); // in recovery (25006) until promoted
            }
          }
        })(),
      );
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.loops);
    await Promise.all([...this.clients.values()].map((c) => c.end().catch(() => {})));
  }
}

async function missing(cluster: PatroniCluster, leader: string, ids: number[]): Promise<number> {
  const [row] = await cluster.query<{ n: string }>(leader, `SELECT count(*) AS n FROM ${TABLE} WHERE id = ANY($1::bigint[])`, [ids]);
  return ids.length - Number(row!.n);
}

async function exec(url: string, sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

function summarise(kills: KillRound[]) {
  const added = kills.flatMap((k) => k.addedMs);
  return {
    leaderKeyMsMedian: median(kills.map((k) => k.leaderKeyMs)),
    directWriteMsMedian: median(kills.map((k) => k.directWriteMs)),
    relayWriteMsMedian: median(kills.flatMap((k) => k.relayWriteMs)),
    addedMsMedian: median(added),
    addedMsMax: added.length > 0 ? Math.max(...added) : NaN,
    lost: kills.reduce((n, k) => n + k.lost, 0),
  };
}

function markdown(report: { date: string; options: Options; kills: KillRound[]; switchover: SwitchoverRound | undefined; summary: ReturnType<typeof summarise> }): string {
  const { options, kills, switchover, summary } = report;
  const lines = [
    `## Patroni failover drill (${report.date})`,
    '',
    `Patroni 3 + etcd 3.4, three PostgreSQL nodes, synchronous_mode, ttl 10 s / loop_wait 2 s / retry_timeout 4 s; ${options.relays} pgrelays (patroni.poll_ms ${options.pollMs}), ${options.writers} writers through each. Times in ms from the kill -9 of the leader's Patroni and PostgreSQL.`,
    '',
    '| round | killed → new leader | leader key in etcd | first direct write | first write through pgrelay | pgrelay adds | client errors | acknowledged | lost |',
    '|---|---|---|---|---|---|---|---|---|',
    ...kills.map((k) => `| ${k.round} | ${k.killed} → ${k.newLeader} | ${ms(k.leaderKeyMs)} | ${ms(k.directWriteMs)} | ${k.relayWriteMs.map(ms).join(' / ')} | ${k.addedMs.map(ms).join(' / ')} | ${k.errors.join(' / ')}${k.errorCodes.length ? ` (${k.errorCodes.join(', ')})` : ''} | ${k.acknowledged} | ${k.lost} |`),
    '',
    `Median: leader key ${ms(summary.leaderKeyMsMedian)}, first direct write ${ms(summary.directWriteMsMedian)}, first write through pgrelay ${ms(summary.relayWriteMsMedian)}; pgrelay adds ${ms(summary.addedMsMedian)} (max ${ms(summary.addedMsMax)}; target ≤ 200 ms). Acknowledged writes lost: ${summary.lost}.`,
    '',
  ];
  if (switchover) {
    lines.push(
      `Switchover through pgrelay (POST /admin/switchover, ${switchover.from} → ${switchover.to}) under the same load: units held ${ms(switchover.pausedMs)}, longest pause between two acknowledged writes ${switchover.longestPauseMs.map(ms).join(' / ')}, client errors ${switchover.errors.join(' / ')}, ${switchover.acknowledged} acknowledged, ${switchover.lost} lost.`,
      '',
    );
  }
  return lines.join('\n');
}

function parseOptions(argv: string[]): Options {
  const options: Options = { rounds: 3, relays: 2, pollMs: 1000, writers: 2, out: 'bench-results' };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    const value = argv[i + 1];
    const numeric: Record<string, 'rounds' | 'relays' | 'pollMs' | 'writers'> = { '--rounds': 'rounds', '--relays': 'relays', '--poll-ms': 'pollMs', '--writers': 'writers' };
    if (flag in numeric && value !== undefined && /^\d+$/.test(value) && Number(value) > 0) {
      options[numeric[flag]!] = Number(value);
      i++;
    } else if (flag === '--out' && value !== undefined) {
      options.out = value;
      i++;
    } else {
      console.error('usage: npm run drill:patroni -- [--rounds N] [--relays N] [--poll-ms MS] [--writers N] [--out DIR]');
      process.exit(2);
    }
  }
  return options;
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? (error.stack ?? error.message) : String(error));
  process.exit(1);
});
