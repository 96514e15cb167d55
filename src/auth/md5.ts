import { createHash, timingSafeEqual } from 'node:crypto';
import { AuthError } from './auth-error.js';

/**
 * PostgreSQL md5 password authentication (AuthenticationMD5Password, code 5, with a 4-byte salt).
 *
 * The client answers with a PasswordMessage holding
 *   'md5' + md5hex(md5hex(password + user) + salt)
 * where `md5hex(password + user)` is what PostgreSQL stores in pg_authid for md5 roles.
 * md5 is legacy: prefer SCRAM-SHA-256; this exists for servers and clients that still use it.
 */
export const MD5_SALT_LENGTH = 4;

/** The PasswordMessage payload pgrelay sends when a server asks for md5 (without the trailing NUL). */
export function md5PasswordHash(user: string, password: string, salt: Buffer): string {
  if (salt.length !== MD5_SALT_LENGTH) {
    throw new AuthError('malformed', `md5 salt must be ${MD5_SALT_LENGTH} bytes`);
  }
  const inner = md5Hex(Buffer.from(password + user, 'utf8'));
  return 'md5' + md5Hex(Buffer.concat([Buffer.from(inner, 'latin1'), salt]));
}

/**
 * Client-facing check: does `response` (the client's PasswordMessage, without the trailing NUL)
 * match `password` for `user` and the `salt` pgrelay sent? Compared in constant time.
 */
export function verifyMd5Response(user: string, password: string, salt: Buffer, response: string | Buffer): boolean {
  const expected = Buffer.from(md5PasswordHash(user, password, salt), 'latin1');
  const actual = typeof response === 'string' ? Buffer.from(response, 'utf8') : response;
  // timingSafeEqual needs equal lengths; the expected length is public (always 35).
  if (actual.length !== expected.length) return false;
  return timingSafeEqual(actual, expected);
}

function md5Hex(data: Buffer): string {
  return createHash('md5').update(data).digest('hex');
}
