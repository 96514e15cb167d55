/**
 * Summary of a V8 CPU profile (`node --cpu-prof`): self time per function, from the samples and
 * their time deltas (`samples[i]` is the node id sampled, `timeDeltas[i]` the µs since the
 * previous sample). Functions are merged by name and location; pgrelay's own are marked.
 */
import fs from 'node:fs';
import path from 'node:path';

interface CpuProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  hitCount?: number;
  children?: number[];
}

interface CpuProfile {
  nodes: CpuProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export interface ProfileEntry {
  function: string;
  location: string;
  selfMs: number;
  selfPercent: number;
  /** self time per transaction of the profiled run (when the transaction count is given) */
  selfUsPerTx?: number;
}

export interface ProfileSummary {
  file: string;
  totalMs: number;
  /** sampled time that was not idle, per transaction (when the transaction count is given) */
  busyUsPerTx?: number;
  /** share of samples in pgrelay's own code (dist/), in node internals, in dependencies, in GC, idle */
  byArea: Record<string, number>;
  top: ProfileEntry[];
}

function area(url: string, name: string): string {
  if (name === '(idle)') return 'idle';
  if (name === '(garbage collector)') return 'gc';
  if (name === '(program)') return 'program (native, outside JS)';
  if (url === '') return 'native';
  if (url.includes('/node_modules/')) return 'dependencies';
  if (url.startsWith('node:')) return 'node internals';
  if (url.includes('/dist/')) return 'pgrelay';
  return 'other';
}

function location(url: string, line: number): string {
  if (url === '') return '';
  const cut = url.includes('/node_modules/') ? url.slice(url.lastIndexOf('/node_modules/') + 14) : url.includes('/dist/') ? url.slice(url.lastIndexOf('/dist/') + 6) : url.replace(/^file:\/\//, '');
  return `${cut}:${line + 1}`;
}

export interface ProfileWindow {
  /** CLOCK_MONOTONIC µs (process.hrtime.bigint() / 1000n): only samples in [fromUs, toUs] count */
  fromUs?: number;
  toUs?: number;
  /** transactions pgbench ran in the window, for per-transaction figures */
  transactions?: number;
}

/**
 * V8 stamps samples with its monotonic clock (CLOCK_MONOTONIC on Linux, in µs), the clock of
 * process.hrtime(), so a window measured by the bench process selects the samples of one run
 * (leaving out start-up: module loading, the first connections' SCRAM, pg_proc loading).
 */
export function summariseProfile(file: string, topN = 20, window: ProfileWindow = {}): ProfileSummary {
  const profile = JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  if (profile.samples && profile.timeDeltas) {
    // timeDeltas[i] is the time before sample i; attribute the interval to the sample it ends at
    let at = profile.startTime;
    const from = window.fromUs ?? -Infinity;
    const to = window.toUs ?? Infinity;
    for (let i = 0; i < profile.samples.length; i++) {
      const delta = Math.max(0, profile.timeDeltas[i] ?? 0);
      at += delta;
      if (at < from || at > to) continue;
      const id = profile.samples[i]!;
      self.set(id, (self.get(id) ?? 0) + delta);
    }
  } else {
    const interval = (profile.endTime - profile.startTime) / Math.max(1, profile.nodes.reduce((a, n) => a + (n.hitCount ?? 0), 0));
    for (const n of profile.nodes) self.set(n.id, (n.hitCount ?? 0) * interval);
  }
  const merged = new Map<string, { function: string; location: string; us: number }>();
  const areas: Record<string, number> = {};
  let total = 0;
  for (const [id, us] of self) {
    const node = byId.get(id);
    if (!node) continue;
    const { functionName, url, lineNumber } = node.callFrame;
    const name = functionName || '(anonymous)';
    const loc = location(url, lineNumber);
    const key = `${name}\0${loc}`;
    const entry = merged.get(key) ?? { function: name, location: loc, us: 0 };
    entry.us += us;
    merged.set(key, entry);
    const a = area(url, name);
    areas[a] = (areas[a] ?? 0) + us;
    total += us;
  }
  const busy = total - (areas['idle'] ?? 0);
  const top = [...merged.values()]
    .filter((e) => e.function !== '(idle)')
    .sort((a, b) => b.us - a.us)
    .slice(0, topN)
    .map((e) => ({
      function: e.function,
      location: e.location,
      selfMs: round(e.us / 1000),
      selfPercent: round((100 * e.us) / Math.max(1, busy)),
      ...(window.transactions ? { selfUsPerTx: round2(e.us / window.transactions) } : {}),
    }));
  const byArea: Record<string, number> = {};
  for (const [name, us] of Object.entries(areas)) byArea[name] = round((100 * us) / Math.max(1, total));
  return { file, totalMs: round(total / 1000), ...(window.transactions ? { busyUsPerTx: round(busy / window.transactions) } : {}), byArea, top };
}

/** The newest .cpuprofile in a directory. */
export function newestProfile(dir: string): string | undefined {
  const files = fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.cpuprofile'))
    .map((f) => path.join(dir, f))
    .sort((a, b) => fs.statSync(b).mtimeMs - fs.statSync(a).mtimeMs);
  return files[0];
}

function round(n: number): number {
  return Math.round(n * 10) / 10;
}

function round2(n: number): number {
  return Math.round(n * 100) / 100;
}
