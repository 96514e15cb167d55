/**
 * Rules that involve more than one key. Each rule runs only when the keys it reads had no problem
 * of their own, so one mistake is not reported twice.
 *
 * - nodes: names unique; no two nodes at the same host:port; outside patroni mode at least one node
 *   and exactly one `primary` (several `standby` nodes are fine: the first one that is up is the
 *   failover target); in patroni mode nodes may be empty and at most one is marked primary.
 * - users: at least one; names unique; a password unless auth.method is trust.
 * - failover.mode patroni needs patroni.endpoints.
 * - tls.cert and tls.key both or neither; tls.required needs both.
 * - listen and admin must not share a host:port (port 0 excepted).
 * - a function may not be listed under both routing.functions.primary and .replica.
 * - server_auth.require_auth is not empty (no server could be logged in to).
 * - server_tls.mode verify-ca and verify-full need server_tls.ca.
 * - without health.user, the first user (whose credentials pgrelay's own connections then use)
 *   needs a password or server_password, not only a SCRAM verifier.
 * - admin.token and admin.read_token: at least 16 characters, not the same; admin.cert and
 *   admin.key both or neither; admin.read_access other than open needs a token to read with.
 * - routing.consistency global needs one process (workers 1): see workers-key.ts.
 */
import type { ReadContext } from './reader.js';
import type { Config } from './types.js';
import { globalNeedsOneProcess } from './workers-key.js';

export function validateConfig(config: Config, ctx: ReadContext): void {
  checkNodes(config, ctx);
  checkUsers(config, ctx);
  checkFailover(config, ctx);
  checkTls(config, ctx);
  checkPorts(config, ctx);
  checkFunctions(config, ctx);
  checkServerAuth(config, ctx);
  checkAdmin(config, ctx);
  checkServerTls(config, ctx);
  checkMonitorLogin(config, ctx);
  if (!ctx.hasIssuesUnder('workers') && !ctx.hasIssuesUnder('routing.consistency')) {
    const problem = globalNeedsOneProcess(config);
    if (problem) report(ctx, 'routing.consistency', problem);
  }
}

function report(ctx: ReadContext, path: string, message: string, at = path): void {
  ctx.report(path, ctx.locate(at), message);
}

/** For problems with a whole list: point at its key (`nodes:`). */
function reportAtKey(ctx: ReadContext, path: string, message: string): void {
  ctx.report(path, ctx.locateKey(path), message);
}

function checkNodes(config: Config, ctx: ReadContext): void {
  if (ctx.hasIssuesUnder('nodes') || ctx.hasIssuesUnder('failover.mode')) return;
  const patroni = config.failover.mode === 'patroni';
  const { nodes } = config;
  if (nodes.length === 0) {
    if (patroni) return;
    const message = ctx.has('nodes')
      ? 'at least one node is required (exactly one with role: primary), unless failover.mode is patroni'
      : 'required key is missing: list the PostgreSQL servers (name, host, port, role; exactly one with role: primary), or set failover.mode: patroni';
    reportAtKey(ctx, 'nodes', message);
    return;
  }

  const byName = new Map<string, number>();
  const byAddress = new Map<string, number>();
  nodes.forEach((node, i) => {
    const first = byName.get(node.name);
    if (first === undefined) byName.set(node.name, i);
    else report(ctx, `nodes[${i}].name`, `duplicate node name "${node.name}" (also nodes[${first}]${lineOf(ctx, `nodes[${first}].name`)}); node names must be unique`);
    const address = `${node.host}:${node.port}`;
    const same = byAddress.get(address);
    if (same === undefined) byAddress.set(address, i);
    else {
      const at = ctx.has(`nodes[${i}].port`) ? `nodes[${i}].port` : `nodes[${i}].host`;
      report(ctx, `nodes[${i}]`, `node "${node.name}" has the same address ${address} as node "${nodes[same]!.name}"; each node must be a different server`, at);
    }
  });

  const primaries = nodes.map((node, i) => ({ node, i })).filter(({ node }) => node.role === 'primary');
  if (primaries.length === 0 && !patroni) {
    const roles = nodes.map((node) => `${node.name}: ${node.role}`).join(', ');
    reportAtKey(ctx, 'nodes', `no primary: exactly one node must have role: primary (found ${roles}; a node without a role is a replica)`);
  } else if (primaries.length > 1) {
    const names = primaries.map(({ node, i }) => `"${node.name}"${lineOf(ctx, `nodes[${i}].role`)}`).join(', ');
    const second = primaries[1]!.i;
    const message = `more than one primary: ${names}; exactly one node may have role: primary (mark the synchronous standby role: standby, the others role: replica)`;
    ctx.report('nodes', ctx.locate(`nodes[${second}].role`), message);
  }
}

function checkUsers(config: Config, ctx: ReadContext): void {
  if (ctx.hasIssuesUnder('users')) return;
  const { users } = config;
  if (users.length === 0) {
    const message = ctx.has('users')
      ? 'at least one user is required'
      : 'required key is missing: list the users clients log in as (- name: app, password: ${APP_PASSWORD})';
    reportAtKey(ctx, 'users', message);
    return;
  }
  const trust = config.auth.method === 'trust' && !ctx.hasIssuesUnder('auth');
  const byName = new Map<string, number>();
  users.forEach((user, i) => {
    const first = byName.get(user.name);
    if (first === undefined) byName.set(user.name, i);
    else report(ctx, `users[${i}].name`, `duplicate user name "${user.name}" (also users[${first}]${lineOf(ctx, `users[${first}].name`)}); user names must be unique`);
    if (user.password === '' && !trust) {
      const path = `users[${i}].password`;
      report(ctx, path, ctx.has(path) ? 'the password is empty; it may be empty only when auth.method is trust' : 'required key is missing: a password (or set auth.method: trust)');
    }
  });
}

function checkFailover(config: Config, ctx: ReadContext): void {
  if (config.failover.mode !== 'patroni' || ctx.hasIssuesUnder('failover.mode') || ctx.hasIssuesUnder('patroni')) return;
  if (config.patroni.endpoints.length > 0) return;
  const path = ctx.has('patroni.endpoints') ? 'patroni.endpoints' : 'failover.mode';
  report(ctx, path, 'failover.mode patroni needs patroni.endpoints: a non-empty list of Patroni REST API URLs like "http://127.0.0.1:8008"');
}

function checkTls(config: Config, ctx: ReadContext): void {
  if (ctx.hasIssuesUnder('tls')) return;
  const { cert, key, required } = config.tls;
  if (cert !== undefined && key === undefined) report(ctx, 'tls.cert', 'tls.cert is set but tls.key is not; set both (PEM files) or neither');
  if (key !== undefined && cert === undefined) report(ctx, 'tls.key', 'tls.key is set but tls.cert is not; set both (PEM files) or neither');
  if (required && cert === undefined && key === undefined) report(ctx, 'tls.required', 'tls.required: true needs tls.cert and tls.key');
}

function checkPorts(config: Config, ctx: ReadContext): void {
  if (ctx.hasIssuesUnder('listen') || ctx.hasIssuesUnder('admin')) return;
  const { listen, admin } = config;
  if (listen.port !== 0 && listen.port === admin.port && listen.host === admin.host) {
    const path = ctx.has('admin.port') ? 'admin.port' : 'listen.port';
    report(ctx, path, `listen and admin both use ${listen.host}:${listen.port}; give them different ports`);
  }
}

function checkFunctions(config: Config, ctx: ReadContext): void {
  if (ctx.hasIssuesUnder('routing.functions')) return;
  const primary = new Set(config.routing.functions.primary);
  config.routing.functions.replica.forEach((name, i) => {
    if (primary.has(name)) report(ctx, `routing.functions.replica[${i}]`, `function "${name}" is listed under both routing.functions.primary and routing.functions.replica`);
  });
}

function checkServerAuth(config: Config, ctx: ReadContext): void {
  if (ctx.hasIssuesUnder('server_auth') || config.server_auth.require_auth.length > 0) return;
  report(ctx, 'server_auth.require_auth', 'server_auth.require_auth is empty: list the methods servers may use (scram-sha-256, md5, password, none)');
}

function checkMonitorLogin(config: Config, ctx: ReadContext): void {
  if (ctx.hasIssuesUnder('users') || ctx.hasIssuesUnder('health') || config.health.user !== undefined) return;
  const first = config.users[0];
  if (!first || first.server_password !== undefined || !/^SCRAM-SHA-256\$/.test(first.password)) return;
  report(ctx, 'users[0].password', `user "${first.name}" has only a SCRAM verifier, which cannot log in pgrelay's own connections (health checks, lag monitor): set health.user and health.password (a pg_monitor role)`);
}

function checkServerTls(config: Config, ctx: ReadContext): void {
  if (ctx.hasIssuesUnder('server_tls')) return;
  const { mode, ca } = config.server_tls;
  if ((mode === 'verify-ca' || mode === 'verify-full') && ca === undefined) {
    report(ctx, 'server_tls.mode', `server_tls.mode ${mode} needs server_tls.ca: the PEM file of the CA that signs the servers' certificates`);
  }
}

/** Tokens are compared whole; a short one can be guessed over HTTP. */
const MIN_ADMIN_TOKEN_LENGTH = 16;

function checkAdmin(config: Config, ctx: ReadContext): void {
  if (ctx.hasIssuesUnder('admin')) return;
  const { token, read_token: readToken, read_access: readAccess, cert, key } = config.admin;
  for (const [path, value] of [['admin.token', token], ['admin.read_token', readToken]] as const) {
    if (value !== undefined && value.length < MIN_ADMIN_TOKEN_LENGTH) {
      report(ctx, path, `${path} is too short (${value.length} characters); use at least ${MIN_ADMIN_TOKEN_LENGTH}, e.g. from \`openssl rand -base64 24\``);
    }
  }
  if (token !== undefined && token === readToken) report(ctx, 'admin.read_token', 'admin.read_token is the same as admin.token; the read-only token must differ');
  if (cert !== undefined && key === undefined) report(ctx, 'admin.cert', 'admin.cert is set but admin.key is not; set both (PEM files) or neither');
  if (key !== undefined && cert === undefined) report(ctx, 'admin.key', 'admin.key is set but admin.cert is not; set both (PEM files) or neither');
  if (readAccess !== 'open' && token === undefined && readToken === undefined) {
    report(ctx, 'admin.read_access', `admin.read_access: ${readAccess} needs admin.read_token or admin.token to read with`);
  }
}

function lineOf(ctx: ReadContext, path: string): string {
  const at = ctx.locate(path);
  return at === undefined ? '' : ` at line ${at.line}`;
}
