import type { UserConfig } from '../config/types.js';
import { makeScramSecret, mockScramSecret, parseScramVerifier, type ScramSecret } from './scram.js';

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
    this.users = next;
  }

  get(name: string): UserEntry | undefined {
    return this.users.get(name);
  }

  /** The secret to run the exchange with: the real one, or a stable fake for unknown users. */
  secretFor(name: string): ScramSecret {
    return this.users.get(name)?.secret ?? mockScramSecret(name);
  }
}
