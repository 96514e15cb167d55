/** The decision for one statement of a text, before the statements of a text are combined. */
import type { Route, SessionEffect } from './types.js';

export interface AnalyzeOptions {
  /** `routing.functions.primary`: bare names or schema.name, as written and in lower case */
  forcedPrimary: ReadonlySet<string>;
  /** `routing.functions.replica` */
  forcedReplica: ReadonlySet<string>;
}

export interface StatementDecision {
  route: Route;
  pin: boolean;
  reason: string;
  effects: SessionEffect[];
  userFunctions: Set<string>;
  cacheable: boolean;
  /** calls currval() or lastval() (see Classification.readsSequences) */
  readsSequences?: boolean;
  /** names settings (see Classification.namesSettings) */
  namesSettings?: boolean;
  /** why running the statement again elsewhere cannot tell whether its answer changed (see Classification.unverifiable) */
  unverifiable?: string;
  /** BEGIN / START TRANSACTION without READ ONLY */
  beginsReadWrite?: boolean;
  /** SET TRANSACTION … READ ONLY, and not SERIALIZABLE */
  setsReadOnly?: boolean;
  /** a transaction setting a hot standby runs as the primary does (see Classification.opensOnReplica) */
  opensOnReplica?: boolean;
  /** calls set_config(<a name>, …, true) (see Classification.localSettings) */
  localSettings?: boolean;
}

export function decision(route: Route, reason: string, extra: Partial<StatementDecision> = {}): StatementDecision {
  return { route, pin: false, reason, effects: [], userFunctions: new Set(), cacheable: true, ...extra };
}
