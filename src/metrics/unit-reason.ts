import type { Classification } from '../classify/types.js';

/**
 * Why a unit went where it went, as one word from a fixed set, for `pgrelay_units_total{reason}`.
 * The classifier's own `reason` is human text (it names functions and parse errors), far too
 * many values for a label; this folds it into a handful.
 */
export type UnitReason =
  | 'read'
  | 'write'
  | 'function'
  | 'transaction_control'
  | 'session'
  | 'hint'
  | 'pin'
  | 'parse_error'
  | 'function_call'
  | 'rerouted_readonly'
  | 'rerouted_serializable'
  | 'rerouted_conflict'
  | 'unclassified';

const TRANSACTION_EFFECTS = new Set(['begin', 'commit', 'rollback', 'set_transaction_read_only']);

/** Classifications come out of the classifier's cache and are shared: fold each one once. */
const folded = new WeakMap<Classification, UnitReason>();

/** The route a unit run again on the primary after a replica refused it (25006) is counted as. */
export const REROUTED_READONLY = 'rerouted readonly';
/** The route a read run again on the primary after a replica refused it as serializable (0A000) is counted as. */
export const REROUTED_SERIALIZABLE = 'rerouted serializable';
/** The route a read run again on the primary after a replica cancelled it for a conflict with recovery (40001) is counted as. */
export const REROUTED_CONFLICT = 'rerouted conflict';
/** Why a unit a replica refused runs again on the primary. */
export type Rerouted = typeof REROUTED_READONLY | typeof REROUTED_SERIALIZABLE | typeof REROUTED_CONFLICT;

/** `route` is what the session counted the unit as ('function call' for the FunctionCall message). */
export function unitReason(route: string, classification: Classification | undefined): UnitReason {
  if (route === 'function call') return 'function_call';
  if (route === REROUTED_READONLY) return 'rerouted_readonly';
  if (route === REROUTED_SERIALIZABLE) return 'rerouted_serializable';
  if (route === REROUTED_CONFLICT) return 'rerouted_conflict';
  if (!classification) return 'unclassified';
  let reason = folded.get(classification);
  if (reason === undefined) {
    reason = fold(classification);
    folded.set(classification, reason);
  }
  return reason;
}

function fold(c: Classification): UnitReason {
  if (c.pin) return 'pin';
  if (c.hint !== undefined) return 'hint';
  // BEGIN [READ ONLY], COMMIT, ROLLBACK, SET TRANSACTION … and nothing else
  if (c.statements > 0 && c.effects.length === c.statements && c.effects.every((e) => TRANSACTION_EFFECTS.has(e.type))) return 'transaction_control';
  switch (c.route) {
    case 'replica':
      return 'read';
    case 'any':
      return 'session';
    case 'primary':
      if (c.reason.startsWith('parse error')) return 'parse_error';
      if (c.reason.startsWith('calls ') || c.reason.includes(': calls ')) return 'function';
      return 'write';
  }
}
