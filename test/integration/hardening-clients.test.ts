import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { removeCompiled, startRelayChild, type RelayChild } from '../support/hardening-process.js';
import { Conversation } from '../support/hardening-wire.js';
import { primaryOnly, RawClient, startupPacket } from '../support/protocol-client.js';
import { relayDocument, startRelay, type Relay } from '../support/relay.js';
import { sharedCluster } from '../support/shared-cluster.js';

// Slow, idle and too many clients. pgrelay drops a client that does not finish its startup and
// authentication within client.startup_timeout_ms (however slowly it trickles bytes), refuses
// clients beyond client.max_connections with 53300, and holds thousands of idle authenticated
// clients in bounded memory (measured on pgrelay as a child process, so that its RSS is its own).
const cluster = sharedCluster();
const STARTUP_TIMEOUT_MS = 2000;
/** generous bound for anything pgrelay does by itself (the machine is shared) */
const BOUND_MS = 30_000;
const IDLE_CLIENTS = 2000;

const login = () => ({ user: cluster.user, password: cluster.password, database: cluster.database });

describe('slow clients', () => {
  let relay: Relay;
  beforeAll(async () => {
    relay = await startRelay(primaryOnly(cluster), { client: { startup_timeout_ms: STARTUP_TIMEOUT_MS } });
  });
  afterAll(async () => {
    await relay?.stop();
  });

  it('drops a client that sends its startup packet one byte per second, with 08P01', async () => {
    const packet = startupPacket(196608, { user: cluster.user, database: cluster.database, application_name: 'slowloris' });
    const c = await Conversation.open(relay.port);
    let sent = 0;
    const trickle = setInterval(() => {
      if (sent < packet.length && !c.closed) void c.write(packet.subarray(sent, ++sent));
    }, 1000);
    try {
      expect(await c.waitClosed(BOUND_MS)).toBe(true);
    } finally {
      clearInterval(trickle);
    }
    // closed by pgrelay while most of the packet was still to come
    expect(sent).toBeLessThan(packet.length / 2);
    expect(c.errors()).toEqual([{ severity: 'FATAL', code: '08P01', message: 'canceling authentication due to timeout' }]);
  });

  it('drops a client that stalls in the middle of the SCRAM exchange', async () => {
    const c = await Conversation.open(relay.port);
    await c.write(startupPacket(196608, { user: cluster.user, database: cluster.database }));
    expect(await c.waitClosed(BOUND_MS)).toBe(true);
    const messages = c.messages();
    expect(messages.map((m) => m.type)).toEqual(['R', 'E']);
    expect(messages[0]!.body.readInt32BE(0)).toBe(10); // AuthenticationSASL, then nothing from the client
    expect(c.errors()).toEqual([{ severity: 'FATAL', code: '08P01', message: 'canceling authentication due to timeout' }]);
  });

  it('keeps an authenticated idle client (the startup timeout ends with the startup)', async () => {
    const client = await RawClient.connect(relay.port, login());
    try {
      await new Promise((resolve) => setTimeout(resolve, STARTUP_TIMEOUT_MS * 2));
      expect(client.closed).toBe(false);
      expect((await client.query('SELECT 1')).map((m) => m.type)).toEqual(['T', 'D', 'C', 'Z']);
    } finally {
      client.destroy();
    }
  });
});

describe('client.max_connections', () => {
  let relay: Relay;
  const clients: pg.Client[] = [];
  beforeAll(async () => {
    relay = await startRelay(primaryOnly(cluster), { client: { max_connections: 5, startup_timeout_ms: STARTUP_TIMEOUT_MS } });
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
    await relay?.stop();
  });

  async function connect(): Promise<pg.Client> {
    const client = new pg.Client({ connectionString: relay.url() });
    client.on('error', () => undefined);
    clients.push(client);
    await client.connect();
    return client;
  }

  it('refuses the client beyond the limit with 53300 and takes one again when a slot frees', async () => {
    const five = await Promise.all(Array.from({ length: 5 }, () => connect()));
    await expect(connect()).rejects.toMatchObject({ code: '53300', message: 'sorry, too many clients already' });
    await five[0]!.end();
    const again = await vi.waitFor(() => connect(), { timeout: BOUND_MS, interval: 100 });
    expect((await again.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    await Promise.all([...five.slice(1), again].map((c) => c.end()));
    await vi.waitFor(() => expect(relay.app.frontend.clientCount).toBe(0), { timeout: BOUND_MS });
  });

  it('counts connections that have not authenticated yet, and frees them at the startup timeout', async () => {
    const silent = await Promise.all(Array.from({ length: 5 }, () => Conversation.open(relay.port)));
    try {
      await vi.waitFor(() => expect(relay.app.frontend.clientCount).toBe(5), { timeout: BOUND_MS });
      await expect(connect()).rejects.toMatchObject({ code: '53300' });
      // pgrelay closes the silent ones after client.startup_timeout_ms; a real client gets in
      for (const c of silent) expect(await c.waitClosed(BOUND_MS)).toBe(true);
      const client = await connect();
      expect((await client.query('SELECT 2 AS two')).rows).toEqual([{ two: 2 }]);
      await client.end();
    } finally {
      for (const c of silent) c.destroy();
    }
  });
});

describe(`${IDLE_CLIENTS} idle clients`, () => {
  let child: RelayChild;
  const clients: pg.Client[] = [];
  beforeAll(async () => {
    child = await startRelayChild(
      'idle',
      relayDocument(primaryOnly(cluster), {
        pool: { size: 4 },
        client: { max_connections: IDLE_CLIENTS + 100 },
        log: { level: 'info', format: 'json' },
      }),
    );
  });
  afterAll(async () => {
    await Promise.all(clients.splice(0).map((c) => c.end().catch(() => undefined)));
    await child?.stop();
    removeCompiled();
  });

  const settle = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

  async function openClients(n: number, into: pg.Client[]): Promise<void> {
    let next = 0;
    const worker = async () => {
      while (next < n) {
        next++;
        const client = new pg.Client({ host: '127.0.0.1', port: child.port, ...login(), connectionTimeoutMillis: BOUND_MS });
        client.on('error', () => undefined);
        into.push(client);
        await client.connect();
        await client.query('SELECT 1');
      }
    };
    await Promise.all(Array.from({ length: 16 }, worker));
  }

  async function clientGauge(): Promise<number> {
    const text = await (await fetch(`${child.adminUrl}/metrics`)).text();
    const match = /^pgrelay_client_connections (\d+)/m.exec(text);
    if (!match) throw new Error('no pgrelay_client_connections in /metrics');
    return Number(match[1]);
  }

  it('holds them in bounded memory (RSS per idle client)', async () => {
    // warm-up: code paths, pools and buffers used once before the baseline
    const warm: pg.Client[] = [];
    await openClients(50, warm);
    await Promise.all(warm.map((c) => c.end()));
    await settle(1000);
    const before = child.rssBytes();
    await openClients(IDLE_CLIENTS, clients);
    expect(await clientGauge()).toBe(IDLE_CLIENTS);
    await settle(2000);
    const withClients = child.rssBytes();
    const perClient = (withClients - before) / IDLE_CLIENTS;
    // every one of them is still a working session
    const sample = [0, 1, 999, IDLE_CLIENTS - 1].map((i) => clients[i]!);
    for (const c of sample) expect((await c.query('SELECT 3 AS three')).rows).toEqual([{ three: 3 }]);
    await Promise.all(clients.splice(0).map((c) => c.end()));
    await vi.waitFor(async () => expect(await clientGauge()).toBe(0), { timeout: BOUND_MS });
    await settle(2000);
    const after = child.rssBytes();
    const mib = (b: number) => `${(b / 1024 / 1024).toFixed(1)} MiB`;
    console.log(
      `[hardening] ${IDLE_CLIENTS} idle clients: RSS before ${mib(before)}, with them ${mib(withClients)}, after closing ${mib(after)}; ` +
        `${(perClient / 1024).toFixed(1)} KiB per idle client`,
    );
    // bounded: a generous ceiling (a Node socket, a session, its reader); a leak of a
    // per-client buffer of a few hundred KiB (e.g. an unbounded read buffer) would break it
    expect(perClient).toBeLessThan(64 * 1024);
    // and the memory is given back (or kept for reuse), not growing with every client ever seen
    expect(after).toBeLessThan(withClients + 16 * 1024 * 1024);
  });
});
