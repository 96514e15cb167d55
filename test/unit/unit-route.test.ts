import { describe, expect, it } from 'vitest';
import type { Classification, SessionEffect } from '../../src/classify/classifier.js';
import { ProxyError, SqlState } from '../../src/errors.js';
import { TxStatus } from '../../src/protocol/codes.js';
import { deferredBeginTag, isReplayable, isUnreachable, onHeldConnection, pinOnReplicaRefusal, targetOf } from '../../src/routing/unit-route.js';

// The session-dependent routing rules of one unit, on plain values.

function cls(route: Classification['route'], effects: SessionEffect[] = [], more: Partial<Classification> = {}): Classification {
  return { route, pin: false, reason: 'test', effects, statements: 1, userFunctions: [], ...more };
}

const plain = { beginDeferred: false, defaultReadOnly: false };

describe('targetOf', () => {
  it('sends a statement that pins to the primary, even when it only reads (a pin is a primary connection)', () => {
    expect(targetOf(cls('replica', [], { pin: true }), plain)).toBe('primary');
    expect(targetOf(cls('any', [], { pin: true }), plain)).toBe('primary');
  });

  it('refuses a pinning statement in a transaction on a replica (0A000), nothing else', () => {
    expect(pinOnReplicaRefusal(cls('replica', [], { pin: true }), true)?.sqlstate).toBe('0A000');
    expect(pinOnReplicaRefusal(cls('replica', [], { pin: true }), false)).toBeUndefined();
    expect(pinOnReplicaRefusal(cls('replica'), true)).toBeUndefined();
  });

  it('sends reads to a replica, writes to the primary, and leaves the rest where the session is', () => {
    expect(targetOf(cls('replica'), plain)).toBe('replica');
    expect(targetOf(cls('primary'), plain)).toBe('primary');
    expect(targetOf(cls('any'), plain)).toBe('any');
    expect(targetOf(undefined, plain)).toBe('any');
  });

  it('sends a read-only BEGIN, or any BEGIN under default_transaction_read_only, to a replica', () => {
    expect(targetOf(cls('any', [{ type: 'begin', readOnly: true }]), plain)).toBe('replica');
    expect(targetOf(cls('any', [{ type: 'begin', readOnly: false }]), plain)).toBe('any');
    expect(targetOf(cls('any', [{ type: 'begin', readOnly: false }]), { ...plain, defaultReadOnly: true })).toBe('replica');
    expect(targetOf(cls('primary', [{ type: 'begin', readOnly: false }]), { ...plain, defaultReadOnly: true })).toBe('replica');
    expect(targetOf(cls('primary', [{ type: 'begin', readOnly: false }]), plain)).toBe('primary');
  });

  it('after a held BEGIN: a replica only for SET TRANSACTION READ ONLY, else the primary (even for a read)', () => {
    const held = { ...plain, beginDeferred: true };
    expect(targetOf(cls('any', [{ type: 'set_transaction_read_only' }]), held)).toBe('replica');
    expect(targetOf(cls('replica'), held)).toBe('primary');
    expect(targetOf(undefined, held)).toBe('primary');
  });
});

describe('deferredBeginTag', () => {
  const begin = cls('primary', [{ type: 'begin', readOnly: false }]);
  const facts = { idle: true, pinned: false, beginDeferred: false, clientTxStatus: TxStatus.Idle, defaultReadOnly: false };

  it('holds a plain BEGIN / START TRANSACTION and answers with PostgreSQL’s tag', () => {
    expect(deferredBeginTag(begin, 'BEGIN', facts)).toBe('BEGIN');
    expect(deferredBeginTag(begin, '  begin work ;', facts)).toBe('BEGIN');
    expect(deferredBeginTag(begin, 'START TRANSACTION', facts)).toBe('START TRANSACTION');
  });

  it('sends a BEGIN with options, a hint, or in a busy, pinned or read-only session at once', () => {
    expect(deferredBeginTag(begin, 'BEGIN ISOLATION LEVEL SERIALIZABLE', facts)).toBeUndefined();
    expect(deferredBeginTag(begin, '/* pgrelay:primary */ BEGIN', facts)).toBeUndefined();
    expect(deferredBeginTag(begin, 'BEGIN', { ...facts, idle: false })).toBeUndefined();
    expect(deferredBeginTag(begin, 'BEGIN', { ...facts, pinned: true })).toBeUndefined();
    expect(deferredBeginTag(begin, 'BEGIN', { ...facts, beginDeferred: true })).toBeUndefined();
    expect(deferredBeginTag(begin, 'BEGIN', { ...facts, clientTxStatus: TxStatus.InTransaction })).toBeUndefined();
    expect(deferredBeginTag(begin, 'BEGIN', { ...facts, defaultReadOnly: true })).toBeUndefined();
    expect(deferredBeginTag(cls('primary', [{ type: 'begin', readOnly: true }]), 'BEGIN', facts)).toBeUndefined();
    expect(deferredBeginTag(cls('primary', [{ type: 'begin', readOnly: false }], { statements: 2 }), 'BEGIN', facts)).toBeUndefined();
  });
});

describe('onHeldConnection', () => {
  it('keeps a unit on an idle primary connection only when it wants the primary', () => {
    expect(onHeldConnection('primary', { onPrimary: true, busy: false })).toBe('stay');
    expect(onHeldConnection('replica', { onPrimary: true, busy: false })).toBe('release');
    expect(onHeldConnection('primary', { onPrimary: false, busy: false })).toBe('release');
  });

  it('pipelines behind units in flight unless a write needs another node, which waits for them', () => {
    expect(onHeldConnection('replica', { onPrimary: false, busy: true })).toBe('stay');
    expect(onHeldConnection('replica', { onPrimary: true, busy: true })).toBe('stay');
    expect(onHeldConnection('primary', { onPrimary: true, busy: true })).toBe('stay');
    expect(onHeldConnection('primary', { onPrimary: false, busy: true })).toBe('drain');
  });
});

describe('isReplayable', () => {
  const idle = { pinned: false, clientTxStatus: TxStatus.Idle, serverTxStatus: TxStatus.Idle };

  it('lets a read outside a transaction run again, and nothing else', () => {
    expect(isReplayable(cls('replica'), idle)).toBe(true);
    expect(isReplayable(cls('any'), idle)).toBe(true);
    expect(isReplayable(cls('primary'), idle)).toBe(false);
    expect(isReplayable(undefined, idle)).toBe(false);
    expect(isReplayable(cls('replica', [{ type: 'set', name: 'x', statement: 0 }]), idle)).toBe(false);
    expect(isReplayable(cls('replica', [], { pin: true }), idle)).toBe(false);
    expect(isReplayable(cls('replica'), { ...idle, pinned: true })).toBe(false);
    expect(isReplayable(cls('replica'), { ...idle, clientTxStatus: TxStatus.InTransaction })).toBe(false);
    expect(isReplayable(cls('replica'), { ...idle, serverTxStatus: TxStatus.Failed })).toBe(false);
  });
});

describe('isUnreachable', () => {
  it('is a connect that failed for want of the server, not a full pool or a refusal', () => {
    expect(isUnreachable(new ProxyError(SqlState.connectionFailure, 'x'))).toBe(true);
    expect(isUnreachable(new ProxyError(SqlState.cannotConnectNow, 'x'))).toBe(true);
    expect(isUnreachable(new ProxyError(SqlState.adminShutdown, 'x'))).toBe(true);
    expect(isUnreachable(new ProxyError(SqlState.tooManyConnections, 'x'))).toBe(false);
    expect(isUnreachable(new ProxyError(SqlState.invalidPassword, 'x'))).toBe(false);
    expect(isUnreachable(new Error('ECONNREFUSED'))).toBe(false);
  });
});
