/**
 * The validated, defaulted configuration. The YAML keys are in DESIGN.md ("Contracts"); the loader
 * (load.ts) turns a file into this shape or throws ConfigError naming the key and the line.
 * Durations are milliseconds, sizes are bytes.
 */
export type NodeRole = 'primary' | 'standby' | 'replica';
export type PoolMode = 'transaction' | 'session';
export type Consistency = 'eventual' | 'session' | 'global';
export type Balance = 'latency' | 'round_robin' | 'random' | 'least_connections' | 'weighted';
export type Fallback = 'primary' | 'error';
export type FailoverMode = 'managed' | 'follow' | 'patroni' | 'off';
/**
 * Who may read the admin API without a token: `open` every GET; `probes` only /health and
 * /metrics (the rest needs admin.read_token or admin.token); `token` nothing.
 */
export type AdminReadAccess = 'open' | 'probes' | 'token';
export type AuthMethod = 'scram-sha-256' | 'md5' | 'trust';
/** libpq's `require_auth` names: cleartext `password`, `md5`, `scram-sha-256`, `none` (trust) */
export type ServerAuthMethod = 'password' | 'md5' | 'scram-sha-256' | 'none';

export interface NodeConfig {
  /** unique, non-empty; used in metrics labels and the admin API */
  name: string;
  host: string;
  /** default 5432 */
  port: number;
  /**
   * default `replica`. A starting hint (the servers' recovery state is the truth). Outside patroni
   * mode exactly one node is `primary`. Several `standby` nodes are allowed; failover promotes the
   * one the primary last reported as synchronous (the role alone is not evidence).
   */
  role: NodeRole;
  /** relative share of reads under `weighted` balancing; default 1; ≥ 0 (0 = never chosen while others qualify) */
  weight: number;
}

export interface UserConfig {
  name: string;
  /** what the client must present to pgrelay */
  password: string;
  /** credentials pgrelay uses towards the servers; default: the same name and password */
  server_user?: string;
  server_password?: string;
}

export interface Config {
  listen: { host: string; port: number };
  /**
   * The admin HTTP port. `token`: needed for every state-changing request (POST, DELETE; none
   * are allowed without it); `read_token`: read-only access; `read_access`: see AdminReadAccess;
   * `allowed_hosts`: host names accepted in the Host header besides IP addresses, `localhost` and
   * `host` (DNS rebinding); `cert`/`key`: PEM files, both or neither: HTTPS instead of HTTP.
   */
  admin: { host: string; port: number; token?: string; read_token?: string; read_access: AdminReadAccess; allowed_hosts: string[]; cert?: string; key?: string };
  nodes: NodeConfig[];
  users: UserConfig[];
  auth: { method: AuthMethod };
  /**
   * users not in `users`: their SCRAM verifier is read from the primary with `query` ($1 = the
   * user name, the verifier in the second column), as `user`; they then log in by SCRAM
   * pass-through (auth/auth-query.ts)
   */
  auth_query?: { user: string; password?: string; query: string; database: string };
  pool: {
    mode: PoolMode;
    /** server connections per node, user and database */
    size: number;
    /** how long a client waits for a server connection before 53300 */
    checkout_timeout_ms: number;
    /** idle server connections are closed after this long; 0 = never */
    idle_timeout_ms: number;
    /**
     * a server connection this old is closed when it comes back to its pool (PgBouncer's
     * server_lifetime), never while a client holds it; 0 = never
     */
    max_lifetime_ms: number;
    /** connect + authenticate timeout towards a server */
    connect_timeout_ms: number;
    /**
     * server connections one node may have open across all its pools (every user and database);
     * 0 = no cap. A unit that needs a connection past the cap waits as it would for its pool.
     */
    max_per_node: number;
    /**
     * server-side prepared statements one server connection keeps (0 = no cap); past it, the
     * least recently used is closed there (in line with the unit that needs a new one)
     */
    max_prepared_statements: number;
    /** bytes of statement texts pgrelay keeps to share server-side statements between clients (least recently used go) */
    max_statement_registry_bytes: number;
    /**
     * units one server connection may hold at once when every connection of the pool is busy:
     * self-contained autocommit units of several clients are queued behind each other on it
     * (src/pool/server-pipeline.ts); 0 or 1 = no pipelining
     */
    pipeline_depth: number;
    /**
     * with pipelining on: how many connections of a pool run units on their own before a
     * self-contained unit queues behind another client's running one (where one has room) instead
     * of taking another connection; 0 = only when every connection of the pool is busy
     */
    pipeline_after: number;
  };
  client: {
    max_connections: number;
    startup_timeout_ms: number;
    /** a client message larger than this is refused with 08P01 */
    max_message_bytes: number;
  };
  routing: {
    consistency: Consistency;
    max_lag_ms: number;
    /** 0 = no byte limit */
    max_lag_bytes: number;
    balance: Balance;
    fallback: Fallback;
    lag_interval_ms: number;
    /**
     * read-your-writes: how long a read whose fence no replica is known to satisfy yet waits for
     * one (replay positions sampled every ~1 ms meanwhile) before it goes to the primary; 0 = at once
     */
    fence_wait_ms: number;
    /**
     * a transaction begun with a plain BEGIN: `optimistic` starts it on a replica while it only
     * reads and moves it to the primary (its reads verified there) before anything else;
     * `primary` runs it on the primary
     */
    transactions: 'optimistic' | 'primary';
    /** the client messages an optimistic transaction keeps to run again on the primary; past it, it moves at once */
    optimistic_max_bytes: number;
    /** force functions: names listed under primary route to the primary, under replica may go to replicas */
    functions: { primary: string[]; replica: string[] };
    /** how often pg_proc volatility is re-read from the primary */
    volatility_refresh_ms: number;
    /**
     * the lowest synchronous_commit a client may set (SET, set_config, startup parameter,
     * ALTER … SET); lower is refused with 42501. `off` lets clients set anything.
     */
    min_synchronous_commit: 'off' | 'local' | 'remote_write' | 'on' | 'remote_apply';
  };
  /**
   * `user`/`password`: the role health checks and the lag monitor log in as (pg_monitor is
   * enough); default: the first of `users` with its server credentials.
   */
  health: { interval_ms: number; timeout_ms: number; failures: number; user?: string; password?: string };
  /** `wait_ms`: how long units for the primary wait during a failover; 0 = fail at once */
  /**
   * `user`/`password`: the role that promotes (pg_promote) and re-points replicas (ALTER SYSTEM):
   * a superuser; default: health's credentials.
   */
  /**
   * `evidence_max_age_ms`: how old the primary's last observed replication state (which standby
   * was synchronous) may be and still decide a failover; default (health.interval_ms +
   * health.timeout_ms) × (health.failures + 2). Older evidence, or none (pgrelay started while
   * the primary was down), promotes nothing unless `allow_data_loss`.
   */
  failover: { mode: FailoverMode; wait_ms: number; allow_data_loss: boolean; evidence_max_age_ms?: number; user?: string; password?: string };
  /** Patroni REST API base URLs (http:// or https://); required non-empty when failover.mode is patroni */
  patroni: { endpoints: string[]; poll_ms: number };
  /**
   * client-facing TLS: PEM file paths, both or neither; `required` refuses plaintext clients and
   * needs both. loadConfig resolves relative paths against the config file's directory and checks
   * that the files exist.
   */
  tls: { cert?: string; key?: string; required: boolean };
  /**
   * server-facing authentication: the methods a server may ask pgrelay for (libpq's
   * `require_auth`; see auth/server-auth.ts). Default: scram-sha-256, md5, none (no cleartext).
   */
  server_auth: { require_auth: ServerAuthMethod[] };
  /**
   * server-facing TLS, libpq's sslmode (see auth/server-tls.ts); `ca` is a PEM file path
   * (resolved like tls.cert), required by verify-ca and verify-full
   */
  server_tls: { mode: 'disable' | 'prefer' | 'require' | 'verify-ca' | 'verify-full'; ca?: string };
  log: { level: 'debug' | 'info' | 'warn' | 'error'; format: 'json' | 'pretty' };
  /** processes serving clients (workers.ts): 1 = one process, no fork; `auto` = one per CPU */
  workers: number | 'auto';
}

/** Defaults for the keys of one `nodes` entry (name and host are required). */
export const nodeDefaults = { port: 5432, role: 'replica', weight: 1 } as const satisfies Omit<NodeConfig, 'name' | 'host'>;

export const defaults = {
  listen: { host: '127.0.0.1', port: 6432 },
  admin: { host: '127.0.0.1', port: 9930, read_access: 'open', allowed_hosts: [] },
  auth: { method: 'scram-sha-256' },
  pool: { mode: 'transaction', size: 20, checkout_timeout_ms: 5000, idle_timeout_ms: 600_000, max_lifetime_ms: 3_600_000, connect_timeout_ms: 5000, max_per_node: 0, max_prepared_statements: 200, max_statement_registry_bytes: 64 * 1024 * 1024, pipeline_depth: 1, pipeline_after: 0 },
  client: { max_connections: 10_000, startup_timeout_ms: 10_000, max_message_bytes: 256 * 1024 * 1024 },
  routing: {
    consistency: 'session',
    max_lag_ms: 1000,
    max_lag_bytes: 0,
    balance: 'latency',
    fallback: 'primary',
    lag_interval_ms: 250,
    fence_wait_ms: 10,
    transactions: 'optimistic',
    optimistic_max_bytes: 1024 * 1024,
    functions: { primary: [], replica: [] },
    volatility_refresh_ms: 60_000,
    min_synchronous_commit: 'on',
  },
  health: { interval_ms: 1000, timeout_ms: 1000, failures: 3 },
  failover: { mode: 'managed', wait_ms: 30_000, allow_data_loss: false },
  patroni: { endpoints: [], poll_ms: 1000 },
  tls: { required: false },
  server_auth: { require_auth: ['scram-sha-256', 'md5', 'none'] },
  server_tls: { mode: 'disable' },
  log: { level: 'info', format: 'json' },
  workers: 1,
} as const satisfies Omit<Config, 'nodes' | 'users' | 'tls' | 'server_tls' | 'server_auth'> & Record<string, unknown>;
