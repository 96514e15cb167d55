import { ProxyError, SqlState } from '../errors.js';

/**
 * Why an authentication exchange failed. Callers switch on this, never on the message text.
 *
 * - `malformed`: the peer sent something that does not parse (08P01).
 * - `unsupported`: well-formed, but asks for something pgrelay does not do: an authzid, a mandatory
 *   extension, an iteration count above the configured ceiling (0A000).
 * - `nonce-mismatch`: the nonce does not continue the exchange (08P01).
 * - `channel-binding`: the client requires channel binding ('p'; pgrelay offers only SCRAM-SHA-256,
 *   not -PLUS), or its client-final echo does not match its gs2 header (08P01).
 * - `verifier-mismatch`: pass-through keys were given, but the server uses another salt or
 *   iteration count than the verifier they came from (28000).
 * - `server-signature`: a server failed to prove it knows our password (28000).
 * - `server-error`: a server answered `e=…` in its final message (28P01 for invalid-proof).
 * - `method-not-allowed`: a server asked for an authentication method `server_auth.require_auth`
 *   does not list (28000).
 * - `out-of-order`: a method of an exchange was called in the wrong step (XX000, a bug).
 *
 * A wrong password on the client-facing side is not an error but `{ ok: false }`.
 */
export type AuthErrorCode =
  | 'malformed'
  | 'unsupported'
  | 'nonce-mismatch'
  | 'channel-binding'
  | 'verifier-mismatch'
  | 'server-signature'
  | 'server-error'
  | 'method-not-allowed'
  | 'out-of-order';

const sqlstateOf: Record<AuthErrorCode, string> = {
  malformed: SqlState.protocolViolation,
  unsupported: SqlState.featureNotSupported,
  'nonce-mismatch': SqlState.protocolViolation,
  'channel-binding': SqlState.protocolViolation,
  'verifier-mismatch': SqlState.invalidAuthorization,
  'server-signature': SqlState.invalidAuthorization,
  'server-error': SqlState.invalidAuthorization,
  'method-not-allowed': SqlState.invalidAuthorization,
  'out-of-order': SqlState.internalError,
};

/**
 * A failed SASL/md5 exchange. A `ProxyError` (hence an `Error`) so that the frontend can send it as
 * an ErrorResponse as is. Messages never contain secrets, and never echo unsanitized peer input.
 */
export class AuthError extends ProxyError {
  readonly code: AuthErrorCode;

  constructor(code: AuthErrorCode, message: string, options: { sqlstate?: string } = {}) {
    super(options.sqlstate ?? sqlstateOf[code], message, { severity: 'FATAL' });
    this.name = 'AuthError';
    this.code = code;
  }
}
