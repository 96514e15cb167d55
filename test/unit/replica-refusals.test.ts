import { describe, expect, it } from 'vitest';
import { ReplicaRefusals, replicaRefusal } from '../../src/routing/replica-refusals.js';

// Which errors of a replica refuse a read that the primary runs (issue 16): 25006, and 0A000 for
// serializable transactions (told by the routine that raised it, which is never translated).
describe('replicaRefusal', () => {
  const fields = (entries: Record<string, string>) => new Map(Object.entries(entries));

  it('25006 is a read-only refusal', () => {
    expect(replicaRefusal(fields({ C: '25006', M: 'cannot execute INSERT in a read-only transaction' }))).toBe('readonly');
  });

  it('0A000 from the serializable snapshot or isolation check is a serializable refusal, in any language', () => {
    expect(replicaRefusal(fields({ C: '0A000', M: 'cannot use serializable mode in a hot standby', R: 'GetSerializableTransactionSnapshot' }))).toBe('serializable');
    expect(replicaRefusal(fields({ C: '0A000', M: 'no se puede usar el modo serializable en un hot standby', R: 'GetSerializableTransactionSnapshot' }))).toBe('serializable');
    expect(replicaRefusal(fields({ C: '0A000', M: 'cannot use serializable mode in a hot standby', R: 'check_XactIsoLevel' }))).toBe('serializable');
    // a server that sends no routine: the English message
    expect(replicaRefusal(fields({ C: '0A000', M: 'cannot use serializable mode in a hot standby' }))).toBe('serializable');
  });

  it('40001 or 40P01 raised where a backend takes interrupts is a conflict with recovery (the replica cancelled the read to replay WAL), in any language', () => {
    expect(replicaRefusal(fields({ C: '40001', M: 'canceling statement due to conflict with recovery', R: 'ProcessInterrupts' }))).toBe('conflict');
    expect(replicaRefusal(fields({ C: '40P01', M: 'canceling statement due to conflict with recovery', R: 'ProcessInterrupts' }))).toBe('conflict');
    expect(replicaRefusal(fields({ C: '40001', M: 'annulation de la requête à cause d’un conflit avec la restauration', R: 'ProcessRecoveryConflictInterrupt' }))).toBe('conflict');
    expect(replicaRefusal(fields({ C: '40001', M: 'canceling statement due to conflict with recovery' }))).toBe('conflict');
    // a serialization failure of the client's own, or a deadlock it ran into, stays the client's
    expect(replicaRefusal(fields({ C: '40001', M: 'could not serialize access due to concurrent update', R: 'ExecUpdate' }))).toBeUndefined();
    expect(replicaRefusal(fields({ C: '40P01', M: 'deadlock detected', R: 'DeadLockReport' }))).toBeUndefined();
  });

  it('any other error is the client’s (another 0A000 too)', () => {
    expect(replicaRefusal(fields({ C: '0A000', M: 'cannot use serializable mode in a hot standby', R: 'transformSelectStmt' }))).toBeUndefined();
    expect(replicaRefusal(fields({ C: '0A000', M: 'FOR UPDATE is not allowed with UNION' }))).toBeUndefined();
    expect(replicaRefusal(fields({ C: '42P01', M: 'relation "x" does not exist' }))).toBeUndefined();
    expect(replicaRefusal(fields({}))).toBeUndefined();
  });
});

describe('ReplicaRefusals: users and databases serializable by default', () => {
  it('remembers a user in a database, not the user elsewhere nor another user there', () => {
    const refusals = new ReplicaRefusals();
    expect(refusals.serializable('app', 'db')).toBe(false);
    refusals.rememberSerializable('app', 'db');
    expect(refusals.serializable('app', 'db')).toBe(true);
    expect(refusals.serializable('app', 'other')).toBe(false);
    expect(refusals.serializable('other', 'db')).toBe(false);
    // the separator cannot be forged by a name
    expect(refusals.serializable('app\0d', 'b')).toBe(false);
  });
});
