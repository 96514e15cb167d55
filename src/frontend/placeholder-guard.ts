import type { Classification } from '../classify/types.js';
import type { FrameReader } from '../protocol/frame-reader.js';
import { FrontendCode } from '../protocol/codes.js';
import { message } from '../protocol/messages.js';
import { quoteIdent } from './session-state.js';

/** What the guard keeps on a server connection: the custom (dotted) parameters defined on its backend. */
export interface PlaceholderServer {
  placeholders: Set<string> | undefined;
}

/** a dotted parameter name: identifiers or quoted identifiers joined by dots */
const NAME = String.raw`(?:"(?:[^"]|"")+"|[A-Za-z_][\w$]*)(?:\s*\.\s*(?:"(?:[^"]|"")+"|[A-Za-z_][\w$]*))+`;
/** SET [SESSION | LOCAL] a.b, RESET a.b, set_config('a.b', …) */
const DEFINES = new RegExp(String.raw`\b(?:SET|RESET)\s+(?:SESSION\s+|LOCAL\s+)?(${NAME})|\bset_config\s*\(\s*'([^']*)'`, 'gi');
/** SHOW a.b, SHOW ALL, current_setting('a.b' …), pg_settings, pg_show_all_settings() */
const READS = new RegExp(String.raw`\bSHOW\s+(ALL\b|${NAME})|\bcurrent_setting\s*\(\s*'([^']*)'|\b(pg_settings|pg_show_all_settings)\b`, 'gi');

/** What a text defines and reads (see placeholdersDefined, placeholdersRead). */
interface TextNames {
  readonly defines: readonly string[];
  readonly reads: readonly string[];
}

/** texts seen last and their names (a driver sends the same texts again and again; the scans cost µs) */
const recent = new Map<string, TextNames>();
const RECENT_TEXTS = 256;
const RECENT_TEXT_CHARS = 4096;

function namesIn(text: string): TextNames {
  let names = recent.get(text);
  if (names === undefined) {
    names = { defines: placeholdersDefined(text), reads: placeholdersRead(text) };
    if (text.length <= RECENT_TEXT_CHARS) {
      if (recent.size >= RECENT_TEXTS) recent.delete(recent.keys().next().value!);
      recent.set(text, names);
    }
  }
  return names;
}

/** A parameter name as PostgreSQL compares them (case-insensitive, quotes and spaces around dots gone). */
function normalize(name: string): string {
  return name.replace(/"((?:[^"]|"")+)"/g, (_, inner: string) => inner.replace(/""/g, '"')).replace(/\s*\.\s*/g, '.').toLowerCase();
}

/** The dotted parameters a text SETs, RESETs or set_config()s (defining them on the backend). */
export function placeholdersDefined(text: string): string[] {
  const names: string[] = [];
  for (const m of text.matchAll(DEFINES)) {
    const name = m[1] ?? m[2] ?? '';
    if (name.includes('.')) names.push(normalize(name));
  }
  return names;
}

/** The dotted parameters a text reads by name ('*': every setting, e.g. SHOW ALL or pg_settings). */
export function placeholdersRead(text: string): string[] {
  const names: string[] = [];
  for (const m of text.matchAll(READS)) {
    if (m[3] !== undefined || m[1]?.toUpperCase() === 'ALL') names.push('*');
    else {
      const name = m[1] ?? m[2] ?? '';
      if (name.includes('.')) names.push(normalize(name));
    }
  }
  return names;
}

/**
 * The SQL text of a unit's first message: a Query's or a Parse's own, a Bind's statement's (from
 * `statementText`, by the client's name for it); undefined for other messages.
 */
export function unitText(reader: FrameReader, statementText: (name: string) => string | undefined): string | undefined {
  const b = reader.buffer;
  const code = reader.code;
  if (code === FrontendCode.Query) return b.toString('utf8', reader.start, reader.end - 1);
  if (code !== FrontendCode.Parse && code !== FrontendCode.Bind) return undefined;
  // Parse: statement name, text; Bind: portal name, statement name
  const firstEnd = b.indexOf(0, reader.start);
  if (firstEnd < 0 || firstEnd >= reader.end) return undefined;
  const secondEnd = b.indexOf(0, firstEnd + 1);
  if (secondEnd < 0 || secondEnd >= reader.end) return undefined;
  return code === FrontendCode.Parse ? b.toString('utf8', firstEnd + 1, secondEnd) : statementText(b.toString('utf8', firstEnd + 1, secondEnd));
}

/**
 * A custom parameter (`SET myapp.x = 1`, `set_config('app.tenant', …, true)`) defines a
 * placeholder on the server backend that no RESET ALL or DISCARD ALL removes: afterwards
 * `current_setting('app.tenant', true)` answers '' there instead of NULL (and without
 * `missing_ok`, '' instead of 42704). So that a client never sees what another client defined on
 * a pooled backend:
 * - each server connection keeps the dotted names its clients' statements defined there (their
 *   texts, and the settings replayed on it);
 * - a unit whose text reads such a parameter by name (`current_setting('a.b' …)`, `SHOW a.b`,
 *   `SHOW ALL`, `pg_settings`) that the client has not defined itself (before, or in that text),
 *   on a connection where another client defined it, gets a new connection instead (the old one
 *   is closed; see Pool.replace).
 * - the other way round, a unit that reads by name a parameter its client defined (and so would
 *   read '' on a direct connection) on a connection where it is not known to be defined is
 *   preceded by `RESET name`, which defines it there (see definitionsFor);
 * The row-level-security pattern (`set_config('app.tenant', x, true)` in each transaction, then
 * reads) never pays a new connection: the client defines the name before it reads it.
 * Not seen (known difference): names given as parameters (`set_config($1, …)`), or defined or
 * read inside functions and policies.
 */
export class PlaceholderGuard {
  /** dotted names this client has defined, on whatever connection (made on first use: most clients define none) */
  private defined: Set<string> | undefined;
  /**
   * `replayed`: the dotted names of this client's session settings now (startup parameters and
   * SETs), defined on every connection they are replayed on
   */
  constructor(
    startupNames: Iterable<string>,
    private readonly replayed: () => readonly string[],
  ) {
    for (const name of startupNames) if (name.includes('.')) (this.defined ??= new Set()).add(name.toLowerCase());
  }

  /** A unit of this client is attached to `conn` (its settings are, or are about to be, replayed there). */
  attached(conn: PlaceholderServer): void {
    const names = this.replayed();
    if (names.length === 0) return;
    const there = (conn.placeholders ??= new Set());
    for (const name of names) there.add(name);
  }

  /** A statement of this client completed on `conn`: the parameters it defined are defined there. */
  ran(conn: PlaceholderServer | undefined, classification: Classification, text: string): void {
    if (classification.namesSettings !== true) return;
    const names = namesIn(text).defines;
    if (names.length === 0) return;
    const there = conn === undefined ? undefined : (conn.placeholders ??= new Set());
    const defined = (this.defined ??= new Set());
    for (const name of names) {
      defined.add(name);
      there?.add(name);
    }
  }

  /**
   * Whether a unit (its classification and first text, when known) would read on `conn` a
   * parameter another client defined there and this client has not.
   */
  wouldSeeForeign(conn: PlaceholderServer, classification: Classification | undefined, text: string | undefined): boolean {
    const there = conn.placeholders;
    if (there === undefined || classification?.namesSettings !== true || text === undefined) return false;
    const { reads, defines: own } = namesIn(text);
    if (reads.length === 0) return false;
    const all = reads.includes('*');
    for (const name of there) {
      if (this.defined?.has(name) === true || own.includes(name)) continue;
      if (all || reads.includes(name)) return true;
    }
    return false;
  }

  /**
   * The Query that defines on `conn` the parameters a unit reads by name that this client
   * defined and `conn` is not known to have (`RESET name` creates the placeholder, empty), if any;
   * they count as defined there from now on.
   */
  definitionsFor(conn: PlaceholderServer, classification: Classification | undefined, text: string | undefined): Buffer | undefined {
    const defined = this.defined;
    if (defined === undefined || defined.size === 0 || classification?.namesSettings !== true || text === undefined) return undefined;
    let missing: string[] | undefined;
    const reads = namesIn(text).reads;
    const names = reads.includes('*') ? defined : reads;
    for (const name of names) {
      if (!defined.has(name) || conn.placeholders?.has(name)) continue;
      (missing ??= []).push(name);
      (conn.placeholders ??= new Set()).add(name);
    }
    return missing && message(FrontendCode.Query, (w) => w.cstring(missing.map((name) => `RESET ${quoteIdent(name)}`).join(';')));
  }
}
