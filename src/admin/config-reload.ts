import type { AdminApp } from './admin-app.js';
import { describeDiff, diffConfig } from '../config/diff.js';
import { InvalidConfigError } from '../config/issues.js';
import { loadConfig } from '../config/load.js';
import type { Config } from '../config/types.js';

/**
 * Reload (SIGHUP, POST /admin/reload): re-read the config file, and apply what changed without
 * dropping a client. An invalid file is rejected whole (the errors are logged and returned) and
 * the running configuration stays. What cannot change on a running process (the addresses pgrelay
 * listens on, the log format, the classifier's forced functions) keeps its running value, and the
 * log says a restart is needed for it.
 *
 * Removing a node drains it: the router stops choosing it at once, units running there finish,
 * then its pools close (PoolSet retires them).
 */
export interface ReloadOutcome {
  result: 'applied' | 'unchanged' | 'rejected';
  /** epoch milliseconds */
  at: number;
  /** one line, e.g. `nodes +replica3 -replica2; pool.size` (never a credential) */
  changes?: string;
  /** changed keys whose running value was kept */
  restartRequired?: string[];
  /** why the file was rejected: each names the key and the line */
  errors?: string[];
}

/** Keys that AdminApp.reload cannot apply to a running process, beyond diffConfig's RESTART_REQUIRED_KEYS. */
const NOT_LIVE_PREFIXES = ['log.format', 'routing.functions.'];

const outcomes = new WeakMap<AdminApp, ReloadOutcome>();

/** The last reload of this app (for /status). */
export function lastReload(app: AdminApp): ReloadOutcome | undefined {
  return outcomes.get(app);
}

export function reloadFromFile(app: AdminApp, path: string): ReloadOutcome {
  let next: Config;
  try {
    next = loadConfig(path);
  } catch (error) {
    const errors = error instanceof InvalidConfigError ? error.lines() : [`cannot load ${path}: ${error instanceof Error ? error.message : String(error)}`];
    return reject(app, errors);
  }
  return applyConfig(app, next);
}

/** Applies a validated config to a running app (what reloadFromFile does after loading). */
export function applyConfig(app: AdminApp, next: Config): ReloadOutcome {
  const current = app.currentConfig;
  const diff = diffConfig(current, next);
  if (!diff.changed) {
    app.log.info('configuration reloaded: no changes');
    return remember(app, { result: 'unchanged', at: Date.now() });
  }
  const primary = app.topology.primaryName;
  if (primary !== undefined && diff.nodes.removed.some((n) => n.name === primary)) {
    return reject(app, [`nodes: node "${primary}" is the current primary; it cannot be removed by a reload (switch over to another node first)`]);
  }
  const kept = [...diff.restartRequired, ...diff.keys.filter((key) => NOT_LIVE_PREFIXES.some((prefix) => key === prefix || key.startsWith(prefix)))];
  const applied = keepRunningValues(next, current, kept);
  try {
    app.reload(applied);
  } catch (error) {
    return reject(app, [`the new configuration could not be applied: ${error instanceof Error ? error.message : String(error)}`]);
  }
  if (diff.keys.includes('log.level')) app.log.level = applied.log.level;
  const changes = describeDiff(diff);
  app.log.info({ changes }, 'configuration reloaded');
  if (kept.length > 0) app.log.warn({ keys: kept }, 'configuration reload: these changes need a restart; their running values are kept');
  app.metrics.reloads.labels('applied').inc();
  return remember(app, { result: 'applied', at: Date.now(), changes, ...(kept.length > 0 ? { restartRequired: kept } : {}) });
}

function reject(app: AdminApp, errors: string[]): ReloadOutcome {
  app.log.error({ errors }, 'configuration reload rejected; keeping the running configuration');
  app.metrics.reloads.labels('rejected').inc();
  return remember(app, { result: 'rejected', at: Date.now(), errors });
}

function remember(app: AdminApp, outcome: ReloadOutcome): ReloadOutcome {
  outcomes.set(app, outcome);
  return outcome;
}

/** `next` with the running value of each key in `kept` (dotted paths into the config). */
function keepRunningValues(next: Config, current: Config, kept: readonly string[]): Config {
  if (kept.length === 0) return next;
  const out = structuredClone(next) as unknown as Record<string, unknown>;
  for (const key of kept) {
    const path = key.split('.');
    let from: unknown = current;
    let to: Record<string, unknown> = out;
    for (let i = 0; i < path.length - 1; i++) {
      from = (from as Record<string, unknown> | undefined)?.[path[i]!];
      to = to[path[i]!] as Record<string, unknown>;
    }
    const last = path[path.length - 1]!;
    const value = (from as Record<string, unknown> | undefined)?.[last];
    if (value === undefined) delete to[last];
    else to[last] = structuredClone(value);
  }
  return out as unknown as Config;
}
