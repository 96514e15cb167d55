import type pg from 'pg';
import type { ServerAuthMethod } from '../config/types.js';
import { AuthError } from './auth-error.js';
import { methodNotAllowed } from './server-auth.js';

/**
 * `server_auth.require_auth` for pgrelay's own pg.Client connections (health checks, lag monitor,
 * pg_proc reader, failover administration), which pg itself does not offer. Call it right after
 * `new pg.Client(…)`, before `connect()`.
 *
 * Listeners are put in front of pg's own: a request for a method that is not allowed (or a
 * second method in one login) destroys the socket before pg can answer it, so nothing derived
 * from the password is sent; `connect()` then fails with the AuthError. An AuthenticationOk that
 * arrives while a SCRAM exchange has not verified the server's signature (pg keeps `saslSession`
 * until AuthenticationSASLFinal verified) is refused the same way, and so is one without any
 * request when `none` is not allowed. pg verifies the SCRAM server signature itself.
 */
export function enforceServerAuth(client: pg.Client, node: string, allowed: ReadonlySet<ServerAuthMethod>): void {
  const connection = client.connection;
  let asked: ServerAuthMethod | undefined;
  let finalSeen = false;
  const refuse = (error: AuthError) => {
    connection.stream.destroy();
    connection.emit('error', error);
  };
  const request = (method: ServerAuthMethod) => () => {
    if (asked !== undefined) refuse(new AuthError('out-of-order', `node ${node} asked for ${method} authentication in the middle of ${asked}`));
    else if (!allowed.has(method)) refuse(methodNotAllowed(node, method, allowed));
    asked = method;
  };
  connection.prependListener('authenticationCleartextPassword', request('password'));
  connection.prependListener('authenticationMD5Password', request('md5'));
  connection.prependListener('authenticationSASL', request('scram-sha-256'));
  connection.prependListener('authenticationSASLFinal', () => {
    finalSeen = true;
  });
  connection.prependListener('authenticationOk', () => {
    if (asked === undefined && !allowed.has('none')) refuse(methodNotAllowed(node, 'none', allowed));
    const pending = (client as unknown as { saslSession?: unknown }).saslSession;
    if (asked === 'scram-sha-256' && (!finalSeen || (pending !== null && pending !== undefined))) {
      refuse(new AuthError('server-signature', `node ${node} said AuthenticationOk before proving it knows the password (no verified SCRAM server signature)`));
    }
  });
}
