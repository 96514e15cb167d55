/**
 * The walk over the executed parts of a statement's parse tree: which functions it calls, whether
 * it locks rows, writes in a WITH, creates a table with INTO, or takes a session-level lock.
 */
import type { FuncCall, IntoClause, LockingClause, RangeVar } from 'libpg-query';
import { kindOfFunction, primaryAnswerReason, primaryViewReason } from './functions.js';
import { constantBool, constantString, isMaskedConstant, isTempRelation } from './parse-tree.js';
import { decision, type AnalyzeOptions, type StatementDecision } from './statement-decision.js';

const LOCK_STRENGTH: Readonly<Record<string, string>> = {
  LCS_FORUPDATE: 'FOR UPDATE',
  LCS_FORNOKEYUPDATE: 'FOR NO KEY UPDATE',
  LCS_FORSHARE: 'FOR SHARE',
  LCS_FORKEYSHARE: 'FOR KEY SHARE',
};

/** CURRENT_DATE, CURRENT_TIMESTAMP, LOCALTIME…: the moment (SQLValueFunction ops, without SVFOP_ and _N) */
const MOMENT_VALUES: ReadonlySet<string> = new Set(['CURRENT_DATE', 'CURRENT_TIME', 'CURRENT_TIMESTAMP', 'LOCALTIME', 'LOCALTIMESTAMP']);

/**
 * Built-ins that only read but whose answer depends on the server that runs them or on the
 * moment: the same read run again on another node cannot be compared (optimistic transactions
 * move before such a statement; see Classification.unverifiable).
 */
const SERVER_OR_MOMENT_FUNCTIONS: ReadonlySet<string> = new Set([
  'now', 'clock_timestamp', 'statement_timestamp', 'transaction_timestamp', 'timeofday', 'random', 'random_normal', 'setseed',
  'gen_random_uuid', 'uuidv4', 'uuidv7', 'inet_server_addr', 'inet_server_port', 'pg_backend_pid',
  'pg_last_wal_receive_lsn', 'pg_last_wal_replay_lsn', 'pg_last_xact_replay_timestamp', 'pg_current_snapshot',
  'txid_current_snapshot', 'pg_postmaster_start_time', 'pg_conf_load_time', 'pg_sleep', 'pg_sleep_for', 'pg_sleep_until',
]);

export const WRITE_VERBS: Readonly<Record<string, string>> = {
  InsertStmt: 'INSERT',
  UpdateStmt: 'UPDATE',
  DeleteStmt: 'DELETE',
  MergeStmt: 'MERGE',
};

/** Names of the transaction's own characteristics, which a hot standby refuses to change. */
export const TRANSACTION_CHARACTERISTICS = /transaction_(?:isolation|read_only|deferrable)/i;

/** What a walk over an executed part of a parse tree found. */
export class Collector {
  readonly userFunctions = new Set<string>();
  /** first function that makes the statement a write */
  writer: string | undefined;
  /** first session-level advisory lock */
  pinning: string | undefined;
  /** calls currval() or lastval(): reads the backend's sequence state */
  readsSequences = false;
  /** calls set_config(), current_setting() or pg_show_all_settings(), or reads pg_settings */
  namesSettings = false;
  locking: string | undefined;
  nestedWrite: string | undefined;
  into: IntoClause | undefined;
  /** the decision read a literal's value (it is then not cached by shape) */
  literal = false;
  /** first read of a view, or call of a built-in, whose answer only the primary gives (see primaryViewReason, primaryAnswerReason) */
  primaryAnswer: string | undefined;
  /** first call whose answer depends on the server or the moment (now(), random(), inet_server_port(), …) */
  unverifiable: string | undefined;
  /** calls set_config(<a name>, …, true): a transaction-local setting (see Classification.localSettings) */
  localSettings = false;

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
        case 'RangeVar':
          this.relation(child as RangeVar);
          break;
        case 'FuncCall':
          this.call(child as FuncCall);
          break;
        case 'SQLValueFunction': {
          const op = ((child as { op?: string }).op ?? '').replace(/^SVFOP_/, '').replace(/_N$/, '');
          if (MOMENT_VALUES.has(op)) this.unverifiable ??= op;
          break;
        }
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
    if (bare === 'set_config' || bare === 'current_setting' || bare === 'pg_show_all_settings') this.namesSettings = true;
    if (SERVER_OR_MOMENT_FUNCTIONS.has(bare) && names.length <= 2) this.unverifiable ??= `${qualified}()`;
    const { forcedPrimary, forcedReplica } = this.options;
    if (forcedPrimary.has(qualified) || forcedPrimary.has(bare)) {
      this.writer ??= `${qualified}() (routing.functions.primary)`;
      return;
    }
    if (forcedReplica.has(qualified) || forcedReplica.has(bare)) return;
    this.primaryAnswer ??= primaryAnswerReason(names);
    switch (kindOfFunction(names)) {
      case 'pinning':
        this.pinning ??= qualified;
        if (bare === 'currval' || bare === 'lastval') this.readsSequences = true;
        this.writer ??= `${qualified}()`;
        break;
      case 'writer':
        if (bare === 'set_config') this.setConfig(fc, qualified);
        else this.writer ??= `${qualified}()`;
        break;
      case 'user':
        this.userFunctions.add(qualified);
        break;
      default:
        break;
    }
  }

  /** a read of a view whose answer only the primary knows (pg_prepared_xacts) */
  private relation(rv: RangeVar): void {
    this.primaryAnswer ??= primaryViewReason(rv.schemaname, rv.relname ?? '');
    if (rv.relname === 'pg_settings') this.namesSettings = true;
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
    if (constantBool(isLocal) !== true) {
      this.pinning ??= qualified;
      this.writer ??= `${qualified}()`;
      return;
    }
    // transaction-local, as SET LOCAL: a replica runs it as the primary does, when its name is
    // written out and is none of the transaction's own characteristics (a hot standby refuses to
    // change those). The name is masked in the shape: such a decision is not cached, and the
    // Classifier tells them from a cached shape's text itself.
    const name = constantString(fc.args?.[0]);
    const characteristic = name !== undefined && TRANSACTION_CHARACTERISTICS.test(name);
    if (characteristic) this.literal = true;
    if (name === undefined || characteristic) this.writer ??= `${qualified}()`;
    else this.localSettings = true;
  }

  /** pinned by a session-level advisory lock or a temporary table made by SELECT INTO / CTAS */
  get pins(): boolean {
    return this.pinning !== undefined || (this.into !== undefined && isTempRelation(this.into.rel) && this.into.onCommit !== 'ONCOMMIT_DROP');
  }
}

/** A statement whose expressions run: reads unless the walk finds a write. */
export function queryDecision(c: Collector, what: string): StatementDecision {
  const extra = { pin: c.pins, userFunctions: c.userFunctions, cacheable: !c.literal, readsSequences: c.readsSequences, namesSettings: c.namesSettings, unverifiable: c.unverifiable, localSettings: c.localSettings };
  if (c.nestedWrite) return decision('primary', `data-modifying ${c.nestedWrite} in WITH`, extra);
  if (c.into) return decision('primary', 'SELECT INTO creates a table', extra);
  if (c.locking) return decision('primary', `SELECT … ${c.locking} locks rows`, extra);
  if (c.writer) return decision('primary', `calls ${c.writer}`, extra);
  if (c.primaryAnswer) return decision('primary', `reads ${c.primaryAnswer}`, extra);
  return decision('replica', `${what} without writes`, extra);
}

/** A statement that writes: primary, but its expressions may still pin (INSERT … pg_advisory_lock()). */
export function writeDecision(c: Collector, reason: string): StatementDecision {
  return decision('primary', reason, { pin: c.pins, userFunctions: c.userFunctions, cacheable: !c.literal, readsSequences: c.readsSequences, namesSettings: c.namesSettings });
}
