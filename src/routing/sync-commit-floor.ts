/**
 * The no-loss promise against clients: `routing.min_synchronous_commit` (default `on`). With the
 * synchronous standby, a commit acknowledged under `on` (or `remote_apply`) is on the standby and
 * survives a failover; under `local`, `off` (or `remote_write`, written but not flushed there) it
 * may not. A client that lowers the setting below the floor is refused with 42501. Pure: text and
 * startup parameters in, a refusal or undefined out (no I/O; libpg-query is loaded by the
 * Classifier before any client connects).
 *
 * What is checked, wherever it appears in a statement (also inside ALTER ROLE/DATABASE/SYSTEM …
 * SET and CREATE FUNCTION … SET):
 *   - `SET [SESSION|LOCAL] synchronous_commit = v` (and `TO v`), v below the floor;
 *   - `set_config('synchronous_commit', v, …)` with v below the floor or not a constant (a bind
 *     parameter, an expression: it cannot be checked), and `set_config` with a setting name that
 *     is not a constant unless its value is a constant that could not lower synchronous_commit
 *     (pg_dump's `set_config(name, 'view, foreign-table', false) FROM pg_settings WHERE …`);
 *   - the startup parameter `synchronous_commit` and `-c synchronous_commit=v` in `options`
 *     (PGOPTIONS).
 * Not seen: a `SET` inside a function body or a DO block. PostgreSQL lets every role change the
 * setting (it is USERSET); pgrelay is the gate in front of it.
 *
 * Order of the levels (PostgreSQL's synchronous_commit):
 *   off < local < remote_write < on < remote_apply
 * with PostgreSQL's aliases: true/yes/1 = on, false/no/0 = off (case-insensitive, exact).
 */
import { parseSync } from 'libpg-query';
import { ProxyError, SqlState } from '../errors.js';
import { FrontendCode } from '../protocol/codes.js';
import { message } from '../protocol/messages.js';

export const SYNC_COMMIT_LEVELS = ['off', 'local', 'remote_write', 'on', 'remote_apply'] as const;
export type SyncCommitLevel = (typeof SYNC_COMMIT_LEVELS)[number];

const ALIASES: Record<string, SyncCommitLevel> = { true: 'on', yes: 'on', '1': 'on', false: 'off', no: 'off', '0': 'off' };

/** The level a value names, or undefined when PostgreSQL would refuse the value itself. */
export function syncCommitLevel(value: string): SyncCommitLevel | undefined {
  const v = value.trim().toLowerCase();
  return (SYNC_COMMIT_LEVELS as readonly string[]).includes(v) ? (v as SyncCommitLevel) : ALIASES[v];
}

function below(value: SyncCommitLevel, floor: SyncCommitLevel): boolean {
  return SYNC_COMMIT_LEVELS.indexOf(value) < SYNC_COMMIT_LEVELS.indexOf(floor);
}

function refusal(what: string, floor: SyncCommitLevel): ProxyError {
  return new ProxyError(
    SqlState.insufficientPrivilege,
    `${what}: pgrelay keeps synchronous_commit at ${floor} or above (routing.min_synchronous_commit), so that no acknowledged write is lost on failover`,
  );
}

/** Statements that may touch the setting; the rest (nearly all) skip the parser. */
const MENTIONS = /synchronous_commit|set_config|u&/i;

/**
 * The refusal for a statement text that lowers synchronous_commit below `floor`, else undefined.
 * A text that does not parse is left to PostgreSQL (it reports the syntax error).
 */
export function syncCommitRefusal(sql: string, floor: SyncCommitLevel): ProxyError | undefined {
  if (floor === 'off' || !MENTIONS.test(sql)) return undefined;
  let tree: unknown;
  try {
    tree = parseSync(sql);
  } catch {
    return undefined;
  }
  return visit(tree, floor);
}

/** The refusal for startup parameters (options already split into settings), else undefined. */
export function startupSyncCommitRefusal(params: ReadonlyMap<string, string>, floor: SyncCommitLevel): ProxyError | undefined {
  if (floor === 'off') return undefined;
  for (const [name, value] of params) {
    if (name.toLowerCase() !== 'synchronous_commit') continue;
    const level = syncCommitLevel(value);
    if (level !== undefined && below(level, floor)) return refusal(`startup parameter synchronous_commit=${level} is not allowed`, floor);
  }
  return undefined;
}

type Json = Record<string, unknown>;

function visit(node: unknown, floor: SyncCommitLevel): ProxyError | undefined {
  if (Array.isArray(node)) {
    for (const item of node) {
      const found = visit(item, floor);
      if (found) return found;
    }
    return undefined;
  }
  if (node === null || typeof node !== 'object') return undefined;
  const object = node as Json;
  // a VariableSetStmt, tagged (`{VariableSetStmt: …}`) or bare (ALTER ROLE … SET's setstmt)
  if (typeof object['kind'] === 'string' && typeof object['name'] === 'string') {
    const found = checkSet(object, floor);
    if (found) return found;
  }
  if (object['FuncCall'] !== undefined) {
    const found = checkSetConfig(object['FuncCall'] as Json, floor);
    if (found) return found;
  }
  for (const value of Object.values(object)) {
    if (value !== null && typeof value === 'object') {
      const found = visit(value, floor);
      if (found) return found;
    }
  }
  return undefined;
}

function checkSet(stmt: Json, floor: SyncCommitLevel): ProxyError | undefined {
  if (stmt['kind'] !== 'VAR_SET_VALUE' || String(stmt['name']).toLowerCase() !== 'synchronous_commit') return undefined;
  const value = constantText((stmt['args'] as unknown[] | undefined)?.[0]);
  const level = value === undefined ? undefined : syncCommitLevel(value);
  if (level === undefined || !below(level, floor)) return undefined;
  return refusal(`SET synchronous_commit = ${level} is not allowed`, floor);
}

function checkSetConfig(call: Json, floor: SyncCommitLevel): ProxyError | undefined {
  const names = (call['funcname'] as unknown[] | undefined) ?? [];
  const last = constantText(names.at(-1));
  const schema = names.length > 1 ? constantText(names[0]) : 'pg_catalog';
  if (last?.toLowerCase() !== 'set_config' || schema?.toLowerCase() !== 'pg_catalog') return undefined;
  const args = (call['args'] as unknown[] | undefined) ?? [];
  const name = constantText(args[0]);
  const value = constantText(args[1]);
  if (name === undefined) {
    // whatever setting it names, a constant value that is no level below the floor cannot lower this one
    const level = value === undefined ? 'off' : syncCommitLevel(value);
    if (level === undefined || !below(level, floor)) return undefined;
    return refusal('set_config() with a setting name that is not a constant cannot be checked', floor);
  }
  if (name.trim().toLowerCase() !== 'synchronous_commit') return undefined;
  if (value === undefined) return refusal('set_config(\'synchronous_commit\', …) with a value that is not a constant cannot be checked', floor);
  const level = syncCommitLevel(value);
  if (level === undefined || !below(level, floor)) return undefined;
  return refusal(`set_config('synchronous_commit', '${level}') is not allowed`, floor);
}

/** The text of a constant (A_Const string or integer, a bare String, through casts), else undefined. */
function constantText(node: unknown): string | undefined {
  if (node === null || typeof node !== 'object') return undefined;
  const object = node as Json;
  if (object['TypeCast'] !== undefined) return constantText((object['TypeCast'] as Json)['arg']);
  const body = (object['A_Const'] ?? (object['String'] !== undefined ? { sval: object['String'] } : undefined)) as Json | undefined;
  if (body === undefined) return undefined;
  const s = body['sval'] as Json | undefined;
  if (s !== undefined) return typeof s['sval'] === 'string' ? s['sval'] : '';
  const i = body['ival'] as Json | undefined;
  if (i !== undefined) return String(typeof i['ival'] === 'number' ? i['ival'] : 0);
  const b = body['boolval'] as Json | undefined;
  if (b !== undefined) return b['boolval'] === true ? 'true' : 'false';
  return undefined;
}

/**
 * For the client session: in place of a client's Query (or Parse) whose text is refused, one that
 * fails on the server with the refusal (42501) when it runs, so that the error reaches the client
 * in order with everything it pipelined, aborts its transaction as any failed statement does, and
 * leaves no SET effect behind. Undefined when the text is allowed.
 * `parse`: the Parse's statement name and its parameter types (the bytes after the text: int16
 * count, int32 OIDs); the replacement declares as many parameters as the text uses ($n) or the
 * client declared, so that the client's Bind still fits; types it left unspecified (0) are
 * declared as text, since the replacement does not use them.
 */
export function syncCommitFloorFrame(text: string, floor: SyncCommitLevel, parse?: { name: string; types: Buffer }): Buffer | undefined {
  const refused = syncCommitRefusal(text, floor);
  if (!refused) return undefined;
  const statement = raiseStatement(refused);
  if (parse === undefined) return message(FrontendCode.Query, (w) => w.cstring(statement));
  const declared = parse.types.length >= 2 ? Math.max(0, Math.min(parse.types.readInt16BE(0), (parse.types.length - 2) >> 2)) : 0;
  const count = Math.max(declared, highestParam(parseSync(text)));
  return message(FrontendCode.Parse, (w) => {
    w.cstring(parse.name).cstring(statement).int16(count);
    for (let i = 0; i < count; i++) w.int32((i < declared ? parse.types.readInt32BE(2 + 4 * i) : 0) || TEXT_OID);
  });
}

/** A statement that fails on the server with `error`'s SQLSTATE and text (a refusal told in order, as the server's). */
export function raiseStatement(error: ProxyError): string {
  return `DO ${literal(`BEGIN RAISE EXCEPTION USING ERRCODE = '${error.sqlstate}', MESSAGE = ${literal(error.message)}; END`)}`;
}

const TEXT_OID = 25;

/** The highest $n a parse tree refers to (ParamRef), 0 for none. */
function highestParam(node: unknown): number {
  if (node === null || typeof node !== 'object') return 0;
  let highest = 0;
  for (const [key, value] of Object.entries(node as Json)) {
    if (key === 'ParamRef') highest = Math.max(highest, Number((value as Json)['number'] ?? 0));
    else highest = Math.max(highest, highestParam(value));
  }
  return highest;
}

/** A standard SQL string literal (the texts here hold no backslash). */
function literal(text: string): string {
  return `'${text.replace(/'/g, "''")}'`;
}
