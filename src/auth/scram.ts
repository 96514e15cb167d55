/**
 * SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it, for both sides of the proxy.
 * Pure: no sockets, no timers; the frontend and the pool move the strings in and out of
 * SASLInitialResponse / AuthenticationSASLContinue (11) / SASLResponse / AuthenticationSASLFinal (12).
 *
 *   client                                    server
 *   client-first   n,,n=,r=<cnonce>        →
 *                                          ←  r=<cnonce><snonce>,s=<salt>,i=<iterations>   server-first
 *   client-final   c=biws,r=<nonce>,p=<proof> →
 *                                          ←  v=<server signature>                           server-final
 *
 * Keys (H = SHA-256, HMAC = HMAC-SHA-256):
 *   SaltedPassword  = PBKDF2(SASLprep(password), salt, iterations)
 *   ClientKey       = HMAC(SaltedPassword, "Client Key");  StoredKey = H(ClientKey)
 *   ServerKey       = HMAC(SaltedPassword, "Server Key")
 *   AuthMessage     = client-first-bare "," server-first "," client-final-without-proof
 *   ClientProof     = ClientKey XOR HMAC(StoredKey, AuthMessage)
 *   ServerSignature = HMAC(ServerKey, AuthMessage)
 *
 * PostgreSQL specifics followed here: the SCRAM username is ignored (the startup packet names the
 * user; libpq sends `n=`), authzid and mandatory extensions are refused, and an unknown user still
 * gets a full exchange with a mock secret (see `mockScramSecret`).
 */
import { createHash, createHmac, pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto';
import { SqlState } from '../errors.js';
import { AuthError } from './auth-error.js';
import { saslprep } from './saslprep.js';

export { AuthError, type AuthErrorCode } from './auth-error.js';

export const SCRAM_MECHANISM = 'SCRAM-SHA-256';
/** PostgreSQL's default `scram_iterations`. */
export const SCRAM_DEFAULT_ITERATIONS = 4096;
/** Ceiling on a server's iteration count: PBKDF2 runs synchronously, so this bounds the stall. */
export const SCRAM_MAX_ITERATIONS = 1_000_000;

/** Salt length PostgreSQL uses for verifiers (SCRAM_DEFAULT_SALT_LEN). */
const SALT_BYTES = 16;
/** SHA-256 output: the length of every key, proof and signature. */
const KEY_BYTES = 32;
/** Random bytes per nonce half, as PostgreSQL and libpq do (base64: 24 characters). */
const NONCE_BYTES = 18;

/** What pgrelay needs to verify a client: never the password itself. */
export interface ScramSecret {
  salt: Buffer;
  iterations: number;
  storedKey: Buffer;
  serverKey: Buffer;
}

/**
 * What pgrelay needs to log in to a server without the password: ClientKey and ServerKey for one
 * salt and iteration count. Obtained from a finished `ScramClientExchange` (`keys`, to skip PBKDF2 on
 * the next server connection) or by pass-through: `ScramServerExchange.clientKey` plus the secret's
 * `serverKey` of a verifier that is the same one the server holds.
 */
export interface ScramClientKeys {
  salt: Buffer;
  iterations: number;
  clientKey: Buffer;
  serverKey: Buffer;
}

// ---------------------------------------------------------------------------------------------
// Secrets

/**
 * Derives a secret from a plain password (SASLprep-lite, then PBKDF2; see `saslprep.ts`).
 * Costs one PBKDF2 run (milliseconds, synchronous): compute it once when the config is loaded, not
 * per connection. That also keeps a user's salt stable, as it is for verifiers and mock secrets;
 * a salt that changes per connection would tell an attacker that the user exists.
 */
export function makeScramSecret(password: string, options: { salt?: Buffer; iterations?: number } = {}): ScramSecret {
  const salt = Buffer.from(options.salt ?? randomBytes(SALT_BYTES));
  const iterations = options.iterations ?? SCRAM_DEFAULT_ITERATIONS;
  if (salt.length === 0) throw new RangeError('SCRAM salt must not be empty');
  if (!Number.isSafeInteger(iterations) || iterations < 1) {
    throw new RangeError(`SCRAM iterations must be a positive integer, got ${iterations}`);
  }
  const keys = deriveKeys(password, salt, iterations);
  return { salt, iterations, storedKey: sha256(keys.clientKey), serverKey: keys.serverKey };
}

const VERIFIER = /^SCRAM-SHA-256\$([1-9][0-9]*):([^$:]+)\$([^$:]+):([^$:]+)$/;

/**
 * Parses PostgreSQL's stored form (pg_authid.rolpassword),
 * `SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>`,
 * so that the config can hold a verifier instead of a password. Strict: no surrounding whitespace,
 * canonical base64, 32-byte keys. Returns undefined when `text` is not such a verifier (it may then
 * be a plain password: the caller decides).
 */
export function parseScramVerifier(text: string): ScramSecret | undefined {
  const match = VERIFIER.exec(text);
  if (!match) return undefined;
  const iterations = Number(match[1]);
  const salt = decodeBase64(match[2]!);
  const storedKey = decodeBase64(match[3]!);
  const serverKey = decodeBase64(match[4]!);
  if (!Number.isSafeInteger(iterations) || !salt || salt.length === 0) return undefined;
  if (storedKey?.length !== KEY_BYTES || serverKey?.length !== KEY_BYTES) return undefined;
  return { salt, iterations, storedKey, serverKey };
}

/** The inverse of `parseScramVerifier`: what PostgreSQL would store for this secret. */
export function formatScramVerifier(secret: ScramSecret): string {
  const b64 = (buffer: Buffer): string => buffer.toString('base64');
  return `${SCRAM_MECHANISM}$${secret.iterations}:${b64(secret.salt)}$${b64(secret.storedKey)}:${b64(secret.serverKey)}`;
}

/** Per-process key for mock secrets: stable for a user while the process lives, unguessable. */
const MOCK_KEY = randomBytes(32);

/**
 * A number in [0, n) chosen by the user name with the mock key: stable for a name, unguessable,
 * spread evenly (for picking which real secret's shape a mock secret takes).
 */
export function mockChoice(user: string, n: number): number {
  if (n <= 1) return 0;
  return createHmac('sha256', MOCK_KEY).update('choice\0').update(user, 'utf8').digest().readUInt32BE(0) % n;
}
/** Mock secrets handed out, so that an exchange with one fails even if a proof somehow verified. */
const mockSecrets = new WeakSet<ScramSecret>();

/**
 * A secret for a user that does not exist (or has no usable secret). Run the exchange with it as
 * with a real one: the salt is derived from the user name and a per-process random key (stable for
 * that user, like a real user's), the iteration count is the default (pass the one real secrets use
 * if it differs; `saltBytes` likewise, up to 32), the work per message is the same, and the
 * exchange ends in `{ ok: false }`, so a wrong user and a wrong password look alike in messages
 * and timing.
 */
export function mockScramSecret(user: string, options: { iterations?: number; saltBytes?: number } = {}): ScramSecret {
  const derive = (label: string): Buffer =>
    createHmac('sha256', MOCK_KEY).update(label).update('\0').update(user, 'utf8').digest();
  const saltBytes = Math.max(1, Math.min(options.saltBytes ?? SALT_BYTES, KEY_BYTES));
  const secret: ScramSecret = {
    salt: derive('salt').subarray(0, saltBytes),
    iterations: options.iterations ?? SCRAM_DEFAULT_ITERATIONS,
    // Keys no password leads to (nobody knows MOCK_KEY, and H(ClientKey) would need a preimage).
    storedKey: derive('stored-key'),
    serverKey: derive('server-key'),
  };
  mockSecrets.add(secret);
  return secret;
}

// ---------------------------------------------------------------------------------------------
// Server side: pgrelay verifies a client

type ServerStep = 'client-first' | 'client-final' | 'done';

/**
 * One client's SCRAM exchange, pgrelay acting as the server. Any AuthError ends the exchange; so
 * does the final message, whatever its outcome.
 */
export class ScramServerExchange {
  readonly #secret: ScramSecret;
  readonly #doomed: boolean;
  readonly #serverNonce: string;
  #step: ServerStep = 'client-first';
  #cbindFlag: 'n' | 'y' = 'n';
  #clientNonce = '';
  #clientFirstBare = '';
  #serverFirst = '';
  #clientKey: Buffer | undefined;

  /** `nonce`: the server's half of the nonce, for tests; random by default. */
  constructor(secret: ScramSecret, options: { nonce?: string } = {}) {
    this.#secret = secret;
    this.#doomed = mockSecrets.has(secret);
    this.#serverNonce = options.nonce ?? newNonce();
    if (!isPrintable(this.#serverNonce)) throw new RangeError('SCRAM nonce must be printable ASCII without ","');
  }

  /**
   * client-first-message (the SASLInitialResponse data) → server-first-message.
   * Accepts gs2 flags 'n' and 'y' (pgrelay does not offer SCRAM-SHA-256-PLUS, so 'y' is no downgrade);
   * refuses 'p', an authzid and mandatory extensions. Throws AuthError.
   */
  handleClientFirst(message: string): string {
    this.#advance('client-first');
    checkMessage(message);
    const parts = message.split(',');
    const flag = parts[0]!;
    if (flag === 'p' || flag.startsWith('p=')) {
      throw new AuthError('channel-binding', 'malformed SCRAM message: the client selected SCRAM-SHA-256 without channel binding, but the message includes channel binding data');
    }
    if (flag !== 'n' && flag !== 'y') throw malformed('unexpected channel-binding flag');
    if (parts.length < 4) throw malformed('client-first-message too short');
    if (parts[1] !== '') {
      if (parts[1]!.startsWith('a=')) throw new AuthError('unsupported', 'client uses authorization identity, but it is not supported');
      throw malformed('unexpected attribute in client-first-message');
    }
    const bare = parts.slice(2);
    if (bare[0]!.startsWith('m=')) throw new AuthError('unsupported', 'client requires an unsupported SCRAM extension');
    readAttribute(bare[0]!, 'n'); // the SCRAM username: ignored, the startup packet names the user
    const clientNonce = readAttribute(bare[1]!, 'r');
    if (!isPrintable(clientNonce)) throw malformed('non-printable characters in SCRAM nonce');
    checkExtensions(bare.slice(2));

    this.#cbindFlag = flag;
    this.#clientNonce = clientNonce;
    this.#clientFirstBare = bare.join(',');
    const { salt, iterations } = this.#secret;
    this.#serverFirst = `r=${clientNonce}${this.#serverNonce},s=${salt.toString('base64')},i=${iterations}`;
    this.#step = 'client-final';
    return this.#serverFirst;
  }

  /**
   * client-final-message → `{ ok: true, serverFinal }` when the proof verifies, `{ ok: false }` for a
   * wrong password or an unknown user (mock secret). Throws AuthError when the message is malformed,
   * its nonce does not continue the exchange, or its channel-binding echo is not the gs2 header
   * sent in client-first ("biws" for `n,,`, "eSws" for `y,,`).
   */
  handleClientFinal(message: string): { ok: true; serverFinal: string } | { ok: false } {
    this.#advance('client-final');
    checkMessage(message);
    const parts = message.split(',');
    if (parts.length < 3) throw malformed('client-final-message too short');
    const channelBinding = readAttribute(parts[0]!, 'c');
    if (channelBinding !== (this.#cbindFlag === 'n' ? 'biws' : 'eSws')) {
      throw new AuthError('channel-binding', 'unexpected SCRAM channel-binding attribute in client-final-message');
    }
    const nonce = readAttribute(parts[1]!, 'r');
    if (!equalText(nonce, this.#clientNonce + this.#serverNonce)) {
      throw new AuthError('nonce-mismatch', 'invalid SCRAM response (nonce mismatch)');
    }
    const extensions = parts.slice(2, -1);
    if (extensions.some((part) => part.startsWith('p='))) throw malformed('garbage at the end of client-final-message');
    checkExtensions(extensions);
    const proof = decodeBase64(readAttribute(parts.at(-1)!, 'p'));
    if (proof?.length !== KEY_BYTES) throw malformed('malformed proof in client-final-message');

    const withoutProof = parts.slice(0, -1).join(',');
    const authMessage = `${this.#clientFirstBare},${this.#serverFirst},${withoutProof}`;
    const { storedKey, serverKey } = this.#secret;
    // Same work for a mock secret as for a real one; the doomed check comes last.
    const clientKey = xor(proof, hmac(storedKey, authMessage));
    const verified = equalBytes(sha256(clientKey), storedKey);
    if (!verified || this.#doomed) return { ok: false };
    this.#clientKey = clientKey;
    return { ok: true, serverFinal: `v=${hmac(serverKey, authMessage).toString('base64')}` };
  }

  /**
   * After a successful exchange, the ClientKey the client proved. With the same verifier on the
   * servers it lets pgrelay log in to them without the password (SCRAM pass-through: give it with
   * the secret's serverKey, salt and iterations to `ScramClientExchange`). Undefined otherwise.
   */
  get clientKey(): Buffer | undefined {
    return this.#clientKey;
  }

  #advance(expected: ServerStep): void {
    if (this.#step !== expected) throw outOfOrder(expected, this.#step);
    this.#step = 'done'; // until the message is accepted: any throw ends the exchange
  }
}

// ---------------------------------------------------------------------------------------------
// Client side: pgrelay logs in to a PostgreSQL server

type ClientStep = 'client-first' | 'server-first' | 'server-final' | 'done';

/** One SCRAM login of pgrelay to a server. Any AuthError ends the exchange. */
export class ScramClientExchange {
  readonly #credentials: string | ScramClientKeys;
  readonly #clientNonce: string;
  readonly #clientFirstBare: string;
  readonly #maxIterations: number;
  #step: ClientStep = 'client-first';
  #keys: ScramClientKeys | undefined;
  #serverSignature: Buffer | undefined;

  /**
   * `password`: the plain password, or keys from an earlier login or pass-through (then no PBKDF2
   * runs, and the server must use the same salt and iteration count).
   * `nonce`: the client nonce, for tests; random by default. `username`: sent as `n=`; PostgreSQL
   * ignores it and libpq sends it empty, the default. `maxIterations`: refuse servers asking for
   * more PBKDF2 rounds than this (default SCRAM_MAX_ITERATIONS).
   */
  constructor(
    password: string | ScramClientKeys,
    options: { nonce?: string; username?: string; maxIterations?: number } = {},
  ) {
    this.#credentials = password;
    this.#clientNonce = options.nonce ?? newNonce();
    if (!isPrintable(this.#clientNonce)) throw new RangeError('SCRAM nonce must be printable ASCII without ","');
    this.#maxIterations = options.maxIterations ?? SCRAM_MAX_ITERATIONS;
    this.#clientFirstBare = `n=${saslname(options.username ?? '')},r=${this.#clientNonce}`;
  }

  /** client-first-message, the SASLInitialResponse data: `n,,n=,r=<nonce>` (no channel binding). */
  clientFirst(): string {
    this.#advance('client-first');
    this.#step = 'server-first';
    return `n,,${this.#clientFirstBare}`;
  }

  /**
   * server-first-message (AuthenticationSASLContinue data) → client-final-message (SASLResponse data).
   * Checks that the server's nonce extends ours, the salt is base64 and the iteration count a
   * positive number within `maxIterations`. Throws AuthError.
   */
  handleServerFirst(message: string): string {
    this.#advance('server-first');
    checkMessage(message);
    const parts = message.split(',');
    if (parts[0]!.startsWith('m=')) throw new AuthError('unsupported', 'server requires an unsupported SCRAM extension');
    if (parts.length < 3) throw malformed('server-first-message too short');
    const nonce = readAttribute(parts[0]!, 'r');
    if (!isPrintable(nonce)) throw malformed('non-printable characters in SCRAM nonce');
    if (nonce.length <= this.#clientNonce.length || !nonce.startsWith(this.#clientNonce)) {
      throw new AuthError('nonce-mismatch', 'invalid SCRAM response (nonce mismatch)');
    }
    const salt = decodeBase64(readAttribute(parts[1]!, 's'));
    if (!salt || salt.length === 0) throw malformed('invalid salt in server-first-message');
    const iterationsText = readAttribute(parts[2]!, 'i');
    if (!/^[1-9][0-9]*$/.test(iterationsText)) throw malformed('invalid iteration count in server-first-message');
    const iterations = Number(iterationsText);
    if (iterations > this.#maxIterations) {
      throw new AuthError('unsupported', `server asks for ${iterations} SCRAM iterations, more than the limit of ${this.#maxIterations}`);
    }
    checkExtensions(parts.slice(3));

    const keys = this.#keysFor(salt, iterations);
    const withoutProof = `c=biws,r=${nonce}`;
    const authMessage = `${this.#clientFirstBare},${message},${withoutProof}`;
    const proof = xor(keys.clientKey, hmac(sha256(keys.clientKey), authMessage));
    this.#keys = keys;
    this.#serverSignature = hmac(keys.serverKey, authMessage);
    this.#step = 'server-final';
    return `${withoutProof},p=${proof.toString('base64')}`;
  }

  /**
   * server-final-message (AuthenticationSASLFinal data). Returns when the server proved it knows the
   * password; throws AuthError on `e=<error>` or a wrong server signature.
   */
  verifyServerFinal(message: string): void {
    this.#advance('server-final');
    checkMessage(message);
    const parts = message.split(',');
    if (parts[0]!.startsWith('e=')) {
      const reason = sanitize(parts[0]!.slice(2));
      throw new AuthError('server-error', `server rejected SCRAM authentication: ${reason}`, {
        sqlstate: reason === 'invalid-proof' ? SqlState.invalidPassword : SqlState.invalidAuthorization,
      });
    }
    const signature = decodeBase64(readAttribute(parts[0]!, 'v'));
    checkExtensions(parts.slice(1));
    if (signature?.length !== KEY_BYTES || !equalBytes(signature, this.#serverSignature!)) {
      throw new AuthError('server-signature', 'invalid SCRAM server signature');
    }
    this.#step = 'done';
  }

  /**
   * The keys used in this login, once the server-first-message was handled: cache them per
   * (server, user) and pass them instead of the password next time to skip PBKDF2. Only trust them
   * for that once `verifyServerFinal` succeeded.
   */
  get keys(): ScramClientKeys | undefined {
    return this.#keys;
  }

  #keysFor(salt: Buffer, iterations: number): ScramClientKeys {
    const credentials = this.#credentials;
    if (typeof credentials === 'string') return { salt, iterations, ...deriveKeys(credentials, salt, iterations) };
    if (credentials.iterations !== iterations || !credentials.salt.equals(salt)) {
      throw new AuthError('verifier-mismatch', "the server's SCRAM salt or iteration count differs from the keys pgrelay holds");
    }
    return credentials;
  }

  #advance(expected: ClientStep): void {
    if (this.#step !== expected) throw outOfOrder(expected, this.#step);
    this.#step = 'done';
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers

function deriveKeys(password: string, salt: Buffer, iterations: number): { clientKey: Buffer; serverKey: Buffer } {
  const salted = pbkdf2Sync(saslprep(password), salt, iterations, KEY_BYTES, 'sha256');
  return { clientKey: hmac(salted, 'Client Key'), serverKey: hmac(salted, 'Server Key') };
}

function hmac(key: Buffer, data: string): Buffer {
  return createHmac('sha256', key).update(data, 'utf8').digest();
}

function sha256(data: Buffer): Buffer {
  return createHash('sha256').update(data).digest();
}

function xor(a: Buffer, b: Buffer): Buffer {
  const out = Buffer.alloc(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i]! ^ b[i]!;
  return out;
}

function equalBytes(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

function equalText(a: string, b: string): boolean {
  return equalBytes(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

function newNonce(): string {
  return randomBytes(NONCE_BYTES).toString('base64');
}

/** RFC 5802 `printable`: %x21-2B / %x2D-7E, i.e. printable ASCII except ",". */
function isPrintable(text: string): boolean {
  return /^[\x21-\x2b\x2d-\x7e]+$/.test(text);
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Strict base64 (Buffer.from would silently skip invalid characters); undefined when invalid. */
function decodeBase64(text: string): Buffer | undefined {
  return BASE64.test(text) ? Buffer.from(text, 'base64') : undefined;
}

/** `attr=value` with the expected attribute letter → value; attribute values never contain ",". */
function readAttribute(part: string, attribute: string): string {
  if (part.length < 2 || part[0] !== attribute || part[1] !== '=') {
    throw malformed(`expected attribute "${attribute}"`);
  }
  return part.slice(2);
}

/** Optional extensions (`ALPHA "=" value`): accepted and ignored, as PostgreSQL does. */
function checkExtensions(parts: string[]): void {
  for (const part of parts) {
    if (!/^[A-Za-z]=./.test(part)) throw malformed('invalid attribute');
  }
}

function checkMessage(message: string): void {
  if (message.length === 0) throw malformed('empty message');
  if (message.includes('\0')) throw malformed('unexpected NUL');
}

/** RFC 5802 saslname: "=" and "," are escaped. */
function saslname(name: string): string {
  return name.replaceAll('=', '=3D').replaceAll(',', '=2C');
}

/** Peer text for an error message: printable ASCII only, bounded. */
function sanitize(text: string): string {
  return text.slice(0, 64).replace(/[^\x20-\x7e]/g, '?');
}

function malformed(detail: string): AuthError {
  return new AuthError('malformed', `malformed SCRAM message (${detail})`);
}

function outOfOrder(called: string, step: string): AuthError {
  return new AuthError('out-of-order', `SCRAM exchange: "${called}" step called while at step "${step}"`);
}
