import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startRelay, type Relay } from '../support/relay.js';
import { queryNode, sharedCluster } from '../support/shared-cluster.js';

// Graceful shutdown (what SIGTERM does: App.stop(graceMs)): no new clients, idle clients are told
// 57P01 and closed, a transaction in flight may still commit; past the grace it is rolled back.
const cluster = sharedCluster();
const relays: Relay[] = [];
const clients: pg.Client[] = [];

async function relay(): Promise<Relay> {
  const r = await startRelay(cluster, { routing: { consistency: 'eventual' } });
  relays.push(r);
  return r;
}

async function connect(r: Relay): Promise<{ client: pg.Client; errors: (Error & { code?: string })[] }> {
  const client = new pg.Client({ connectionString: r.url() });
  const errors: (Error & { code?: string })[] = [];
  client.on('error', (error) => errors.push(error));
  clients.push(client);
  await client.connect();
  return { client, errors };
}

async function rows(tag: string): Promise<string[]> {
  return (await queryNode<{ tag: string }>(cluster, 'primary', 'SELECT tag FROM ops_shutdown WHERE tag LIKE $1 ORDER BY tag', [`${tag}%`])).map((r) => r.tag);
}

beforeAll(async () => {
  await queryNode(cluster, 'primary', 'CREATE TABLE IF NOT EXISTS ops_shutdown (tag text)');
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
  await Promise.all(relays.map((r) => r.stop()));
});

describe('graceful shutdown', () => {
  it('refuses new clients, closes idle ones with 57P01, and lets a transaction in flight commit', async () => {
    const r = await relay();
    const tag = `commit-${process.pid}-${Date.now()}-`;
    const inTransaction = await connect(r);
    const idle = await connect(r);
    await inTransaction.client.query('BEGIN');
    await inTransaction.client.query('INSERT INTO ops_shutdown VALUES ($1)', [`${tag}1`]);

    let stopped = false;
    const stopping = r.app.stop(60_000).then(() => (stopped = true));

    // writes can no longer be served: load balancers see it
    const health = await fetch(`${r.adminUrl}/health`);
    expect(health.status).toBe(503);
    expect(await health.json()).toMatchObject({ status: 'unavailable', reason: 'pgrelay is shutting down' });
    // no new client
    const late = new pg.Client({ connectionString: r.url() });
    late.on('error', () => undefined);
    await expect(late.connect()).rejects.toThrow();
    // the idle client is told why it goes
    await vi.waitFor(() => expect(idle.errors[0]?.code).toBe('57P01'), { timeout: 10_000 });
    expect(idle.errors[0]!.message).toContain('pgrelay is shutting down');

    // the transaction goes on, and commits
    expect(stopped).toBe(false);
    await inTransaction.client.query('INSERT INTO ops_shutdown VALUES ($1)', [`${tag}2`]);
    await inTransaction.client.query('COMMIT');
    await stopping;
    expect(await rows(tag)).toEqual([`${tag}1`, `${tag}2`]);
    // then that client was closed too
    await vi.waitFor(() => expect(inTransaction.errors[0]?.code).toBe('57P01'), { timeout: 10_000 });
  });

  it('rolls back a transaction still open when the grace period is over', async () => {
    const r = await relay();
    const tag = `rollback-${process.pid}-${Date.now()}-`;
    const open = await connect(r);
    await open.client.query('BEGIN');
    await open.client.query('INSERT INTO ops_shutdown VALUES ($1)', [`${tag}1`]);
    await r.app.stop(300);
    await vi.waitFor(() => expect(open.errors[0]?.code).toBe('57P01'), { timeout: 10_000 });
    await expect(open.client.query('COMMIT')).rejects.toThrow();
    // the server rolled the transaction back when its connection was closed
    await vi.waitFor(async () => expect(await rows(tag)).toEqual([]), { timeout: 10_000 });
  });
});
