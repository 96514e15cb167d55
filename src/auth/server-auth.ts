/**
 * pgrelay logging in to a PostgreSQL server: which authentication requests it answers, and how.
 * Pure (no sockets): the server connection hands in each Authentication message and writes what
 * comes back.
 *
 * The model is libpq's `require_auth`: the configuration lists the methods a server may use
 * (`server_auth.require_auth`), and a server that asks for another one gets nothing, not even a
 * hash of the password. Methods, as libpq names them:
 *   - `password`: AuthenticationCleartextPassword (3): the password itself on the wire;
 *   - `md5`: AuthenticationMD5Password (5);
 *   - `scram-sha-256`: AuthenticationSASL (10) with SCRAM-SHA-256, and the server must prove it
 *     knows the password (AuthenticationSASLFinal with a valid signature) before its
 *     AuthenticationOk is believed: an AuthenticationOk in the middle of the exchange is refused;
 *   - `none`: AuthenticationOk without any request (trust on the server).
 * The default allows `scram-sha-256`, `md5` and `none` — what libpq allows minus the cleartext
 * password, which a server (or anyone in between) would otherwise receive in clear.
 */
import { serialize } from 'pg-protocol';
import type { ServerAuthMethod } from '../config/types.js';
import { AuthCode } from '../protocol/codes.js';
import { AuthError } from './auth-error.js';
import { md5PasswordHash } from './md5.js';
import { SCRAM_MECHANISM, ScramClientExchange, type ScramClientKeys } from './scram.js';

export type { ServerAuthMethod } from '../config/types.js';

export interface ServerAuthLogin {
  user: string;
  /** the password, or SCRAM keys (pass-through, or cached from an earlier login) */
  password: string | ScramClientKeys;
}

/** The refusal for a method the configuration does not allow. Never contains the password. */
export function methodNotAllowed(node: string, method: ServerAuthMethod, allowed: ReadonlySet<ServerAuthMethod>): AuthError {
  const what =
    method === 'none'
      ? 'did not ask for authentication (trust)'
      : method === 'password'
        ? 'asked for a cleartext password'
        : `asked for ${method} authentication`;
  return new AuthError('method-not-allowed', `node ${node} ${what}, which server_auth.require_auth does not allow (allowed: ${[...allowed].join(', ')})`);
}

/**
 * One login's authentication, pgrelay acting as the client. `request` takes an Authentication
 * message (its kind and the bytes after the kind) and returns the message to send back, or
 * undefined; it throws AuthError when the request is not allowed, malformed or out of order.
 * Call `request` for AuthenticationOk too: it throws unless the server authenticated as allowed.
 */
export class ServerAuthExchange {
  #method: ServerAuthMethod | undefined;
  #scram: ScramClientExchange | undefined;
  #scramVerified = false;
  #done = false;

  constructor(
    private readonly node: string,
    private readonly login: ServerAuthLogin,
    private readonly allowed: ReadonlySet<ServerAuthMethod>,
  ) {}

  /** The method the server used, once it said AuthenticationOk. */
  get method(): ServerAuthMethod | undefined {
    return this.#done ? (this.#method ?? 'none') : undefined;
  }

  /** The SCRAM keys of a verified login (to skip PBKDF2 next time), else undefined. */
  get scramKeys(): ScramClientKeys | undefined {
    return this.#scramVerified ? this.#scram?.keys : undefined;
  }

  request(kind: number, body: Buffer): Buffer | undefined {
    if (this.#done) throw new AuthError('out-of-order', `node ${this.node} sent an authentication request after AuthenticationOk`);
    switch (kind) {
      case AuthCode.Ok:
        this.#authenticated();
        return undefined;
      case AuthCode.CleartextPassword:
        this.#begin('password');
        return serialize.password(this.#plainPassword('password'));
      case AuthCode.MD5Password:
        this.#begin('md5');
        if (body.length < 4) throw new AuthError('malformed', `node ${this.node} sent a short md5 salt`);
        return serialize.password(md5PasswordHash(this.login.user, this.#plainPassword('md5'), body.subarray(0, 4)));
      case AuthCode.SASL: {
        this.#begin('scram-sha-256');
        const mechanisms = body.toString('utf8').split('\0').filter(Boolean);
        if (!mechanisms.includes(SCRAM_MECHANISM)) {
          throw new AuthError('unsupported', `node ${this.node} offers no supported SASL mechanism (${mechanisms.join(', ').slice(0, 200)})`);
        }
        this.#scram = new ScramClientExchange(this.login.password);
        return serialize.sendSASLInitialResponseMessage(SCRAM_MECHANISM, this.#scram.clientFirst());
      }
      case AuthCode.SASLContinue:
        if (!this.#scram) throw new AuthError('out-of-order', `node ${this.node} sent SASL continue without SASL`);
        return serialize.sendSCRAMClientFinalMessage(this.#scram.handleServerFirst(body.toString('utf8')));
      case AuthCode.SASLFinal:
        if (!this.#scram) throw new AuthError('out-of-order', `node ${this.node} sent SASL final without SASL`);
        this.#scram.verifyServerFinal(body.toString('utf8'));
        this.#scramVerified = true;
        return undefined;
      default:
        throw new AuthError('unsupported', `node ${this.node} asked for an unsupported authentication method (request ${kind})`);
    }
  }

  #begin(method: ServerAuthMethod): void {
    if (this.#method !== undefined) throw new AuthError('out-of-order', `node ${this.node} asked for ${method} authentication in the middle of ${this.#method}`);
    if (!this.allowed.has(method)) throw methodNotAllowed(this.node, method, this.allowed);
    this.#method = method;
  }

  #plainPassword(method: ServerAuthMethod): string {
    if (typeof this.login.password === 'string') return this.login.password;
    throw new AuthError('unsupported', `node ${this.node} asked for ${method} authentication, but pgrelay holds only SCRAM keys for user "${this.login.user}"`);
  }

  #authenticated(): void {
    const method = this.#method ?? 'none';
    if (method === 'none' && !this.allowed.has('none')) throw methodNotAllowed(this.node, 'none', this.allowed);
    if (method === 'scram-sha-256' && !this.#scramVerified) {
      throw new AuthError('server-signature', `node ${this.node} said AuthenticationOk before proving it knows the password (no verified SCRAM server signature)`);
    }
    this.#done = true;
  }
}
