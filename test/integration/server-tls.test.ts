import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import type tls from 'node:tls';
import pg from 'pg';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import type { ServerTlsSettings } from '../../src/auth/server-tls.js';
import { NodeAdmin } from '../../src/cluster/node-admin.js';
import { LocalCluster } from '../../src/local/cluster.js';
import { sendCancel as sendServerCancel, ServerConnection } from '../../src/pool/server-connection.js';
import { useCleanups } from '../support/cleanups.js';
import { sendCancel } from '../support/hardening-wire.js';
import { STEADY } from '../support/protocol-client.js';
import { startRelay } from '../support/relay.js';

// server_tls against a real PostgreSQL 15 with ssl=on and certificates from a CA of this file's
// own: verify-full refuses a server whose certificate does not name the host pgrelay connects to
// (data path and pgrelay's own pg.Client connections), verify-ca accepts it; with the right
// certificate a pgrelay under verify-full serves queries, its health checks and lag monitor run
// over TLS (pg_stat_ssl), and a cancel reaches the server.
const cleanups = useCleanups();
let dir: string;
let cluster: LocalCluster;
let caFile: string;
let ca: string;

function openssl(...args: string[]): void {
  execFileSync('openssl', args, { stdio: 'ignore' });
}

/** A server certificate signed by the test CA, naming `san` (e.g. IP:127.0.0.1). */
function serverCert(name: string, san: string): { cert: string; key: string } {
  const key = join(dir, `${name}.key`);
  const cert = join(dir, `${name}.crt`);
  const ext = join(dir, `${name}.ext`);
  writeFileSync(ext, `subjectAltName=${san}\n`);
  openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${name}`, '-keyout', key, '-out', join(dir, `${name}.csr`));
  openssl('x509', '-req', '-in', join(dir, `${name}.csr`), '-CA', caFile, '-CAkey', join(dir, 'ca.key'), '-CAcreateserial', '-out', cert, '-days', '1', '-extfile', ext);
  return { cert, key };
}

/** Points the primary at another certificate; new connections get it after the reload. */
async function useCert(files: { cert: string; key: string }, expectedCn: string): Promise<void> {
  await cluster.query('primary', `ALTER SYSTEM SET ssl_cert_file = '${files.cert}'`, [], { superuser: true, database: 'postgres' });
  await cluster.query('primary', `ALTER SYSTEM SET ssl_key_file = '${files.key}'`, [], { superuser: true, database: 'postgres' });
  await cluster.query('primary', 'SELECT pg_reload_conf()', [], { superuser: true, database: 'postgres' });
  await vi.waitFor(async () => {
    const client = new pg.Client({ host: '127.0.0.1', port: cluster.node('primary').port, user: cluster.user, password: cluster.password, database: cluster.database, ssl: { rejectUnauthorized: false } });
    await client.connect();
    const cn = (client.connection.stream as tls.TLSSocket).getPeerCertificate().subject.CN;
    await client.end();
    expect(cn).toBe(expectedCn);
  }, { timeout: 10_000, interval: 100 });
}

let right: { cert: string; key: string };
let wrong: { cert: string; key: string };

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'pgrelay-server-tls-'));
  cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
  caFile = join(dir, 'ca.crt');
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=pgrelay-test-ca', '-days', '1', '-keyout', join(dir, 'ca.key'), '-out', caFile);
  ca = readFileSync(caFile, 'utf8');
  right = serverCert('right', 'IP:127.0.0.1,DNS:localhost');
  wrong = serverCert('wrong', 'DNS:db.example.invalid');
  // PostgreSQL runs as the postgres OS user when the tests run as root: it must read the key
  if (process.getuid?.() === 0) {
    const uid = Number(execFileSync('id', ['-u', 'postgres']).toString());
    const gid = Number(execFileSync('id', ['-g', 'postgres']).toString());
    chownSync(dir, uid, gid);
    for (const file of readdirSync(dir)) chownSync(join(dir, file), uid, gid);
  }
  for (const file of readdirSync(dir)) if (file.endsWith('.key')) chmodSync(join(dir, file), 0o600);
  cluster = await LocalCluster.create({ replicas: 0, standby: false, settings: { ssl: 'on', ssl_cert_file: right.cert, ssl_key_file: right.key } });
  cleanups.push(() => cluster.stop());
});

function connect(settings: ServerTlsSettings): Promise<ServerConnection> {
  const primary = cluster.node('primary');
  return ServerConnection.connect(
    { node: 'primary', host: '127.0.0.1', port: primary.port },
    { user: cluster.user, password: cluster.password, database: cluster.database },
    { connectTimeoutMs: 10_000, tls: settings, requireAuth: new Set(['scram-sha-256']) },
  );
}

function nodeAdmin(settings: ServerTlsSettings): NodeAdmin {
  return new NodeAdmin(() => ({ user: cluster.superuser, password: cluster.superuserPassword, database: 'postgres', tls: settings, requireAuth: new Set(['scram-sha-256']) }));
}

async function refusal(attempt: Promise<unknown>): Promise<Error> {
  const error = await attempt.then(
    () => undefined,
    (e: unknown) => e as Error,
  );
  expect(error, 'expected the connection to be refused').toBeInstanceOf(Error);
  return error!;
}

describe('a certificate that does not name the host', () => {
  it('verify-full refuses it (data path and failover administration); verify-ca accepts it', async () => {
    await useCert(wrong, 'wrong');
    try {
      const error = await refusal(connect({ mode: 'verify-full', ca }));
      expect(error.message).toMatch(/^TLS to node primary failed \(server_tls\.mode verify-full\): .*IP: 127\.0\.0\.1 is not in the cert's list/);
      const admin = nodeAdmin({ mode: 'verify-full', ca });
      const adminError = await refusal(admin.withClient({ name: 'primary', host: '127.0.0.1', port: cluster.node('primary').port }, (c) => c.query('SELECT 1')));
      expect(adminError.message).toMatch(/IP: 127\.0\.0\.1 is not in the cert's list/);
      // the chain is fine: verify-ca logs in over TLS
      const conn = await connect({ mode: 'verify-ca', ca });
      expect(conn.socket.constructor.name).toBe('TLSSocket');
      conn.terminate();
      const rows = await nodeAdmin({ mode: 'verify-ca', ca }).withClient({ name: 'primary', host: '127.0.0.1', port: cluster.node('primary').port }, async (c) => (await c.query<{ ssl: boolean }>('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()')).rows);
      expect(rows).toEqual([{ ssl: true }]);
    } finally {
      await useCert(right, 'right');
    }
  });

  it('an unknown CA is refused under verify-ca and under require with a ca', async () => {
    const other = join(dir, 'other-ca.crt');
    openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=other-ca', '-days', '1', '-keyout', join(dir, 'other-ca.key'), '-out', other);
    const otherCa = readFileSync(other, 'utf8');
    for (const mode of ['verify-ca', 'require'] as const) {
      expect((await refusal(connect({ mode, ca: otherCa }))).message).toContain('unable to verify the first certificate');
    }
  });
});

describe('a pgrelay under verify-full with the right certificate', () => {
  it('serves queries over TLS, its health checks and lag monitor use TLS, a cancel reaches the server', async () => {
    const relay = await startRelay(cluster, { ...STEADY, server_tls: { mode: 'verify-full', ca: caFile } });
    cleanups.push(() => relay.stop());
    const client = new pg.Client({ connectionString: relay.url() });
    client.on('error', () => undefined);
    await client.connect();
    cleanups.push(() => client.end());
    const { rows } = await client.query<{ ssl: boolean }>('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
    expect(rows).toEqual([{ ssl: true }]);
    // pgrelay's own monitoring connections, as the server sees them
    await vi.waitFor(async () => {
      const own = await cluster.query<{ application_name: string; ssl: boolean }>(
        'primary',
        "SELECT a.application_name, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.application_name IN ('pgrelay health check', 'pgrelay lag monitor') ORDER BY 1",
        [],
        { superuser: true, database: 'postgres' },
      );
      expect(own).toEqual([
        { application_name: 'pgrelay health check', ssl: true },
        { application_name: 'pgrelay lag monitor', ssl: true },
      ]);
    }, { timeout: 15_000, interval: 200 });
    // a cancel goes over TLS too and stops the query
    const started = performance.now();
    const sleeping = client.query('SELECT pg_sleep(30)').then(
      () => undefined,
      (e: unknown) => e as { code?: string },
    );
    await vi.waitFor(async () => {
      const running = await cluster.query<{ n: number }>('primary', "SELECT count(*)::int AS n FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'", [], { superuser: true, database: 'postgres' });
      expect(running[0]!.n).toBe(1);
    }, { timeout: 10_000, interval: 50 });
    // the client's CancelRequest (pgrelay's own key) reaches the backend over a TLS connection
    const keys = client as unknown as { processID: number; secretKey: number };
    await sendCancel(relay.port, keys.processID, keys.secretKey);
    const outcome = await sleeping;
    expect(outcome?.code).toBe('57014');
    expect(performance.now() - started).toBeLessThan(20_000);
  });
});

describe('cancel requests follow server_tls', () => {
  /** A server that answers 'N' to SSLRequest and records every packet's request code. */
  async function noTlsServer(): Promise<{ port: number; codes: number[]; closed: Promise<void> }> {
    const codes: number[] = [];
    let closedResolve!: () => void;
    const closed = new Promise<void>((resolve) => (closedResolve = resolve));
    const server = net.createServer((socket) => {
      socket.on('data', (chunk: Buffer) => {
        for (let at = 0; at + 8 <= chunk.length; at += chunk.readInt32BE(at)) {
          const code = chunk.readInt32BE(at + 4);
          codes.push(code);
          if (code === 80877103) socket.write('N');
        }
      });
      socket.on('close', closedResolve);
      socket.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise((resolve) => server.close(resolve)));
    return { port: (server.address() as net.AddressInfo).port, codes, closed };
  }

  it('under require, a server without TLS gets no plaintext CancelRequest; under disable it does', async () => {
    const strict = await noTlsServer();
    await sendServerCancel({ node: 'n', host: '127.0.0.1', port: strict.port }, 1, 2, { mode: 'require' });
    await strict.closed;
    expect(strict.codes).toEqual([80877103]); // SSLRequest only
    const plain = await noTlsServer();
    await sendServerCancel({ node: 'n', host: '127.0.0.1', port: plain.port }, 1, 2, { mode: 'disable' });
    await plain.closed;
    expect(plain.codes).toEqual([80877102]); // CancelRequest
  });
});
