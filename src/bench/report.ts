/**
 * Turns the raw runs into the table the README shows: per workload and target, the medians over
 * the rounds, and the ratios to a direct connection and to PgBouncer computed within each round
 * (the machine is shared, so only same-round ratios are comparable) and then taken as medians.
 */
import type { ClassifyBenchResult } from '../classify/bench.js';
import type { IdleClientsResult } from './idle-clients.js';
import type { ProfileSummary } from './profile.js';
import { median, minMax } from './stats.js';
import { webappMarkdown, type WebappRun } from './webapp.js';

export type TargetId = 'direct' | 'pgrelay-primary' | 'pgrelay-pipelined' | 'pgrelay-read' | 'pgbouncer' | 'pgpool' | 'byte-copy';

/** The pgrelay (pipelined) target's settings: reads share busy connections (see README, Pipelining). */
export const PIPELINED = { depth: 8, after: 1 } as const;

export const TARGET_LABELS: Record<TargetId, string> = {
  direct: 'direct (primary)',
  'pgrelay-primary': 'pgrelay (primary only)',
  'pgrelay-pipelined': `pgrelay (primary only, pipelined: pipeline_depth ${PIPELINED.depth}, pipeline_after ${PIPELINED.after})`,
  'pgrelay-read': 'pgrelay (read scaling)',
  pgbouncer: 'PgBouncer (transaction)',
  pgpool: 'Pgpool-II (load balancing)',
  'byte-copy': 'Node.js byte copy (no parsing, one server connection per client: the runtime\'s floor)',
};

export type WorkloadId = 'select-simple' | 'select-extended' | 'select-prepared' | 'tpcb' | 'latency-1-client';

export const WORKLOAD_LABELS: Record<WorkloadId, string> = {
  'select-simple': 'select-only, -M simple',
  'select-extended': 'select-only, -M extended',
  'select-prepared': 'select-only, -M prepared',
  tpcb: 'TPC-B-like read-write, -M simple',
  'latency-1-client': 'select-only, 1 client, -M simple (added latency)',
};

export interface RunRecord {
  round: number;
  workload: WorkloadId;
  target: TargetId;
  /** undefined when the target cannot run this workload (n/a) or failed */
  tps?: number;
  transactions?: number;
  failed?: number;
  latencyMedianUs?: number;
  latencyP99Us?: number;
  latencyMeanUs?: number;
  /** CPU seconds of the proxy's processes during the run (none for direct), and its user/system parts */
  proxyCpuS?: number;
  proxyUserS?: number;
  proxySystemS?: number;
  /** pgrelay's VmRSS after the run */
  rssBytes?: number;
  /** busy share of the whole machine during the run (all cores, 0..1) */
  machineBusy?: number;
  na?: string;
  error?: string;
}

export interface SummaryRow {
  workload: WorkloadId;
  target: TargetId;
  label: string;
  rounds: number;
  tpsMedian?: number;
  ratioToDirect?: number;
  ratioToDirectRange?: [number, number];
  ratioToPgbouncer?: number;
  ratioToPgbouncerRange?: [number, number];
  latencyMedianUs?: number;
  latencyP99Us?: number;
  /** median over rounds of (run median − direct's run median): the latency a hop adds */
  addedLatencyUs?: number;
  proxyCpuS?: number;
  proxyCpuUsPerTx?: number;
  /** the user-space part (the proxy's own code) and the kernel part (socket system calls) */
  proxyUserUsPerTx?: number;
  proxySystemUsPerTx?: number;
  rssMaxBytes?: number;
  na?: string;
  errors: string[];
}

export interface TargetCheck {
  target: string;
  wanted: string;
  measured: string;
  met: boolean | undefined;
}

export interface BenchReport {
  date: string;
  command: string;
  machine: { cores: number; node: string; postgres: string; pgbouncer?: string; pgpool?: string; loadAverageStart: number[]; loadAverageEnd?: number[] };
  settings: Record<string, unknown>;
  notes: string[];
  runs: RunRecord[];
  summary: SummaryRow[];
  checks: TargetCheck[];
  idleClients?: IdleClientsResult | { error: string };
  classification?: ClassifyBenchResult | { error: string };
  profiles: { mode: string; summary: ProfileSummary; tps?: number }[];
  webapp?: WebappRun[];
  durationS?: number;
}

function sameRoundRatio(runs: RunRecord[], workload: WorkloadId, target: TargetId, base: TargetId): number[] {
  const ratios: number[] = [];
  for (const run of runs) {
    if (run.workload !== workload || run.target !== target || run.tps === undefined) continue;
    const other = runs.find((r) => r.workload === workload && r.target === base && r.round === run.round);
    if (other?.tps) ratios.push(run.tps / other.tps);
  }
  return ratios;
}

export function summarise(runs: RunRecord[], workloads: readonly WorkloadId[], targets: Record<WorkloadId, readonly TargetId[]>): SummaryRow[] {
  const rows: SummaryRow[] = [];
  for (const workload of workloads) {
    for (const target of targets[workload]) {
      const mine = runs.filter((r) => r.workload === workload && r.target === target);
      const ok = mine.filter((r) => r.tps !== undefined);
      const row: SummaryRow = { workload, target, label: TARGET_LABELS[target], rounds: ok.length, errors: mine.filter((r) => r.error).map((r) => `round ${r.round}: ${r.error}`) };
      const na = mine.find((r) => r.na)?.na;
      if (na !== undefined) row.na = na;
      if (ok.length > 0) {
        row.tpsMedian = median(ok.map((r) => r.tps!));
        row.latencyMedianUs = median(ok.map((r) => r.latencyMedianUs!));
        row.latencyP99Us = median(ok.map((r) => r.latencyP99Us!));
        const cpu = ok.filter((r) => r.proxyCpuS !== undefined);
        if (cpu.length > 0) {
          row.proxyCpuS = median(cpu.map((r) => r.proxyCpuS!));
          row.proxyCpuUsPerTx = median(cpu.map((r) => (r.proxyCpuS! * 1e6) / Math.max(1, r.transactions ?? 1)));
          const split = cpu.filter((r) => r.proxyUserS !== undefined && r.proxySystemS !== undefined);
          if (split.length > 0) {
            row.proxyUserUsPerTx = median(split.map((r) => (r.proxyUserS! * 1e6) / Math.max(1, r.transactions ?? 1)));
            row.proxySystemUsPerTx = median(split.map((r) => (r.proxySystemS! * 1e6) / Math.max(1, r.transactions ?? 1)));
          }
        }
        const rss = ok.map((r) => r.rssBytes).filter((v): v is number => v !== undefined);
        if (rss.length > 0) row.rssMaxBytes = Math.max(...rss);
        const toDirect = sameRoundRatio(runs, workload, target, 'direct');
        if (toDirect.length > 0) {
          row.ratioToDirect = median(toDirect);
          row.ratioToDirectRange = minMax(toDirect);
        }
        const toBouncer = sameRoundRatio(runs, workload, target, 'pgbouncer');
        if (toBouncer.length > 0) {
          row.ratioToPgbouncer = median(toBouncer);
          row.ratioToPgbouncerRange = minMax(toBouncer);
        }
        const added: number[] = [];
        for (const run of ok) {
          const direct = runs.find((r) => r.workload === workload && r.target === 'direct' && r.round === run.round && r.latencyMedianUs !== undefined);
          if (direct) added.push(run.latencyMedianUs! - direct.latencyMedianUs!);
        }
        if (added.length > 0) row.addedLatencyUs = median(added);
      }
      rows.push(row);
    }
  }
  return rows;
}

function row(summary: SummaryRow[], workload: WorkloadId, target: TargetId): SummaryRow | undefined {
  return summary.find((r) => r.workload === workload && r.target === target);
}

/** The issue's targets, judged from the summary (undefined = could not be measured). */
export function checkTargets(summary: SummaryRow[], runs: RunRecord[], idle: BenchReport['idleClients']): TargetCheck[] {
  const checks: TargetCheck[] = [];
  for (const workload of ['select-simple', 'select-extended'] as const) {
    const relay = row(summary, workload, 'pgrelay-primary');
    const bouncer = row(summary, workload, 'pgbouncer');
    checks.push({
      target: `${WORKLOAD_LABELS[workload]}: pgrelay (primary only) ratio to direct ≥ PgBouncer's`,
      wanted: bouncer?.ratioToDirect !== undefined ? `≥ ${fmt(bouncer.ratioToDirect, 2)}` : '≥ PgBouncer (not measured)',
      measured: relay?.ratioToDirect !== undefined ? fmt(relay.ratioToDirect, 2) : 'n/a',
      met: relay?.ratioToDirect !== undefined && bouncer?.ratioToDirect !== undefined ? relay.ratioToDirect >= bouncer.ratioToDirect : undefined,
    });
  }
  for (const workload of ['select-simple', 'select-extended', 'select-prepared'] as const) {
    for (const target of ['pgrelay-read', 'pgrelay-primary'] as const) {
      const ratios = sameRoundRatio(runs, workload, target, 'pgpool');
      const value = ratios.length > 0 ? median(ratios) : undefined;
      checks.push({
        target: `${WORKLOAD_LABELS[workload]}: ${TARGET_LABELS[target]} ≥ 3× Pgpool-II's TPS (same round)`,
        wanted: '≥ 3.00×',
        measured: value !== undefined ? `${fmt(value, 2)}×` : 'n/a',
        met: value !== undefined ? value >= 3 : undefined,
      });
    }
  }
  const prepared = row(summary, 'select-prepared', 'pgrelay-primary');
  checks.push({
    target: `${WORKLOAD_LABELS['select-prepared']}: pgrelay (primary only) ≥ 0.75 of direct`,
    wanted: '≥ 0.75',
    measured: prepared?.ratioToDirect !== undefined ? fmt(prepared.ratioToDirect, 2) : 'n/a',
    met: prepared?.ratioToDirect !== undefined ? prepared.ratioToDirect >= 0.75 : undefined,
  });
  checks.push(...issue19Checks(summary, runs));
  const perClient = idle && 'perClientBytes' in idle ? idle.perClientBytes : undefined;
  checks.push({
    target: 'RSS per idle client (pgrelay)',
    wanted: '≤ 50 KB',
    measured: perClient !== undefined ? `${fmt(perClient / 1024, 1)} KB` : 'n/a',
    met: perClient !== undefined ? perClient <= 50 * 1024 : undefined,
  });
  return checks;
}

/** Issue 19's targets: against PgBouncer with pool size 8 for both, 16 clients. */
function issue19Checks(summary: SummaryRow[], runs: RunRecord[]): TargetCheck[] {
  const checks: TargetCheck[] = [];
  const ratioCheck = (target: string, wanted: number, value: number | undefined, unit = ''): TargetCheck => ({
    target,
    wanted: `≥ ${fmt(wanted, 2)}${unit}`,
    measured: value !== undefined ? `${fmt(value, 2)}${unit}` : 'n/a',
    met: value !== undefined ? value >= wanted : undefined,
  });
  const sameRound = (workload: WorkloadId, target: TargetId, base: TargetId): number | undefined => {
    const ratios = sameRoundRatio(runs, workload, target, base);
    return ratios.length > 0 ? median(ratios) : undefined;
  };
  for (const target of ['pgrelay-primary', 'pgrelay-pipelined'] as const) {
    for (const workload of ['select-simple', 'select-extended'] as const) {
      checks.push(ratioCheck(`issue 19: ${WORKLOAD_LABELS[workload]}: ${TARGET_LABELS[target]} TPS / PgBouncer's (same round)`, 1, sameRound(workload, target, 'pgbouncer'), '×'));
    }
    checks.push(ratioCheck(`issue 19: ${WORKLOAD_LABELS['select-prepared']}: ${TARGET_LABELS[target]} of direct`, 0.75, row(summary, 'select-prepared', target)?.ratioToDirect));
  }
  checks.push(ratioCheck(`issue 19: ${WORKLOAD_LABELS.tpcb}: pgrelay TPS / PgBouncer's (same round)`, 1, sameRound('tpcb', 'pgrelay-read', 'pgbouncer'), '×'));
  for (const workload of ['select-simple', 'select-extended', 'select-prepared'] as const) {
    checks.push(ratioCheck(`issue 19: ${WORKLOAD_LABELS[workload]}: pgrelay (read scaling) TPS / pgrelay (primary only)'s (same round)`, 1, sameRound(workload, 'pgrelay-read', 'pgrelay-primary'), '×'));
  }
  const latency = row(summary, 'latency-1-client', 'pgrelay-primary')?.addedLatencyUs;
  const latencyBouncer = row(summary, 'latency-1-client', 'pgbouncer')?.addedLatencyUs;
  checks.push({
    target: 'issue 19: added latency, 1 client, -M simple: pgrelay ≤ PgBouncer',
    wanted: latencyBouncer !== undefined ? `≤ +${fmt(latencyBouncer)} µs` : '≤ PgBouncer (not measured)',
    measured: latency !== undefined ? `+${fmt(latency)} µs` : 'n/a',
    met: latency !== undefined && latencyBouncer !== undefined ? latency <= latencyBouncer : undefined,
  });
  return checks;
}

export function fmt(value: number | undefined, digits = 0): string {
  if (value === undefined || !Number.isFinite(value)) return '–';
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function ms(us: number | undefined): string {
  return us === undefined ? '–' : fmt(us / 1000, 3);
}

/** The pgrelay target each workload's floor comparison is made with (the one the issue judges). */
const FLOOR_PAIRS: readonly [WorkloadId, TargetId][] = [
  ['select-simple', 'pgrelay-primary'],
  ['select-extended', 'pgrelay-primary'],
  ['select-prepared', 'pgrelay-pipelined'],
  ['tpcb', 'pgrelay-read'],
  ['latency-1-client', 'pgrelay-primary'],
];

/**
 * What the byte copy (Node.js doing nothing but copying bytes) shows: how far the runtime alone is
 * from PgBouncer and from a direct connection, and how much CPU per transaction pgrelay spends
 * above it — its own work.
 */
export function floorLines(summary: SummaryRow[]): string[] {
  const lines: string[] = [];
  for (const [workload, target] of FLOOR_PAIRS) {
    const floor = row(summary, workload, 'byte-copy');
    const relay = row(summary, workload, target);
    const bouncer = row(summary, workload, 'pgbouncer');
    if (floor?.proxyCpuUsPerTx === undefined || relay?.proxyCpuUsPerTx === undefined) continue;
    const cpu = (r: SummaryRow | undefined): string => (r?.proxyCpuUsPerTx === undefined ? 'n/a' : `${fmt(r.proxyCpuUsPerTx, 1)} µs (user ${fmt(r.proxyUserUsPerTx, 1)})`);
    const speed = (r: SummaryRow | undefined): string =>
      workload === 'latency-1-client'
        ? r?.addedLatencyUs !== undefined ? `+${fmt(r.addedLatencyUs)} µs` : 'n/a'
        : `${fmt(r?.ratioToDirect, 2)} of direct${r?.target === 'pgbouncer' ? '' : r?.ratioToPgbouncer === undefined ? '' : `, ${fmt(r.ratioToPgbouncer, 2)}× PgBouncer`}`;
    lines.push(
      `- ${WORKLOAD_LABELS[workload]}: byte copy ${speed(floor)}, CPU ${cpu(floor)} per transaction; ` +
        `${TARGET_LABELS[target]} ${speed(relay)}, CPU ${cpu(relay)}; PgBouncer ${bouncer?.tpsMedian === undefined ? 'n/a' : `${speed(bouncer)}, CPU ${cpu(bouncer)}`}. ` +
        `pgrelay above the floor: **${fmt(relay.proxyCpuUsPerTx - floor.proxyCpuUsPerTx, 1)} µs** per transaction.`,
    );
  }
  return lines;
}

function floorMarkdown(summary: SummaryRow[]): string[] {
  const lines = floorLines(summary);
  if (lines.length === 0) return [];
  return [
    "## pgrelay's own work, above the runtime's floor",
    '',
    'The byte copy is a Node.js process that copies bytes between each client and a server connection of its own (`src/bench/byte-copy.ts`): ' +
      "what any proxy written for Node.js pays for its sockets. Its distance from PgBouncer is the runtime's; pgrelay's distance from it is pgrelay's own work " +
      '(parsing, classification, pooling, routing, metrics). With 16 clients it has 16 server connections where the poolers have the pool size.',
    '',
    ...lines,
    '',
  ];
}

function cpuPerTx(r: SummaryRow): string {
  if (r.proxyCpuUsPerTx === undefined) return '–';
  const split = r.proxyUserUsPerTx !== undefined && r.proxySystemUsPerTx !== undefined ? ` (${fmt(r.proxyUserUsPerTx, 1)} + ${fmt(r.proxySystemUsPerTx, 1)})` : '';
  return `${fmt(r.proxyCpuUsPerTx, 1)}${split}`;
}

function range(r: [number, number] | undefined): string {
  return r === undefined ? '' : ` (${fmt(r[0], 2)}–${fmt(r[1], 2)})`;
}

export function markdown(report: BenchReport, workloads: readonly WorkloadId[]): string {
  const out: string[] = [];
  out.push(`# pgrelay benchmark — ${report.date}`);
  out.push('');
  out.push(`Command: \`${report.command}\``);
  out.push('');
  const m = report.machine;
  out.push(
    `Machine: ${m.cores} cores, Node ${m.node}, PostgreSQL ${m.postgres}, PgBouncer ${m.pgbouncer ?? 'n/a'}, Pgpool-II ${m.pgpool ?? 'n/a'}; ` +
      `load average at start ${m.loadAverageStart.map((v) => v.toFixed(2)).join(' ')}${m.loadAverageEnd ? `, at end ${m.loadAverageEnd.map((v) => v.toFixed(2)).join(' ')}` : ''}.`,
  );
  out.push('');
  out.push(
    'Ratios are computed within each round (targets run one after another, A B C D … per round) and the median over the rounds is shown with the range. ' +
      'TPS is pgbench\'s "without initial connection time"; latencies are the median and 99th percentile of every transaction in pgbench\'s `--log` files, ' +
      'then the median over the rounds. Proxy CPU is utime+stime of the proxy\'s processes (Pgpool-II: all its children) from /proc during the run, per transaction, split into user (the proxy\'s own code) + system (socket system calls).',
  );
  out.push('');
  for (const workload of workloads) {
    const rows = report.summary.filter((r) => r.workload === workload);
    if (rows.length === 0) continue;
    out.push(`## ${WORKLOAD_LABELS[workload]}`);
    out.push('');
    if (workload === 'latency-1-client') {
      out.push('| target | TPS | latency median (ms) | p99 (ms) | added latency vs direct (µs) | proxy CPU µs/tx (user + sys) |');
      out.push('|---|---:|---:|---:|---:|---:|');
      for (const r of rows) {
        if (r.tpsMedian === undefined) {
          out.push(`| ${r.label} | ${r.na ? `n/a (${r.na})` : 'failed'} | | | | |`);
          continue;
        }
        out.push(`| ${r.label} | ${fmt(r.tpsMedian)} | ${ms(r.latencyMedianUs)} | ${ms(r.latencyP99Us)} | ${r.target === 'direct' ? '–' : `+${fmt(r.addedLatencyUs)}`} | ${cpuPerTx(r)} |`);
      }
    } else {
      out.push('| target | TPS | ratio to direct | ratio to PgBouncer | latency median (ms) | p99 (ms) | proxy CPU s/run | proxy CPU µs/tx (user + sys) | pgrelay RSS (MB) |');
      out.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|');
      for (const r of rows) {
        if (r.tpsMedian === undefined) {
          out.push(`| ${r.label} | ${r.na ? `n/a (${r.na})` : `failed${r.errors[0] ? `: ${r.errors[0].slice(0, 120)}` : ''}`} | | | | | | | |`);
          continue;
        }
        out.push(
          `| ${r.label} | ${fmt(r.tpsMedian)} | ${r.target === 'direct' ? '1.00' : `${fmt(r.ratioToDirect, 2)}${range(r.ratioToDirectRange)}`} | ` +
            `${r.target === 'pgbouncer' ? '1.00' : r.ratioToPgbouncer !== undefined ? `${fmt(r.ratioToPgbouncer, 2)}${range(r.ratioToPgbouncerRange)}` : 'n/a'} | ` +
            `${ms(r.latencyMedianUs)} | ${ms(r.latencyP99Us)} | ${fmt(r.proxyCpuS, 2)} | ${cpuPerTx(r)} | ${r.rssMaxBytes !== undefined ? fmt(r.rssMaxBytes / 1048576, 1) : ''} |`,
        );
      }
    }
    out.push('');
  }
  if (report.webapp && report.webapp.length > 0) out.push(...webappMarkdown(report.webapp, TARGET_LABELS));
  out.push('## Targets (issues 8 and 19)');
  out.push('');
  out.push('| target | wanted | measured | met |');
  out.push('|---|---|---|---|');
  for (const c of report.checks) out.push(`| ${c.target} | ${c.wanted} | ${c.measured} | ${c.met === undefined ? 'not measured' : c.met ? 'yes' : '**no**'} |`);
  out.push('');
  out.push(...floorMarkdown(report.summary));
  const idle = report.idleClients;
  if (idle) {
    out.push('## RSS per idle client');
    out.push('');
    if ('error' in idle) out.push(`failed: ${idle.error}`);
    else
      out.push(
        `${idle.clients} idle clients (startup + SCRAM + one query each) on pgrelay (primary only): VmRSS ${fmt(idle.rssBeforeBytes / 1048576, 1)} MB before, ` +
          `${fmt(idle.rssWithClientsBytes / 1048576, 1)} MB with them open, ${fmt(idle.rssAfterCloseBytes / 1048576, 1)} MB after closing them: ` +
          `**${fmt(idle.perClientBytes / 1024, 1)} KB per client**.`,
      );
    out.push('');
  }
  const cls = report.classification;
  if (cls) {
    out.push('## Classification cost per statement (`src/classify/bench.ts`)');
    out.push('');
    if ('error' in cls) out.push(`failed: ${cls.error}`);
    else out.push(`cached (same shape, varying literals): **${fmt(cls.cachedNs / 1000, 2)} µs**; uncached (every call parsed by libpg-query): **${fmt(cls.uncachedNs / 1000, 1)} µs**; literal masking alone: ${fmt(cls.maskNs / 1000, 2)} µs.`);
    out.push('');
  }
  for (const { mode, summary, tps } of report.profiles) {
    out.push(`## CPU profile of pgrelay (primary only), select-only -M ${mode}`);
    out.push('');
    out.push(
      `\`node --cpu-prof\`, samples of the measured run only (${fmt(summary.totalMs / 1000, 1)} s${tps !== undefined ? ` at ${fmt(tps)} TPS` : ''}); ` +
        `${summary.busyUsPerTx !== undefined ? `${fmt(summary.busyUsPerTx, 1)} µs of non-idle time per transaction; ` : ''}` +
        `by area (share of all samples): ${Object.entries(summary.byArea).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${fmt(v, 1)}%`).join(', ')}. ` +
        'Native functions (writeBuffer, writev) are the socket system calls; their time is wall time, and includes waiting for a CPU on a busy machine.',
    );
    out.push('');
    out.push('| self time (ms) | % of busy | µs per transaction | function | where |');
    out.push('|---:|---:|---:|---|---|');
    for (const e of summary.top) out.push(`| ${fmt(e.selfMs, 1)} | ${fmt(e.selfPercent, 1)} | ${fmt(e.selfUsPerTx, 2)} | \`${e.function}\` | ${e.location} |`);
    out.push('');
  }
  if (report.notes.length > 0) {
    out.push('## Notes');
    out.push('');
    for (const note of report.notes) out.push(`- ${note}`);
    out.push('');
  }
  return out.join('\n');
}
