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
  DiscardStmt,
  ExplainStmt,
  Node,
  RangeVar,
  TransactionStmt,
  VariableSetStmt,
  VariableShowStmt,
} from 'libpg-query';
import { Collector, WRITE_VERBS, queryDecision, writeDecision } from './collector.js';
import { splitRanges } from './lexer.js';
import { constantBool, defElems, isTempRelation, statementName, unwrap } from './parse-tree.js';
import { setDecision, transactionDecision } from './session-statements.js';
import { decision, type AnalyzeOptions, type StatementDecision } from './statement-decision.js';
import { statementIndexes } from './statement-offsets.js';
import type { Route, SessionEffect } from './types.js';

export type { AnalyzeOptions } from './statement-decision.js';

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
  /** calls currval() or lastval() */
  readsSequences?: boolean;
  /** names settings: SET, RESET, SHOW, set_config(), current_setting(), pg_settings */
  namesSettings?: boolean;
  unverifiable?: string;
  opensOnReplica?: boolean;
  localSettings?: boolean;
}

// DeclareCursorStmt.options bit for WITH HOLD (CURSOR_OPT_HOLD in parsenodes.h)
const CURSOR_OPT_HOLD = 0x20;

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
    case 'VariableShowStmt': {
      // whether the session may write: pgrelay is one logical primary, a replica would deny it
      // (libpq's and pgx's target_session_attrs=read-write, pgjdbc's targetServerType ask this)
      const name = (body as VariableShowStmt).name?.toLowerCase();
      if (name === 'transaction_read_only' || name === 'in_hot_standby') return decision('primary', `SHOW ${name}: pgrelay is one logical primary, which a replica would deny`, { namesSettings: true });
      return decision('replica', 'SHOW reads a setting', { namesSettings: true });
    }
    case 'TransactionStmt':
      return transactionDecision(body as TransactionStmt);
    case 'VariableSetStmt':
      return { ...setDecision(body as VariableSetStmt, index), namesSettings: true };
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
      return { ...queryDecision(walked(d.query), 'DECLARE CURSOR'), unverifiable: 'DECLARE' };
    }
    case 'FetchStmt':
    case 'ClosePortalStmt':
      return decision('any', `${tag === 'FetchStmt' ? 'FETCH/MOVE' : 'CLOSE'} runs where its cursor is`);
    case 'ConstraintsSetStmt':
      return decision('any', 'SET CONSTRAINTS is transaction state', { opensOnReplica: true });
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
  const common = { pin: inner.pin, userFunctions: inner.userFunctions, cacheable: !literal && inner.cacheable, readsSequences: inner.readsSequences, namesSettings: inner.namesSettings };
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
  let readsSequences = false;
  let namesSettings = false;
  let cacheable = true;
  let unverifiable: string | undefined;
  let localSettings = false;
  for (const d of decisions) {
    localSettings ||= d.localSettings === true;
    readsSequences ||= d.readsSequences === true;
    namesSettings ||= d.namesSettings === true;
    unverifiable ??= d.unverifiable;
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
  const opensOnReplica = n === 1 && decisions[0]!.opensOnReplica === true;
  return { route, pin, reason, effects, statements: n, userFunctions: [...userFunctions], cacheable, ...(readsSequences ? { readsSequences } : {}), ...(namesSettings ? { namesSettings } : {}), ...(unverifiable === undefined ? {} : { unverifiable }), ...(opensOnReplica ? { opensOnReplica } : {}), ...(localSettings ? { localSettings } : {}) };
}
