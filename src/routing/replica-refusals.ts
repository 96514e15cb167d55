import type { Classification } from '../classify/types.js';

/** (user, database) pairs remembered as serializable by default, at most (past it the set starts again) */
const MAX_SERIALIZABLE_LOGINS = 10_000;

/**
 * Why a replica's ErrorResponse (its fields by code) refused a read that the primary would run:
 * 25006, a write a read-only transaction cannot run; 0A000 for a serializable transaction (a
 * hot standby refuses them: the session's default_transaction_isolation, e.g. set on its role or
 * database); 40001 or 40P01 raised where a backend takes interrupts, "canceling statement due to
 * conflict with recovery": the replica cancelled the read so that it could replay the primary's
 * WAL (a lock, a vacuumed row version the read's snapshot still needed, past
 * max_standby_streaming_delay). Each is told by the function that raised it (the `R` field,
 * never translated), else by its English message.
 */
export function replicaRefusal(fields: ReadonlyMap<string, string>): 'readonly' | 'serializable' | 'conflict' | undefined {
  const sqlstate = fields.get('C');
  if (sqlstate === '25006') return 'readonly';
  if (sqlstate === '40001' || sqlstate === '40P01') {
    const routine = fields.get('R');
    // ProcessInterrupts up to PostgreSQL 16, ProcessRecoveryConflictInterrupt from 17 on
    return routine === 'ProcessInterrupts' || routine === 'ProcessRecoveryConflictInterrupt' || /conflict with recovery/.test(fields.get('M') ?? '') ? 'conflict' : undefined;
  }
  if (sqlstate !== '0A000') return undefined;
  const routine = fields.get('R');
  if (routine === 'GetSerializableTransactionSnapshot' || routine === 'check_XactIsoLevel') return 'serializable';
  return routine === undefined && /serializable mode in a hot standby/.test(fields.get('M') ?? '') ? 'serializable' : undefined;
}

/**
 * Statement shapes classified as reads that a replica refused as writes (25006: a volatile
 * function behind a view, a user-defined operator, a user overload of a built-in read name): from
 * then on they go to the primary, so that a classification gap costs one retry. Keyed by the
 * classifier's Classification objects (one per shape, cached and shared by all sessions): a shape
 * the classifier's cache forgets is forgotten here too, so the set is as bounded as that cache.
 */
export class ReplicaRefusals {
  private readonly shapes = new WeakSet<Classification>();
  /**
   * users and databases whose sessions a replica refused as serializable (their role's or the
   * database's default): their sessions read from the primary from the start (until restart)
   */
  private readonly serializableLogins = new Set<string>();

  remember(classification: Classification): void {
    this.shapes.add(classification);
  }

  has(classification: Classification | undefined): boolean {
    return classification !== undefined && this.shapes.has(classification);
  }

  rememberSerializable(user: string, database: string): void {
    if (this.serializableLogins.size >= MAX_SERIALIZABLE_LOGINS) this.serializableLogins.clear();
    this.serializableLogins.add(`${user}\0${database}`);
  }

  serializable(user: string, database: string): boolean {
    return this.serializableLogins.size > 0 && this.serializableLogins.has(`${user}\0${database}`);
  }
}
