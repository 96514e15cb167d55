/**
 * TLS towards the servers (`server_tls`), one policy for every connection pgrelay opens to a
 * node: the data path, health checks, the lag monitor, the pg_proc reader, failover
 * administration and cancel requests. The modes are libpq's `sslmode`:
 *   - `disable`: plaintext;
 *   - `prefer`: TLS when the server offers it, else plaintext (no protection against a man in the
 *     middle, who can refuse TLS);
 *   - `require`: TLS or nothing; the certificate chain is verified against `ca` when it is set
 *     (as libpq does with a root certificate file), else not at all;
 *   - `verify-ca`: TLS, the chain verified against `ca`;
 *   - `verify-full`: `verify-ca` and the certificate must name the host pgrelay connects to (its
 *     DNS name or IP address in subjectAltName; the CN only when there is no subjectAltName).
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import type { Config } from '../config/types.js';

export type ServerTlsMode = Config['server_tls']['mode'];

export interface ServerTlsSettings {
  mode: ServerTlsMode;
  /** PEM of the CA that signs the servers' certificates */
  ca?: string;
}

/** server_tls with the CA file read (paths are resolved by the config loader). */
export function loadServerTls(config: Config): ServerTlsSettings {
  const { mode, ca } = config.server_tls;
  return ca === undefined ? { mode } : { mode, ca: readFileSync(ca, 'utf8') };
}

/** Whether the server's certificate is checked at all. */
function verifies(settings: ServerTlsSettings): boolean {
  return settings.mode === 'verify-ca' || settings.mode === 'verify-full' || (settings.mode !== 'disable' && settings.ca !== undefined);
}

/**
 * Options for `tls.connect` over a socket to `host` (SNI for names, never for addresses).
 * Node's own identity check is replaced: by the host name check under verify-full, by none below.
 */
export function tlsOptions(settings: ServerTlsSettings, host: string): tls.ConnectionOptions {
  const verify = verifies(settings);
  return {
    servername: net.isIP(host) ? undefined : host,
    ca: settings.ca,
    rejectUnauthorized: verify,
    checkServerIdentity: settings.mode === 'verify-full' ? (_name, cert) => tls.checkServerIdentity(host, cert) : () => undefined,
  };
}

/**
 * The `ssl` option of a pg.Client to `host`: false for disable and prefer (pg cannot fall back
 * to plaintext: a caller that honours prefer tries `pgSslAttempt` first), else the TLS options.
 */
export function pgSsl(settings: ServerTlsSettings, host: string): false | tls.ConnectionOptions {
  if (settings.mode === 'disable' || settings.mode === 'prefer') return false;
  return tlsOptions(settings, host);
}

/** For callers that honour prefer: TLS first (then plaintext when the server says it has none). */
export function pgSslAttempt(settings: ServerTlsSettings, host: string): false | tls.ConnectionOptions {
  return settings.mode === 'disable' ? false : tlsOptions(settings, host);
}

/** pg's error when the server answered 'N' to SSLRequest. */
export function isNoTlsError(error: unknown): boolean {
  return /does not support SSL/i.test(error instanceof Error ? error.message : '');
}
