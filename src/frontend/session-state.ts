/**
 * A client's session settings (startup parameters and SET statements), kept by pgrelay so that
 * they follow the client to whichever server connection serves its next unit.
 *
 * The state is one SQL text. A server connection remembers the text last applied to it; when
 * they differ, the session sends `RESET ALL` plus this text before the unit (and swallows the
 * answers). A client that never SETs anything costs one string comparison per unit.
 */
export class SessionState {
  /** startup parameters, as SET statements, in the order they came */
  private readonly startup = new Map<string, string>();
  /** SET statements of the session, by lower-cased parameter name (later ones win) */
  private readonly sets = new Map<string, string>();
  private cached: string | undefined = '';

  constructor(startupParams: ReadonlyMap<string, string>) {
    for (const [name, value] of startupParams) this.startup.set(name.toLowerCase(), `SET ${quoteIdent(name)} TO ${quoteLiteral(value)}`);
    this.cached = undefined;
  }

  /** The SQL that makes a fresh server connection look like this client's session. */
  sql(): string {
    if (this.cached === undefined) {
      const parts: string[] = [];
      for (const [name, statement] of this.startup) if (!this.sets.has(name)) parts.push(statement);
      for (const statement of this.sets.values()) parts.push(statement);
      this.cached = parts.join(';\n');
    }
    return this.cached;
  }

  set(name: string, statement: string): void {
    const key = name.toLowerCase();
    this.sets.delete(key); // re-insert so that order follows the latest SET
    this.sets.set(key, statement.trim().replace(/;\s*$/, ''));
    this.cached = undefined;
  }

  reset(name: string): void {
    if (this.sets.delete(name.toLowerCase())) this.cached = undefined;
  }

  resetAll(): void {
    if (this.sets.size === 0) return;
    this.sets.clear();
    this.cached = undefined;
  }

  get isEmpty(): boolean {
    return this.sql() === '';
  }
}

/**
 * What undoes the previous client's session state. RESET ALL leaves the role and the session
 * authorization alone (PostgreSQL marks them GUC_NO_RESET_ALL): without their own RESETs, a
 * client's `SET ROLE` would carry over to the next client on the connection.
 */
const RESET_STATE = 'RESET ALL;\nRESET SESSION AUTHORIZATION;\nRESET ROLE';

/** The statement that moves a server connection from `applied` to `wanted`. */
export function stateTransition(applied: string, wanted: string): string {
  if (applied === '') return wanted;
  return wanted === '' ? RESET_STATE : `${RESET_STATE};\n${wanted}`;
}

/**
 * A parameter name for SET, always quoted: GUC names are case-insensitive and a quoted custom name
 * may hold its dot (`"a.b"` names the same setting as a.b), while an unquoted part that is a
 * keyword (`a.to`, `x.select`) would be a syntax error.
 */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

export function quoteLiteral(value: string): string {
  return value.includes('\\') ? `E'${value.replace(/\\/g, '\\\\').replace(/'/g, "''")}'` : `'${value.replace(/'/g, "''")}'`;
}
