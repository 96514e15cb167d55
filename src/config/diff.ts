/**
 * What a reload (SIGHUP) changes: pure, no I/O. Nodes are matched by name (a node whose host or
 * port changed is "changed", with the fields listed); users by name, and only their names are
 * reported, never credentials. Node order is reported too (`reordered`), because it breaks ties
 * between synchronous standbys when failover chooses one.
 *
 * Everything applies live except the keys in RESTART_REQUIRED_KEYS (the addresses of the listening
 * sockets); a reload that changes one of them should apply the rest and log that a restart is
 * needed for those. Client-facing TLS (tls.*) is live: app.ts builds a new SecureContext on reload
 * and each new client uses the current one, so a certificate can be rotated with SIGHUP.
 */
import type { Config, NodeConfig, UserConfig } from './types.js';

export type ConfigSection = Exclude<keyof Config, 'nodes' | 'users'>;

export interface NodeChange {
  readonly name: string;
  readonly before: NodeConfig;
  readonly after: NodeConfig;
  readonly fields: readonly (keyof NodeConfig)[];
}

export interface ConfigDiff {
  /** whether anything at all differs */
  readonly changed: boolean;
  readonly nodes: {
    readonly added: readonly NodeConfig[];
    readonly removed: readonly NodeConfig[];
    readonly changed: readonly NodeChange[];
    /** the nodes present in both are in a different order */
    readonly reordered: boolean;
  };
  /** user names only; `changed` = a password, server_user or server_password differs */
  readonly users: { readonly added: readonly string[]; readonly removed: readonly string[]; readonly changed: readonly string[] };
  /** sections other than nodes and users with at least one changed key, in Config order */
  readonly sections: readonly ConfigSection[];
  /** every changed key outside nodes and users, e.g. `routing.max_lag_ms`; lists are compared whole */
  readonly keys: readonly string[];
  /** the changed keys that take effect only after a restart */
  readonly restartRequired: readonly string[];
}

export const RESTART_REQUIRED_KEYS: readonly string[] = [
  'listen.host',
  'listen.port',
  'admin.host',
  'admin.port',
  'admin.cert',
  'admin.key',
  'workers',
];

const nodeFields = ['host', 'port', 'role', 'weight'] as const satisfies readonly (keyof NodeConfig)[];
const userFields = ['password', 'server_user', 'server_password'] as const satisfies readonly (keyof UserConfig)[];

export function diffConfig(old: Config, next: Config): ConfigDiff {
  const nodes = diffNodes(old.nodes, next.nodes);
  const users = diffUsers(old.users, next.users);
  const keys: string[] = [];
  const sections: ConfigSection[] = [];
  const sectionNames = unionKeys(old, next).filter((key): key is ConfigSection => key !== 'nodes' && key !== 'users');
  for (const section of sectionNames) {
    const before = keys.length;
    diffValues(old[section], next[section], section, keys);
    if (keys.length > before) sections.push(section);
  }
  const restartRequired = keys.filter((key) => RESTART_REQUIRED_KEYS.includes(key));
  const changed =
    keys.length > 0 ||
    nodes.added.length + nodes.removed.length + nodes.changed.length > 0 ||
    nodes.reordered ||
    users.added.length + users.removed.length + users.changed.length > 0;
  return { changed, nodes, users, sections, keys, restartRequired };
}

/** One line for the reload log, e.g. `nodes +replica3 -replica2 ~primary(port); routing.max_lag_ms; restart needed for listen.port`. */
export function describeDiff(diff: ConfigDiff): string {
  if (!diff.changed) return 'no changes';
  const parts: string[] = [];
  const nodeParts = [
    ...diff.nodes.added.map((node) => `+${node.name}`),
    ...diff.nodes.removed.map((node) => `-${node.name}`),
    ...diff.nodes.changed.map((change) => `~${change.name}(${change.fields.join(',')})`),
    ...(diff.nodes.reordered ? ['reordered'] : []),
  ];
  if (nodeParts.length > 0) parts.push(`nodes ${nodeParts.join(' ')}`);
  const userParts = [
    ...diff.users.added.map((name) => `+${name}`),
    ...diff.users.removed.map((name) => `-${name}`),
    ...diff.users.changed.map((name) => `~${name}`),
  ];
  if (userParts.length > 0) parts.push(`users ${userParts.join(' ')}`);
  const live = diff.keys.filter((key) => !diff.restartRequired.includes(key));
  if (live.length > 0) parts.push(live.join(', '));
  if (diff.restartRequired.length > 0) parts.push(`restart needed for ${diff.restartRequired.join(', ')}`);
  return parts.join('; ');
}

function diffNodes(old: readonly NodeConfig[], next: readonly NodeConfig[]): ConfigDiff['nodes'] {
  const oldByName = new Map(old.map((node) => [node.name, node]));
  const nextByName = new Map(next.map((node) => [node.name, node]));
  const added = next.filter((node) => !oldByName.has(node.name));
  const removed = old.filter((node) => !nextByName.has(node.name));
  const changed: NodeChange[] = [];
  for (const after of next) {
    const before = oldByName.get(after.name);
    if (before === undefined) continue;
    const fields = nodeFields.filter((field) => before[field] !== after[field]);
    if (fields.length > 0) changed.push({ name: after.name, before, after, fields });
  }
  const keptOld = old.filter((node) => nextByName.has(node.name)).map((node) => node.name);
  const keptNext = next.filter((node) => oldByName.has(node.name)).map((node) => node.name);
  const reordered = keptOld.some((name, i) => keptNext[i] !== name);
  return { added, removed, changed, reordered };
}

function diffUsers(old: readonly UserConfig[], next: readonly UserConfig[]): ConfigDiff['users'] {
  const oldByName = new Map(old.map((user) => [user.name, user]));
  const nextNames = new Set(next.map((user) => user.name));
  return {
    added: next.filter((user) => !oldByName.has(user.name)).map((user) => user.name),
    removed: old.filter((user) => !nextNames.has(user.name)).map((user) => user.name),
    changed: next
      .filter((user) => {
        const before = oldByName.get(user.name);
        return before !== undefined && userFields.some((field) => before[field] !== user[field]);
      })
      .map((user) => user.name),
  };
}

/** Appends to `out` the path of every leaf that differs; arrays are leaves. */
function diffValues(a: unknown, b: unknown, path: string, out: string[]): void {
  if (isPlainObject(a) && isPlainObject(b)) {
    for (const key of unionKeys(a, b)) diffValues(a[key], b[key], `${path}.${key}`, out);
    return;
  }
  if (!sameValue(a, b)) out.push(path);
}

function sameValue(a: unknown, b: unknown): boolean {
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((item, i) => sameValue(item, b[i]));
  if (isPlainObject(a) && isPlainObject(b)) {
    const keys = unionKeys(a, b);
    return keys.every((key) => sameValue(a[key], b[key]));
  }
  return Object.is(a, b);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function unionKeys<T extends object>(a: T, b: T): (keyof T & string)[] {
  return [...new Set([...Object.keys(a), ...Object.keys(b)])] as (keyof T & string)[];
}
