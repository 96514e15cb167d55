import { ProxyError, SqlState } from '../errors.js';
import { runInternalQuery } from '../pool/internal-query.js';
import type { ServerConnection } from '../pool/server-connection.js';

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
  /** SET statements of the session, by lower-cased parameter name (later ones win); made by the first SET */
  private sets: Map<string, string> | undefined;
  private cached: string | undefined = '';
  /** the custom (dotted) parameters `cached` sets */
  private dotted: string[] = [];

  /** the client's startup value of default_transaction_isolation is serializable */
  readonly startupSerializable: boolean;
  /** the client gave default_transaction_isolation at startup */
  readonly startupIsolation: boolean;

  constructor(startupParams: ReadonlyMap<string, string>) {
    let serializable = false;
    let isolation = false;
    for (const [name, value] of startupParams) {
      this.startup.set(name.toLowerCase(), `SET ${quoteIdent(name)} TO ${quoteLiteral(value)}`);
      if (name.toLowerCase() === 'default_transaction_isolation') {
        serializable = isSerializable(value);
        isolation = true;
      }
    }
    this.startupSerializable = serializable;
    this.startupIsolation = isolation;
    this.cached = undefined;
  }

  /** The SQL that makes a fresh server connection look like this client's session. */
  sql(): string {
    if (this.cached === undefined) {
      const parts: string[] = [];
      const dotted: string[] = [];
      for (const [name, statement] of this.startup) {
        if (this.sets?.has(name) === true) continue;
        parts.push(statement);
        if (name.includes('.')) dotted.push(name);
      }
      for (const [name, statement] of this.sets ?? []) {
        parts.push(statement);
        if (name.includes('.')) dotted.push(name);
      }
      this.cached = parts.join(';\n');
      this.dotted = dotted;
    }
    return this.cached;
  }

  set(name: string, statement: string): void {
    const key = name.toLowerCase();
    const sets = (this.sets ??= new Map());
    sets.delete(key); // re-insert so that order follows the latest SET
    // setting the session authorization also ends a SET ROLE (PostgreSQL: the role is NONE again)
    if (key === 'session_authorization') sets.delete('role');
    sets.set(key, statement.trim().replace(/;\s*$/, ''));
    this.cached = undefined;
  }

  reset(name: string): void {
    const key = name.toLowerCase();
    // RESET SESSION AUTHORIZATION resets the role too (as SET SESSION AUTHORIZATION does)
    const changed = key === 'session_authorization' ? this.sets?.delete('role') === true : false;
    if (this.sets?.delete(key) === true || changed) this.cached = undefined;
  }

  /**
   * RESET ALL (`identity` true: the role and the session authorization stay, PostgreSQL marks
   * them GUC_NO_RESET_ALL), or DISCARD ALL (`identity` false: they go too).
   */
  resetAll(identity = false): void {
    const sets = this.sets;
    if (sets === undefined) return;
    let changed = false;
    for (const key of [...sets.keys()]) {
      if (identity && (key === 'role' || key === 'session_authorization')) continue;
      sets.delete(key);
      changed = true;
    }
    if (changed) this.cached = undefined;
  }

  /** the names of the startup parameters */
  startupNames(): Iterable<string> {
    return this.startup.keys();
  }

  /** The custom (dotted) parameters sql() sets (lower case): they are defined wherever it is applied. */
  placeholderNames(): readonly string[] {
    this.sql();
    return this.dotted;
  }

  get isEmpty(): boolean {
    return this.sql() === '';
  }
}

/** A value of default_transaction_isolation (or a SET of it) names serializable. */
export function isSerializable(text: string): boolean {
  return /\bserializable\b/i.test(text);
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
 * Moves a server connection no client holds to `wanted` and waits for the answer: undefined when
 * applied, else the error for the unit (the server's own SQLSTATE and text, as the client would
 * have seen it) — and the connection must go: a failed replay is one implicit transaction, rolled
 * back whole, so it still has the previous client's role and settings.
 */
export async function applyState(conn: ServerConnection, wanted: string, node: string): Promise<ProxyError | undefined> {
  let result;
  try {
    result = await runInternalQuery(conn, stateTransition(conn.appliedState, wanted));
  } catch (error) {
    return new ProxyError(SqlState.connectionFailure, `connection to node ${node} lost`, { cause: error });
  }
  if (result.error) {
    conn.appliedState = DIRTY_STATE;
    return new ProxyError(result.error.get('C') ?? SqlState.invalidParameterValue, result.error.get('M') ?? 'the session settings could not be applied');
  }
  conn.appliedState = wanted;
  return undefined;
}

/** A connection whose settings are not known (no session's text equals it): they are reset before its next unit. */
export const DIRTY_STATE = '\0dirty';

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
