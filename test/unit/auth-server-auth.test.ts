import { serialize } from 'pg-protocol';
import { describe, expect, it } from 'vitest';
import { AuthError } from '../../src/auth/auth-error.js';
import { ServerAuthExchange } from '../../src/auth/server-auth.js';
import { makeScramSecret, ScramServerExchange } from '../../src/auth/scram.js';
import { AuthCode } from '../../src/protocol/codes.js';
import type { ServerAuthMethod } from '../../src/config/types.js';

// pgrelay logging in to a server: only the methods server_auth.require_auth lists are answered,
// and SCRAM counts only with a verified server signature.
const DEFAULT: ReadonlySet<ServerAuthMethod> = new Set(['scram-sha-256', 'md5', 'none']);
const login = { user: 'app', password: 'secret-pw' };

function exchange(allowed: ReadonlySet<ServerAuthMethod> = DEFAULT): ServerAuthExchange {
  return new ServerAuthExchange('n1', login, allowed);
}

function refusal(fn: () => unknown): AuthError {
  try {
    fn();
  } catch (error) {
    if (error instanceof AuthError) return error;
    throw error;
  }
  throw new Error('expected an AuthError');
}

/** The payload of a frontend message built by pg-protocol (after code and length). */
function payload(message: Buffer): string {
  return message.subarray(5).toString('utf8');
}

describe('ServerAuthExchange', () => {
  it('refuses a cleartext password request by default, naming the node and the key', () => {
    const error = refusal(() => exchange().request(AuthCode.CleartextPassword, Buffer.alloc(0)));
    expect(error.code).toBe('method-not-allowed');
    expect(error.sqlstate).toBe('28000');
    expect(error.message).toContain('node n1 asked for a cleartext password');
    expect(error.message).toContain('server_auth.require_auth');
    expect(error.message).not.toContain(login.password);
  });

  it('answers a cleartext request when `password` is allowed', () => {
    const answer = exchange(new Set(['password'])).request(AuthCode.CleartextPassword, Buffer.alloc(0));
    expect(answer?.[0]).toBe(0x70); // p
    expect(payload(answer!)).toBe('secret-pw\0');
  });

  it('answers md5 with the salted hash, and refuses it when only scram is allowed', () => {
    const answer = exchange().request(AuthCode.MD5Password, Buffer.from([1, 2, 3, 4]));
    expect(payload(answer!)).toMatch(/^md5[0-9a-f]{32}\0$/);
    const error = refusal(() => exchange(new Set(['scram-sha-256'])).request(AuthCode.MD5Password, Buffer.from([1, 2, 3, 4])));
    expect(error.code).toBe('method-not-allowed');
  });

  it('refuses AuthenticationOk without any request unless `none` is allowed', () => {
    expect(() => exchange().request(AuthCode.Ok, Buffer.alloc(0))).not.toThrow();
    const error = refusal(() => exchange(new Set(['scram-sha-256'])).request(AuthCode.Ok, Buffer.alloc(0)));
    expect(error.message).toContain('did not ask for authentication');
  });

  it('accepts SCRAM only after the server signature verified', () => {
    const secret = makeScramSecret(login.password);
    const serverSide = new ScramServerExchange(secret);
    const auth = exchange();
    const initial = auth.request(AuthCode.SASL, Buffer.from('SCRAM-SHA-256\0\0'));
    // SASLInitialResponse: p, len, mechanism\0, int32 length, client-first
    const body = initial!.subarray(5);
    const clientFirst = body.subarray(body.indexOf(0) + 5).toString('utf8');
    const serverFirst = serverSide.handleClientFirst(clientFirst);
    const final = auth.request(AuthCode.SASLContinue, Buffer.from(serverFirst));
    const outcome = serverSide.handleClientFinal(payload(final!));
    expect(outcome.ok).toBe(true);
    // AuthenticationOk now, before the SASLFinal: refused
    const early = exchange();
    early.request(AuthCode.SASL, Buffer.from('SCRAM-SHA-256\0\0'));
    expect(refusal(() => early.request(AuthCode.Ok, Buffer.alloc(0))).code).toBe('server-signature');
    // a SASLFinal without a SASL exchange: refused
    const forged = refusal(() => exchange().request(AuthCode.SASLFinal, Buffer.from('v=AAAA')));
    expect(forged.code).toBe('out-of-order');
    // the right one: Ok accepted, keys available
    auth.request(AuthCode.SASLFinal, Buffer.from((outcome as { serverFinal: string }).serverFinal));
    expect(() => auth.request(AuthCode.Ok, Buffer.alloc(0))).not.toThrow();
    expect(auth.method).toBe('scram-sha-256');
    expect(auth.scramKeys?.clientKey.length).toBe(32);
  });

  it('refuses a wrong SCRAM server signature', () => {
    const secret = makeScramSecret('another password');
    const serverSide = new ScramServerExchange(secret);
    const auth = exchange();
    const initial = auth.request(AuthCode.SASL, Buffer.from('SCRAM-SHA-256\0\0'))!.subarray(5);
    const serverFirst = serverSide.handleClientFirst(initial.subarray(initial.indexOf(0) + 5).toString('utf8'));
    auth.request(AuthCode.SASLContinue, Buffer.from(serverFirst));
    const fakeSignature = `v=${Buffer.alloc(32, 7).toString('base64')}`;
    expect(refusal(() => auth.request(AuthCode.SASLFinal, Buffer.from(fakeSignature))).code).toBe('server-signature');
  });

  it('refuses a second method in one login (SCRAM, then cleartext)', () => {
    const auth = exchange(new Set(['scram-sha-256', 'password']));
    auth.request(AuthCode.SASL, Buffer.from('SCRAM-SHA-256\0\0'));
    expect(refusal(() => auth.request(AuthCode.CleartextPassword, Buffer.alloc(0))).code).toBe('out-of-order');
  });

  it('refuses SASL without SCRAM-SHA-256 and unknown requests', () => {
    expect(refusal(() => exchange().request(AuthCode.SASL, Buffer.from('SCRAM-SHA-256-PLUS\0\0'))).code).toBe('unsupported');
    expect(refusal(() => exchange().request(7, Buffer.alloc(0))).code).toBe('unsupported');
  });

  it('builds frames pg-protocol would build', () => {
    const answer = exchange(new Set(['password'])).request(AuthCode.CleartextPassword, Buffer.alloc(0));
    expect(answer!.equals(serialize.password('secret-pw'))).toBe(true);
  });
});
