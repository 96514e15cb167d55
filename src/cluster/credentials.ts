import { loadServerTls, type ServerTlsSettings } from '../auth/server-tls.js';
import type { Config, ServerAuthMethod } from '../config/types.js';

export interface Credentials {
  user: string;
  password: string;
  /** the authentication methods a server may ask for (`server_auth.require_auth`) */
  requireAuth: ReadonlySet<ServerAuthMethod>;
  /** server_tls with the CA read */
  tls: ServerTlsSettings;
}

/**
 * The role pgrelay's own monitoring connections (health checks, lag monitor, pg_proc look-ups) log
 * in as: `health.user/password`, else the first configured user with its server credentials.
 */
export function monitorCredentials(config: Config): Credentials {
  const requireAuth = new Set(config.server_auth.require_auth);
  const tls = loadServerTls(config);
  if (config.health.user) return { user: config.health.user, password: config.health.password ?? '', requireAuth, tls };
  const first = config.users[0];
  if (!first) throw new Error('no users configured: set health.user for monitoring connections');
  return { user: first.server_user ?? first.name, password: first.server_password ?? first.password, requireAuth, tls };
}

/** The role that promotes and re-points nodes (a superuser): `failover.user/password`, else the monitor's. */
export function adminCredentials(config: Config): Credentials {
  if (config.failover.user) return { user: config.failover.user, password: config.failover.password ?? '', requireAuth: new Set(config.server_auth.require_auth), tls: loadServerTls(config) };
  return monitorCredentials(config);
}
