import { describe, expect, it } from 'vitest';
import { Expect, ResponseQueue, SWALLOW, kindOf } from '../../src/frontend/response-queue.js';

// The ring buffer that tells a session what a server connection still owes: order kept through
// wrap-around and growth, flags kept apart from kinds, payloads released when shifted.
describe('ResponseQueue', () => {
  it('keeps order through wrap-around and growth', () => {
    const queue = new ResponseQueue<number>();
    let next = 0;
    let expected = 0;
    // push and shift unevenly so that head moves around the ring while it grows from its first 8 entries past 1,000
    for (let round = 0; round < 50; round++) {
      for (let i = 0; i < 7 + round; i++) queue.push(Expect.Bind, next++);
      for (let i = 0; i < 5; i++) {
        expect(queue.peekPayload()).toBe(expected++);
        queue.shift();
      }
    }
    expect(queue.length).toBe(next - expected);
    while (queue.length > 0) {
      expect(queue.peekPayload()).toBe(expected++);
      queue.shift();
    }
    expect(expected).toBe(next);
    expect(queue.peek()).toBe(0);
    expect(queue.peekPayload()).toBeUndefined();
  });

  it('keeps the SWALLOW flag apart from the kind', () => {
    const queue = new ResponseQueue<string>();
    queue.push(Expect.Parse | SWALLOW);
    queue.push(Expect.Query);
    expect(queue.peekKind()).toBe(Expect.Parse);
    expect(queue.peek() & SWALLOW).toBe(SWALLOW);
    expect(kindOf(queue.peek())).toBe(Expect.Parse);
    queue.shift();
    expect(queue.peek() & SWALLOW).toBe(0);
    expect(queue.peekKind()).toBe(Expect.Query);
  });

  it('finds entries after the head only', () => {
    const queue = new ResponseQueue<{ name?: string }>();
    queue.push(Expect.Parse, { name: 'a' });
    queue.push(Expect.Sync);
    queue.push(Expect.SyntheticParseComplete, { name: 'b' });
    const names = (name: string) => (kind: number, payload: { name?: string } | undefined) => (kind === Expect.Parse || kind === Expect.SyntheticParseComplete) && payload?.name === name;
    expect(queue.someAfterHead(names('a'))).toBe(false);
    expect(queue.someAfterHead(names('b'))).toBe(true);
    queue.shift();
    queue.shift();
    expect(queue.someAfterHead(names('b'))).toBe(false); // b is the head now
  });

  it('clear() empties it and lets it be reused from the start', () => {
    const queue = new ResponseQueue<number>();
    for (let i = 0; i < 100; i++) queue.push(Expect.Execute, i);
    queue.shift();
    queue.clear();
    expect(queue.length).toBe(0);
    queue.push(Expect.Describe, 7);
    expect(queue.peekKind()).toBe(Expect.Describe);
    expect(queue.peekPayload()).toBe(7);
  });
});
