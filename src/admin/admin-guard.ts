/**
 * Who may do what on the admin port. Pure: a request's method, path and headers and the admin
 * configuration in, a verdict out. Checked in this order, before any handler runs:
 *
 * 1. Host: an IP address, `localhost`, admin.host, or a name in admin.allowed_hosts. Anything
 *    else is refused (403): a DNS-rebinding page reaches the port under its own host name.
 * 2. Origin / Sec-Fetch-Site: a browser request from another site (`Origin` not this origin,
 *    `Sec-Fetch-Site: cross-site`) is refused (403), reads included — except following a link
 *    (a GET navigation), whose answer the other site cannot read.
 * 3. A state-changing request (any method but GET and HEAD) needs `Content-Type: application/json`
 *    (415 otherwise: an HTML form or a "simple" fetch cannot send it without a CORS preflight,
 *    which this server never grants) and admin.token (403 when none is configured: the API is
 *    read-only; 401 without it or with a wrong one; 403 with the read-only token).
 * 4. A read: /health and /metrics are open unless read_access is `token`; every other path is
 *    open under read_access `open`, else needs admin.read_token or admin.token (401).
 *
 * A token is sent as `Authorization: Bearer TOKEN`, or as the password of HTTP Basic (any user
 * name), which a browser asks for and then sends with the topology page's own requests.
 * Tokens are compared in constant time.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import net from 'node:net';
import type { Config } from '../config/types.js';

export interface AdminRequest {
  method: string;
  path: string;
  headers: Readonly<Record<string, string | string[] | undefined>>;
}

export type AdminVerdict =
  | { ok: true; access: 'anonymous' | 'read' | 'write' }
  | { ok: false; status: 400 | 401 | 403 | 415; error: string; headers?: Record<string, string> };

export type AdminAccessConfig = Config['admin'];

/** Paths for scrapers and load balancers. */
const PROBES = new Set(['/health', '/metrics']);
const CHALLENGE = { 'www-authenticate': 'Basic realm="pgrelay admin", Bearer realm="pgrelay admin"' };

export function checkAdminRequest(request: AdminRequest, config: AdminAccessConfig, secure: boolean): AdminVerdict {
  const host = header(request, 'host');
  if (host === undefined) return refuse(400, 'a Host header is required');
  const hostname = hostnameOf(host);
  if (hostname === undefined || !hostAllowed(hostname, config)) {
    return refuse(403, `unexpected Host header "${printable(host)}"; add the name to admin.allowed_hosts if pgrelay is reached under it`);
  }
  const origin = header(request, 'origin');
  if (origin !== undefined && !sameOrigin(origin, host, secure)) {
    return refuse(403, `cross-origin request refused (Origin ${printable(origin)})`);
  }
  // a link from another site to the topology page is fine (the page is shown, not read by the
  // other site); any other cross-site request is not
  const method = request.method.toUpperCase();
  const navigation = (method === 'GET' || method === 'HEAD') && header(request, 'sec-fetch-mode') === 'navigate';
  if (header(request, 'sec-fetch-site') === 'cross-site' && !navigation) return refuse(403, 'cross-site request refused');

  const presented = credentials(request);
  if (method !== 'GET' && method !== 'HEAD') {
    const type = header(request, 'content-type');
    if (type === undefined || type.split(';')[0]!.trim().toLowerCase() !== 'application/json') {
      return refuse(415, 'state-changing requests need Content-Type: application/json');
    }
    if (config.token === undefined) return refuse(403, 'the admin API is read-only: set admin.token to allow state-changing requests');
    if (presented === undefined) return refuse(401, 'this request needs the admin token (Authorization: Bearer TOKEN)', CHALLENGE);
    if (matches(presented, config.token)) return { ok: true, access: 'write' };
    if (config.read_token !== undefined && matches(presented, config.read_token)) return refuse(403, 'the read-only token cannot change anything; use admin.token');
    return refuse(401, 'wrong admin token', CHALLENGE);
  }

  const open = config.read_access === 'open' || (config.read_access === 'probes' && PROBES.has(request.path));
  if (presented !== undefined) {
    if (config.token !== undefined && matches(presented, config.token)) return { ok: true, access: 'write' };
    if (config.read_token !== undefined && matches(presented, config.read_token)) return { ok: true, access: 'read' };
    // a wrong token is refused even where none is needed: a misconfigured client should learn it
    return refuse(401, 'wrong admin token', CHALLENGE);
  }
  if (open) return { ok: true, access: 'anonymous' };
  return refuse(401, 'this request needs admin.read_token or admin.token (Authorization: Bearer TOKEN)', CHALLENGE);
}

function refuse(status: 400 | 401 | 403 | 415, error: string, headers?: Record<string, string>): AdminVerdict {
  return headers ? { ok: false, status, error, headers } : { ok: false, status, error };
}

function header(request: AdminRequest, name: string): string | undefined {
  const value = request.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/** `host[:port]` or `[v6][:port]` → the host name, lower case; undefined when malformed. */
function hostnameOf(host: string): string | undefined {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+))(?::(\d{1,5}))?$/.exec(host.trim());
  if (!match) return undefined;
  return (match[1] ?? match[2]!).toLowerCase();
}

/** Origin and Host name the same scheme, host and port (default ports normalized by URL). */
function sameOrigin(origin: string, host: string, secure: boolean): boolean {
  try {
    const from = new URL(origin);
    const self = new URL(`${secure ? 'https' : 'http'}://${host}`);
    return from.protocol === self.protocol && from.hostname === self.hostname && from.port === self.port;
  } catch {
    return false; // "null" (a sandboxed or file: page) and anything unparsable
  }
}

function hostAllowed(hostname: string, config: AdminAccessConfig): boolean {
  // DNS rebinding needs a name that the attacker's DNS resolves: an address literal is safe
  if (net.isIP(hostname) !== 0) return true;
  const name = hostname.replace(/\.$/, '');
  if (name === 'localhost' || name === config.host.toLowerCase()) return true;
  return config.allowed_hosts.some((allowed) => allowed.toLowerCase() === name);
}

/** The token of `Authorization: Bearer X` or the password of `Basic base64(user:X)`. */
function credentials(request: AdminRequest): string | undefined {
  const value = header(request, 'authorization');
  if (value === undefined) return undefined;
  const [scheme, rest] = [value.slice(0, value.indexOf(' ')).toLowerCase(), value.slice(value.indexOf(' ') + 1).trim()];
  if (scheme === 'bearer') return rest;
  if (scheme === 'basic') {
    const decoded = Buffer.from(rest, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    return colon < 0 ? undefined : decoded.slice(colon + 1);
  }
  return undefined;
}

function matches(presented: string, expected: string): boolean {
  const digest = (text: string) => createHash('sha256').update(text, 'utf8').digest();
  return timingSafeEqual(digest(presented), digest(expected));
}

/** Header text in an error message: printable ASCII, bounded. */
function printable(text: string): string {
  return text.slice(0, 100).replace(/[^\x20-\x7e]/g, '?');
}
