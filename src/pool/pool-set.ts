import { parseScramVerifier, type ScramClientKeys } from '../auth/scram.js';
import { loadServerTls } from '../auth/server-tls.js';
import type { Config, NodeConfig, UserConfig } from '../config/types.js';
import { NodeBudget } from './node-budget.js';
import { Pool, type PoolOptions } from './pool.js';
import type { ServerConnection, ServerLogin } from './server-connection.js';

/**
 * Every pool, keyed by node, user and database. Pools are made on first use, and reclaimed once
 * they have held no connection and no waiting unit for two sweeps in a row (a sweep every
 * `pool.idle_timeout_ms`, between 100 ms and 10 s): a client cannot grow pgrelay's memory by
 * naming many databases. The connections of a node across its pools are capped by
 * `pool.max_per_node` (see node-budget.ts). A reload that removes a node (or a user, or moves a
 * node, or changes credentials) retires the pools concerned: they lend nothing more, and close
 * once their lent connections have finished their unit.
 */
export class PoolSet {
  private readonly pools = new Map<string, Pool>();
  /**
   * The pool `get` last found per node (one user and database in the common case): no key string
   * built and hashed per unit. Valid while `generation` is unchanged (bumped when pools go).
   */
  private readonly recent = new Map<string, { user: string; database: string; pool: Pool; generation: number }>();
  private generation = 0;
  /** draining pools, with their key (a connection lent by one comes back through `get`) */
  private readonly retired = new Map<Pool, string>();
  private nodes = new Map<string, NodeConfig>();
  private users = new Map<string, UserConfig>();
  private options: PoolOptions;
  /** the configured password (or verifier) each pool was made with, to tell a changed one on reload */
  private readonly madeWith = new WeakMap<Pool, string>();
  /**
   * SCRAM pass-through: the keys a client of this verifier-only user proved (UserDirectory), used
   * to log in to the servers; set by App.
   */
  passThroughKeys: ((user: string) => ScramClientKeys | undefined) | undefined;
  /** auth_query: users not in the config that a lookup found (their verifier as the password); set by App */
  lookedUpUser: ((user: string) => UserConfig | undefined) | undefined;
  /** told when any pool of a node sees a broken connection (for immediate health checks) */
  onNodeBroken: ((node: string, error: Error | undefined) => void) | undefined;
  private readonly budgets = new Map<string, NodeBudget>();
  private maxPerNode = 0;
  /** pools found empty at the last sweep: reclaimed if still empty at the next */
  private emptyAtLastSweep = new Set<Pool>();
  private sweeper: NodeJS.Timeout | undefined;
  private sweepEveryMs = 0;
  /** pools reclaimed since start (for tests and diagnostics) */
  reclaimed = 0;

  constructor(config: Config) {
    this.options = poolOptions(config);
    this.configure(config);
  }

  configure(config: Config): void {
    this.maxPerNode = config.pool.max_per_node;
    for (const budget of this.budgets.values()) budget.resize(this.maxPerNode);
    this.armSweeper(Math.min(10_000, Math.max(100, config.pool.idle_timeout_ms === 0 ? 10_000 : config.pool.idle_timeout_ms)));
    this.nodes = new Map(config.nodes.map((n) => [n.name, n]));
    this.users = new Map(config.users.map((u) => [u.name, u]));
    const next = poolOptions(config);
    this.options = next;
    for (const [key, pool] of this.pools) {
      const node = this.nodes.get(pool.endpoint.node);
      const user = this.userConfig(userOf(key));
      if (!node || !user || node.host !== pool.endpoint.host || node.port !== pool.endpoint.port || serverPassword(user) !== this.madeWith.get(pool) || (user.server_user ?? user.name) !== pool.login.user) {
        this.pools.delete(key);
        this.generation++;
        this.retire(key, pool);
      } else pool.reconfigure(next);
    }
  }

  private retire(key: string, pool: Pool): void {
    this.retired.set(pool, key);
    pool.drain(() => this.retired.delete(pool));
  }

  /** A connection came back to a pool that did not lend it: the retired pool that did takes it. */
  private stray(conn: ServerConnection, reusable: boolean): void {
    for (const pool of this.retired.keys()) {
      if (!pool.owns(conn)) continue;
      if (reusable) pool.release(conn);
      else pool.discard(conn);
      return;
    }
  }

  /** Adds or moves a node at run time (topology discovered from Patroni, or an added replica). */
  upsertNode(node: NodeConfig): void {
    const old = this.nodes.get(node.name);
    this.nodes.set(node.name, node);
    if (old && (old.host !== node.host || old.port !== node.port)) this.closeNode(node.name);
  }

  get(nodeName: string, user: string, database: string): Pool {
    const recent = this.recent.get(nodeName);
    if (recent !== undefined && recent.generation === this.generation && recent.user === user && recent.database === database) return recent.pool;
    const key = `${nodeName}\0${user}\0${database}`;
    let pool = this.pools.get(key);
    if (pool) {
      this.recent.set(nodeName, { user, database, pool, generation: this.generation });
      return pool;
    }
    const node = this.nodes.get(nodeName);
    const userConfig = this.userConfig(user);
    if (!node || !userConfig) {
      // a session giving back a connection of a node (or user) that a reload removed
      for (const [retired, retiredKey] of this.retired) if (retiredKey === key) return retired;
    }
    if (!node) throw new Error(`unknown node ${nodeName}`);
    if (!userConfig) throw new Error(`unknown user ${user}`);
    pool = new Pool({ node: node.name, host: node.host, port: node.port }, this.loginFor(userConfig, database), this.options);
    this.madeWith.set(pool, serverPassword(userConfig));
    pool.onBroken = (error) => this.onNodeBroken?.(nodeName, error);
    pool.onStray = (conn, reusable) => this.stray(conn, reusable);
    pool.budget = this.budget(nodeName);
    pool.budget.pools.add(pool);
    this.pools.set(key, pool);
    return pool;
  }

  private budget(nodeName: string): NodeBudget {
    let budget = this.budgets.get(nodeName);
    if (budget === undefined) {
      budget = new NodeBudget(this.maxPerNode);
      this.budgets.set(nodeName, budget);
    }
    return budget;
  }

  private armSweeper(everyMs: number): void {
    if (this.sweeper !== undefined && this.sweepEveryMs === everyMs) return;
    clearInterval(this.sweeper);
    this.sweepEveryMs = everyMs;
    this.sweeper = setInterval(() => this.sweep(), everyMs);
    this.sweeper.unref();
  }

  /** Reclaims the pools that were empty (no connection, no waiting unit) at this sweep and the last. */
  sweep(): void {
    const empty = new Set<Pool>();
    for (const [key, pool] of this.pools) {
      const { idle, active, connecting, waiting } = pool.stats();
      if (idle + active + connecting + waiting > 0) continue;
      if (!this.emptyAtLastSweep.has(pool)) {
        empty.add(pool);
        continue;
      }
      this.pools.delete(key);
      this.generation++;
      this.reclaimed++;
      pool.close();
    }
    this.emptyAtLastSweep = empty;
  }

  private userConfig(name: string): UserConfig | undefined {
    return this.users.get(name) ?? this.lookedUpUser?.(name);
  }

  /**
   * The login towards the servers: the server password, or — for a user whose config holds only a
   * SCRAM verifier and no server_password — the keys a client proved (SCRAM pass-through), read at
   * each connect. The servers must hold the same verifier (salt and iteration count).
   */
  private loginFor(user: UserConfig, database: string): ServerLogin {
    const name = user.server_user ?? user.name;
    if (user.server_password !== undefined || parseScramVerifier(user.password) === undefined) return { user: name, password: serverPassword(user), database };
    const keys = () => this.passThroughKeys?.(user.name);
    return {
      user: name,
      database,
      get password() {
        return keys() ?? '';
      },
    };
  }

  /** Pools of one node, draining ones included (for metrics and status). */
  ofNode(nodeName: string): Pool[] {
    return this.all().filter((p) => p.endpoint.node === nodeName);
  }

  /** Every pool, draining ones included. */
  all(): Pool[] {
    return [...this.pools.values(), ...this.retired.keys()];
  }

  /** Closes every pool of a node (it went down, was fenced or removed). */
  closeNode(nodeName: string): void {
    for (const [key, pool] of this.pools) {
      if (pool.endpoint.node === nodeName) {
        pool.close();
        this.pools.delete(key);
        this.generation++;
      }
    }
    for (const pool of this.retired.keys()) {
      if (pool.endpoint.node === nodeName) {
        pool.close();
        this.retired.delete(pool);
      }
    }
  }

  close(): void {
    clearInterval(this.sweeper);
    this.sweeper = undefined;
    for (const pool of this.all()) pool.close();
    this.pools.clear();
    this.generation++;
    this.retired.clear();
  }
}

function userOf(key: string): string {
  return key.split('\0')[1]!;
}

function serverPassword(user: UserConfig): string {
  return user.server_password ?? user.password;
}

function poolOptions(config: Config): PoolOptions {
  return {
    size: config.pool.size,
    checkoutTimeoutMs: config.pool.checkout_timeout_ms,
    idleTimeoutMs: config.pool.idle_timeout_ms,
    maxLifetimeMs: config.pool.max_lifetime_ms,
    connectTimeoutMs: config.pool.connect_timeout_ms,
    tls: loadServerTls(config),
    requireAuth: new Set(config.server_auth.require_auth),
  };
}
