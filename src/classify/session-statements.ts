/**
 * Statements that change transaction or session state: BEGIN / COMMIT / ROLLBACK / savepoints,
 * SET / RESET / SET TRANSACTION / SET SESSION CHARACTERISTICS.
 */
import type { TransactionStmt, VariableSetStmt } from 'libpg-query';
import { constantBool, constantString, defElems } from './parse-tree.js';
import { decision, type StatementDecision } from './statement-decision.js';
import type { SessionEffect } from './types.js';

/** GUCs that describe the current transaction only: setting them is not session state. */
const TRANSACTION_GUCS = new Set(['transaction_read_only', 'transaction_isolation', 'transaction_deferrable']);

export function transactionDecision(t: TransactionStmt): StatementDecision {
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
      // a prepared transaction lives on the primary (COMMIT/ROLLBACK PREPARED run there); a hot
      // standby refuses it: an optimistic transaction moves there first
      return decision('primary', 'PREPARE TRANSACTION ends the transaction on the primary', { effects: [{ type: 'commit' }] });
    case 'TRANS_STMT_SAVEPOINT':
    case 'TRANS_STMT_RELEASE':
    case 'TRANS_STMT_ROLLBACK_TO':
      return decision('any', 'savepoints run where the transaction is');
    default:
      return decision('primary', 'COMMIT/ROLLBACK PREPARED runs on the primary');
  }
}

export function setDecision(s: VariableSetStmt, index: number): StatementDecision {
  const kind = s.kind;
  const name = (s.name ?? '').toLowerCase();
  if (kind === 'VAR_RESET_ALL') {
    return decision('any', 'RESET ALL is session state', { effects: [{ type: 'reset_all' }, { type: 'default_read_only', value: false }] });
  }
  if (kind === 'VAR_SET_MULTI') {
    let readOnly: boolean | undefined;
    let serializable = false;
    let other = false;
    for (const d of defElems(s.args)) {
      if (d.defname === 'transaction_read_only') readOnly = constantBool(d.arg);
      else if (d.defname === 'transaction_isolation') serializable = constantString(d.arg) === 'serializable';
      else if (d.defname !== 'transaction_deferrable') other = true;
    }
    // SET TRANSACTION SNAPSHOT 'id': where the transaction is, as the rest of SET TRANSACTION
    if (name === 'transaction snapshot') return decision('any', 'SET TRANSACTION SNAPSHOT is transaction state');
    if (name === 'transaction') {
      // READ COMMITTED, REPEATABLE READ (a hot standby runs them); not READ WRITE, not SERIALIZABLE
      if (readOnly !== true) return decision('any', 'SET TRANSACTION is transaction state', readOnly === undefined && !serializable && !other ? { opensOnReplica: true } : {});
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
    // the isolation level as a value: a literal, so decided per text
    const level = kind === 'VAR_SET_VALUE' ? constantString(s.args?.[0])?.toLowerCase() : undefined;
    const opensOnReplica = name === 'transaction_isolation' ? level !== undefined && level !== 'serializable' : name === 'transaction_deferrable';
    return decision('any', `SET ${name} is transaction state`, { cacheable: cacheable && name !== 'transaction_isolation', ...(opensOnReplica ? { opensOnReplica } : {}) });
  }
  if (s.is_local) return decision('any', 'SET LOCAL lasts until the end of the transaction', { opensOnReplica: true });
  const effects: SessionEffect[] = [{ type: 'set', name, statement: index }];
  if (name === 'default_transaction_read_only') {
    if (value !== undefined) effects.push({ type: 'default_read_only', value });
    return decision('any', 'SET is session state', { effects, cacheable });
  }
  return decision('any', 'SET is session state', { effects });
}
