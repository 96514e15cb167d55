/**
 * The shape of the YAML file: every key, what it accepts, and its default (from types.ts).
 * Rules that involve several keys (one primary, unique names, tls pairs…) are in validate.ts.
 */
import {
  bool,
  duration,
  httpUrl,
  int,
  list,
  num,
  obj,
  oneOf,
  optional,
  required,
  size,
  str,
  withDefault,
  type Spec,
} from './reader.js';
import { DEFAULT_AUTH_QUERY } from './auth-query-default.js';
import { workerCount } from './workers-key.js';
import { defaults, nodeDefaults, type Config, type NodeConfig, type UserConfig } from './types.js';

const port = int({ min: 1, max: 65535 });
const listenPort = int({ min: 0, max: 65535, note: '0 picks a free port' });
const host = str({ nonEmpty: true });

/** PostgreSQL refuses messages over 1GB; below 8kB even a startup packet may not fit. */
const MIN_MESSAGE_BYTES = 8 * 1024;
const MAX_MESSAGE_BYTES = 1024 ** 3;

const nodeSpec = obj<NodeConfig>({
  name: required(str({ nonEmpty: true }), 'every node needs a unique name'),
  host: required(host, 'the address of this PostgreSQL server'),
  port: withDefault(port, nodeDefaults.port),
  role: withDefault(oneOf(['primary', 'standby', 'replica']), nodeDefaults.role),
  weight: withDefault(num({ min: 0 }), nodeDefaults.weight),
});

const userSpec = obj<UserConfig>({
  name: required(str({ nonEmpty: true }), 'the user name clients log in with'),
  // required unless auth.method is trust: checked in validate.ts
  password: withDefault(str({ secret: true }), ''),
  server_user: optional(str({ nonEmpty: true })),
  server_password: optional(str({ secret: true })),
});

/** Settings that have no default value: nodes and users. validate.ts decides when they are required. */
export const configSpec: Spec<Config> = obj<Config>(
  {
    listen: withDefault(
      obj<Config['listen']>({
        host: withDefault(host, defaults.listen.host),
        port: withDefault(listenPort, defaults.listen.port),
      }),
      () => ({ ...defaults.listen }),
    ),
    admin: withDefault(
      obj<Config['admin']>({
        host: withDefault(host, defaults.admin.host),
        port: withDefault(listenPort, defaults.admin.port),
        token: optional(str({ nonEmpty: true, secret: true })),
        read_token: optional(str({ nonEmpty: true, secret: true })),
        read_access: withDefault(oneOf(['open', 'probes', 'token']), defaults.admin.read_access),
        allowed_hosts: withDefault(list(str({ nonEmpty: true })), () => []),
        cert: optional(str({ nonEmpty: true })),
        key: optional(str({ nonEmpty: true })),
      }),
      () => ({ ...defaults.admin, allowed_hosts: [] }),
    ),
    nodes: withDefault(list(nodeSpec), () => []),
    users: withDefault(list(userSpec), () => []),
    auth: withDefault(
      obj<Config['auth']>({
        method: withDefault(oneOf(['scram-sha-256', 'md5', 'trust']), defaults.auth.method),
      }),
      () => ({ ...defaults.auth }),
    ),
    auth_query: optional(
      obj<NonNullable<Config['auth_query']>>({
        user: required(str({ nonEmpty: true }), 'the role that reads the verifiers (see README: a SECURITY DEFINER function is enough)'),
        password: optional(str({ secret: true })),
        query: withDefault(str({ nonEmpty: true }), DEFAULT_AUTH_QUERY),
        database: withDefault(str({ nonEmpty: true }), 'postgres'),
      }),
    ),
    pool: withDefault(
      obj<Config['pool']>({
        mode: withDefault(oneOf(['transaction', 'session']), defaults.pool.mode),
        size: withDefault(int({ min: 1 }), defaults.pool.size),
        checkout_timeout_ms: withDefault(duration({ positive: true }), defaults.pool.checkout_timeout_ms),
        idle_timeout_ms: withDefault(duration(), defaults.pool.idle_timeout_ms),
        max_lifetime_ms: withDefault(duration(), defaults.pool.max_lifetime_ms),
        connect_timeout_ms: withDefault(duration({ positive: true }), defaults.pool.connect_timeout_ms),
        max_per_node: withDefault(int({ min: 0 }), defaults.pool.max_per_node),
        max_prepared_statements: withDefault(int({ min: 0 }), defaults.pool.max_prepared_statements),
        max_statement_registry_bytes: withDefault(size({ min: 1024 * 1024 }), defaults.pool.max_statement_registry_bytes),
        pipeline_depth: withDefault(int({ min: 0, max: 64 }), defaults.pool.pipeline_depth),
        pipeline_after: withDefault(int({ min: 0 }), defaults.pool.pipeline_after),
      }),
      () => ({ ...defaults.pool }),
    ),
    client: withDefault(
      obj<Config['client']>({
        max_connections: withDefault(int({ min: 1 }), defaults.client.max_connections),
        startup_timeout_ms: withDefault(duration({ positive: true }), defaults.client.startup_timeout_ms),
        max_message_bytes: withDefault(size({ min: MIN_MESSAGE_BYTES, max: MAX_MESSAGE_BYTES }), defaults.client.max_message_bytes),
      }),
      () => ({ ...defaults.client }),
    ),
    routing: withDefault(
      obj<Config['routing']>({
        consistency: withDefault(oneOf(['eventual', 'session', 'global']), defaults.routing.consistency),
        max_lag_ms: withDefault(duration(), defaults.routing.max_lag_ms),
        max_lag_bytes: withDefault(size({ min: 0 }), defaults.routing.max_lag_bytes),
        balance: withDefault(oneOf(['latency', 'round_robin', 'random', 'least_connections', 'weighted']), defaults.routing.balance),
        fallback: withDefault(oneOf(['primary', 'error']), defaults.routing.fallback),
        lag_interval_ms: withDefault(duration({ positive: true }), defaults.routing.lag_interval_ms),
        fence_wait_ms: withDefault(duration({ max: 1000 }), defaults.routing.fence_wait_ms),
        transactions: withDefault(oneOf(['optimistic', 'primary']), defaults.routing.transactions),
        optimistic_max_bytes: withDefault(size({ min: 0 }), defaults.routing.optimistic_max_bytes),
        functions: withDefault(
          obj<Config['routing']['functions']>({
            primary: withDefault(list(str({ nonEmpty: true })), () => []),
            replica: withDefault(list(str({ nonEmpty: true })), () => []),
          }),
          () => ({ primary: [], replica: [] }),
        ),
        volatility_refresh_ms: withDefault(duration({ positive: true }), defaults.routing.volatility_refresh_ms),
        min_synchronous_commit: withDefault(oneOf(['off', 'local', 'remote_write', 'on', 'remote_apply']), defaults.routing.min_synchronous_commit),
      }),
      () => ({ ...defaults.routing, functions: { primary: [], replica: [] } }),
    ),
    health: withDefault(
      obj<Config['health']>({
        interval_ms: withDefault(duration({ positive: true }), defaults.health.interval_ms),
        timeout_ms: withDefault(duration({ positive: true }), defaults.health.timeout_ms),
        failures: withDefault(int({ min: 1 }), defaults.health.failures),
        user: optional(str({ nonEmpty: true })),
        password: optional(str({ secret: true })),
      }),
      () => ({ ...defaults.health }),
    ),
    failover: withDefault(
      obj<Config['failover']>({
        mode: withDefault(oneOf(['managed', 'follow', 'patroni', 'off']), defaults.failover.mode),
        wait_ms: withDefault(duration(), defaults.failover.wait_ms),
        allow_data_loss: withDefault(bool(), defaults.failover.allow_data_loss),
        evidence_max_age_ms: optional(duration({ positive: true })),
        user: optional(str({ nonEmpty: true })),
        password: optional(str({ secret: true })),
      }),
      () => ({ ...defaults.failover }),
    ),
    patroni: withDefault(
      obj<Config['patroni']>({
        endpoints: withDefault(list(httpUrl()), () => []),
        poll_ms: withDefault(duration({ positive: true }), defaults.patroni.poll_ms),
      }),
      () => ({ endpoints: [], poll_ms: defaults.patroni.poll_ms }),
    ),
    tls: withDefault(
      obj<Config['tls']>({
        cert: optional(str({ nonEmpty: true })),
        key: optional(str({ nonEmpty: true })),
        required: withDefault(bool(), defaults.tls.required),
      }),
      () => ({ ...defaults.tls }),
    ),
    server_auth: withDefault(
      obj<Config['server_auth']>({
        require_auth: withDefault(list(oneOf(['password', 'md5', 'scram-sha-256', 'none'])), () => [...defaults.server_auth.require_auth]),
      }),
      () => ({ require_auth: [...defaults.server_auth.require_auth] }),
    ),
    server_tls: withDefault(
      obj<Config['server_tls']>({
        mode: withDefault(oneOf(['disable', 'prefer', 'require', 'verify-ca', 'verify-full']), defaults.server_tls.mode),
        ca: optional(str({ nonEmpty: true })),
      }),
      () => ({ ...defaults.server_tls }),
    ),
    log: withDefault(
      obj<Config['log']>({
        level: withDefault(oneOf(['debug', 'info', 'warn', 'error']), defaults.log.level),
        format: withDefault(oneOf(['json', 'pretty']), defaults.log.format),
      }),
      () => ({ ...defaults.log }),
    ),
    workers: withDefault(workerCount(), defaults.workers),
  },
  // top-level `x-…` keys are ignored: a place for YAML anchors (`x-node: &node {port: 5432}`)
  { ignoreKey: (key) => key.startsWith('x-') },
);
