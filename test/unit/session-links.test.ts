import { describe, expect, it } from 'vitest';
import { CausalityLink, type LinkedSession, PlacementLink, RepliesLink, StatementLink } from '../../src/frontend/session-links.js';
import { OPEN } from '../../src/frontend/unit-state.js';

// The hosts a session builds its parts with: one object each whose methods reach the session.

/** A session that records what its links call on it. */
function fakeSession() {
  const calls: unknown[][] = [];
  const record = (name: string) => (...args: unknown[]) => {
    calls.push([name, ...args]);
    return name === 'replay';
  };
  const session = {
    user: 'app',
    database: 'db',
    closed: false,
    pinned: true,
    clientBytes: 42,
    unitOpen: true,
    tx: { status: 0x54, orphaned: false },
    placement: { unitBeganAt: 7, attachTarget: 'primary', beginExtendedUnit: record('beginExtendedUnit') },
    named: { answerDeallocated: record('answerDeallocated') },
    statements: { unnamedPayload: { text: 'unnamed' }, get: (name: string) => ({ text: `named ${name}` }) },
    move: record('move'),
    park: record('park'),
    resumeWith: record('resumeWith'),
    failUnit: record('failUnit'),
    sendToClient: record('sendToClient'),
    sendHead: record('sendHead'),
    fatal: record('fatal'),
    pin: record('pin'),
    maybeRelease: record('maybeRelease'),
    lost: record('lost'),
    replay: record('replay'),
    answerOrphaned: record('answerOrphaned'),
  };
  return { session: session as unknown as LinkedSession & typeof session, calls };
}

describe('session links', () => {
  it('give the session itself as the read-your-writes key, and read its state when asked (not when built)', () => {
    const { session } = fakeSession();
    const replies = new RepliesLink(session);
    const placement = new PlacementLink(session);
    expect(replies.session).toBe(session);
    expect(placement.session).toBe(session);
    expect(new CausalityLink(session).session).toBe(session);
    expect([replies.isClosed(), replies.unitOpen(), replies.clientBytes(), replies.unitBeganAt(), replies.attachedForPrimary()]).toEqual([false, true, 42, 7, true]);
    session.closed = true;
    session.clientBytes = 50;
    session.placement.attachTarget = 'replica';
    expect([replies.isClosed(), placement.isClosed(), placement.clientBytes(), replies.attachedForPrimary()]).toEqual([true, true, 50, false]);
    expect(new StatementLink(session).txStatus()).toBe(0x54);
  });

  it('forward each step to the session with the arguments the part means', () => {
    const { session, calls } = fakeSession();
    const data = Buffer.from('x');
    const step = () => {};
    new CausalityLink(session).park();
    new StatementLink(session).waitForOutcome();
    new PlacementLink(session).park('connection', step);
    new CausalityLink(session).openUnit();
    new StatementLink(session).beginWithoutServer(data);
    new RepliesLink(session).unitsEnded();
    new PlacementLink(session).answerOrphaned(undefined);
    expect(new RepliesLink(session).runAgain('replica1')).toBe(true);
    expect(calls).toEqual([
      ['park', 'fence', true],
      ['park', 'drain', false],
      ['park', 'connection', true, step],
      ['move', OPEN],
      ['move', OPEN],
      ['sendHead', data],
      ['maybeRelease'],
      ['answerOrphaned', undefined, false],
      ['replay', 'replica1'],
    ]);
  });

  it('the steps an optimistic transaction needs work taken off a placement link, or spread from it (UnitPlacement hands them on)', () => {
    const { session, calls } = fakeSession();
    const link = new PlacementLink(session);
    const { park, resumeWith, failUnit } = link;
    const spread = { ...link };
    const error = new Error('no');
    park('primary', undefined);
    resumeWith(() => {});
    spread.failUnit(error);
    expect(spread.isClosed()).toBe(false);
    expect(failUnit).toBe(spread.failUnit);
    expect(calls.map((c) => c[0])).toEqual(['park', 'resumeWith', 'failUnit']);
    expect(calls[2]).toEqual(['failUnit', error]);
  });

  it('a placement link finds the client\'s statements by name (\'\' = its unnamed one)', () => {
    const { session } = fakeSession();
    const placement = new PlacementLink(session);
    expect(placement.statement('')).toEqual({ text: 'unnamed' });
    expect(placement.statement('s1')).toEqual({ text: 'named s1' });
  });
});
