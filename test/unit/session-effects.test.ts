import { describe, expect, it } from 'vitest';
import type { SessionEffect } from '../../src/classify/classifier.js';
import { DIRTY_STATE, SessionEffects } from '../../src/frontend/session-effects.js';
import { SessionState } from '../../src/frontend/session-state.js';
import { TxStatus } from '../../src/protocol/codes.js';

// SET / RESET / DISCARD ALL / DEALLOCATE ALL / default_transaction_read_only, applied when they
// take effect, to the session state, the client's statements and the connection they ran on.

const I = TxStatus.Idle;
const T = TxStatus.InTransaction;

function setup() {
  const state = new SessionState(new Map());
  const effects = new SessionEffects(state);
  const server = { appliedState: '', prepared: new Set(['pgrelay_1']), unnamedToken: 7 };
  let cleared = 0;
  const statements = { clear: () => cleared++ };
  return { state, effects, server, statements, cleared: () => cleared };
}

const set = (name: string): SessionEffect => ({ type: 'set', name, statement: 0 });

describe('SessionEffects', () => {
  it('applies a SET when its unit ends outside a transaction; the connection has exactly that state', () => {
    const s = setup();
    s.effects.collect([set('search_path')], 'SET search_path = app');
    s.effects.unitEnded(I, false, false, s.server, s.statements);
    expect(s.state.sql()).toBe('SET search_path = app');
    expect(s.server.appliedState).toBe('SET search_path = app');
  });

  it('keeps a transaction’s SETs until it commits, and drops them when it rolls back', () => {
    const s = setup();
    s.effects.collect([set('work_mem')], 'SET work_mem = 1000');
    s.effects.unitEnded(T, false, false, s.server, s.statements);
    expect(s.state.sql()).toBe('');
    expect(s.server.appliedState).toBe('');
    s.effects.collect([{ type: 'commit' }], 'COMMIT');
    s.effects.unitEnded(I, false, false, s.server, s.statements);
    expect(s.state.sql()).toBe('SET work_mem = 1000');

    const r = setup();
    r.effects.collect([set('work_mem')], 'SET work_mem = 1000');
    r.effects.unitEnded(T, false, false, r.server, r.statements);
    r.effects.collect([{ type: 'rollback' }], 'ROLLBACK');
    r.effects.unitEnded(I, false, false, r.server, r.statements);
    expect(r.state.sql()).toBe('');
  });

  it('a COMMIT of a failed transaction rolls back its SETs; a failed unit applies nothing', () => {
    const s = setup();
    s.effects.collect([set('work_mem')], 'SET work_mem = 1000');
    s.effects.unitEnded(T, false, false, s.server, s.statements);
    s.effects.collect([{ type: 'commit' }], 'COMMIT');
    s.effects.unitEnded(I, false, true, s.server, s.statements);
    expect(s.state.sql()).toBe('');
    const f = setup();
    f.effects.collect([set('work_mem')], 'SET work_mem = 1000');
    f.effects.unitEnded(I, true, false, f.server, f.statements);
    expect(f.state.sql()).toBe('');
  });

  it('RESET leaves the connection’s state unknown (reset before its next unit)', () => {
    const s = setup();
    s.effects.collect([set('work_mem')], 'SET work_mem = 1000');
    s.effects.unitEnded(I, false, false, s.server, s.statements);
    s.effects.collect([{ type: 'reset', name: 'work_mem', statement: 0 }], 'RESET work_mem');
    s.effects.unitEnded(I, false, false, s.server, s.statements);
    expect(s.state.sql()).toBe('');
    expect(s.server.appliedState).toBe(DIRTY_STATE);
  });

  it('DISCARD ALL forgets the settings, the statements (client’s and connection’s) and read-only default', () => {
    const s = setup();
    s.effects.collect([{ type: 'default_read_only', value: true }], 'SET default_transaction_read_only = on');
    s.effects.unitEnded(I, false, false, s.server, s.statements);
    expect(s.effects.defaultReadOnly).toBe(true);
    s.effects.collect([{ type: 'discard_all' }], 'DISCARD ALL');
    s.effects.unitEnded(I, false, false, s.server, s.statements);
    expect(s.effects.defaultReadOnly).toBe(false);
    expect(s.cleared()).toBe(1);
    expect(s.server.prepared.size).toBe(0);
    expect(s.server.unnamedToken).toBe(0);
    expect(s.server.appliedState).toBe(DIRTY_STATE);
  });

  it('DEALLOCATE ALL forgets the named statements and leaves the unnamed one', () => {
    const s = setup();
    s.effects.collect([{ type: 'deallocate', name: null }], 'DEALLOCATE ALL');
    s.effects.unitEnded(I, false, false, s.server, s.statements);
    expect(s.cleared()).toBe(1);
    expect(s.server.prepared.size).toBe(0);
    expect(s.server.unnamedToken).toBe(7);
  });

  it('a lost connection drops the unit’s effects; a lost transaction drops the transaction’s', () => {
    const s = setup();
    s.effects.collect([set('work_mem')], 'SET work_mem = 1000');
    s.effects.dropPending();
    s.effects.unitEnded(I, false, false, s.server, s.statements);
    expect(s.state.sql()).toBe('');
    s.effects.collect([set('work_mem')], 'SET work_mem = 1000');
    s.effects.unitEnded(T, false, false, s.server, s.statements);
    s.effects.dropTransaction();
    s.effects.unitEnded(I, false, false, s.server, s.statements);
    expect(s.state.sql()).toBe('');
  });

  it('setting or resetting the session authorization ends a SET ROLE; RESET ALL keeps both, DISCARD ALL drops both', () => {
    const s = setup();
    const run = (effect: SessionEffect, text: string) => {
      s.effects.collect([effect], text);
      s.effects.unitEnded(I, false, false, s.server, s.statements);
    };
    run(set('session_authorization'), 'SET SESSION AUTHORIZATION u8');
    run(set('role'), 'SET ROLE u9');
    expect(s.state.sql()).toBe('SET SESSION AUTHORIZATION u8;\nSET ROLE u9');
    run({ type: 'reset', name: 'session_authorization', statement: 0 }, 'RESET SESSION AUTHORIZATION');
    expect(s.state.sql()).toBe('');
    run(set('role'), 'SET ROLE u9');
    run(set('session_authorization'), 'SET SESSION AUTHORIZATION u8');
    expect(s.state.sql()).toBe('SET SESSION AUTHORIZATION u8');
    run(set('role'), 'SET ROLE u9');
    run(set('work_mem'), 'SET work_mem = 1000');
    run({ type: 'reset_all' }, 'RESET ALL');
    expect(s.state.sql()).toBe('SET SESSION AUTHORIZATION u8;\nSET ROLE u9');
    run({ type: 'discard_all' }, 'DISCARD ALL');
    expect(s.state.sql()).toBe('');
  });

  it('a SET of DateStyle is replayed as the whole value the server reported for it', () => {
    const state = new SessionState(new Map([['DateStyle', 'Postgres, MDY']]));
    const effects = new SessionEffects(state);
    effects.reported('DateStyle', 'Postgres, DMY');
    effects.collect([set('datestyle')], 'SET datestyle TO dmy');
    effects.unitEnded(I, false, false, undefined, { clear: () => undefined });
    expect(state.sql()).toBe(`SET "DateStyle" TO 'Postgres, DMY'`);
  });

  it('tracks a default isolation of serializable: startup value, SET, session characteristics, RESET, RESET ALL', () => {
    const state = new SessionState(new Map([['default_transaction_isolation', 'serializable']]));
    const effects = new SessionEffects(state);
    const run = (effect: SessionEffect, text: string) => {
      effects.collect([effect], text);
      effects.unitEnded(I, false, false, undefined, { clear: () => undefined });
    };
    expect(effects.defaultSerializable).toBe(true);
    run(set('default_transaction_isolation'), "SET default_transaction_isolation = 'read committed'");
    expect(effects.defaultSerializable).toBe(false);
    run({ type: 'reset_all' }, 'RESET ALL');
    expect(effects.defaultSerializable).toBe(true);
    run(set('session_characteristics'), 'SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ');
    expect(effects.defaultSerializable).toBe(false);
    run(set('session_characteristics'), 'SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE');
    expect(effects.defaultSerializable).toBe(false);
    run({ type: 'reset', name: 'default_transaction_isolation', statement: 0 }, 'RESET default_transaction_isolation');
    expect(effects.defaultSerializable).toBe(true);
    expect(new SessionEffects(new SessionState(new Map())).defaultSerializable).toBe(false);
  });

  it('a default of serializable a replica told (the role’s or the database’s) holds until the client sets its own; RESET, RESET ALL and DISCARD ALL bring it back', () => {
    const effects = new SessionEffects(new SessionState(new Map()));
    const run = (effect: SessionEffect, text: string) => {
      effects.collect([effect], text);
      effects.unitEnded(I, false, false, undefined, { clear: () => undefined });
    };
    expect(effects.serializable).toBe(false);
    effects.serverSerializable = true;
    expect(effects.serializable).toBe(true);
    run(set('default_transaction_isolation'), "SET default_transaction_isolation = 'read committed'");
    expect(effects.serializable).toBe(false);
    run({ type: 'reset', name: 'default_transaction_isolation', statement: 0 }, 'RESET default_transaction_isolation');
    expect(effects.serializable).toBe(true);
    run(set('session_characteristics'), 'SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ');
    expect(effects.serializable).toBe(false);
    run({ type: 'reset_all' }, 'RESET ALL');
    expect(effects.serializable).toBe(true);
    run(set('default_transaction_isolation'), "SET default_transaction_isolation = 'repeatable read'");
    run({ type: 'discard_all' }, 'DISCARD ALL');
    expect(effects.serializable).toBe(true);
    // a client that gave its own default at startup is not concerned
    const own = new SessionEffects(new SessionState(new Map([['default_transaction_isolation', 'read committed']])));
    own.serverSerializable = true;
    expect(own.serializable).toBe(false);
  });
});
