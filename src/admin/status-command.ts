import type { TextSink } from '../config/check.js';
import type { StatusDocument, StatusNode } from './status.js';

/** What the table needs from /status (older or newer pgrelays may send more or less). */
type StatusForTable = Pick<StatusDocument, 'primary' | 'consistency' | 'clients'> &
  Partial<Pick<StatusDocument, 'health' | 'max_lag_ms' | 'last_failover' | 'draining_pools' | 'capabilities'>> & {
    nodes: (Pick<StatusNode, 'name' | 'role' | 'host' | 'port' | 'up' | 'fenced' | 'fresh' | 'lag_bytes' | 'lag_seconds' | 'inflight'> &
      Partial<Pick<StatusNode, 'health' | 'stale_reason' | 'units'>> & { pools: { idle: number; active: number; waiting: number }[] })[];
  };

/**
 * `pgrelay status`: the admin API's /status as a table. Exit code 0 when it could be read.
 * `token`: sent as a Bearer token when given (needed unless admin.read_access is `open`).
 */
export async function printStatus(adminUrl: string, out: TextSink, err: TextSink, token?: string): Promise<number> {
  let status: StatusForTable;
  try {
    const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
    const response = await fetch(new URL('/status', adminUrl), { headers, signal: AbortSignal.timeout(5000) });
    if (response.status === 401) throw new Error(`HTTP 401: ${token ? 'the token in PGRELAY_ADMIN_TOKEN was refused' : 'set PGRELAY_ADMIN_TOKEN to admin.read_token or admin.token'}`);
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    status = (await response.json()) as StatusForTable;
  } catch (error) {
    err.write(`pgrelay status: cannot read ${adminUrl.replace(/\/$/, '')}/status: ${error instanceof Error ? error.message : String(error)}\n`);
    return 1;
  }
  out.write(formatStatusTable(status));
  return 0;
}

export function formatStatusTable(status: StatusForTable): string {
  const header = ['NODE', 'ROLE', 'ADDRESS', 'HEALTH', 'LAG', 'IN FLIGHT', 'POOL ACT/IDLE/WAIT', 'UNITS R/W'];
  const rows = status.nodes.map((n) => {
    const active = n.pools.reduce((s, p) => s + p.active, 0);
    const idle = n.pools.reduce((s, p) => s + p.idle, 0);
    const waiting = n.pools.reduce((s, p) => s + p.waiting, 0);
    const health = n.health ?? (n.fenced ? 'fenced' : !n.up ? 'down' : n.role !== 'primary' && !n.fresh ? 'stale' : 'up');
    const lag = n.role === 'primary' ? '-' : n.lag_seconds === null ? '?' : `${formatMs(n.lag_seconds * 1000)} / ${formatBytes(n.lag_bytes)}`;
    const units = n.units ? `${n.units.reads}/${n.units.writes}` : '-';
    return [n.name, n.role, `${n.host}:${n.port}`, health, lag, String(n.inflight), `${active}/${idle}/${waiting}`, units];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd() + '\n';
  const facts = [
    `primary: ${status.primary ?? 'none'}`,
    status.health ? `writes: ${status.health.ok ? 'ok' : `NO (${status.health.reason ?? 'unknown'})`}` : undefined,
    `consistency: ${status.consistency}`,
    status.max_lag_ms !== undefined ? `max lag: ${formatMs(status.max_lag_ms)}` : undefined,
    `clients: ${status.clients}`,
  ].filter((fact) => fact !== undefined);
  let text = facts.join('   ') + '\n' + line(header) + rows.map(line).join('');
  const stale = status.nodes.filter((n) => n.stale_reason && n.health !== 'up');
  for (const n of stale) text += `  ${n.name}: ${n.stale_reason}\n`;
  if (status.draining_pools && status.draining_pools.length > 0) {
    text += `draining (removed by a reload): ${status.draining_pools.map((p) => `${p.node} ${p.active} active`).join(', ')}\n`;
  }
  const f = status.last_failover;
  text += `last failover: ${f ? `${String(f.from ?? '?')} -> ${String(f.to)} (${String(f.kind)}${typeof f.durationMs === 'number' ? `, ${(f.durationMs / 1000).toFixed(1)} s` : ''}${f.at ? `, ${String(f.at)}` : ''})` : 'none'}\n`;
  // what the roles do not allow (README "Roles pgrelay logs in as"): only when something is missing
  const caps = status.capabilities;
  if (caps) {
    for (const name of ['replica_reads', 'failover', 'switchover'] as const) {
      const cap = caps[name];
      if (cap && cap.configured && cap.state !== 'ok') text += `${name.replace('_', ' ')}: ${cap.state.toUpperCase()} (${cap.reason})\n`;
    }
    for (const grant of new Set((caps.shortfalls ?? []).map((s) => s.grant))) text += `  fix: ${grant}\n`;
  }
  return text;
}

function formatMs(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)}ms` : `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 0)}s`;
}

function formatBytes(bytes: number | null): string {
  if (bytes === null) return '?';
  if (bytes < 1024) return `${bytes}B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)}kB`;
  return `${(bytes / 1024 / 1024).toFixed(1)}MB`;
}
