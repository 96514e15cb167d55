import { describe, expect, it } from 'vitest';
import { isExtendedRunBuffered, pipelineShape, type PipeliningFacts } from '../../src/frontend/unit-pipelining.js';
import type { ServerConnection, ServerDataHandler } from '../../src/pool/server-connection.js';
import { MAX_HELD_BYTES } from '../../src/pool/pipeline-rerun.js';
import { PIPELINE_MAX_LATENCY_MS, type PipelineMember, ServerPipeline } from '../../src/pool/server-pipeline.js';
import { FrameReader } from '../../src/protocol/frame-reader.js';
import type { Classification } from '../../src/classify/classifier.js';
import type { Config } from '../../src/config/types.js';

// The demultiplexer of a pipelined server connection, with a connection and sessions that only
// record what happens to them. Frames are built here byte by byte (not with src/protocol).

function frame(code: string, body: Buffer | string = Buffer.alloc(0)): Buffer {
  const data = typeof body === 'string' ? Buffer.from(body) : body;
  const header = Buffer.alloc(5);
  header[0] = code.charCodeAt(0);
  header.writeInt32BE(data.length + 4, 1);
  return Buffer.concat([header, data]);
}

const ready = (status: string) => frame('Z', status);
const row = (text: string) => frame('D', Buffer.concat([Buffer.from([0, 1]), Buffer.from([0, 0, 0, text.length]), Buffer.from(text)]));

/** One unit's answer: RowDescription-ish head, a row, CommandComplete, ReadyForQuery. */
function answer(text: string, status = 'I'): Buffer {
  return Buffer.concat([frame('T', `head of ${text}\0`), row(text), frame('C', 'SELECT 1\0'), ready(status)]);
}

class FakeConn {
  closed = false;
  txStatus = 0x49;
  cancelsPending = false;
  node = 'n1';
  appliedState = '';
  handler: ServerDataHandler | undefined;
  destroyed = 0;
  /** what the pipeline itself wrote (units written again) */
  readonly written: Buffer[] = [];
  write(data: Buffer): boolean {
    this.written.push(Buffer.from(data));
    return true;
  }
  readonly socket = {
    paused: false,
    pause() {
      this.paused = true;
    },
    resume() {
      this.paused = false;
    },
  };
  setHandler(handler: ServerDataHandler | undefined): void {
    this.handler = handler;
  }
  destroy(): void {
    this.destroyed++;
    if (this.closed) return;
    this.closed = true;
    this.handler?.onServerClose(this as unknown as ServerConnection, undefined);
  }
}

/** A session: what it was handed, and a ReadyForQuery status it keeps on the connection as ServerReplies does. */
class FakeSession implements ServerDataHandler {
  readonly received: Buffer[] = [];
  lostCount = 0;
  member: PipelineMember | undefined;
  constructor(
    private readonly conn: FakeConn,
    private readonly leaveAfterAnswer = true,
  ) {}
  onServerData(_conn: ServerConnection, chunk: Buffer): void {
    this.received.push(Buffer.from(chunk));
    // the status of a ReadyForQuery the bytes so far end with, as ServerReplies keeps it
    const bytes = this.bytes;
    if (bytes.length >= 6 && bytes[bytes.length - 6] === 0x5a && bytes.readInt32BE(bytes.length - 5) === 5) {
      this.conn.txStatus = bytes[bytes.length - 1]!;
      if (this.leaveAfterAnswer && this.member!.owed === 0 && this.conn.txStatus === 0x49) this.member!.pipeline.leave(this.member!, true);
    }
  }
  onServerClose(): void {
    this.lostCount++;
    this.member!.pipeline.leave(this.member!, false);
  }
  get bytes(): Buffer {
    return Buffer.concat(this.received);
  }
}

function setup() {
  const conn = new FakeConn();
  const empties: boolean[] = [];
  const shape = {};
  ServerPipeline.latency.set(shape, 0.2);
  const sessions: FakeSession[] = [];
  /** `unitShape` null: the session's unit was not placed as self-contained */
  const join = (leaveAfterAnswer = true, unitShape: object | null = shape) => {
    const session = new FakeSession(conn, leaveAfterAnswer);
    session.member = ServerPipeline.join(conn as unknown as ServerConnection, session, unitShape ?? shape, (reusable) => empties.push(reusable));
    if (unitShape === null) session.member.approved = undefined;
    sessions.push(session);
    return session;
  };
  /** the session writes one whole unit (its Query or Sync is on the socket); `bytes`: the unit's messages */
  const write = (session: FakeSession, bytes: Buffer = query(`SELECT ${sessions.indexOf(session)}`)) => {
    const pipeline = session.member!.pipeline;
    pipeline.record(session.member!, bytes.subarray(0, 3));
    pipeline.wrote(session.member!, false);
    pipeline.record(session.member!, bytes.subarray(3));
    pipeline.wrote(session.member!, true);
  };
  return { conn, empties, shape, sessions, join, write, pipeline: () => ServerPipeline.of(conn as unknown as ServerConnection) };
}

/** A unit of a (running) with b's `unit` written behind it, and a's client asking for a cancel: the cancel may hit b's unit. */
function behindCancelled(unit?: Buffer) {
  const { conn, join, write } = setup();
  const a = join();
  write(a);
  const b = join();
  write(b, unit);
  a.member!.pipeline.cancelling(a.member!);
  return { conn, b };
}

describe('ServerPipeline', () => {
  it('hands each session exactly its own answers, however the server stream is cut into chunks', () => {
    const answers = [answer('first'), answer('second, longer'), answer('3')];
    const stream = Buffer.concat(answers);
    for (let cut = 0; cut <= stream.length; cut++) {
      for (const step of [1, 7, stream.length]) {
        const { conn, empties, join, write, sessions } = setup();
        for (let i = 0; i < 3; i++) write(join());
        const chunks = [stream.subarray(0, cut), ...splitEvery(stream.subarray(cut), step)];
        for (const chunk of chunks) if (chunk.length > 0) conn.handler!.onServerData(conn as unknown as ServerConnection, chunk);
        expect(sessions.map((s) => s.bytes)).toEqual(answers);
        // the last session let go: the connection goes back to its pool
        expect(empties).toEqual([true]);
        expect(ServerPipeline.of(conn as unknown as ServerConnection)).toBeUndefined();
      }
    }
  });

  it('destroys the connection when a unit leaves a transaction open with another session queued behind it: the head gets its answer, the one behind sees a lost connection', () => {
    const { conn, join, write, sessions, empties } = setup();
    const head = join();
    write(head);
    const behind = join();
    write(behind);
    conn.handler!.onServerData(conn as unknown as ServerConnection, Buffer.concat([answer('head', 'T'), frame('T', 'x\0')]));
    expect(head.bytes).toEqual(answer('head', 'T'));
    expect(behind.received).toEqual([]);
    expect(conn.destroyed).toBeGreaterThan(0);
    expect(behind.lostCount).toBe(1);
    expect(head.lostCount).toBe(1);
    expect(empties).toEqual([false]);
    expect(sessions).toHaveLength(2);
  });

  it('keeps a connection whose only session opened a transaction, but queues nothing more on it', () => {
    const { conn, join, write, shape, pipeline } = setup();
    const head = join(false);
    write(head);
    conn.handler!.onServerData(conn as unknown as ServerConnection, answer('begin', 'T'));
    expect(conn.destroyed).toBe(0);
    expect(pipeline()!.mayQueue(shape, 4, performance.now(), false)).toBe(false);
  });

  it('reads and drops what a session that went away was still owed, then gives the connection back', () => {
    const { conn, join, write, empties } = setup();
    const gone = join();
    write(gone);
    const next = join();
    write(next);
    gone.member!.pipeline.leave(gone.member!, false);
    expect(conn.destroyed).toBe(0);
    conn.handler!.onServerData(conn as unknown as ServerConnection, Buffer.concat([answer('gone'), answer('next')]));
    expect(gone.received).toEqual([]);
    expect(next.bytes).toEqual(answer('next'));
    // what it was owed was self-contained: the connection is fine, and goes back
    expect(empties).toEqual([true]);
  });

  it('destroys the connection when a session goes away owing answers and no other client has a unit on it (a long result is not read for no one)', () => {
    const { conn, join, write, empties } = setup();
    const gone = join();
    write(gone);
    const idle = join(); // another session joined, but wrote nothing
    gone.member!.pipeline.leave(gone.member!, false);
    expect(conn.destroyed).toBe(1);
    expect(idle.lostCount).toBe(1);
    expect(empties).toEqual([false]);
  });

  it('gathers the bytes written while the server is busy and writes them at the end of the turn in one write, in order; not while nothing runs, not past the bound', async () => {
    const { conn, join, write } = setup();
    const pipeline = () => ServerPipeline.of(conn as unknown as ServerConnection)!;
    const a = join();
    expect(pipeline().gather(query('SELECT a'))).toBe(false); // nothing runs: written at once by the caller
    write(a);
    const b = join();
    const c = join();
    // what is kept is a copy: the caller's buffer (a client's read buffer) may be reused at once
    const reused = query('SELECT b');
    expect(pipeline().gather(reused)).toBe(true);
    reused.fill(0);
    write(b);
    expect(pipeline().gather(query('SELECT c'))).toBe(true);
    write(c);
    expect(conn.written).toEqual([]);
    await new Promise((resolve) => setImmediate(resolve));
    expect(conn.written).toEqual([Buffer.concat([query('SELECT b'), query('SELECT c')])]);
    // past the bound: what was kept goes first, then the caller writes the big one itself
    expect(pipeline().gather(query('SELECT d'))).toBe(true);
    expect(pipeline().gather(Buffer.alloc(20_000))).toBe(false);
    expect(conn.written[1]).toEqual(query('SELECT d'));
    // answered in the order written
    conn.handler!.onServerData(conn as unknown as ServerConnection, Buffer.concat([answer('a'), answer('b'), answer('c')]));
    expect([a.bytes, b.bytes, c.bytes]).toEqual([answer('a'), answer('b'), answer('c')]);
  });

  it('destroys the connection when a session goes away in the middle of writing a unit', () => {
    const { conn, join, write } = setup();
    const running = join();
    write(running);
    const half = join();
    half.member!.pipeline.wrote(half.member!, false);
    half.member!.pipeline.leave(half.member!, false);
    expect(conn.destroyed).toBe(1);
    expect(running.lostCount).toBe(1);
  });

  it('queues only within the depth, behind short self-contained units, behind a head that has not run long, with no cancel pending', () => {
    const { conn, join, write, shape, pipeline } = setup();
    const head = join();
    write(head);
    const now = performance.now();
    const p = pipeline()!;
    expect(p.mayQueue(shape, 2, now, false)).toBe(true);
    expect(p.mayQueue(shape, 1, now, false)).toBe(false);
    // a shape without a sample, or a slow one, is not queued
    expect(p.mayQueue({}, 4, now, false)).toBe(false);
    const slow = {};
    ServerPipeline.latency.set(slow, PIPELINE_MAX_LATENCY_MS * 2);
    expect(p.mayQueue(slow, 4, now, false)).toBe(false);
    // the unit running has run long already
    expect(p.mayQueue(shape, 4, now + PIPELINE_MAX_LATENCY_MS + 1, false)).toBe(false);
    conn.cancelsPending = true;
    expect(p.mayQueue(shape, 4, now, false)).toBe(false);
    conn.cancelsPending = false;
    // a unit that was not placed as self-contained closes the connection to newcomers
    const other = join(true, null);
    write(other);
    expect(p.mayQueue(shape, 8, now, false)).toBe(false);
  });

  it('does not queue behind a session that has written part of a unit, nor behind a slow one', () => {
    const { join, write, shape, pipeline } = setup();
    const head = join();
    head.member!.pipeline.wrote(head.member!, false);
    expect(pipeline()!.mayQueue(shape, 4, performance.now(), false)).toBe(false);
    head.member!.pipeline.wrote(head.member!, true);
    expect(pipeline()!.mayQueue(shape, 4, performance.now(), false)).toBe(true);
    const slowShape = {};
    ServerPipeline.latency.set(slowShape, 50);
    const slow = join(true, slowShape);
    write(slow);
    expect(pipeline()!.mayQueue(shape, 4, performance.now(), false)).toBe(false);
  });

  it('lets a cancel reach the server only for the unit running now', () => {
    const { conn, join, write } = setup();
    const head = join();
    write(head);
    const behind = join();
    write(behind);
    expect(head.member!.pipeline.isRunning(head.member!)).toBe(true);
    expect(behind.member!.pipeline.isRunning(behind.member!)).toBe(false);
    conn.handler!.onServerData(conn as unknown as ServerConnection, answer('head'));
    expect(behind.member!.pipeline.isRunning(behind.member!)).toBe(true);
  });

  it("writes again, silently, a unit behind a cancelled one that the cancel hit instead (57014 with nothing but heads before it), however the answers are cut", () => {
    for (const step of [1, 3, 1000]) {
      const { conn, join, write, sessions } = setup();
      const a = join();
      write(a);
      const b = join();
      const bUnit = query('SELECT b');
      write(b, bUnit);
      const c = join();
      write(c);
      expect(a.member!.pipeline.cancelling(a.member!)).toBe(true);
      const rerunsBefore = ServerPipeline.rerunUnits;
      // a finished before the signal landed; the cancel hit b; c ran
      feed(conn, Buffer.concat([answer('a'), cancelled('b'), answer('c')]), step);
      expect(a.bytes).toEqual(answer('a'));
      expect(b.received).toEqual([]);
      expect(c.bytes).toEqual(answer('c'));
      expect(conn.written).toEqual([bUnit]);
      expect(ServerPipeline.rerunUnits - rerunsBefore).toBe(1);
      // b's unit ran again at the end of the line: b gets that answer only
      feed(conn, answer('b'), step);
      expect(b.bytes).toEqual(answer('b'));
      expect(sessions.every((s) => s.lostCount === 0)).toBe(true);
      expect(conn.destroyed).toBe(0);
    }
  });

  it('writes again an extended run hit by a cancel meant for the unit ahead, without a named Parse that completed (its ParseComplete goes to the session first), unless it binds an unnamed statement parsed before it', () => {
    const parse = (statement: string) => frame('P', `${statement}\0SELECT 1\0\0\0`);
    const bind = (statement: string) => frame('B', `p\0${statement}\0\0\0\0\0\0\0`);
    const tail = Buffer.concat([frame('E', 'p\0\0\0\0\0'), frame('S')]);
    const run = (statement: string, withParse: boolean) => Buffer.concat([withParse ? parse(statement) : Buffer.alloc(0), bind(statement), tail]);
    const parseCompletes = (n: number) => Buffer.concat(Array.from({ length: n }, () => frame('1')));
    const cases = [
      { unit: run('', true), parsed: 1, again: run('', true), owed: 0 },
      { unit: run('s1', true), parsed: 1, again: run('s1', false), owed: 1 },
      { unit: run('s1', true), parsed: 0, again: run('s1', true), owed: 0 },
      { unit: run('s1', false), parsed: 0, again: run('s1', false), owed: 0 },
      { unit: run('', false), parsed: 0, again: undefined, owed: 0 },
      // two Parses, the first one completed: only it is left out
      { unit: Buffer.concat([parse('s1'), parse('s2'), bind('s2'), tail]), parsed: 1, again: Buffer.concat([parse('s2'), bind('s2'), tail]), owed: 1 },
      // an unnamed Parse is written again even when it completed (another unit may have replaced it since)
      { unit: Buffer.concat([parse(''), parse('s2'), bind(''), tail]), parsed: 2, again: Buffer.concat([parse(''), bind(''), tail]), owed: 1 },
    ];
    for (const { unit, parsed, again, owed } of cases) {
      const { conn, b } = behindCancelled(unit);
      const bAnswer = Buffer.concat([parseCompletes(parsed), error('57014'), ready('I')]);
      feed(conn, Buffer.concat([answer('a'), bAnswer]), 1000);
      expect(conn.written).toEqual(again === undefined ? [] : [again]);
      expect(b.bytes).toEqual(again === undefined ? bAnswer : parseCompletes(owed));
      if (again === undefined) continue;
      // the answer of what was written again completes what the session is owed
      const rest = Buffer.concat([parseCompletes(parsed - owed), frame('2'), row('1'), frame('C', 'SELECT 1\0'), ready('I')]);
      feed(conn, rest, 3);
      expect(b.bytes).toEqual(Buffer.concat([parseCompletes(owed), rest]));
    }
  });

  it('writes again a unit the cancel hit between two of its rows (the rows are held: its client sees them once)', () => {
    for (const step of [1, 4, 1000]) {
      const bUnit = query('SELECT b');
      const { conn, b } = behindCancelled(bUnit);
      feed(conn, Buffer.concat([answer('a'), frame('T', 'head of b\0'), row('b1'), row('b2'), error('57014'), ready('I')]), step);
      expect(b.received).toEqual([]);
      expect(conn.written).toEqual([bUnit]);
      const whole = Buffer.concat([frame('T', 'head of b\0'), row('b1'), row('b2'), row('b3'), frame('C', 'SELECT 3\0'), ready('I')]);
      feed(conn, whole, step);
      expect(b.bytes).toEqual(whole);
    }
  });

  it('hands a 57014 on as it is when the client asked for the cancel itself, after a statement completed, past the bound of a held answer, or when no cancel was sent', () => {
    // b's own client asked (while queued: not sent, yet the cancel that hits it is one it wanted)
    {
      const { conn, join, write } = setup();
      const a = join();
      write(a);
      const b = join();
      write(b);
      expect(b.member!.pipeline.cancelling(b.member!)).toBe(false);
      a.member!.pipeline.cancelling(a.member!);
      feed(conn, Buffer.concat([answer('a'), cancelled('b')]), 2);
      expect(b.bytes).toEqual(cancelled('b'));
      expect(conn.written).toEqual([]);
    }
    // a statement completed before the cancel (its outcome reached b's client): it cannot run again unseen
    {
      const { conn, b } = behindCancelled();
      const partial = Buffer.concat([frame('T', 'head of b\0'), row('b'), frame('C', 'SELECT 1\0'), error('57014'), ready('I')]);
      feed(conn, Buffer.concat([answer('a'), partial]), 2);
      expect(b.bytes).toEqual(partial);
      expect(conn.written).toEqual([]);
    }
    // rows past the bound of a held answer went on to b's client: the same
    {
      const { conn, b } = behindCancelled();
      const rows = Buffer.concat(Array.from({ length: Math.ceil((2 * MAX_HELD_BYTES) / 100) }, () => row('x'.repeat(90))));
      const partial = Buffer.concat([frame('T', 'head of b\0'), rows, error('57014'), ready('I')]);
      feed(conn, Buffer.concat([answer('a'), partial]), 4096);
      expect(b.bytes).toEqual(partial);
      expect(conn.written).toEqual([]);
    }
    // no cancel was sent on this connection (a statement_timeout, say): nothing is held or rerun
    {
      const { conn, join, write } = setup();
      const a = join();
      write(a);
      const b = join();
      write(b);
      feed(conn, Buffer.concat([answer('a'), cancelled('b')]), 1);
      expect(b.bytes).toEqual(cancelled('b'));
      expect(conn.written).toEqual([]);
    }
  });

  it('holds nothing any more once the connection had nothing queued with the cancel taken, and holds what is written while it is on its way', () => {
    const { conn, join, write } = setup(); // leaveAfterAnswer: a leaves, the pipeline stays with b
    const b = join(false);
    const a = join();
    write(a);
    a.member!.pipeline.cancelling(a.member!);
    conn.cancelsPending = true;
    feed(conn, answer('a'), 1000);
    // still on its way: b's unit, written now on an empty line, may still be hit
    write(b);
    feed(conn, cancelled('b'), 1000);
    expect(conn.written.length).toBe(1);
    expect(b.received).toEqual([]);
    // a's one cancel is accounted for, yet one is still on its way (sent earlier, say): the unit written again is held too
    feed(conn, cancelled('b'), 1000);
    expect(conn.written.length).toBe(2);
    expect(b.received).toEqual([]);
    conn.cancelsPending = false;
    feed(conn, answer('b'), 1000);
    expect(b.bytes).toEqual(answer('b'));

    // taken, and nothing was queued when a's answer came: a later 57014 is not a's (a statement_timeout, say)
    const later = setup();
    const y = later.join(false);
    const x = later.join();
    later.write(x);
    x.member!.pipeline.cancelling(x.member!);
    feed(later.conn, answer('x'), 1000);
    later.write(y);
    feed(later.conn, cancelled('y'), 1000);
    expect(later.conn.written).toEqual([]);
    expect(y.bytes).toEqual(cancelled('y'));
  });

  it('writes a unit hit by cancels meant for others again at most a few times, and not behind a unit half written', () => {
    const { conn, join, write } = setup();
    const a = join();
    write(a);
    const b = join();
    write(b);
    // five cancels of a, each landing on b's unit (as if a's client kept cancelling; they are still on their way)
    for (let i = 0; i < 5; i++) a.member!.pipeline.cancelling(a.member!);
    conn.cancelsPending = true;
    feed(conn, answer('a'), 7);
    for (let i = 0; i < 3; i++) feed(conn, cancelled('b'), 7);
    expect(conn.written.length).toBe(3);
    expect(b.received).toEqual([]);
    feed(conn, cancelled('b'), 7);
    expect(conn.written.length).toBe(3);
    expect(b.bytes).toEqual(cancelled('b'));

    const second = setup();
    const x = second.join();
    second.write(x);
    const y = second.join();
    second.write(y);
    const z = second.join();
    x.member!.pipeline.cancelling(x.member!);
    z.member!.pipeline.wrote(z.member!, false); // z is in the middle of writing a unit
    feed(second.conn, Buffer.concat([answer('x'), cancelled('y')]), 1000);
    expect(second.conn.written).toEqual([]);
    expect(y.bytes).toEqual(cancelled('y'));
  });

  it('pauses the connection for a client far behind, and only until it caught up', () => {
    const { conn, join, write, shape, pipeline } = setup();
    const a = join();
    write(a);
    const b = join();
    a.member!.pipeline.hold(a.member!);
    expect(conn.socket.paused).toBe(true);
    expect(pipeline()!.mayQueue(shape, 4, performance.now(), false)).toBe(false);
    b.member!.pipeline.hold(b.member!);
    a.member!.pipeline.unhold(a.member!);
    expect(conn.socket.paused).toBe(true);
    b.member!.pipeline.unhold(b.member!);
    expect(conn.socket.paused).toBe(false);
  });

  it('stops taking units, once it took its share, while others wait for the pool', () => {
    const { join, write, shape, pipeline, conn } = setup();
    // a session that keeps the connection (it has more to do) while others come and go
    join(false);
    for (let i = 0; i < 31; i++) {
      write(join());
      conn.handler!.onServerData(conn as unknown as ServerConnection, answer(`u${i}`));
    }
    expect(pipeline()!.mayQueue(shape, 4, performance.now(), true)).toBe(true);
    write(join());
    conn.handler!.onServerData(conn as unknown as ServerConnection, answer('u31'));
    expect(pipeline()!.mayQueue(shape, 4, performance.now(), false)).toBe(true);
    expect(pipeline()!.mayQueue(shape, 4, performance.now(), true)).toBe(false);
    // and it stays closed until it empties and goes back to the pool
    expect(pipeline()!.mayQueue(shape, 4, performance.now(), false)).toBe(false);
  });
});

describe('which units may share a connection', () => {
  const pool = { pipeline_depth: 4, mode: 'transaction' } as Config['pool'];
  const read = { route: 'replica', pin: false, reason: 'SELECT', effects: [], statements: 1, userFunctions: [] } as unknown as Classification;

  function factsFor(messages: Buffer[], overrides: Partial<{ status: number; beginDeferred: boolean; orphaned: boolean; pinned: boolean }> = {}): PipeliningFacts {
    const reader = new FrameReader();
    reader.push(Buffer.concat(messages));
    reader.next();
    return {
      reader,
      tx: { status: overrides.status ?? 0x49, beginDeferred: overrides.beginDeferred ?? false, orphaned: overrides.orphaned ?? false },
      pinned: () => overrides.pinned ?? false,
    };
  }
  const query = frame('Q', 'SELECT 1\0');
  const run = [frame('P', '\0SELECT $1\0\0\0'), frame('B', '\0\0\0\0\0\0\0\0'), frame('D', 'P\0'), frame('E', '\0\0\0\0\0'), frame('S')];

  it('takes a simple Query of one statement without session effect, outside a transaction', () => {
    expect(pipelineShape(pool, factsFor([query]), read)).toBe(read);
    expect(pipelineShape({ ...pool, pipeline_depth: 1 }, factsFor([query]), read)).toBeUndefined();
    expect(pipelineShape({ ...pool, pipeline_depth: 0 }, factsFor([query]), read)).toBeUndefined();
    expect(pipelineShape({ ...pool, mode: 'session' }, factsFor([query]), read)).toBeUndefined();
    expect(pipelineShape(pool, factsFor([query], { status: 0x54 }), read)).toBeUndefined();
    expect(pipelineShape(pool, factsFor([query], { beginDeferred: true }), read)).toBeUndefined();
    expect(pipelineShape(pool, factsFor([query], { pinned: true }), read)).toBeUndefined();
    expect(pipelineShape(pool, factsFor([query], { orphaned: true }), read)).toBeUndefined();
    expect(pipelineShape(pool, factsFor([query]), { ...read, statements: 2 })).toBeUndefined();
    expect(pipelineShape(pool, factsFor([query]), { ...read, pin: true })).toBeUndefined();
    expect(pipelineShape(pool, factsFor([query]), { ...read, effects: [{ type: 'begin' }] } as unknown as Classification)).toBeUndefined();
    expect(pipelineShape(pool, factsFor([query]), undefined)).toBeUndefined();
  });

  it('takes an extended run only when all of it, up to its Sync, is buffered and runs the one statement it was placed by', () => {
    expect(pipelineShape(pool, factsFor(run), read)).toBe(read);
    expect(pipelineShape(pool, factsFor(run.slice(0, 4)), read)).toBeUndefined();
    expect(pipelineShape(pool, factsFor([...run.slice(0, 2), frame('C', 'S\0'), ...run.slice(2)]), read)).toBeUndefined();
    expect(pipelineShape(pool, factsFor([...run.slice(0, 2), query, ...run.slice(2)]), read)).toBeUndefined();
    const bytes = Buffer.concat(run.slice(1));
    for (let cut = 0; cut < bytes.length; cut++) expect(isExtendedRunBuffered(run[0]!, bytes.subarray(0, cut))).toBe(false);
    expect(isExtendedRunBuffered(run[0]!, bytes)).toBe(true);
    // a run that starts with a prepared statement's Bind
    expect(isExtendedRunBuffered(frame('B', '\0s1\0\0\0\0\0\0\0'), Buffer.concat([frame('E', '\0\0\0\0\0'), frame('S')]))).toBe(true);
    // not a run of the one statement it was placed by
    expect(isExtendedRunBuffered(frame('C', 'S\0'), bytes)).toBe(false);
    expect(isExtendedRunBuffered(frame('D', 'S\0'), bytes)).toBe(false);
    const setRun = [frame('P', 's2\0SET search_path = x\0\0\0'), frame('B', '\0s2\0\0\0\0\0\0\0'), frame('E', '\0\0\0\0\0')];
    expect(isExtendedRunBuffered(run[0]!, Buffer.concat([...run.slice(1, 4), ...setRun, frame('S')]))).toBe(false);
    // a Bind of another statement than the one parsed, or a second Execute
    expect(isExtendedRunBuffered(frame('P', 's1\0SELECT 1\0\0\0'), Buffer.concat([frame('B', '\0s2\0\0\0\0\0\0\0'), frame('E', '\0\0\0\0\0'), frame('S')]))).toBe(false);
    expect(isExtendedRunBuffered(frame('P', 's1\0SELECT 1\0\0\0'), Buffer.concat([frame('B', '\0s1\0\0\0\0\0\0\0'), frame('E', '\0\0\0\0\0'), frame('S')]))).toBe(true);
    expect(isExtendedRunBuffered(run[0]!, Buffer.concat([...run.slice(1, 4), frame('E', '\0\0\0\0\0'), frame('S')]))).toBe(false);
  });
});

function query(sql: string): Buffer {
  return frame('Q', `${sql}\0`);
}

/** An ErrorResponse with SQLSTATE `code`. */
function error(code: string, message = 'canceling statement due to user request'): Buffer {
  return frame('E', `SERROR\0C${code}\0M${message}\0\0`);
}

/** A unit hit by a cancel: its head, the 57014, ReadyForQuery. */
function cancelled(text: string): Buffer {
  return Buffer.concat([frame('T', `head of ${text}\0`), error('57014'), ready('I')]);
}

function feed(conn: FakeConn, stream: Buffer, step: number): void {
  for (const chunk of splitEvery(stream, step)) conn.handler!.onServerData(conn as unknown as ServerConnection, chunk);
}

function splitEvery(data: Buffer, step: number): Buffer[] {
  const parts: Buffer[] = [];
  for (let at = 0; at < data.length; at += step) parts.push(data.subarray(at, at + step));
  return parts;
}
