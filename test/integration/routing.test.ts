import { readFileSync } from 'node:fs';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { parse } from 'yaml';
import { startRelay, type Relay } from '../support/relay.js';
import { queryNode, sharedCluster } from '../support/shared-cluster.js';

// Routing end to end: every statement of the shared corpus runs through pgrelay on the real
// cluster; where it ran is read from pgrelay's per-node unit counts, and the server side is
// checked directly with inet_server_port() for reads, writes and functions that write.

interface Case {
  sql: string;
  route: 'primary' | 'replica' | 'any';
  pin?: boolean;
}

const cluster = sharedCluster();
const DATABASE = 'routing_e2e';
const corpus = parse(readFileSync(new URL('../fixtures/routing-corpus.yaml', import.meta.url), 'utf8')) as Case[];
const primaryPort = cluster.nodes.find((n) => n.role === 'primary')!.port;
const readerPorts = new Set(cluster.nodes.filter((n) => n.role !== 'primary').map((n) => n.port));
let relay: Relay;

const SCHEMA = `
  CREATE TABLE accounts (id serial PRIMARY KEY, name text, note0 text);
  INSERT INTO accounts (name) SELECT 'n' || g FROM generate_series(1, 10) g;
  CREATE TABLE t (a int);
  CREATE MATERIALIZED VIEW mv AS SELECT count(*) AS n FROM accounts;
  CREATE PROCEDURE do_things() LANGUAGE sql AS $$ SELECT 1 $$;
  CREATE TABLE audit (id serial, at_port int);
  CREATE FUNCTION write_audit() RETURNS int VOLATILE LANGUAGE sql AS
    $$ INSERT INTO audit (at_port) VALUES (inet_server_port()) RETURNING at_port $$;
  CREATE FUNCTION read_port() RETURNS int STABLE LANGUAGE sql AS $$ SELECT inet_server_port() $$;
`;

beforeAll(async () => {
  await queryNode(cluster, 'primary', `DROP DATABASE IF EXISTS ${DATABASE}`, [], true);
  await queryNode(cluster, 'primary', `CREATE DATABASE ${DATABASE} OWNER ${cluster.user}`, [], true);
  const admin = new pg.Client({ host: '127.0.0.1', port: primaryPort, user: cluster.user, password: cluster.password, database: DATABASE });
  await admin.connect();
  await admin.query(SCHEMA);
  await admin.end();
  // every reader has the schema before reads are sent to it
  for (const node of cluster.nodes.filter((n) => n.role !== 'primary')) {
    await vi.waitFor(
      async () => {
        const c = new pg.Client({ host: '127.0.0.1', port: node.port, user: cluster.user, password: cluster.password, database: DATABASE });
        await c.connect();
        try {
          await c.query('SELECT read_port(), count(*) FROM mv');
        } finally {
          await c.end();
        }
      },
      { timeout: 30_000, interval: 100 },
    );
  }
  relay = await startRelay(cluster, { routing: { consistency: 'eventual' } });
  // reads go to a replica once pgrelay has seen it replaying (its first lag sample): not before the cases start
  const readers = cluster.nodes.filter((n) => n.role !== 'primary').map((n) => n.name);
  await vi.waitFor(() => expect(readers.filter((name) => relay.app.topology.node(name)?.fresh !== true)).toEqual([]), { timeout: 30_000, interval: 50 });
});

afterAll(async () => {
  await relay?.stop();
});

async function connect(): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: relay.url({ database: DATABASE }) });
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

/** A count read on the primary directly (not through pgrelay). */
async function countOnPrimary(sql: string): Promise<number> {
  const direct = new pg.Client({ host: '127.0.0.1', port: primaryPort, user: cluster.user, password: cluster.password, database: DATABASE });
  await direct.connect();
  try {
    return Number((await direct.query(sql)).rows[0].n);
  } finally {
    await direct.end();
  }
}

/** Units per node so far, from pgrelay's own counter. */
async function unitsByNode(): Promise<Map<string, number>> {
  const metric = await relay.app.metrics.queries.get();
  const out = new Map<string, number>();
  for (const v of metric.values) out.set(String(v.labels.node), (out.get(String(v.labels.node)) ?? 0) + v.value);
  return out;
}

function roleOf(node: string): string {
  return cluster.nodes.find((n) => n.name === node)!.role;
}

describe('the routing corpus, end to end', () => {
  for (const c of corpus) {
    it(`${c.route}${c.pin ? ' (pins)' : ''}: ${c.sql.replace(/\s+/g, ' ').slice(0, 70)}`, async () => {
      const client = await connect();
      try {
        const before = await unitsByNode();
        let error: (Error & { code?: string }) | undefined;
        try {
          await client.query(c.sql);
          // pgrelay answers a plain BEGIN itself: the transaction runs where its first statement
          // goes; a first read would start it on a replica (optimistic transactions, see
          // optimistic-transactions.test.ts), a first write on the primary
          if (/^\s*begin\s*$/i.test(c.sql)) await client.query('SELECT txid_current()');
        } catch (e) {
          error = e as Error & { code?: string };
        }
        const after = await unitsByNode();
        // the statement may fail for its own reasons (LOCK outside a transaction, a missing
        // object), never because it reached a read-only server
        expect(error?.code, error?.message).not.toBe('25006');
        const nodes = [...after].filter(([node, n]) => n > (before.get(node) ?? 0)).map(([node]) => node);
        expect(nodes).toHaveLength(1);
        const ranOn = roleOf(nodes[0]!);
        if (c.route === 'replica') expect(ranOn).not.toBe('primary');
        if (c.route === 'primary') expect(ranOn).toBe('primary');
        if (c.pin) {
          // pinned: the next read stays on the primary connection
          const port = (await client.query('SELECT inet_server_port() AS port')).rows[0].port;
          expect(port).toBe(primaryPort);
        }
        await client.query('ROLLBACK').catch(() => undefined);
      } finally {
        await client.end().catch(() => undefined);
      }
    });
  }
});

describe('where statements run, seen by the servers', () => {
  it('reads run on a replica, writes on the primary', async () => {
    const client = await connect();
    try {
      for (let i = 0; i < 20; i++) {
        expect(readerPorts.has((await client.query('SELECT inet_server_port() AS port')).rows[0].port)).toBe(true);
      }
      const written = await client.query("INSERT INTO t (a) VALUES (1) RETURNING inet_server_port() AS port");
      expect(written.rows[0].port).toBe(primaryPort);
      const cte = await client.query('WITH w AS (INSERT INTO t (a) VALUES (2) RETURNING a) SELECT inet_server_port() AS port FROM w');
      expect(cte.rows[0].port).toBe(primaryPort);
      const seq = await client.query("SELECT nextval('accounts_id_seq'), inet_server_port() AS port");
      expect(seq.rows[0].port).toBe(primaryPort);
      const locked = await client.query('SELECT inet_server_port() AS port FROM t WHERE a IN (SELECT a FROM t ORDER BY a LIMIT 1 FOR UPDATE)');
      expect(locked.rows[0].port).toBe(primaryPort);
    } finally {
      await client.end();
    }
  });

  it('a VOLATILE user function that inserts runs on the primary; a STABLE one on a replica', async () => {
    const client = await connect();
    try {
      const wrote = await client.query('SELECT write_audit() AS port');
      expect(wrote.rows[0].port).toBe(primaryPort);
      const rows = await queryNode<{ at_port: number }>({ ...cluster, database: DATABASE }, 'primary', 'SELECT at_port FROM audit');
      expect(rows.length).toBeGreaterThan(0);
      const read = await client.query('SELECT read_port() AS port');
      expect(readerPorts.has(read.rows[0].port)).toBe(true);
    } finally {
      await client.end();
    }
  });

  it('a function created after start is learnt: its first call goes to the primary, and once known a STABLE one goes to a replica', async () => {
    const client = await connect();
    try {
      await client.query('CREATE FUNCTION late_read() RETURNS int STABLE LANGUAGE sql AS $$ SELECT inet_server_port() $$');
      expect((await client.query('SELECT late_read() AS port')).rows[0].port).toBe(primaryPort);
      await vi.waitFor(
        async () => {
          const port = (await client.query('SELECT late_read() AS port')).rows[0].port;
          expect(readerPorts.has(port)).toBe(true);
        },
        { timeout: 15_000, interval: 200 },
      );
    } finally {
      await client.end();
    }
  });

  it('extended protocol: a named statement routes by its own text on every Bind', async () => {
    const client = await connect();
    try {
      for (let i = 0; i < 5; i++) {
        const read = await client.query({ name: 'port_read', text: 'SELECT inet_server_port() AS port, $1::int AS i', values: [i] });
        expect(readerPorts.has(read.rows[0].port)).toBe(true);
        const write = await client.query({ name: 'port_write', text: 'INSERT INTO t (a) VALUES ($1) RETURNING inet_server_port() AS port', values: [i] });
        expect(write.rows[0].port).toBe(primaryPort);
      }
    } finally {
      await client.end();
    }
  });

  it('a transaction goes to the primary as one piece; BEGIN READ ONLY to one replica', async () => {
    const client = await connect();
    try {
      await client.query('BEGIN');
      const ports = new Set<number>();
      for (let i = 0; i < 5; i++) ports.add((await client.query('SELECT inet_server_port() AS port')).rows[0].port);
      await client.query('COMMIT');
      expect([...ports]).toEqual([primaryPort]);
      await client.query('BEGIN READ ONLY');
      const readOnly = new Set<number>();
      for (let i = 0; i < 5; i++) readOnly.add((await client.query('SELECT inet_server_port() AS port')).rows[0].port);
      await client.query('COMMIT');
      expect(readOnly.size).toBe(1);
      expect(readerPorts.has([...readOnly][0]!)).toBe(true);
    } finally {
      await client.end();
    }
  });

  it('BEGIN then SET TRANSACTION READ ONLY (separate messages, as psycopg and psql send them) runs the transaction on one replica', async () => {
    const client = await connect();
    try {
      const begin = await client.query('BEGIN');
      expect(begin.command).toBe('BEGIN');
      await client.query('SET TRANSACTION READ ONLY');
      const ports = new Set<number>();
      for (let i = 0; i < 5; i++) {
        const row = (await client.query('SELECT inet_server_port() AS port, current_setting($1) AS ro', ['transaction_read_only'])).rows[0];
        ports.add(row.port);
        expect(row.ro).toBe('on');
      }
      await client.query('COMMIT');
      expect(ports.size).toBe(1);
      expect(readerPorts.has([...ports][0]!)).toBe(true);

      // the same with the other spellings of a plain BEGIN
      for (const [spelling, tag] of [['start transaction', 'START'], ['BEGIN WORK;', 'BEGIN'], ['begin transaction', 'BEGIN']] as const) {
        // the command tag a direct connection gives (node-postgres reports its first word)
        expect((await client.query(spelling)).command).toBe(tag);
        await client.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY');
        expect(readerPorts.has((await client.query('SELECT inet_server_port() AS port')).rows[0].port)).toBe(true);
        await client.query('ROLLBACK');
      }
    } finally {
      await client.end();
    }
  });

  it('a plain BEGIN answered by pgrelay still behaves as a transaction on the primary', async () => {
    const client = await connect();
    try {
      // the first statement decides: anything but SET TRANSACTION READ ONLY goes to the primary
      await client.query('BEGIN');
      expect((await client.query('SELECT inet_server_port() AS port')).rows[0].port).toBe(primaryPort);
      await client.query('INSERT INTO t VALUES (41)');
      await client.query('ROLLBACK');
      expect(await countOnPrimary('SELECT count(*) AS n FROM t WHERE a = 41')).toBe(0);

      await client.query('BEGIN');
      await client.query('INSERT INTO t VALUES (42)');
      await client.query('COMMIT');
      expect(await countOnPrimary('SELECT count(*) AS n FROM t WHERE a = 42')).toBe(1);

      // nothing between BEGIN and COMMIT
      await client.query('BEGIN');
      expect((await client.query('COMMIT')).command).toBe('COMMIT');

      // an error inside it aborts it as PostgreSQL does
      await client.query('BEGIN');
      await expect(client.query('SELECT 1/0')).rejects.toMatchObject({ code: '22012' });
      await expect(client.query('SELECT 1')).rejects.toMatchObject({ code: '25P02' });
      await client.query('ROLLBACK');

      // a serializable read-only transaction cannot run on a hot standby: primary
      await client.query('BEGIN');
      await client.query('SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY');
      expect((await client.query('SELECT inet_server_port() AS port')).rows[0].port).toBe(primaryPort);
      await client.query('COMMIT');

      // a second BEGIN inside the transaction gets PostgreSQL's warning, not a deferral
      await client.query('BEGIN');
      await client.query('SELECT 1');
      await client.query('BEGIN');
      await client.query('COMMIT');
      expect((await client.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    } finally {
      await client.end();
    }
  });

  it('SET search_path follows the client to the replicas', async () => {
    const client = await connect();
    try {
      await queryNode({ ...cluster, database: DATABASE }, 'primary', "CREATE SCHEMA IF NOT EXISTS other; CREATE TABLE IF NOT EXISTS other.only_here (v text); INSERT INTO other.only_here VALUES ('found')");
      await client.query('SET search_path TO other, public');
      await vi.waitFor(async () => {
        const result = await client.query('SELECT v, inet_server_port() AS port FROM only_here');
        expect(result.rows[0].v).toBe('found');
        expect(readerPorts.has(result.rows[0].port)).toBe(true);
      }, { timeout: 10_000, interval: 100 });
    } finally {
      await client.end();
    }
  });

  it('routing hints in comments are obeyed', async () => {
    const client = await connect();
    try {
      expect((await client.query('/* pgrelay:primary */ SELECT inet_server_port() AS port')).rows[0].port).toBe(primaryPort);
      expect(readerPorts.has((await client.query('/* pgrelay:replica */ SELECT inet_server_port() AS port')).rows[0].port)).toBe(true);
    } finally {
      await client.end();
    }
  });
});
