import { describe, expect, it } from 'vitest';
import type { Classification, SessionEffect } from '../../src/classify/classifier.js';
import type { StatementPayload } from '../../src/frontend/client-statements.js';
import { ClientTransaction, lostOutcome } from '../../src/frontend/client-transaction.js';
import { Expect, ResponseQueue, SWALLOW } from '../../src/frontend/response-queue.js';
import { BackendCode, TxStatus } from '../../src/protocol/codes.js';
import { readErrorFields } from '../../src/protocol/messages.js';

function cls(route: Classification['route'], effects: SessionEffect[] = []): Classification {
  return { route, pin: false, reason: 'test', effects, statements: 1, userFunctions: [] };
}

const idle = { idle: true, pinned: false, defaultReadOnly: false, optimistic: false };

function sqlstate(message: Buffer): string | undefined {
  expect(message[0]).toBe(BackendCode.ErrorResponse);
  return readErrorFields(message, 5, message.length).get('C');
}

describe('ClientTransaction', () => {
  it('answers a plain BEGIN itself and hands it over once, with the first statement', () => {
    const tx = new ClientTransaction();
    const frame = Buffer.from('Q\0\0\0\x0aBEGIN\0', 'latin1');
    const sent = tx.deferBegin(cls('primary', [{ type: 'begin', readOnly: false }]), 'BEGIN', frame, idle);
    expect(sent?.map((m) => String.fromCharCode(m[0]!))).toEqual(['C', 'Z']);
    expect(sent?.[1]?.[5]).toBe(TxStatus.InTransaction);
    expect(tx.status).toBe(TxStatus.InTransaction);
    expect(tx.beginDeferred).toBe(true);
    expect(tx.takeBegin()?.equals(frame)).toBe(true);
    expect(tx.takeBegin()).toBeUndefined();
  });

  it('holds a plain SAVEPOINT right after a held BEGIN with it, and sends both in one Query', () => {
    const tx = new ClientTransaction();
    const savepoint = cls('any');
    // no BEGIN held: the SAVEPOINT goes to a server
    expect(tx.holdSavepoint(savepoint, 'SAVEPOINT a')).toBeUndefined();
    tx.deferBegin(cls('primary', [{ type: 'begin', readOnly: false }]), 'BEGIN;', Buffer.from('Q\0\0\0\x0bBEGIN;\0', 'latin1'), idle);
    const sent = tx.holdSavepoint(savepoint, 'SAVEPOINT PGJDBC_AUTOSAVE');
    expect(sent?.map((m) => String.fromCharCode(m[0]!))).toEqual(['C', 'Z']);
    expect(sent?.[0]?.toString('latin1', 5, sent[0].length - 1)).toBe('SAVEPOINT');
    expect(sent?.[1]?.[5]).toBe(TxStatus.InTransaction);
    expect(tx.holdSavepoint(savepoint, ' savepoint "Nested ""x"""; ')).toBeDefined();
    expect(tx.beginDeferred).toBe(true);
    const begin = tx.takeBegin()!;
    expect(String.fromCharCode(begin[0]!)).toBe('Q');
    expect(begin.readInt32BE(1)).toBe(begin.length - 1);
    expect(begin.toString('utf8', 5, begin.length - 1)).toBe('BEGIN; SAVEPOINT PGJDBC_AUTOSAVE; savepoint "Nested ""x"""');
    // the next transaction's BEGIN goes alone
    const frame = Buffer.from('Q\0\0\0\x0aBEGIN\0', 'latin1');
    tx.saw(TxStatus.Idle);
    tx.deferBegin(cls('primary', [{ type: 'begin', readOnly: false }]), 'BEGIN', frame, idle);
    expect(tx.takeBegin()?.equals(frame)).toBe(true);
  });

  it('holds only a plain SAVEPOINT: not RELEASE or ROLLBACK TO, a comment, a second statement, or a name PostgreSQL would truncate', () => {
    const tx = new ClientTransaction();
    tx.deferBegin(cls('primary', [{ type: 'begin', readOnly: false }]), 'BEGIN', Buffer.from('Q\0\0\0\x0aBEGIN\0', 'latin1'), idle);
    for (const text of ['RELEASE SAVEPOINT a', 'ROLLBACK TO SAVEPOINT a', 'SAVEPOINT a -- note', 'SAVEPOINT a; SELECT 1', `SAVEPOINT ${'x'.repeat(64)}`]) {
      expect(tx.holdSavepoint(cls('any'), text), text).toBeUndefined();
    }
    expect(tx.holdSavepoint({ ...cls('any'), statements: 2 }, 'SAVEPOINT a')).toBeUndefined();
    expect(tx.holdSavepoint(cls('primary'), 'SAVEPOINT a')).toBeUndefined();
    expect(tx.holdSavepoint(cls('any'), `SAVEPOINT ${'x'.repeat(63)}`)).toBeDefined();
  });

  it('after a lost idle transaction: the next statement fails with the reason, then with 25P02, until ROLLBACK', () => {
    const tx = new ClientTransaction();
    tx.saw(TxStatus.InTransaction);
    tx.lost(true, false, 'primary', 'terminating connection due to administrator command');
    expect(tx.orphaned).toBe(true);
    expect(tx.status).toBe(TxStatus.Failed);
    const first = tx.answerOrphaned(cls('replica'), true);
    expect(first.ended).toBe(false);
    expect(sqlstate(first.answers[0]!)).toBe('08006');
    expect(readErrorFields(first.answers[0]!, 5, first.answers[0]!.length).get('M')).toMatch(/connection to node primary lost \(terminating connection/);
    expect(first.answers[1]?.[5]).toBe(TxStatus.Failed);
    const second = tx.answerOrphaned(cls('replica'), false);
    expect(sqlstate(second.answers[0]!)).toBe('25P02');
    expect(second.answers).toHaveLength(1);
    const end = tx.answerOrphaned(cls('any', [{ type: 'rollback' }]), true);
    expect(end.ended).toBe(true);
    expect(tx.orphaned).toBe(false);
    expect(tx.status).toBe(TxStatus.Idle);
  });

  it('remembers the status before the last one (a failed transaction’s COMMIT rolled back)', () => {
    const tx = new ClientTransaction();
    tx.saw(TxStatus.Failed);
    tx.saw(TxStatus.Idle);
    expect(tx.wasFailed).toBe(true);
    tx.saw(TxStatus.Idle);
    expect(tx.wasFailed).toBe(false);
  });
});

describe('lostOutcome', () => {
  const queue = (...entries: [number, Classification | undefined][]) => {
    const q = new ResponseQueue<StatementPayload>();
    for (const [kind, c] of entries) q.push(kind, c === undefined ? undefined : { classification: c, text: '' });
    return q;
  };

  it('a COMMIT in flight, in or out of a transaction, may have committed', () => {
    expect(lostOutcome(queue([Expect.Query, cls('any', [{ type: 'commit' }])]), true)).toBe('unknown');
    expect(lostOutcome(queue([Expect.Parse, undefined], [Expect.Execute, cls('any', [{ type: 'commit' }])]), true)).toBe('unknown');
  });

  it('outside a transaction a write (or a FunctionCall) may have committed; reads did not', () => {
    expect(lostOutcome(queue([Expect.Query, cls('primary')]), false)).toBe('unknown');
    expect(lostOutcome(queue([Expect.Query, undefined]), false)).toBe('unknown');
    expect(lostOutcome(queue([Expect.Query, cls('replica')]), false)).toBe('read');
    // pgrelay's own state Query in front of a read is not the client's write
    expect(lostOutcome(queue([Expect.Query | SWALLOW, undefined], [Expect.Query, cls('replica')]), false)).toBe('read');
  });

  it('in a transaction without its COMMIT in flight, it did not commit', () => {
    expect(lostOutcome(queue([Expect.Query, cls('primary')]), true)).toBe('not committed');
  });
});
