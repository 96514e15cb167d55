import type { TextSink } from '../config/check.js';

interface StatusNode {
  name: string;
  role: string;
  host: string;
  port: number;
  up: boolean;
  fenced: boolean;
  lag_bytes: number | null;
  lag_seconds: number | null;
  fresh: boolean;
  inflight: number;
  pools: { idle: number; active: number; waiting: number }[];
}

/** `pgrelay status`: the admin API's /status as a table. */
export async function printStatus(adminUrl: string, out: TextSink, err: TextSink): Promise<number> {
  let status: { primary: string | null; consistency: string; clients: number; nodes: StatusNode[] };
  try {
    const response = await fetch(new URL('/status', adminUrl));
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    status = (await response.json()) as typeof status;
  } catch (error) {
    err.write(`pgrelay status: cannot read ${adminUrl}/status: ${error instanceof Error ? error.message : String(error)}\n`);
    return 1;
  }
  out.write(formatStatusTable(status));
  return 0;
}

export function formatStatusTable(status: { primary: string | null; consistency: string; clients: number; nodes: StatusNode[] }): string {
  const header = ['node', 'role', 'address', 'state', 'lag', 'inflight', 'pool active/idle'];
  const rows = status.nodes.map((n) => {
    const active = n.pools.reduce((s, p) => s + p.active, 0);
    const idle = n.pools.reduce((s, p) => s + p.idle, 0);
    const state = n.fenced ? 'fenced' : !n.up ? 'down' : n.role !== 'primary' && !n.fresh ? 'stale' : 'up';
    const lag = n.role === 'primary' ? '-' : n.lag_seconds === null ? '?' : `${(n.lag_seconds * 1000).toFixed(0)}ms/${n.lag_bytes ?? 0}B`;
    return [n.name, n.role, `${n.host}:${n.port}`, state, lag, String(n.inflight), `${active}/${idle}`];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd() + '\n';
  return `primary: ${status.primary ?? 'none'}   consistency: ${status.consistency}   clients: ${status.clients}\n` + line(header) + rows.map(line).join('');
}
