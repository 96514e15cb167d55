import type { UserConfig } from '../config/types.js';
import { makeScramSecret, mockChoice, mockScramSecret, parseScramVerifier, type ScramClientKeys, type ScramSecret } from './scram.js';

export interface UserEntry {
  name: string;
  /** the plain password, when the config holds one (md5 and trust need it or nothing) */
  password: string | undefined;
  secret: ScramSecret;
}

/**
 * The users pgrelay accepts, with their SCRAM secrets derived once (at load or reload), never per
 * connection: the derivation is slow on purpose, and a salt that changed per connection would
 * tell an attacker which users exist.
 */
export class UserDirectory {
  private users = new Map<string, UserEntry>();
  /** iteration count and salt length of each real secret, in config order: what mocks look like */
  private shapes: { iterations: number; saltBytes: number }[] = [];
  /** SCRAM pass-through: keys proved by a client of a verifier-only user (memory only, never logged) */
  private proved = new Map<string, ScramClientKeys>();
  /** auth_query: reads a verifier from the server for a user not in the config */
  private lookupVerifier: ((name: string) => Promise<string | undefined>) | undefined;
  /** users found by auth_query, with the verifier text they were found with */
  private looked = new Map<string, UserEntry & { verifier: string }>();

  constructor(users: readonly UserConfig[]) {
    this.configure(users);
  }

  configure(users: readonly UserConfig[]): void {
    const next = new Map<string, UserEntry>();
    for (const user of users) {
      const known = this.users.get(user.name);
      if (known && known.password === user.password) {
        next.set(user.name, known);
        continue;
      }
      const verifier = parseScramVerifier(user.password);
      next.set(user.name, {
        name: user.name,
        password: verifier ? undefined : user.password,
        secret: verifier ?? makeScramSecret(user.password),
      });
    }
    // keys proved under a verifier that changed (or of a user that left) are no use any more
    for (const name of this.proved.keys()) if (next.get(name) === undefined || next.get(name) !== this.users.get(name)) this.proved.delete(name);
    this.users = next;
    this.shapes = [...next.values()].map((entry) => ({ iterations: entry.secret.iterations, saltBytes: entry.secret.salt.length }));
  }

  /**
   * A client of `name` passed SCRAM and proved `clientKey`: for a verifier-only user, keep the keys
   * to log in to the servers with (they hold the same verifier). Ignored for users with a password.
   */
  proveClientKey(name: string, clientKey: Buffer): void {
    const entry = this.get(name);
    if (!entry || entry.password !== undefined) return;
    const { salt, iterations, serverKey } = entry.secret;
    this.proved.set(name, { salt, iterations, serverKey, clientKey });
  }

  /** The keys of a verifier-only user's last successful client login, if any. */
  clientKeys(name: string): ScramClientKeys | undefined {
    return this.proved.get(name);
  }

  get(name: string): UserEntry | undefined {
    return this.users.get(name) ?? this.looked.get(name);
  }

  /** auth_query: how to read a verifier for users not in the config (undefined: none). */
  setLookup(lookup: ((name: string) => Promise<string | undefined>) | undefined): void {
    this.lookupVerifier = lookup;
    if (!lookup) this.looked.clear();
  }

  /** Whether `name` must be looked up (auth_query) before its exchange starts. */
  needsLookup(name: string): boolean {
    return this.lookupVerifier !== undefined && !this.users.has(name);
  }

  /**
   * Reads `name`'s verifier with auth_query, on every login (a password changed on the server
   * counts at once). A user without one, or with an md5 hash, is unknown (a mock exchange). The
   * entry object stays the same while the verifier does, so keys proved under it stay valid.
   */
  async lookup(name: string): Promise<void> {
    const verifier = await this.lookupVerifier?.(name);
    const secret = verifier === undefined ? undefined : parseScramVerifier(verifier);
    const known = this.looked.get(name);
    if (!secret || verifier === undefined) {
      this.looked.delete(name);
      this.proved.delete(name);
      return;
    }
    if (known?.verifier === verifier) return;
    this.proved.delete(name);
    this.looked.set(name, { name, password: undefined, secret, verifier });
  }

  /** A looked-up user as the pools see it: its verifier as the password (SCRAM pass-through). */
  lookedUp(name: string): UserConfig | undefined {
    const entry = this.looked.get(name);
    return entry && !this.users.has(name) ? { name, password: entry.verifier } : undefined;
  }

  /**
   * The secret to run the exchange with: the real one, or a stable fake for unknown users. A fake
   * takes the iteration count and salt length of one real user, chosen per name (stable, and as
   * often as each shape occurs among real users), so that an unknown user's server-first-message
   * cannot be told from a real one's, also when verifiers with other counts are configured.
   */
  secretFor(name: string): ScramSecret {
    const known = this.get(name);
    if (known) return known.secret;
    const shape = this.shapes[mockChoice(name, this.shapes.length)];
    return mockScramSecret(name, shape ?? {});
  }
}
