/**
 * Turns one SQL text into the routing decision for its shape, using PostgreSQL's own grammar
 * (libpg-query). This is the slow path (60–70 µs a call): the classifier runs it once per shape
 * and caches the result, so nothing here may depend on a literal's value unless the decision is
 * marked not cacheable.
 *
 * Default-deny: a statement is a read only when it is known to be one; anything else goes to the
 * primary, and a text the parser rejects goes to the primary too (the server reports the error).
 */
import { parseSync } from 'libpg-query';
import type {
  CopyStmt,
  CreateStmt,
  CreateTableAsStmt,
  DeallocateStmt,
  DeclareCursorStmt,
  DefElem,
  DiscardStmt,
  ExplainStmt,
  FuncCall,
  IntoClause,
  LockingClause,
  Node,
  RangeVar,
  TransactionStmt,
  VariableSetStmt,
} from 'libpg-query';
import { kindOfFunction, primaryViewReason } from './functions.js';
import { splitRanges } from './lexer.js';
import type { Route, SessionEffect } from './types.js';

/** The decision for a statement shape, before the volatility of user functions and hints. */
export interface ShapeDecision {
  route: Route;
  pin: boolean;
  reason: string;
  effects: SessionEffect[];
  statements: number;
  userFunctions: string[];
  /** false when the decision depends on a literal's value (it is then recomputed for every text) */
  cacheable: boolean;
}

export interface AnalyzeOptions {
  /** `routing.functions.primary`: bare names or schema.name, as written and in lower case */
  forcedPrimary: ReadonlySet<string>;
  /** `routing.functions.replica` */
  forcedReplica: ReadonlySet<string>;
}

interface StatementDecision {
  route: Route;
  pin: boolean;
  reason: string;
  effects: SessionEffect[];
  userFunctions: Set<string>;
  cacheable: boolean;
  /** BEGIN / START TRANSACTION without READ ONLY */
  beginsReadWrite?: boolean;
  /** SET TRANSACTION … READ ONLY, and not SERIALIZABLE */
  setsReadOnly?: boolean;
}

// DeclareCursorStmt.options bit for WITH HOLD (CURSOR_OPT_HOLD in parsenodes.h)
const CURSOR_OPT_HOLD = 0x20;

/** GUCs that describe the current transaction only: setting them is not session state. */
const TRANSACTION_GUCS = new Set(['transaction_read_only', 'transaction_isolation', 'transaction_deferrable']);

const STATEMENT_NAMES: Readonly<Record<string, string>> = {
  CreateStmt: 'CREATE TABLE',
  IndexStmt: 'CREATE INDEX',
  ViewStmt: 'CREATE VIEW',
  CreateSeqStmt: 'CREATE SEQUENCE',
  RuleStmt: 'CREATE RULE',
  CreateTrigStmt: 'CREATE TRIGGER',
  DefineStmt: 'CREATE',
  RefreshMatViewStmt: 'REFRESH MATERIALIZED VIEW',
  CheckPointStmt: 'CHECKPOINT',
  SecLabelStmt: 'SECURITY LABEL',
  TruncateStmt: 'TRUNCATE',
  CopyStmt: 'COPY',
  DoStmt: 'DO',
  CallStmt: 'CALL',
};

/** A readable name for a statement node, e.g. AlterTableStmt → "ALTER TABLE". */
function statementName(tag: string, body: Record<string, unknown>): string {
  if (tag === 'VacuumStmt') return body['is_vacuumcmd'] ? 'VACUUM' : 'ANALYZE';
  if (tag === 'GrantStmt') return body['is_grant'] ? 'GRANT' : 'REVOKE';
  if (tag === 'CreateTableAsStmt') return body['objtype'] === 'OBJECT_MATVIEW' ? 'CREATE MATERIALIZED VIEW' : 'CREATE TABLE AS';
  return (
    STATEMENT_NAMES[tag] ??
    tag
      .replace(/Stmt$/, '')
      .replace(/([a-z])([A-Z])/g, '$1 $2')
      .toUpperCase()
  );
}

/** The single key of a parse-tree node, e.g. `{ SelectStmt: {…} }` → ['SelectStmt', {…}]. */
function unwrap(node: Node | undefined): [string, Record<string, unknown>] | undefined {
  if (node === undefined) return undefined;
  for (const tag in node) return [tag, (node as unknown as Record<string, Record<string, unknown>>)[tag]!];
  return undefined;
}

/** PostgreSQL's parse_bool: true/false, yes/no, on/off, 1/0 and unique prefixes. */
function parseBool(text: string): boolean | undefined {
  const v = text.trim().toLowerCase();
  if (v.length === 0) return undefined;
  if ('true'.startsWith(v) || 'yes'.startsWith(v) || v === 'on' || v === '1') return true;
  if ('false'.startsWith(v) || 'no'.startsWith(v) || (v.length >= 2 && 'off'.startsWith(v)) || v === '0') return false;
  return undefined;
}

/** The boolean value of a constant node (A_Const, String, Integer, Boolean), if it has one. */
function constantBool(node: Node | undefined): boolean | undefined {
  const u = unwrap(node);
  if (!u) return undefined;
  const [tag, body] = u;
  const value = tag === 'A_Const' ? body : { [tag]: body };
  const s = value['sval'] ?? value['String'];
  if (s && typeof s === 'object') return parseBool(String((s as { sval?: string }).sval ?? ''));
  const i = value['ival'] ?? value['Integer'];
  if (i && typeof i === 'object') {
    const n = (i as { ival?: number }).ival ?? 0;
    return n === 1 ? true : n === 0 ? false : undefined;
  }
  const b = value['boolval'] ?? value['Boolean'];
  if (b && typeof b === 'object') return (b as { boolval?: boolean }).boolval ?? false;
  return undefined;
}

/** A string or number constant: the lexer masks it, so texts that differ in it share a shape. */
function isMaskedConstant(node: Node | undefined): boolean {
  const u = unwrap(node);
  return u !== undefined && u[0] === 'A_Const' && (u[1]['sval'] !== undefined || u[1]['ival'] !== undefined || u[1]['fval'] !== undefined);
}

function constantString(node: Node | undefined): string | undefined {
  const u = unwrap(node);
  if (!u) return undefined;
  const [tag, body] = u;
  const s = tag === 'A_Const' ? body['sval'] : tag === 'String' ? body : undefined;
  return s && typeof s === 'object' ? (s as { sval?: string }).sval : undefined;
}

function defElems(options: Node[] | undefined): DefElem[] {
  const out: DefElem[] = [];
  for (const o of options ?? []) if ('DefElem' in o) out.push(o.DefElem);
  return out;
}

function isTempRelation(rv: RangeVar | undefined): boolean {
  return rv !== undefined && (rv.relpersistence === 't' || (rv.schemaname ?? '').startsWith('pg_temp'));
}

const LOCK_STRENGTH: Readonly<Record<string, string>> = {
  LCS_FORUPDATE: 'FOR UPDATE',
  LCS_FORNOKEYUPDATE: 'FOR NO KEY UPDATE',
  LCS_FORSHARE: 'FOR SHARE',
  LCS_FORKEYSHARE: 'FOR KEY SHARE',
};

const WRITE_VERBS: Readonly<Record<string, string>> = {
  InsertStmt: 'INSERT',
  UpdateStmt: 'UPDATE',
  DeleteStmt: 'DELETE',
  MergeStmt: 'MERGE',
};

/** What a walk over an executed part of a parse tree found. */
class Collector {
  readonly userFunctions = new Set<string>();
  /** first function that makes the statement a write */
  writer: string | undefined;
  /** first session-level advisory lock */
  pinning: string | undefined;
  locking: string | undefined;
  nestedWrite: string | undefined;
  into: IntoClause | undefined;
  /** the decision read a literal's value (it is then not cached by shape) */
  literal = false;
  /** first read of a view whose answer only the primary knows */
  primaryView: string | undefined;

  constructor(private readonly options: AnalyzeOptions) {}

  walk(value: unknown): void {
    if (typeof value !== 'object' || value === null) return;
    if (Array.isArray(value)) {
      for (const v of value) this.walk(v);
      return;
    }
    const obj = value as Record<string, unknown>;
    for (const key in obj) {
      const child = obj[key];
      if (typeof child !== 'object' || child === null) continue;
      switch (key) {
        case 'FuncCall':
          this.call(child as FuncCall);
          break;
        case 'RangeVar':
          this.relation(child as RangeVar);
          break;
        case 'LockingClause':
          this.locking ??= LOCK_STRENGTH[(child as LockingClause).strength ?? ''] ?? 'FOR UPDATE';
          break;
        case 'InsertStmt':
        case 'UpdateStmt':
        case 'DeleteStmt':
        case 'MergeStmt':
          this.nestedWrite ??= WRITE_VERBS[key];
          break;
        case 'intoClause':
          this.into ??= child as IntoClause;
          break;
        default:
          break;
      }
      this.walk(child);
    }
  }

  private call(fc: FuncCall): void {
    const names: string[] = [];
    for (const n of fc.funcname ?? []) if ('String' in n) names.push(n.String.sval ?? '');
    const qualified = names.join('.');
    const bare = names[names.length - 1] ?? '';
    const { forcedPrimary, forcedReplica } = this.options;
    if (forcedPrimary.has(qualified) || forcedPrimary.has(bare)) {
      this.writer ??= `${qualified}() (routing.functions.primary)`;
      return;
    }
    if (forcedReplica.has(qualified) || forcedReplica.has(bare)) return;
    switch (kindOfFunction(names)) {
      case 'pinning':
        this.pinning ??= qualified;
        this.writer ??= `${qualified}()`;
        break;
      case 'writer':
        this.writer ??= `${qualified}()`;
        if (bare === 'set_config') this.setConfig(fc, qualified);
        break;
      case 'user':
        this.userFunctions.add(qualified);
        break;
      default:
        break;
    }
  }

  private relation(rv: RangeVar): void {
    this.primaryView ??= primaryViewReason(rv.schemaname, rv.relname ?? '');
  }

  /**
   * set_config(name, value, false) sets the setting for the rest of the server session, where
   * pgrelay cannot follow its value: the client stays on that connection (with is_local true it
   * lasts for the transaction only). `'true'` and `'false'` are literals that mask alike, so a
   * decision read from a literal is not cached by shape.
   */
  private setConfig(fc: FuncCall, qualified: string): void {
    const isLocal = fc.args?.[2];
    if (isMaskedConstant(isLocal)) this.literal = true;
    if (constantBool(isLocal) !== true) this.pinning ??= qualified;
  }

  /** pinned by a session-level advisory lock or a temporary table made by SELECT INTO / CTAS */
  get pins(): boolean {
    return this.pinning !== undefined || (this.into !== undefined && isTempRelation(this.into.rel) && this.into.onCommit !== 'ONCOMMIT_DROP');
  }
}

function decision(route: Route, reason: string, extra: Partial<StatementDecision> = {}): StatementDecision {
  return { route, pin: false, reason, effects: [], userFunctions: new Set(), cacheable: true, ...extra };
}

/** A statement whose expressions run: reads unless the walk finds a write. */
function queryDecision(c: Collector, what: string): StatementDecision {
  const extra = { pin: c.pins, userFunctions: c.userFunctions, cacheable: !c.literal };
  if (c.nestedWrite) return decision('primary', `data-modifying ${c.nestedWrite} in WITH`, extra);
  if (c.into) return decision('primary', 'SELECT INTO creates a table', extra);
  if (c.locking) return decision('primary', `SELECT … ${c.locking} locks rows`, extra);
  if (c.writer) return decision('primary', `calls ${c.writer}`, extra);
  if (c.primaryView) return decision('primary', `reads ${c.primaryView}`, extra);
  return decision('replica', `${what} without writes`, extra);
}

/** A statement that writes: primary, but its expressions may still pin (INSERT … pg_advisory_lock()). */
function writeDecision(c: Collector, reason: string): StatementDecision {
  return decision('primary', reason, { pin: c.pins, userFunctions: c.userFunctions, cacheable: !c.literal });
}

function analyzeStatement(node: Node | undefined, index: number, options: AnalyzeOptions): StatementDecision {
  const u = unwrap(node);
  if (!u) return decision('primary', 'unknown statement');
  const [tag, body] = u;
  const walked = (...parts: unknown[]): Collector => {
    const c = new Collector(options);
    for (const p of parts) c.walk(p);
    return c;
  };
  switch (tag) {
    case 'SelectStmt': {
      const what = body['valuesLists'] ? 'VALUES' : 'SELECT';
      return queryDecision(walked(body), what);
    }
    case 'InsertStmt':
    case 'UpdateStmt':
    case 'DeleteStmt':
    case 'MergeStmt':
      return writeDecision(walked(body), `${WRITE_VERBS[tag]} writes`);
    case 'ExplainStmt':
      return explainDecision(body as ExplainStmt, index, options);
    case 'CopyStmt':
      return copyDecision(body as CopyStmt, index, options);
    case 'VariableShowStmt':
      return decision('replica', 'SHOW reads a setting');
    case 'TransactionStmt':
      return transactionDecision(body as TransactionStmt);
    case 'VariableSetStmt':
      return setDecision(body as VariableSetStmt, index);
    case 'DiscardStmt': {
      const target = (body as DiscardStmt).target;
      if (target === 'DISCARD_ALL') {
        return decision('any', 'DISCARD ALL resets the session', { effects: [{ type: 'discard_all' }, { type: 'default_read_only', value: false }] });
      }
      return decision('any', 'DISCARD is session state');
    }
    case 'DeallocateStmt': {
      const d = body as DeallocateStmt;
      return decision('any', 'DEALLOCATE is session state', { effects: [{ type: 'deallocate', name: d.isall ? null : (d.name ?? null) }] });
    }
    case 'PrepareStmt':
      return decision('primary', 'PREPARE creates a statement on one connection', { pin: true });
    case 'ExecuteStmt':
      return writeDecision(walked(body['params']), 'EXECUTE runs a statement prepared on the primary');
    case 'DeclareCursorStmt': {
      const d = body as DeclareCursorStmt;
      if (((d.options ?? 0) & CURSOR_OPT_HOLD) !== 0) {
        return decision('primary', 'DECLARE … WITH HOLD keeps a cursor past the transaction', { pin: true, userFunctions: walked(d.query).userFunctions });
      }
      return queryDecision(walked(d.query), 'DECLARE CURSOR');
    }
    case 'FetchStmt':
    case 'ClosePortalStmt':
      return decision('any', `${tag === 'FetchStmt' ? 'FETCH/MOVE' : 'CLOSE'} runs where its cursor is`);
    case 'ConstraintsSetStmt':
      return decision('any', 'SET CONSTRAINTS is transaction state');
    case 'ListenStmt':
      return decision('primary', 'LISTEN pins the session', { pin: true });
    case 'UnlistenStmt':
      return decision('any', 'UNLISTEN is session state');
    case 'LoadStmt':
      return decision('primary', 'LOAD changes the session', { pin: true });
    case 'CreateStmt': {
      const c = body as CreateStmt;
      return createDecision('CREATE TABLE', isTempRelation(c.relation) && c.oncommit !== 'ONCOMMIT_DROP');
    }
    case 'ViewStmt':
    case 'CreateSeqStmt': {
      const rv = (tag === 'ViewStmt' ? body['view'] : body['sequence']) as RangeVar | undefined;
      return createDecision(statementName(tag, body), isTempRelation(rv));
    }
    case 'CreateTableAsStmt': {
      const c = walked((body as CreateTableAsStmt).query, { intoClause: (body as CreateTableAsStmt).into });
      const d = writeDecision(c, `${statementName(tag, body)} writes`);
      if (d.pin && c.pinning === undefined) d.reason = `${statementName(tag, body)} of a temporary table pins the session`;
      return d;
    }
    case 'CreateFunctionStmt': {
      const names = (body['funcname'] as Node[] | undefined) ?? [];
      const first = names[0] && 'String' in names[0] ? names[0].String.sval : undefined;
      return createDecision(body['is_procedure'] ? 'CREATE PROCEDURE' : 'CREATE FUNCTION', names.length > 1 && (first ?? '').startsWith('pg_temp'));
    }
    default:
      return decision('primary', `${statementName(tag, body)} runs on the primary`);
  }
}

/** CREATE of an object that is temporary (pins the session) or not. */
function createDecision(what: string, temporary: boolean): StatementDecision {
  if (temporary) return decision('primary', `${what} of a temporary object pins the session`, { pin: true });
  return decision('primary', `${what} runs on the primary`);
}

function explainDecision(e: ExplainStmt, index: number, options: AnalyzeOptions): StatementDecision {
  let analyze = false;
  let literal = false;
  for (const d of defElems(e.options)) {
    if (d.defname !== 'analyze') continue;
    if (d.arg === undefined) analyze = true;
    else {
      // EXPLAIN (ANALYZE 'off') and (ANALYZE 'on') share a shape: decide per text
      literal = true;
      analyze = constantBool(d.arg) ?? true;
    }
  }
  if (!analyze) return decision('replica', 'EXPLAIN without ANALYZE does not run the statement', { cacheable: !literal });
  const inner = analyzeStatement(e.query, index, options);
  const common = { pin: inner.pin, userFunctions: inner.userFunctions, cacheable: !literal && inner.cacheable };
  if (inner.route === 'replica') return decision('replica', `EXPLAIN ANALYZE of a read: ${inner.reason}`, common);
  return decision('primary', `EXPLAIN ANALYZE runs the statement: ${inner.reason}`, common);
}

function copyDecision(c: CopyStmt, index: number, options: AnalyzeOptions): StatementDecision {
  if (c.is_from) return decision('primary', 'COPY FROM writes');
  if (c.filename !== undefined || c.is_program) return decision('primary', 'COPY TO a server file or program runs on the primary');
  if (c.query === undefined) return decision('replica', 'COPY TO STDOUT reads');
  const inner = analyzeStatement(c.query, index, options);
  if (inner.route === 'replica') return { ...inner, reason: `COPY (query) TO STDOUT: ${inner.reason}` };
  return { ...inner, route: 'primary', reason: `COPY (query) TO: ${inner.reason}` };
}

function transactionDecision(t: TransactionStmt): StatementDecision {
  switch (t.kind) {
    case 'TRANS_STMT_BEGIN':
    case 'TRANS_STMT_START': {
      let readOnly = false;
      let serializable = false;
      for (const d of defElems(t.options)) {
        if (d.defname === 'transaction_read_only') readOnly = constantBool(d.arg) ?? false;
        else if (d.defname === 'transaction_isolation') serializable = constantString(d.arg) === 'serializable';
      }
      const effects: SessionEffect[] = [{ type: 'begin', readOnly }];
      const what = t.kind === 'TRANS_STMT_START' ? 'START TRANSACTION' : 'BEGIN';
      if (!readOnly) return decision('primary', `${what} starts a read-write transaction`, { effects, beginsReadWrite: true });
      if (serializable) return decision('primary', `${what} … SERIALIZABLE READ ONLY: serializable is not available on a hot standby`, { effects });
      return decision('replica', `${what} READ ONLY`, { effects });
    }
    case 'TRANS_STMT_COMMIT':
      return decision('any', 'COMMIT ends the transaction where it runs', { effects: [{ type: 'commit' }] });
    case 'TRANS_STMT_ROLLBACK':
      return decision('any', 'ROLLBACK ends the transaction where it runs', { effects: [{ type: 'rollback' }] });
    case 'TRANS_STMT_PREPARE':
      return decision('any', 'PREPARE TRANSACTION ends the transaction where it runs', { effects: [{ type: 'commit' }] });
    case 'TRANS_STMT_SAVEPOINT':
    case 'TRANS_STMT_RELEASE':
    case 'TRANS_STMT_ROLLBACK_TO':
      return decision('any', 'savepoints run where the transaction is');
    default:
      return decision('primary', 'COMMIT/ROLLBACK PREPARED runs on the primary');
  }
}

function setDecision(s: VariableSetStmt, index: number): StatementDecision {
  const kind = s.kind;
  const name = (s.name ?? '').toLowerCase();
  if (kind === 'VAR_RESET_ALL') {
    return decision('any', 'RESET ALL is session state', { effects: [{ type: 'reset_all' }, { type: 'default_read_only', value: false }] });
  }
  if (kind === 'VAR_SET_MULTI') {
    let readOnly: boolean | undefined;
    let serializable = false;
    for (const d of defElems(s.args)) {
      if (d.defname === 'transaction_read_only') readOnly = constantBool(d.arg);
      else if (d.defname === 'transaction_isolation') serializable = constantString(d.arg) === 'serializable';
    }
    if (name === 'transaction') {
      if (readOnly !== true) return decision('any', 'SET TRANSACTION is transaction state');
      // a serializable transaction cannot run on a hot standby: no replica for it
      if (serializable) return decision('any', 'SET TRANSACTION SERIALIZABLE, READ ONLY is transaction state');
      return decision('any', 'SET TRANSACTION READ ONLY', { effects: [{ type: 'set_transaction_read_only' }], setsReadOnly: true });
    }
    // SET SESSION CHARACTERISTICS AS TRANSACTION …
    const effects: SessionEffect[] = [{ type: 'set', name: 'session_characteristics', statement: index }];
    if (readOnly !== undefined) effects.push({ type: 'default_read_only', value: readOnly });
    return decision('any', 'SET SESSION CHARACTERISTICS is session state', { effects });
  }
  if (kind === 'VAR_RESET') {
    const effects: SessionEffect[] = [{ type: 'reset', name, statement: index }];
    if (name === 'default_transaction_read_only') effects.push({ type: 'default_read_only', value: false });
    return decision('any', 'RESET is session state', TRANSACTION_GUCS.has(name) ? {} : { effects });
  }
  // VAR_SET_VALUE, VAR_SET_DEFAULT, VAR_SET_CURRENT
  const value = kind === 'VAR_SET_VALUE' ? constantBool(s.args?.[0]) : kind === 'VAR_SET_DEFAULT' ? false : undefined;
  // the value is a literal: 'on' and 'off' share a shape, so such SETs are decided per text
  const cacheable = kind !== 'VAR_SET_VALUE';
  if (TRANSACTION_GUCS.has(name)) {
    if (name === 'transaction_read_only' && value === true) {
      return decision('any', `SET ${name} is transaction state`, { effects: [{ type: 'set_transaction_read_only' }], setsReadOnly: true, cacheable });
    }
    return decision('any', `SET ${name} is transaction state`, { cacheable });
  }
  if (s.is_local) return decision('any', 'SET LOCAL lasts until the end of the transaction');
  const effects: SessionEffect[] = [{ type: 'set', name, statement: index }];
  if (name === 'default_transaction_read_only') {
    if (value !== undefined) effects.push({ type: 'default_read_only', value });
    return decision('any', 'SET is session state', { effects, cacheable });
  }
  return decision('any', 'SET is session state', { effects });
}

/** Character offsets of UTF-8 byte offsets into `sql` (the parser reports byte positions). */
function charOffsets(sql: string, bytes: readonly number[]): number[] {
  // eslint-disable-next-line no-control-regex
  if (!/[^\x00-\x7f]/.test(sql)) return [...bytes];
  const out: number[] = [];
  let byte = 0;
  let k = 0;
  for (let i = 0; k < bytes.length; i++) {
    while (k < bytes.length && bytes[k]! <= byte) {
      out.push(i);
      k++;
    }
    if (i >= sql.length) break;
    const c = sql.charCodeAt(i);
    if (c < 0x80) byte += 1;
    else if (c < 0x800) byte += 2;
    else if (c >= 0xd800 && c <= 0xdbff) {
      byte += 4;
      i++;
    } else byte += 3;
  }
  while (out.length < bytes.length) out.push(sql.length);
  return out;
}

/** For each parsed statement, its index in splitStatements(sql). */
function statementIndexes(sql: string, locations: readonly number[]): number[] {
  const ranges = splitRanges(sql);
  return charOffsets(sql, locations).map((offset, k) => {
    const i = ranges.findIndex((r) => r.terminator >= offset);
    return i >= 0 ? i : k;
  });
}

/** The parser's message without the text it quotes (which may be a literal). */
function parseErrorMessage(e: unknown): string {
  const message = e instanceof Error ? e.message : String(e);
  return message.replace(/ at or near .*$/s, '').slice(0, 80);
}

/** Parses `sql` and decides where its shape runs. */
export function analyze(sql: string, options: AnalyzeOptions): ShapeDecision {
  let stmts;
  try {
    stmts = parseSync(sql).stmts ?? [];
  } catch (e) {
    return {
      route: 'primary',
      pin: false,
      reason: `parse error (${parseErrorMessage(e)}): goes to primary`,
      effects: [],
      statements: Math.max(1, splitRanges(sql).length),
      userFunctions: [],
      cacheable: true,
    };
  }
  if (stmts.length === 0) return { route: 'any', pin: false, reason: 'empty query', effects: [], statements: 0, userFunctions: [], cacheable: true };
  const indexes = stmts.length === 1 ? [0] : statementIndexes(sql, stmts.map((s) => s.stmt_location ?? 0));
  const decisions = stmts.map((s, k) => analyzeStatement(s.stmt, indexes[k]!, options));
  // BEGIN; SET TRANSACTION READ ONLY; … is a read-only transaction
  for (let k = 0; k + 1 < decisions.length; k++) {
    const d = decisions[k]!;
    if (d.beginsReadWrite && decisions[k + 1]!.setsReadOnly) {
      d.route = 'replica';
      d.reason = 'BEGIN followed by SET TRANSACTION READ ONLY';
    }
  }
  const userFunctions = new Set<string>();
  const effects: SessionEffect[] = [];
  let pin = false;
  let cacheable = true;
  for (const d of decisions) {
    for (const f of d.userFunctions) userFunctions.add(f);
    effects.push(...d.effects);
    pin ||= d.pin;
    cacheable &&= d.cacheable;
  }
  const n = decisions.length;
  const deciding = decisions.findIndex((d) => d.route === 'primary' || d.pin);
  let route: Route;
  let reason: string;
  if (deciding >= 0) {
    route = 'primary';
    const d = decisions[deciding]!;
    reason = n === 1 ? d.reason : `statement ${deciding + 1} of ${n}: ${d.reason}`;
  } else if (decisions.some((d) => d.route === 'replica')) {
    route = 'replica';
    reason = n === 1 ? decisions[0]!.reason : `no statement of ${n} writes`;
  } else {
    route = 'any';
    reason = n === 1 ? decisions[0]!.reason : `${n} session statements`;
  }
  return { route, pin, reason, effects, statements: n, userFunctions: [...userFunctions], cacheable };
}
