import { createHash, createHmac, pbkdf2Sync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ProxyError } from '../../src/errors.js';
import { md5PasswordHash, verifyMd5Response } from '../../src/auth/md5.js';
import {
  AuthError,
  type AuthErrorCode,
  formatScramVerifier,
  makeScramSecret,
  mockScramSecret,
  parseScramVerifier,
  SCRAM_MECHANISM,
  ScramClientExchange,
  type ScramSecret,
  ScramServerExchange,
} from '../../src/auth/scram.js';

// RFC 7677 section 3.
const RFC = {
  password: 'pencil',
  clientNonce: 'rOprNGfwEbeRWgbNEkqO',
  serverNonce: '%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0',
  salt: Buffer.from('W22ZaJ0SNY7soEsUEjb6gQ==', 'base64'),
  iterations: 4096,
  clientFirst: 'n,,n=user,r=rOprNGfwEbeRWgbNEkqO',
  serverFirst: 'r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096',
  clientFinal:
    'c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=',
  serverFinal: 'v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=',
};

/** PostgreSQL 15 `CREATE ROLE … PASSWORD 'pencil'` with password_encryption = scram-sha-256. */
const PG_PENCIL_VERIFIER =
  'SCRAM-SHA-256$4096:a+Gf2ADxop5rp/omZUG06g==$O533j9ABo3aJE2IqJWRp6zMrbFETrVn+hNnFsl9vtPE=:nyGBCdgCoc8C1YMhL4iylMlydpheanoRrx3SO+3JXT8=';

// An independent SCRAM client straight from RFC 5802 section 3, to build messages the class would not.
const hmac = (key: Buffer, text: string): Buffer => createHmac('sha256', key).update(text).digest();
const sha256 = (data: Buffer): Buffer => createHash('sha256').update(data).digest();
function rfcClientFinal(password: string, clientFirstBare: string, serverFirst: string, withoutProof: string): string {
  const fields = Object.fromEntries(serverFirst.split(',').map((part) => [part[0], part.slice(2)]));
  const salted = pbkdf2Sync(password, Buffer.from(fields.s!, 'base64'), Number(fields.i), 32, 'sha256');
  const clientKey = hmac(salted, 'Client Key');
  const signature = hmac(sha256(clientKey), `${clientFirstBare},${serverFirst},${withoutProof}`);
  const proof = Buffer.from(clientKey.map((byte, i) => byte ^ signature[i]!));
  return `${withoutProof},p=${proof.toString('base64')}`;
}

function expectAuthError(fn: () => unknown, code: AuthErrorCode): AuthError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(AuthError);
  expect((caught as AuthError).code).toBe(code);
  return caught as AuthError;
}

/** Secrets are PBKDF2'd once per password for the whole file. */
const secretCache = new Map<string, ScramSecret>();
function secretFor(password: string): ScramSecret {
  let secret = secretCache.get(password);
  if (!secret) secretCache.set(password, (secret = makeScramSecret(password)));
  return secret;
}

/** A server exchange that has seen a client-first-message with the given gs2 header. */
function serverAfterFirst(gs2 = 'n,,', password = 'pencil') {
  const server = new ScramServerExchange(secretFor(password), { nonce: 'SERVERNONCE' });
  const clientFirstBare = 'n=,r=CLIENTNONCE';
  const serverFirst = server.handleClientFirst(gs2 + clientFirstBare);
  return { server, clientFirstBare, serverFirst, nonce: 'CLIENTNONCESERVERNONCE' };
}

describe('SCRAM-SHA-256: RFC 7677 test vector', () => {
  it('client side produces the exact client-final-message and accepts the server signature', () => {
    const client = new ScramClientExchange(RFC.password, { nonce: RFC.clientNonce, username: 'user' });
    expect(client.clientFirst()).toBe(RFC.clientFirst);
    expect(client.handleServerFirst(RFC.serverFirst)).toBe(RFC.clientFinal);
    expect(() => client.verifyServerFinal(RFC.serverFinal)).not.toThrow();
  });

  it('server side verifies the proof and returns the server signature', () => {
    const secret = makeScramSecret(RFC.password, { salt: RFC.salt, iterations: RFC.iterations });
    const server = new ScramServerExchange(secret, { nonce: RFC.serverNonce });
    expect(server.handleClientFirst(RFC.clientFirst)).toBe(RFC.serverFirst);
    expect(server.handleClientFinal(RFC.clientFinal)).toEqual({ ok: true, serverFinal: RFC.serverFinal });
  });

  it('client side rejects a wrong server signature and a server error', () => {
    const run = (serverFinal: string): void => {
      const client = new ScramClientExchange(RFC.password, { nonce: RFC.clientNonce, username: 'user' });
      client.clientFirst();
      client.handleServerFirst(RFC.serverFirst);
      client.verifyServerFinal(serverFinal);
    };
    expectAuthError(() => run('v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4='), 'server-signature');
    expectAuthError(() => run('v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4'), 'server-signature'); // short
    expect(expectAuthError(() => run('e=invalid-proof'), 'server-error').sqlstate).toBe('28P01');
    expect(expectAuthError(() => run('e=other-error'), 'server-error').sqlstate).toBe('28000');
  });
});

describe('SCRAM-SHA-256: client against server', () => {
  function exchange(clientPassword: string, secret: ScramSecret) {
    const client = new ScramClientExchange(clientPassword);
    const server = new ScramServerExchange(secret);
    const first = client.clientFirst();
    const final = client.handleServerFirst(server.handleClientFirst(first));
    return { client, server, first, result: server.handleClientFinal(final) };
  }

  it('logs in with the right password, and the client verifies the server', () => {
    const { client, server, first, result } = exchange('pencil', secretFor('pencil'));
    expect(first).toMatch(/^n,,n=,r=[A-Za-z0-9+/]{24}$/); // what libpq sends
    expect(result.ok).toBe(true);
    if (result.ok) client.verifyServerFinal(result.serverFinal);
    expect(server.clientKey).toHaveLength(32);
    expect(client.keys).toMatchObject({ iterations: 4096 });
  });

  it('does not log in with a wrong password', () => {
    const { server, result } = exchange('pencil!', secretFor('pencil'));
    expect(result).toEqual({ ok: false });
    expect(server.clientKey).toBeUndefined();
  });

  it('uses random nonces', () => {
    const a = new ScramClientExchange('x').clientFirst();
    const b = new ScramClientExchange('x').clientFirst();
    expect(a).not.toBe(b);
    const s1 = new ScramServerExchange(secretFor('pencil')).handleClientFirst('n,,n=,r=abc');
    const s2 = new ScramServerExchange(secretFor('pencil')).handleClientFirst('n,,n=,r=abc');
    expect(s1).not.toBe(s2);
  });

  it('accepts what node-postgres sends (n=*) and an escaped username, which are ignored', () => {
    const client = new ScramClientExchange('pencil', { username: 'a=b,c' });
    expect(client.clientFirst()).toMatch(/^n,,n=a=3Db=2Cc,r=/);
    const server = new ScramServerExchange(secretFor('pencil'), { nonce: 'S' });
    expect(server.handleClientFirst('n,,n=*,r=abc')).toMatch(/^r=abcS,s=[^,]+,i=4096$/);
  });

  it('accepts gs2 flag y (we offer no -PLUS) with its "eSws" echo, and ignores extensions', () => {
    const { server, clientFirstBare, serverFirst, nonce } = serverAfterFirst('y,,');
    const final = rfcClientFinal('pencil', clientFirstBare, serverFirst, `c=eSws,r=${nonce},x=extension`);
    expect(server.handleClientFinal(final).ok).toBe(true);
  });

  it('rejects a channel-binding echo that does not match the gs2 header', () => {
    for (const [gs2, echo] of [['n,,', 'eSws'], ['y,,', 'biws'], ['n,,', 'biwsx']] as const) {
      const { server, clientFirstBare, serverFirst, nonce } = serverAfterFirst(gs2);
      const final = rfcClientFinal('pencil', clientFirstBare, serverFirst, `c=${echo},r=${nonce}`);
      expectAuthError(() => server.handleClientFinal(final), 'channel-binding');
    }
  });

  it('rejects channel binding p (SCRAM-SHA-256-PLUS is not offered)', () => {
    const server = new ScramServerExchange(secretFor('pencil'));
    const err = expectAuthError(() => server.handleClientFirst('p=tls-server-end-point,,n=,r=abc'), 'channel-binding');
    expect(err.sqlstate).toBe('08P01');
  });

  it('throws on a tampered nonce (server side)', () => {
    for (const nonce of ['CLIENTNONCESERVERNONCf', 'CLIENTNONCESERVERNONCE1', 'CLIENTNONCE', 'xLIENTNONCESERVERNONCE']) {
      const { server, clientFirstBare, serverFirst } = serverAfterFirst();
      const final = rfcClientFinal('pencil', clientFirstBare, serverFirst, `c=biws,r=${nonce}`);
      expectAuthError(() => server.handleClientFinal(final), 'nonce-mismatch');
    }
  });

  it('throws on a server nonce that does not extend the client nonce (client side)', () => {
    for (const nonce of ['abc', 'abcd', 'xbcdS', 'S']) {
      const client = new ScramClientExchange('pencil', { nonce: 'abcd' });
      client.clientFirst();
      expectAuthError(() => client.handleServerFirst(`r=${nonce},s=QUJDRA==,i=4096`), 'nonce-mismatch');
    }
  });

  it('throws AuthError on malformed client-first-messages', () => {
    const cases: [string, AuthErrorCode][] = [
      ['', 'malformed'],
      ['x,,n=,r=abc', 'malformed'],
      ['nn,,n=,r=abc', 'malformed'],
      ['n,,', 'malformed'],
      ['n,,n=', 'malformed'],
      ['n,,r=abc', 'malformed'],
      ['n,,n=,r=', 'malformed'],
      ['n,,n=,x=abc', 'malformed'],
      ['n,,n=,r=ab\u00e9', 'malformed'],
      ['n,,n=,r=a b', 'malformed'],
      ['n,,n=,r=abc,', 'malformed'],
      ['n,,n=,r=abc,1=x', 'malformed'],
      ['n,,n=,r=abc\0', 'malformed'],
      ['n,x,n=,r=abc', 'malformed'],
      ['n,a=bob,n=,r=abc', 'unsupported'],
      ['n,,m=ext,n=,r=abc', 'unsupported'],
    ];
    for (const [message, code] of cases) {
      const server = new ScramServerExchange(secretFor('pencil'));
      expectAuthError(() => server.handleClientFirst(message), code);
    }
  });

  it('throws AuthError on malformed client-final-messages', () => {
    const { clientFirstBare, serverFirst, nonce } = serverAfterFirst();
    const good = rfcClientFinal('pencil', clientFirstBare, serverFirst, `c=biws,r=${nonce}`);
    const proof = good.slice(good.indexOf(',p=') + 3);
    const cases = [
      '',
      `r=${nonce},p=${proof}`,
      'c=biws',
      `c=biws,r=${nonce}`,
      `c=biws,r=${nonce},p=`,
      `c=biws,r=${nonce},p=!!!!`,
      `c=biws,r=${nonce},p=${proof.slice(0, 40)}`, // not valid base64
      `c=biws,r=${nonce},p=${Buffer.alloc(16).toString('base64')}`, // 16 bytes
      `c=biws,r=${nonce},p=${proof},x=trailing`,
      `c=biws,r=${nonce},p=${proof},p=${proof}`,
      `c=biws,r=${nonce},=x,p=${proof}`,
      `c=biws,r=${nonce},p=${proof}\0`,
    ];
    for (const message of cases) {
      const { server } = serverAfterFirst();
      expectAuthError(() => server.handleClientFinal(message), 'malformed');
    }
    expect(serverAfterFirst().server.handleClientFinal(good).ok).toBe(true);
  });

  it('throws AuthError on malformed server-first-messages', () => {
    const cases: [string, AuthErrorCode][] = [
      ['', 'malformed'],
      ['r=abcdS', 'malformed'],
      ['r=abcdS,s=QUJDRA==', 'malformed'],
      ['s=QUJDRA==,r=abcdS,i=4096', 'malformed'],
      ['r=abcdS,s=,i=4096', 'malformed'],
      ['r=abcdS,s=QUJDRA,i=4096', 'malformed'], // unpadded base64
      ['r=abcdS,s=Q!JDRA==,i=4096', 'malformed'],
      ['r=abcdS,s=QUJDRA==,i=', 'malformed'],
      ['r=abcdS,s=QUJDRA==,i=0', 'malformed'],
      ['r=abcdS,s=QUJDRA==,i=-1', 'malformed'],
      ['r=abcdS,s=QUJDRA==,i=04096', 'malformed'],
      ['r=abcdS,s=QUJDRA==,i=4096x', 'malformed'],
      ['r=abcdS,s=QUJDRA==,i=4096,', 'malformed'],
      ['r=abcd\u00e9,s=QUJDRA==,i=4096', 'malformed'],
      ['m=ext,r=abcdS,s=QUJDRA==,i=4096', 'unsupported'],
      ['r=abcdS,s=QUJDRA==,i=1000001', 'unsupported'],
    ];
    for (const [message, code] of cases) {
      const client = new ScramClientExchange('pencil', { nonce: 'abcd' });
      client.clientFirst();
      expectAuthError(() => client.handleServerFirst(message), code);
    }
    const limited = new ScramClientExchange('pencil', { nonce: 'abcd', maxIterations: 100 });
    limited.clientFirst();
    expectAuthError(() => limited.handleServerFirst('r=abcdS,s=QUJDRA==,i=101'), 'unsupported');
  });

  it('throws AuthError on malformed server-final-messages', () => {
    for (const message of ['', 'x=1', 'v=', 'v=!!!!', `v=${Buffer.alloc(32).toString('base64')},=x`]) {
      const client = new ScramClientExchange(RFC.password, { nonce: RFC.clientNonce, username: 'user' });
      client.clientFirst();
      client.handleServerFirst(RFC.serverFirst);
      expect(() => client.verifyServerFinal(message)).toThrow(AuthError);
    }
  });

  it('refuses steps out of order, and a second try after an error', () => {
    const server = new ScramServerExchange(secretFor('pencil'));
    expectAuthError(() => server.handleClientFinal('c=biws,r=x,p=x'), 'out-of-order');
    const { server: done, clientFirstBare, serverFirst, nonce } = serverAfterFirst();
    const final = rfcClientFinal('pencil', clientFirstBare, serverFirst, `c=biws,r=${nonce}`);
    expect(done.handleClientFinal(final).ok).toBe(true);
    expectAuthError(() => done.handleClientFinal(final), 'out-of-order');
    expectAuthError(() => done.handleClientFirst('n,,n=,r=abc'), 'out-of-order');

    const failed = new ScramServerExchange(secretFor('pencil'));
    expectAuthError(() => failed.handleClientFirst('n,,n=,r='), 'malformed');
    expectAuthError(() => failed.handleClientFirst('n,,n=,r=abc'), 'out-of-order');

    const client = new ScramClientExchange('pencil');
    expectAuthError(() => client.handleServerFirst(RFC.serverFirst), 'out-of-order');
    client.clientFirst();
    expectAuthError(() => client.clientFirst(), 'out-of-order');
    expectAuthError(() => client.verifyServerFinal(RFC.serverFinal), 'out-of-order');
  });

  it('AuthError is a ProxyError with a SQLSTATE', () => {
    const err = expectAuthError(() => new ScramServerExchange(secretFor('pencil')).handleClientFirst('garbage'), 'malformed');
    expect(err).toBeInstanceOf(ProxyError);
    expect(err).toBeInstanceOf(Error);
    expect(err.sqlstate).toBe('08P01');
    expect(err.severity).toBe('FATAL');
    expect(SCRAM_MECHANISM).toBe('SCRAM-SHA-256');
  });
});

describe('SCRAM-SHA-256: unknown users', () => {
  it('gives a stable, per-user mock secret that looks like a real one', () => {
    const a = mockScramSecret('nobody');
    expect(mockScramSecret('nobody').salt.equals(a.salt)).toBe(true);
    expect(mockScramSecret('somebody').salt.equals(a.salt)).toBe(false);
    expect(a.salt).toHaveLength(16);
    expect(a.iterations).toBe(4096);
    expect(mockScramSecret('nobody', { iterations: 10_000 }).iterations).toBe(10_000);

    const real = new ScramServerExchange(secretFor('pencil'), { nonce: 'S' }).handleClientFirst('n,,n=,r=abc');
    const mock = new ScramServerExchange(a, { nonce: 'S' }).handleClientFirst('n,,n=,r=abc');
    const shape = (message: string): string => message.replace(/s=[^,]+/, `s=<${message.match(/s=([^,]+)/)![1]!.length}>`);
    expect(shape(mock)).toBe(shape(real));
  });

  it('runs a full exchange and fails like a wrong password', () => {
    const server = new ScramServerExchange(mockScramSecret('nobody'));
    const client = new ScramClientExchange('whatever');
    const final = client.handleServerFirst(server.handleClientFirst(client.clientFirst()));
    expect(server.handleClientFinal(final)).toEqual({ ok: false });
  });

  it('fails even if the mock keys were somehow known', () => {
    const mock = mockScramSecret('nobody');
    Object.assign(mock, makeScramSecret('guess', { salt: mock.salt })); // same object: still a mock
    const server = new ScramServerExchange(mock);
    const client = new ScramClientExchange('guess');
    const final = client.handleServerFirst(server.handleClientFirst(client.clientFirst()));
    expect(server.handleClientFinal(final)).toEqual({ ok: false });
    // while the same keys in a real secret do verify
    const real = new ScramServerExchange({ ...mock });
    const client2 = new ScramClientExchange('guess');
    expect(real.handleClientFinal(client2.handleServerFirst(real.handleClientFirst(client2.clientFirst()))).ok).toBe(true);
  });
});

describe('SCRAM-SHA-256: verifiers and keys', () => {
  it('round-trips makeScramSecret through the PostgreSQL verifier format', () => {
    const secret = makeScramSecret('pencil', { iterations: 5000 });
    const text = formatScramVerifier(secret);
    expect(text).toMatch(/^SCRAM-SHA-256\$5000:[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=:[A-Za-z0-9+/]{43}=$/);
    expect(parseScramVerifier(text)).toEqual(secret);
  });

  it('matches the RFC 7677 keys computed independently', () => {
    const salted = pbkdf2Sync(RFC.password, RFC.salt, RFC.iterations, 32, 'sha256');
    const storedKey = sha256(hmac(salted, 'Client Key')).toString('base64');
    const serverKey = hmac(salted, 'Server Key').toString('base64');
    const verifier = `SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$${storedKey}:${serverKey}`;
    expect(formatScramVerifier(makeScramSecret(RFC.password, { salt: RFC.salt }))).toBe(verifier);
  });

  it('reads a verifier made by PostgreSQL and logs in with its password', () => {
    const secret = parseScramVerifier(PG_PENCIL_VERIFIER)!;
    expect(secret.iterations).toBe(4096);
    expect(makeScramSecret('pencil', { salt: secret.salt, iterations: secret.iterations })).toEqual(secret);
    const server = new ScramServerExchange(secret);
    const client = new ScramClientExchange('pencil');
    const result = server.handleClientFinal(client.handleServerFirst(server.handleClientFirst(client.clientFirst())));
    expect(result.ok).toBe(true);
  });

  it('returns undefined for anything else', () => {
    const [, rest] = PG_PENCIL_VERIFIER.split('$4096:');
    for (const text of [
      'pencil',
      '',
      'md5c1007ebbc6ecc151a46d7e2af0f47b66',
      `SCRAM-SHA-1$4096:${rest}`,
      `scram-sha-256$4096:${rest}`,
      `SCRAM-SHA-256$0:${rest}`,
      `SCRAM-SHA-256$-1:${rest}`,
      `SCRAM-SHA-256$:${rest}`,
      `SCRAM-SHA-256$99999999999999999999:${rest}`,
      `${PG_PENCIL_VERIFIER} `,
      ` ${PG_PENCIL_VERIFIER}`,
      PG_PENCIL_VERIFIER.replace('a+Gf', 'a!Gf'),
      PG_PENCIL_VERIFIER.replace('=$O533', '$O533'),
      PG_PENCIL_VERIFIER.replace('XT8=', 'XT8'),
      PG_PENCIL_VERIFIER.replace(':nyGBCdgCoc8C1YMhL4iylMlydpheanoRrx3SO+3JXT8=', ':QUJD'),
      PG_PENCIL_VERIFIER.replace(':nyGB', '$nyGB'),
    ]) {
      expect(parseScramVerifier(text), text).toBeUndefined();
    }
  });

  it('logs in with keys instead of the password (cached keys, pass-through)', () => {
    const secret = secretFor('pencil');
    // 1. A client logs in to pgrelay; pgrelay learns its ClientKey.
    const front = new ScramServerExchange(secret);
    const app = new ScramClientExchange('pencil');
    expect(front.handleClientFinal(app.handleServerFirst(front.handleClientFirst(app.clientFirst()))).ok).toBe(true);
    const keys = { salt: secret.salt, iterations: secret.iterations, clientKey: front.clientKey!, serverKey: secret.serverKey };

    // 2. pgrelay logs in to a server holding the same verifier, without the password.
    const back = new ScramServerExchange(secret);
    const relay = new ScramClientExchange(keys);
    const result = back.handleClientFinal(relay.handleServerFirst(back.handleClientFirst(relay.clientFirst())));
    expect(result.ok).toBe(true);
    if (result.ok) relay.verifyServerFinal(result.serverFinal);

    // 3. Keys from a password login are reusable the same way.
    expect(relay.keys).toEqual(keys);

    // A server with another verifier (salt) cannot be logged in to with these keys.
    const other = new ScramServerExchange(makeScramSecret('pencil'));
    const stale = new ScramClientExchange(keys);
    expectAuthError(() => stale.handleServerFirst(other.handleClientFirst(stale.clientFirst())), 'verifier-mismatch');
  });

  it('validates makeScramSecret options', () => {
    expect(() => makeScramSecret('x', { iterations: 0 })).toThrow(RangeError);
    expect(() => makeScramSecret('x', { iterations: 1.5 })).toThrow(RangeError);
    expect(() => makeScramSecret('x', { salt: Buffer.alloc(0) })).toThrow(RangeError);
    expect(() => new ScramClientExchange('x', { nonce: 'a,b' })).toThrow(RangeError);
    expect(() => new ScramServerExchange(secretFor('pencil'), { nonce: '' })).toThrow(RangeError);
  });
});

describe('md5', () => {
  const salt = Buffer.from([0x01, 0x02, 0x03, 0x04]);
  // Independent: 'md5' + md5hex(md5hex(password + user) + salt); the constant is from Python's hashlib.
  const md5hex = (data: Buffer | string): string => createHash('md5').update(data).digest('hex');
  const expected = 'md5' + md5hex(Buffer.concat([Buffer.from(md5hex('app' + 'app')), salt]));

  it('computes the password message a client sends', () => {
    expect(expected).toBe('md5c1007ebbc6ecc151a46d7e2af0f47b66');
    expect(md5PasswordHash('app', 'app', salt)).toBe(expected);
    expect(md5PasswordHash('app', 'app', Buffer.from([1, 2, 3, 5]))).not.toBe(expected);
  });

  it('verifies a client response', () => {
    expect(verifyMd5Response('app', 'app', salt, expected)).toBe(true);
    expect(verifyMd5Response('app', 'app', salt, Buffer.from(expected))).toBe(true);
    expect(verifyMd5Response('app', 'wrong', salt, expected)).toBe(false);
    expect(verifyMd5Response('other', 'app', salt, expected)).toBe(false);
    expect(verifyMd5Response('app', 'app', Buffer.from([4, 3, 2, 1]), expected)).toBe(false);
    expect(verifyMd5Response('app', 'app', salt, expected.toUpperCase())).toBe(false);
    expect(verifyMd5Response('app', 'app', salt, expected.slice(0, -1))).toBe(false);
    expect(verifyMd5Response('app', 'app', salt, '')).toBe(false);
  });

  it('requires a 4-byte salt', () => {
    expect(() => md5PasswordHash('app', 'app', Buffer.alloc(3))).toThrow(AuthError);
  });
});
