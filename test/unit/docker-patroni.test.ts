/**
 * docker/compose.patroni.yaml cannot run here (no Docker engine): this checks that its parts agree
 * with each other and with pgrelay — the pgrelay config loads with the environment compose gives
 * it, its Patroni endpoints are the nodes' REST APIs, and Patroni's settings keep the rules the
 * tests run with (synchronous mode, pg_rewind with wal_log_hints, loop_wait + 2 × retry_timeout ≤ ttl).
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { parseConfig } from '../../src/config/load.js';

const DOCKER_DIR = fileURLToPath(new URL('../../docker/', import.meta.url));

interface Service {
  environment?: Record<string, string>;
  volumes?: string[];
  ports?: string[];
}

const compose = parse(fs.readFileSync(path.join(DOCKER_DIR, 'compose.patroni.yaml'), 'utf8'), { merge: true }) as { services: Record<string, Service> };
const patroni = parse(fs.readFileSync(path.join(DOCKER_DIR, 'patroni.yml'), 'utf8')) as {
  bootstrap: { dcs: { ttl: number; loop_wait: number; retry_timeout: number; synchronous_mode: boolean; postgresql: { use_pg_rewind: boolean; parameters: Record<string, string> } }; post_bootstrap: string };
  watchdog: { mode: string };
};

/** compose's ${VAR:-default} with an empty host environment */
function withDefaults(value: string): string {
  return value.replace(/\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}/g, (_m, fallback: string) => fallback);
}

const nodes = Object.entries(compose.services).filter(([, s]) => s.environment?.['PATRONI_NAME'] !== undefined);
const relays = Object.entries(compose.services).filter(([, s]) => (s.volumes ?? []).some((v) => v.startsWith('./pgrelay-patroni.yaml:')));

describe('docker/compose.patroni.yaml', () => {
  it('has three Patroni nodes and two pgrelays', () => {
    expect(nodes.map(([name]) => name)).toEqual(['node1', 'node2', 'node3']);
    expect(relays.map(([name]) => name)).toEqual(['pgrelay1', 'pgrelay2']);
  });

  it('gives each pgrelay a config that loads, follows Patroni and lists every node\'s REST API', () => {
    for (const [, relay] of relays) {
      expect(relay.volumes).toContain('./pgrelay-patroni.yaml:/etc/pgrelay/pgrelay.yaml:ro');
      const env = Object.fromEntries(Object.entries(relay.environment ?? {}).map(([k, v]) => [k, withDefaults(v)]));
      const config = parseConfig(fs.readFileSync(path.join(DOCKER_DIR, 'pgrelay-patroni.yaml'), 'utf8'), { source: 'pgrelay-patroni.yaml', env });
      expect(config.failover.mode).toBe('patroni');
      expect(config.nodes).toEqual([]);
      expect(config.users[0]!.password).toBe('app');
      const apis = nodes.map(([, node]) => `http://${node.environment!['PATRONI_RESTAPI_CONNECT_ADDRESS']}`);
      expect(config.patroni.endpoints).toEqual(apis);
      // a dead leader's key lives up to ttl: units must be allowed to wait longer than that
      expect(config.failover.wait_ms).toBeGreaterThan(patroni.bootstrap.dcs.ttl * 1000);
    }
    expect(new Set(relays.flatMap(([, r]) => r.ports ?? [])).size).toBe(4);
  });

  it('names each node after its service and mounts Patroni\'s files where patroni.yml expects them', () => {
    for (const [name, node] of nodes) {
      expect(node.environment!['PATRONI_NAME']).toBe(name);
      expect(node.environment!['PATRONI_POSTGRESQL_CONNECT_ADDRESS']).toBe(`${name}:5432`);
      expect(node.environment!['APP_PASSWORD']).toBeDefined();
      expect(node.volumes).toContain(`./patroni-post-bootstrap.sh:${patroni.bootstrap.post_bootstrap}:ro`);
      expect(node.volumes).toContain('./patroni.yml:/etc/patroni/patroni.yml:ro');
    }
  });

  it('keeps Patroni\'s rules: synchronous mode, pg_rewind with wal_log_hints, timing, no watchdog', () => {
    const { dcs } = patroni.bootstrap;
    expect(dcs.synchronous_mode).toBe(true);
    expect(dcs.postgresql.use_pg_rewind).toBe(true);
    expect(dcs.postgresql.parameters['wal_log_hints']).toBe('on');
    expect(dcs.loop_wait + 2 * dcs.retry_timeout).toBeLessThanOrEqual(dcs.ttl);
    expect(patroni.watchdog.mode).toBe('off');
    expect(fs.statSync(path.join(DOCKER_DIR, 'patroni-post-bootstrap.sh')).mode & 0o111).not.toBe(0);
  });
});
