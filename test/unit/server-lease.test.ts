import { EventEmitter } from 'node:events';
import type net from 'node:net';
import { describe, expect, it } from 'vitest';
import type { NodeStatus } from '../../src/cluster/topology.js';
import { ServerLease } from '../../src/frontend/server-lease.js';
import type { Pool } from '../../src/pool/pool.js';
import type { ServerConnection, ServerDataHandler } from '../../src/pool/server-connection.js';

// A session's hold on one server connection, with sockets that only record what happens to them.

class FakeSocket extends EventEmitter {
  readonly writes: Buffer[] = [];
  paused = false;
  corked = 0;
  /** bytes written and not yet "sent" (the write callbacks not yet called) */
  writableLength = 0;
  private callbacks: (() => void)[] = [];
  /** write() returns false (the buffer is full) */
  full = false;

  write(data: Buffer, callback?: () => void): boolean {
    this.writes.push(Buffer.from(data));
    this.writableLength += data.length;
    if (callback) this.callbacks.push(callback);
    return !this.full;
  }

  /** The queued bytes reach the peer. */
  flush(): void {
    this.writableLength = 0;
    const callbacks = this.callbacks;
    this.callbacks = [];
    for (const callback of callbacks) callback();
  }

  pause(): this {
    this.paused = true;
    return this;
  }

  resume(): this {
    this.paused = false;
    return this;
  }

  isPaused(): boolean {
    return this.paused;
  }

  cork(): void {
    this.corked++;
  }

  uncork(): void {}
}

function fakeConn() {
  const socket = new FakeSocket();
  const conn = {
    socket,
    closed: false,
    full: false,
    written: [] as Buffer[],
    handler: undefined as ServerDataHandler | undefined,
    write(data: Buffer): boolean {
      this.written.push(Buffer.from(data));
      return !this.full;
    },
    setHandler(handler: ServerDataHandler) {
      this.handler = handler;
    },
    whenCancelsSettled(fn: () => void) {
      fn();
    },
  };
  return conn;
}

function fakePool() {
  return { released: [] as unknown[], discarded: [] as unknown[], release(c: unknown) { this.released.push(c); }, discard(c: unknown) { this.discarded.push(c); } };
}

function setup(mayRead = true) {
  const client = new FakeSocket();
  const events: string[] = [];
  const lease = new ServerLease(
    { socket: client as unknown as net.Socket, mayReadClient: () => mayRead, drained: () => undefined },
    { started: (n) => events.push(`started ${n.name}`), finished: (n, ms) => events.push(`finished ${n.name} ${ms === undefined ? 'lost' : 'served'}`) },
  );
  const conn = fakeConn();
  const pool = fakePool();
  const node = { name: 'r1' } as NodeStatus;
  const handler = {} as ServerDataHandler;
  lease.attach(conn as unknown as ServerConnection, node, pool as unknown as Pool, handler);
  return { client, lease, conn, pool, events, handler };
}

/** A frame with code `c` and the given body, as a client sends it. */
function frame(code: string, body: string): Buffer {
  const b = Buffer.from(body);
  const head = Buffer.alloc(5);
  head[0] = code.charCodeAt(0);
  head.writeInt32BE(b.length + 4, 1);
  return Buffer.concat([head, b]);
}

describe('ServerLease', () => {
  it('tells the observer when a node starts and finishes serving, and hands the connection its handler', () => {
    const { lease, conn, pool, events, handler } = setup();
    expect(conn.handler).toBe(handler);
    lease.release(true);
    expect(pool.released).toEqual([conn]);
    expect(events).toEqual(['started r1', 'finished r1 served']);
    expect(lease.conn).toBeUndefined();
  });

  it('forwards contiguous client messages of one chunk as one write at the end of the batch, in order with injected ones', () => {
    const { lease, conn } = setup();
    const chunk = Buffer.concat([frame('P', 'a'), frame('B', 'b'), frame('E', 'c'), frame('S', '')]);
    lease.beginBatch();
    lease.forward(chunk, 5, 7);
    lease.forward(chunk, 12, 14);
    lease.inject(Buffer.from('injected'));
    lease.forward(chunk, 19, 21);
    lease.forward(chunk, 26, 26);
    expect(conn.written).toEqual([]);
    lease.endBatch();
    // small pieces are joined into one buffer: one write, no cork
    expect(conn.written.map((b) => b.toString('latin1'))).toEqual([chunk.subarray(0, 14).toString('latin1') + 'injected' + chunk.subarray(14).toString('latin1')]);
    expect(conn.socket.corked).toBe(0);
  });

  it('writes pieces of more than 4 KB in all as they are, corked (no copy of a large message)', () => {
    const { lease, conn } = setup();
    const big = frame('d', 'x'.repeat(5000));
    lease.beginBatch();
    lease.inject(Buffer.from('head'));
    lease.forward(big, 5, big.length);
    lease.endBatch();
    expect(conn.written.map((b) => b.length)).toEqual([4, big.length]);
    expect(conn.socket.corked).toBe(1);
  });

  it('joins the answers gathered during one server chunk into one client write when they are small, and leaves large ones as they are', () => {
    const { lease, conn, client } = setup();
    lease.beginScan();
    lease.toClient(Buffer.from('T'));
    lease.toClient(Buffer.from('D'));
    lease.toClient(Buffer.from('Z'));
    lease.endScan(conn as unknown as ServerConnection, true);
    expect(client.writes.map((b) => b.toString())).toEqual(['TDZ']);
    expect(client.corked).toBe(0);
    client.flush();
    const large = Buffer.alloc(5000, 0x44);
    lease.beginScan();
    lease.toClient(Buffer.from('T'));
    lease.toClient(large);
    lease.endScan(conn as unknown as ServerConnection, true);
    expect(client.writes.slice(1).map((b) => b.length)).toEqual([1, 5000]);
    expect(client.corked).toBe(1);
  });

  it('stops reading the client while the server’s write buffer is full, and reads it again on drain', () => {
    const { lease, conn, client } = setup();
    conn.full = true;
    lease.inject(Buffer.from('COPY data'));
    expect(client.paused).toBe(true);
    expect(lease.serverIsFull).toBe(true);
    conn.socket.emit('drain');
    expect(client.paused).toBe(false);
    expect(lease.serverIsFull).toBe(false);
  });

  it('gives a connection back only once the client has written the bytes it borrowed from it', () => {
    const { lease, conn, pool, client } = setup();
    lease.beginScan();
    lease.toClient(Buffer.from('row 1'));
    lease.toClient(Buffer.from('row 2'));
    lease.endScan(conn as unknown as ServerConnection, true);
    expect(client.writes.map(String)).toEqual(['row 1row 2']);
    expect(lease.heldReads).toBe(true);
    expect(conn.socket.paused).toBe(true);
    lease.release(true);
    expect(pool.released).toEqual([]);
    client.flush();
    expect(pool.released).toEqual([conn]);
    expect(conn.socket.paused).toBe(false);
  });

  it('discards a connection that is lost, not reusable, or still lent bytes to a client that went away', () => {
    const lost = setup();
    lost.lease.lost();
    expect(lost.pool.discarded).toEqual([lost.conn]);
    expect(lost.events).toEqual(['started r1', 'finished r1 lost']);

    const dirty = setup();
    dirty.lease.release(false);
    expect(dirty.pool.discarded).toEqual([dirty.conn]);

    const gone = setup();
    gone.lease.toClient(Buffer.from('row'));
    gone.lease.endScan(gone.conn as unknown as ServerConnection, true);
    gone.lease.release(true);
    gone.lease.closeClient();
    expect(gone.pool.discarded).toEqual([gone.conn]);
    gone.client.flush();
    expect(gone.pool.released).toEqual([]);
  });
});
