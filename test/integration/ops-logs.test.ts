import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { stringify } from 'yaml';
import { App } from '../../src/app.js';
import { loadConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/util/log.js';
import { adminRequest, relayDocument } from '../support/relay.js';
import { queryNode, sharedCluster } from '../support/shared-cluster.js';

// pgrelay's log at debug level, captured while secrets go through it: passwords from ${ENV}, a
// wrong password, bind parameters, literals in SQL text, a server error that quotes a value, a
// prepared statement, SET values, a rejected reload. Not one of them may reach a log line.
const cluster = sharedCluster();
const SECRETS = {
  clientPassword: 'Cl13nt-Secret-pw-7781',
  reportPassword: 'R3port-Secret-pw-4410',
  wrongPassword: 'Wr0ng-Guess-pw-5521',
  bindParameter: 'Param-Secret-9931',
  badInteger: 'Notanint-Secret-4417',
  literal: 'Literal-Secret-2208',
  inserted: 'Insert-Secret-6650',
  preparedA: 'Prep-Secret-A1x',
  preparedB: 'Prep-Secret-B2y',
  setValue: 'Set-Secret-3377',
  raised: 'Raise-Secret-8123',
};
const lines: string[] = [];
let app: App;
let dir: string;
let configPath: string;
const clients: pg.Client[] = [];
/** errors clients receive outside a query (the 57P01 that pgrelay sends when it stops) */
const clientErrors: (Error & { code?: string })[] = [];

function document(): Record<string, unknown> {
  const base = relayDocument(cluster, { routing: { consistency: 'eventual' } });
  base.users = [
    { name: cluster.user, password: '${OPS_CLIENT_PW}', server_password: cluster.password },
    { name: 'reporting', password: '${OPS_REPORT_PW}', server_user: cluster.user, server_password: cluster.password },
  ];
  return base;
}

async function connect(user: string, password: string): Promise<pg.Client> {
  const client = new pg.Client({ host: '127.0.0.1', port: app.listenAddress!.port, user, password, database: cluster.database });
  clients.push(client);
  client.on('error', (error) => clientErrors.push(error));
  await client.connect();
  return client;
}

beforeAll(async () => {
  await queryNode(cluster, 'primary', 'CREATE TABLE IF NOT EXISTS ops_logs (v text)');
  dir = mkdtempSync(join(tmpdir(), 'pgrelay-ops-logs-'));
  configPath = join(dir, 'pgrelay.yaml');
  writeFileSync(configPath, stringify(document()));
  const env = { ...process.env, OPS_CLIENT_PW: SECRETS.clientPassword, OPS_REPORT_PW: SECRETS.reportPassword };
  const log = createLogger({
    level: 'debug',
    destination: new Writable({
      write(chunk: Buffer, _encoding, callback) {
        for (const line of chunk.toString('utf8').split('\n')) if (line !== '') lines.push(line);
        callback();
      },
    }),
  });
  app = await App.start(loadConfig(configPath, env), { log, configPath, processMetrics: false });
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
  await app?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('logs', () => {
  it('are JSON lines with levels, and carry no password, no parameter, no literal of a statement', async () => {
    const client = await connect(cluster.user, SECRETS.clientPassword);
    await expect(connect(cluster.user, SECRETS.wrongPassword)).rejects.toThrow(/password authentication failed/);
    const reporting = await connect('reporting', SECRETS.reportPassword);

    expect((await client.query('SELECT $1::text AS v', [SECRETS.bindParameter])).rows[0].v).toBe(SECRETS.bindParameter);
    await expect(client.query('SELECT $1::int AS v', [SECRETS.badInteger])).rejects.toThrow(SECRETS.badInteger);
    expect((await client.query(`SELECT '${SECRETS.literal}' AS v`)).rows[0].v).toBe(SECRETS.literal);
    await client.query('INSERT INTO ops_logs (v) VALUES ($1)', [SECRETS.inserted]);
    const prepared = { name: 'ops_logs_concat', text: 'SELECT $1::text || $2::text AS v', values: [SECRETS.preparedA, SECRETS.preparedB] };
    expect((await reporting.query(prepared)).rows[0].v).toBe(SECRETS.preparedA + SECRETS.preparedB);
    expect((await reporting.query(prepared)).rows[0].v).toBe(SECRETS.preparedA + SECRETS.preparedB);
    await reporting.query(`SET application_name = '${SECRETS.setValue}'`);
    expect((await reporting.query('SELECT current_setting($1) AS v', ['application_name'])).rows[0].v).toBe(SECRETS.setValue);
    await expect(client.query(`DO $$ BEGIN RAISE EXCEPTION '${SECRETS.raised}'; END $$`)).rejects.toThrow(SECRETS.raised);
    await client.query('BEGIN');
    await client.query('INSERT INTO ops_logs (v) VALUES ($1)', [SECRETS.inserted]);
    await client.query('ROLLBACK');

    // a reload: first a file with a password of the wrong type (rejected), then a valid one
    writeFileSync(configPath, stringify({ ...document(), users: [{ name: cluster.user, password: 88776655 }] }));
    const rejected = await adminRequest(`http://127.0.0.1:${app.adminAddress!.port}`, 'POST', '/admin/reload');
    expect(rejected.status).toBe(400);
    expect(JSON.stringify(await rejected.json())).not.toContain('88776655');

    await app.stop(5000);
    // the idle clients were told why they were closed
    // (each also reports the end of its connection afterwards, without a code)
    await vi.waitFor(() => expect(clientErrors.filter((e) => e.code !== undefined).map((e) => e.code)).toEqual(['57P01', '57P01']));
    expect(lines.length).toBeGreaterThan(5);
    const entries = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
    for (const entry of entries) {
      expect(['debug', 'info', 'warn', 'error']).toContain(entry.level);
      expect(entry.time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      expect(entry.name).toBe('pgrelay');
      expect(typeof entry.msg).toBe('string');
    }
    const messages = entries.map((e) => e.msg);
    expect(messages).toContain('pgrelay listening');
    expect(messages).toContain('client authentication failed');
    expect(messages).toContain('configuration reload rejected; keeping the running configuration');
    expect(messages).toContain('pgrelay stopped');
    expect(entries.find((e) => e.msg === 'configuration reload rejected; keeping the running configuration')!.errors).toEqual([
      expect.stringMatching(/users\[0\]\.password at line \d+, column \d+: expected a string/),
    ]);

    for (const [what, secret] of Object.entries(SECRETS)) {
      expect(lines.filter((line) => line.includes(secret)), what).toEqual([]);
    }
    expect(lines.filter((line) => line.includes('88776655'))).toEqual([]);
    // nor a server credential in a connection string or a password field
    expect(lines.filter((line) => /password\s*=\s*[^\s*'"]|:\/\/[^/:@\s]+:[^*@\s][^@\s]*@/i.test(line))).toEqual([]);
    expect(lines.filter((line) => /"(server_)?password":"(?!\*\*\*")/.test(line))).toEqual([]);
  });
});
