import { describe, expect, it } from 'vitest';
import { formatScramVerifier, makeScramSecret, ScramClientExchange, ScramServerExchange } from '../../src/auth/scram.js';
import { UserDirectory } from '../../src/auth/user-directory.js';

// Unknown users get a mock SCRAM exchange that cannot be told from a real user's: the iteration
// count and salt length of the real secrets (also when verifiers with another count are in the
// config), a salt stable per name, the same messages.
const verifier = (password: string, iterations: number, saltBytes = 16) => formatScramVerifier(makeScramSecret(password, { iterations, salt: Buffer.alloc(saltBytes, 7) }));

/** The server-first-message an exchange for `user` starts with, as a client sees it. */
function serverFirst(directory: UserDirectory, user: string): { salt: Buffer; iterations: number } {
  const client = new ScramClientExchange('whatever');
  const first = new ScramServerExchange(directory.secretFor(user)).handleClientFirst(client.clientFirst());
  const [, s, i] = first.split(',');
  return { salt: Buffer.from(s!.slice(2), 'base64'), iterations: Number(i!.slice(2)) };
}

describe('UserDirectory mock secrets', () => {
  it('take the iteration count and salt length real users have, not a fixed 4096', () => {
    const directory = new UserDirectory([{ name: 'app', password: verifier('pw', 10_000, 20) }]);
    expect(serverFirst(directory, 'app')).toMatchObject({ iterations: 10_000 });
    const unknown = serverFirst(directory, 'nobody');
    expect(unknown.iterations).toBe(10_000);
    expect(unknown.salt.length).toBe(20);
    // stable per name (a real user's salt does not change between attempts either)
    expect(serverFirst(directory, 'nobody').salt.equals(unknown.salt)).toBe(true);
    expect(serverFirst(directory, 'somebody').salt.equals(unknown.salt)).toBe(false);
  });

  it('with several counts, each unknown name gets one of them, in proportion, stably', () => {
    const directory = new UserDirectory([
      { name: 'a', password: verifier('pw', 4096) },
      { name: 'b', password: verifier('pw', 4096) },
      { name: 'c', password: verifier('pw', 50_000) },
      { name: 'd', password: 'plain password' },
    ]);
    const counts = new Map<number, number>();
    for (let i = 0; i < 2000; i++) {
      const { iterations } = serverFirst(directory, `user${i}`);
      counts.set(iterations, (counts.get(iterations) ?? 0) + 1);
      if (i < 20) expect(serverFirst(directory, `user${i}`).iterations).toBe(iterations);
    }
    expect([...counts.keys()].sort((x, y) => x - y)).toEqual([4096, 50_000]);
    // 3 of 4 real secrets use 4096: about 1500 of 2000 (binomial, 6 sigma ≈ 115)
    expect(Math.abs(counts.get(4096)! - 1500)).toBeLessThan(120);
  });

  it('still ends every exchange of an unknown user in failure', () => {
    const directory = new UserDirectory([{ name: 'app', password: verifier('pw', 10_000) }]);
    const client = new ScramClientExchange('pw');
    const server = new ScramServerExchange(directory.secretFor('nobody'));
    const final = client.handleServerFirst(server.handleClientFirst(client.clientFirst()));
    expect(server.handleClientFinal(final)).toEqual({ ok: false });
  });
});

describe('UserDirectory SCRAM pass-through keys', () => {
  it('keeps the ClientKey a client proved, for verifier-only users only, until the verifier changes', () => {
    const v = verifier('pw', 4096);
    const directory = new UserDirectory([{ name: 'vo', password: v }, { name: 'plain', password: 'pw' }]);
    for (const name of ['vo', 'plain']) {
      const client = new ScramClientExchange('pw');
      const server = new ScramServerExchange(directory.secretFor(name));
      const outcome = server.handleClientFinal(client.handleServerFirst(server.handleClientFirst(client.clientFirst())));
      expect(outcome.ok).toBe(true);
      directory.proveClientKey(name, server.clientKey!);
    }
    const keys = directory.clientKeys('vo')!;
    expect(keys.iterations).toBe(4096);
    // the keys log in as the password would: a server holding the same verifier accepts them
    const server = new ScramServerExchange(directory.secretFor('vo'));
    const client = new ScramClientExchange(keys);
    const outcome = server.handleClientFinal(client.handleServerFirst(server.handleClientFirst(client.clientFirst())));
    expect(outcome.ok).toBe(true);
    expect(directory.clientKeys('plain')).toBeUndefined();
    directory.configure([{ name: 'vo', password: verifier('other', 4096) }]);
    expect(directory.clientKeys('vo')).toBeUndefined();
  });
});
