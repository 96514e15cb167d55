import fc from 'fast-check';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { Conversation, sslRequest, startupWithLength } from '../support/hardening-wire.js';
import { primaryOnly, RawClient, serialize, startupPacket, type BackendMessage } from '../support/protocol-client.js';
import { startRelay, type Relay } from '../support/relay.js';
import { queryNode, sharedCluster } from '../support/shared-cluster.js';

// Malformed protocol against a live pgrelay (in front of the shared cluster's primary): random and
// mutated frames before startup, during it and after authentication. Every bad input gets a FATAL
// ErrorResponse (08P01 where the protocol allows one) and a closed socket, or — when the client
// itself gives up half way — a clean close; pgrelay stays up, and a bystander client's query in
// the same run succeeds. The file has a database of its own, so that pg_stat_activity rows of
// that database are exactly pgrelay's server connections from these tests.
const cluster = sharedCluster();
const database = 'hardening_proto';
const MAX_MESSAGE_BYTES = 1 << 20;
/** how long pgrelay may take to close a socket after bad input (generous: the machine is shared) */
const CLOSE_BOUND_MS = 20_000;
const POOL_SIZE = 4;

let relay: Relay;
let bystander: pg.Client;
let bystanderQueries = 0;
const login = () => ({ user: cluster.user, password: cluster.password, database });

beforeAll(async () => {
  await queryNode(cluster, 'primary', `DROP DATABASE IF EXISTS ${database} WITH (FORCE)`, [], true);
  await queryNode(cluster, 'primary', `CREATE DATABASE ${database} OWNER ${cluster.user}`, [], true);
  relay = await startRelay(primaryOnly(cluster), {
    pool: { size: POOL_SIZE },
    client: { max_message_bytes: MAX_MESSAGE_BYTES, startup_timeout_ms: 15_000 },
  });
  bystander = new pg.Client({ connectionString: relay.url({ database }) });
  await bystander.connect();
});

afterAll(async () => {
  await bystander?.end().catch(() => undefined);
  await relay?.stop();
  await queryNode(cluster, 'primary', `DROP DATABASE IF EXISTS ${database} WITH (FORCE)`, [], true);
});

/** Another client's query, run alongside each bad input: it must succeed. */
async function bystanderQuery(): Promise<void> {
  const n = ++bystanderQueries;
  const result = await bystander.query('SELECT $1::int + 1 AS v', [n]);
  expect(result.rows[0].v).toBe(n + 1);
}

/** Sends `bytes` before any startup; `end` half-closes afterwards (a client that gives up). */
async function preStartup(bytes: Buffer[], options: { end: boolean; negotiation?: number }): Promise<Conversation> {
  const c = await Conversation.open(relay.port, options.negotiation ?? 0);
  for (const b of bytes) await c.write(b);
  if (options.end) c.end();
  const closed = await c.waitClosed(CLOSE_BOUND_MS);
  expect(closed, 'pgrelay closed the connection').toBe(true);
  return c;
}

/** A logged-in raw client; `send` writes raw bytes after authentication. */
async function loggedIn(): Promise<RawClient> {
  return RawClient.connect(relay.port, login());
}

/** Messages until pgrelay closes the socket (fails if it does not within the bound). */
async function untilClosed(client: RawClient): Promise<BackendMessage[]> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<'open'>((resolve) => (timer = setTimeout(() => resolve('open'), CLOSE_BOUND_MS)));
  const result = await Promise.race([client.closedByServer(), bound]);
  clearTimeout(timer);
  if (result === 'open') {
    client.destroy();
    throw new Error('pgrelay did not close the connection');
  }
  return result;
}

function errorsOf(messages: BackendMessage[]): { severity: string; code: string }[] {
  return messages
    .filter((m) => m.type === 'E')
    .map((m) => {
      const fields = new Map<string, string>();
      let at = 0;
      while (at < m.body.length && m.body[at] !== 0) {
        const end = m.body.indexOf(0, at + 1);
        fields.set(String.fromCharCode(m.body[at]!), m.body.toString('utf8', at + 1, end));
        at = end + 1;
      }
      return { severity: fields.get('S') ?? '', code: fields.get('C') ?? '' };
    });
}

const FRONTEND_CODES = new Set('BCDEFHPQSXcdf'.split('').map((c) => c.charCodeAt(0)));
const SPECIAL_STARTUP_CODES = new Set([80877102, 80877103, 80877104]);
const int32 = fc.integer({ min: -0x80000000, max: 0x7fffffff });

describe('before and during startup', () => {
  it('refuses a startup length below 8 or above 10,000 with 08P01 from the length word alone', async () => {
    const badLength = fc.oneof(fc.integer({ min: -0x80000000, max: 7 }), fc.integer({ min: 10_001, max: 0x7fffffff }));
    await fc.assert(
      fc.asyncProperty(badLength, int32, async (length, code) => {
        const [c] = await Promise.all([preStartup([startupWithLength(length, code)], { end: false }), bystanderQuery()]);
        expect(c.errors()).toEqual([expect.objectContaining({ severity: 'FATAL', code: '08P01' })]);
      }),
      { numRuns: 60 },
    );
  });

  it('refuses an unsupported protocol version with 0A000', async () => {
    const code = int32.filter((c) => c >>> 16 !== 3 && !SPECIAL_STARTUP_CODES.has(c));
    await fc.assert(
      fc.asyncProperty(code, fc.uint8Array({ maxLength: 200 }), async (version, body) => {
        const [c] = await Promise.all([preStartup([startupWithLength(8 + body.length, version, Buffer.from(body))], { end: false }), bystanderQuery()]);
        expect(c.errors()).toEqual([expect.objectContaining({ severity: 'FATAL', code: '0A000' })]);
      }),
      { numRuns: 60 },
    );
  });

  it('refuses a startup packet with an unterminated name or value (08P01) or without a user (28000)', async () => {
    const text = fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 40 }).filter((s) => !s.includes('\0'));
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(text, text), { maxLength: 4 }), text, fc.constantFrom('unterminated name', 'unterminated value', 'no user'), async (pairs, tail, kind) => {
        const params = pairs.filter(([k]) => k !== 'user');
        let body = Buffer.concat(params.flatMap(([k, v]) => [Buffer.from(`${k}\0`), Buffer.from(`${v}\0`)]));
        if (kind === 'unterminated name') body = Buffer.concat([body, Buffer.from(tail)]);
        else if (kind === 'unterminated value') body = Buffer.concat([body, Buffer.from(`${tail}\0${tail}`)]);
        else body = Buffer.concat([body, Buffer.from([0])]);
        const [c] = await Promise.all([preStartup([startupWithLength(8 + body.length, 196608, body)], { end: false }), bystanderQuery()]);
        expect(c.errors()).toEqual([expect.objectContaining({ severity: 'FATAL', code: kind === 'no user' ? '28000' : '08P01' })]);
      }),
      { numRuns: 60 },
    );
  });

  it('applies startup parameters with any value exactly (no SQL injection), or refuses them with a FATAL error', async () => {
    const value = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 300 }),
      fc.constantFrom("'; DROP DATABASE app; --", "\\'; SELECT pg_sleep(100); --", '$$', "E'\\x'", 'x'.repeat(3000)),
    ).filter((v) => !v.includes('\0'));
    const outcomes = { applied: 0, refused: 0 };
    const name = fc.oneof(fc.stringMatching(/^[a-z]{1,10}$/).map((n) => `hardening.${n}`), fc.string({ unit: 'grapheme', minLength: 1, maxLength: 20 }).filter((n) => !n.includes('\0') && !['user', 'database', 'options', 'replication'].includes(n) && !n.startsWith('_pq_.')));
    await fc.assert(
      fc.asyncProperty(fc.uniqueArray(fc.tuple(name, value), { selector: ([n]) => n.toLowerCase(), minLength: 1, maxLength: 3 }), async (params) => {
        let client: RawClient | undefined;
        try {
          client = await RawClient.connect(relay.port, { ...login(), params: Object.fromEntries(params) });
        } catch (error) {
          // an unknown or invalid setting: refused as PostgreSQL refuses it, with its SQLSTATE
          const code = (error as { code?: string }).code;
          expect(code, String(error)).toMatch(/^(42704|22023|42602|42601|0A000|55P02|22P02|42939)$/);
          expect((error as { severity?: string }).severity).toBe('FATAL');
          expect(params.some(([n]) => !n.startsWith('hardening.'))).toBe(true);
          outcomes.refused++;
          await bystanderQuery();
          return;
        }
        try {
          for (const [n, v] of params) {
            if (!n.startsWith('hardening.')) continue;
            const answer = await client.query(`SELECT current_setting('${n}') AS v`);
            const row = answer.find((m) => m.type === 'D');
            expect(row, JSON.stringify(answer.map((m) => m.type))).toBeDefined();
            const length = row!.body.readInt32BE(2);
            expect(row!.body.toString('utf8', 6, 6 + length)).toBe(v);
          }
        } finally {
          client.destroy();
        }
        outcomes.applied++;
        await bystanderQuery();
      }),
      { numRuns: 60 },
    );
    // both outcomes happened: the property was not decided by one path only
    expect(outcomes.applied, JSON.stringify(outcomes)).toBeGreaterThan(5);
    expect(outcomes.refused, JSON.stringify(outcomes)).toBeGreaterThan(5);
  });

  it('refuses an overlong startup packet (parameters over 10,000 bytes) before it is complete', async () => {
    const c = await Conversation.open(relay.port);
    const packet = startupPacket(196608, { user: cluster.user, database, application_name: 'x'.repeat(20_000) });
    await c.write(packet.subarray(0, 8));
    expect(await c.waitClosed(CLOSE_BOUND_MS)).toBe(true);
    expect(c.errors()).toEqual([expect.objectContaining({ severity: 'FATAL', code: '08P01', message: `invalid startup packet length ${packet.length}` })]);
    await bystanderQuery();
  });

  it('refuses a typed message sent before the startup packet', async () => {
    for (const first of [serialize.query('SELECT 1'), serialize.sync(), serialize.end(), serialize.parse({ text: 'SELECT 1' })]) {
      const c = await preStartup([first], { end: false });
      expect(c.errors()).toEqual([expect.objectContaining({ severity: 'FATAL', code: '08P01' })]);
    }
    await bystanderQuery();
  });

  it('refuses unencrypted bytes sent right behind an SSLRequest or GSSENCRequest (08P01)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.boolean(), fc.uint8Array({ minLength: 1, maxLength: 300 }), async (gss, garbage) => {
        const [c] = await Promise.all([preStartup([Buffer.concat([sslRequest(gss), garbage])], { end: false }), bystanderQuery()]);
        expect(c.errors()).toEqual([expect.objectContaining({ severity: 'FATAL', code: '08P01', message: 'received unencrypted data after SSL request' })]);
      }),
      { numRuns: 40 },
    );
  });

  it('answers N to SSLRequest without TLS, then treats garbage as a bad startup packet', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 300 }), async (garbage) => {
        const c = await Conversation.open(relay.port, 1);
        await c.write(sslRequest());
        await vi.waitFor(() => expect(c.negotiation).toBe('N'), { timeout: CLOSE_BOUND_MS });
        await c.write(Buffer.from(garbage));
        c.end();
        expect(await c.waitClosed(CLOSE_BOUND_MS)).toBe(true);
        for (const e of c.errors()) {
          expect(e.severity).toBe('FATAL');
          expect(['08P01', '0A000', '28000', '28P01']).toContain(e.code);
        }
        await bystanderQuery();
      }),
      { numRuns: 40 },
    );
  });

  it('survives arbitrary bytes as a first packet: every answer is a FATAL error or the start of authentication', async () => {
    const garbage = fc.oneof(
      fc.uint8Array({ minLength: 1, maxLength: 400 }),
      // a plausible length word in front of random bytes reaches the code and the parameters
      fc.uint8Array({ minLength: 4, maxLength: 400 }).map((b) => {
        const out = Buffer.from(b);
        out.writeInt32BE(out.length, 0);
        return new Uint8Array(out);
      }),
    );
    await fc.assert(
      fc.asyncProperty(garbage, async (bytes) => {
        const [c] = await Promise.all([preStartup([Buffer.from(bytes)], { end: true }), bystanderQuery()]);
        for (const m of c.messages()) expect(['E', 'R', 'v']).toContain(m.type);
        for (const e of c.errors()) {
          expect(e.severity).toBe('FATAL');
          expect(['08P01', '0A000', '28000', '28P01']).toContain(e.code);
        }
      }),
      { numRuns: 150 },
    );
  });

  it('refuses a malformed password message during the SCRAM exchange with a FATAL error', async () => {
    const body = fc.uint8Array({ maxLength: 200 });
    await fc.assert(
      fc.asyncProperty(body, fc.constantFrom(0x70, 0x51, 0x58, 0x00), async (garbage, code) => {
        const c = await Conversation.open(relay.port);
        await c.write(startupPacket(196608, { user: cluster.user, database }));
        await vi.waitFor(() => expect(c.messages().map((m) => m.type)).toContain('R'), { timeout: CLOSE_BOUND_MS });
        const message = Buffer.alloc(5 + garbage.length);
        message[0] = code;
        message.writeInt32BE(4 + garbage.length, 1);
        Buffer.from(garbage).copy(message, 5);
        await c.write(message);
        expect(await c.waitClosed(CLOSE_BOUND_MS)).toBe(true);
        const errors = c.errors();
        expect(errors).toHaveLength(1);
        expect(errors[0]!.severity).toBe('FATAL');
        expect(['08P01', '0A000', '28000', '28P01']).toContain(errors[0]!.code);
        await bystanderQuery();
      }),
      { numRuns: 60 },
    );
  });
});

describe('after authentication', () => {
  it('refuses an unknown message type with 08P01 and closes', async () => {
    const code = fc.integer({ min: 0, max: 255 }).filter((c) => !FRONTEND_CODES.has(c));
    await fc.assert(
      fc.asyncProperty(code, fc.uint8Array({ maxLength: 100 }), async (type, body) => {
        const client = await loggedIn();
        const message = Buffer.alloc(5 + body.length);
        message[0] = type;
        message.writeInt32BE(4 + body.length, 1);
        Buffer.from(body).copy(message, 5);
        client.send(message);
        const [messages] = await Promise.all([untilClosed(client), bystanderQuery()]);
        expect(errorsOf(messages)).toEqual([{ severity: 'FATAL', code: '08P01' }]);
      }),
      { numRuns: 40 },
    );
  });

  it('refuses a length below 4 or above client.max_message_bytes from the header alone', async () => {
    const badLength = fc.oneof(fc.integer({ min: -0x80000000, max: 3 }), fc.integer({ min: MAX_MESSAGE_BYTES + 1, max: 0x7fffffff }));
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...FRONTEND_CODES), badLength, async (type, length) => {
        const client = await loggedIn();
        const header = Buffer.alloc(5);
        header[0] = type;
        header.writeInt32BE(length, 1);
        client.send(header);
        const [messages] = await Promise.all([untilClosed(client), bystanderQuery()]);
        expect(errorsOf(messages)).toEqual([{ severity: 'FATAL', code: '08P01' }]);
      }),
      { numRuns: 40 },
    );
  });

  it('closes cleanly when a client sends part of a message and gives up', async () => {
    const valid = fc.constantFrom(
      serialize.query('SELECT 1'),
      Buffer.concat([serialize.parse({ name: 'trunc', text: 'SELECT $1::int' }), serialize.bind({ statement: 'trunc', values: ['1'] }), serialize.execute({}), serialize.sync()]),
    );
    await fc.assert(
      fc.asyncProperty(valid, fc.nat(), async (bytes, cut) => {
        const client = await loggedIn();
        client.send(bytes.subarray(0, 1 + (cut % (bytes.length - 1))));
        client.socket.end();
        const [messages] = await Promise.all([untilClosed(client), bystanderQuery()]);
        for (const e of errorsOf(messages)) expect(e.code).toMatch(/^[0-9A-Z]{5}$/);
      }),
      { numRuns: 40 },
    );
  });

  it('survives mutated extended and simple protocol traffic (flipped, dropped and inserted bytes)', async () => {
    const base = fc.constantFrom(
      serialize.query("SELECT 'abc' AS a, 42 AS b"),
      serialize.query('BEGIN; SELECT 1'),
      Buffer.concat([serialize.parse({ name: 'm1', text: 'SELECT $1::int + 1', types: [23] }), serialize.bind({ statement: 'm1', values: ['41'] }), serialize.describe({ type: 'P' }), serialize.execute({}), serialize.sync()]),
      Buffer.concat([serialize.parse({ text: 'SELECT $1::text' }), serialize.bind({ values: ['x'] }), serialize.execute({ rows: 1 }), serialize.flush(), serialize.sync()]),
      Buffer.concat([serialize.close({ type: 'S', name: 'm1' }), serialize.sync(), serialize.query('SELECT 2')]),
    );
    const mutation = fc.oneof(
      fc.record({ op: fc.constant('set' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
      fc.record({ op: fc.constant('delete' as const), at: fc.nat(), length: fc.integer({ min: 1, max: 8 }) }),
      fc.record({ op: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }) }),
    );
    await fc.assert(
      fc.asyncProperty(base, fc.array(mutation, { minLength: 1, maxLength: 4 }), async (original, mutations) => {
        let bytes = Buffer.from(original);
        for (const m of mutations) {
          const at = m.at % (bytes.length + 1);
          if (m.op === 'set' && at < bytes.length) bytes[at] = m.value;
          else if (m.op === 'delete') bytes = Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + m.length)]);
          else if (m.op === 'insert') bytes = Buffer.concat([bytes.subarray(0, at), m.bytes, bytes.subarray(at)]);
        }
        const client = await loggedIn();
        client.send(bytes);
        client.socket.end();
        const [messages] = await Promise.all([untilClosed(client), bystanderQuery()]);
        for (const e of errorsOf(messages)) {
          expect(['ERROR', 'FATAL']).toContain(e.severity);
          expect(e.code).toMatch(/^[0-9A-Z]{5}$/);
          expect(e.code).not.toBe('58000'); // pgrelay's "internal error": a bug, never an answer to bad input
        }
      }),
      { numRuns: Number(process.env.PGRELAY_FUZZ_RUNS ?? 150) },
    );
  });

  it('accepts a message just under client.max_message_bytes', async () => {
    const client = await loggedIn();
    try {
      const filler = 'x'.repeat(MAX_MESSAGE_BYTES - 100);
      const messages = await client.query(`SELECT length('${filler}') AS n`);
      const row = messages.find((m) => m.type === 'D')!;
      expect(row.body.toString('utf8', 6)).toBe(String(filler.length));
    } finally {
      client.destroy();
    }
  });

  it('refuses a larger message from its header: closed before its body is sent', async () => {
    const client = await loggedIn();
    const declared = 64 * 1024 * 1024;
    const header = Buffer.alloc(5);
    header[0] = 0x51; // Q
    header.writeInt32BE(declared, 1);
    // the header and the first 64 KiB of the body; the remaining 63.9 MiB are never sent
    client.send(Buffer.concat([header, Buffer.alloc(64 * 1024, 0x20)]));
    const messages = await untilClosed(client);
    expect(errorsOf(messages)).toEqual([{ severity: 'FATAL', code: '08P01' }]);
    const text = messages.find((m) => m.type === 'E')!.body.toString();
    expect(text).toContain(`message of ${declared} bytes exceeds the limit of ${MAX_MESSAGE_BYTES}`);
    await bystanderQuery();
  });

  it('closes a client streaming a 256 MiB message long before the message is through', async () => {
    const client = await loggedIn();
    const declared = 256 * 1024 * 1024;
    const header = Buffer.alloc(5);
    header[0] = 0x51;
    header.writeInt32BE(declared, 1);
    const chunk = Buffer.alloc(256 * 1024, 0x20);
    let sent = 0;
    await new Promise<void>((resolve) => {
      const pump = () => {
        while (!client.closed && sent < declared) {
          sent += chunk.length;
          if (!client.socket.write(sent === chunk.length ? Buffer.concat([header, chunk]) : chunk)) {
            client.socket.once('drain', pump);
            return;
          }
        }
        resolve();
      };
      client.socket.once('close', () => resolve());
      pump();
    });
    await untilClosed(client);
    // what the kernel took before the close: far less than the message
    expect(client.socket.bytesWritten).toBeLessThan(declared / 4);
    await bystanderQuery();
  });
});

describe('after all of the above', () => {
  it('keeps serving: clients gone, no server connection lent or left in a transaction', async () => {
    await vi.waitFor(() => expect(relay.app.frontend.clientCount).toBe(1), { timeout: CLOSE_BOUND_MS });
    const stats = relay.app.pools.all().map((p) => p.stats());
    const active = stats.reduce((n, s) => n + s.active + s.connecting, 0);
    const idle = stats.reduce((n, s) => n + s.idle, 0);
    expect(active).toBe(0);
    // the server side agrees: pgrelay's connections to this database are its idle ones, none in a transaction
    await vi.waitFor(
      async () => {
        const rows = await queryNode<{ state: string; n: number }>(cluster, 'primary', `SELECT state, count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend' GROUP BY state`, [database], true);
        expect(rows).toEqual(idle > 0 ? [{ state: 'idle', n: idle }] : []);
      },
      { timeout: CLOSE_BOUND_MS },
    );
    expect(idle).toBeLessThanOrEqual(POOL_SIZE);
    const fresh = new pg.Client({ connectionString: relay.url({ database }) });
    await fresh.connect();
    try {
      expect((await fresh.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    } finally {
      await fresh.end();
    }
    await bystanderQuery();
    expect(bystanderQueries).toBeGreaterThan(500);
  });
});
