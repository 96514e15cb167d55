/**
 * The Docker files cannot run here (no Docker engine), so this checks what can be checked without
 * one: docker/pgrelay.yaml passes `pgrelay check-config` with exactly the environment that
 * docker/compose.yaml gives the pgrelay service, and the compose file, the config, the init scripts
 * and the Dockerfile agree with each other (names, hosts, ports, paths, passwords).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { checkConfigCommand } from '../../src/config/check.js';
import { InvalidConfigError } from '../../src/config/issues.js';
import { parseConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/types.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const DOCKER_DIR = path.join(ROOT, 'docker');
const COMPOSE_FILE = path.join(DOCKER_DIR, 'compose.yaml');
const CONFIG_FILE = path.join(DOCKER_DIR, 'pgrelay.yaml');
const DOCKERFILE = path.join(ROOT, 'Dockerfile');
const PROMETHEUS_FILE = path.join(DOCKER_DIR, 'prometheus.yml');

interface ComposeService {
  image?: string;
  build?: { context: string; dockerfile: string };
  entrypoint?: string[];
  command?: string[];
  environment?: Record<string, string>;
  volumes?: string[];
  ports?: string[];
  depends_on?: Record<string, { condition: string }> | string[];
}

interface Compose {
  services: Record<string, ComposeService>;
  volumes?: Record<string, unknown>;
}

/** Compose's own interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, $$ (a literal $). */
function interpolate(value: string, hostEnv: Record<string, string>): string {
  return value.replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}/g, (match, name: string | undefined, op: string | undefined, fallback: string | undefined) => {
    if (match === '$$') return '$';
    const set = hostEnv[name!];
    if (op === ':-') return set ? set : fallback!;
    if (op === '-') return set ?? fallback!;
    if (set === undefined) throw new Error(`compose.yaml uses \${${name}} without a default`);
    return set;
  });
}

function loadCompose(): Compose {
  // `<<: *anchor` merge keys, as compose reads them
  return parse(fs.readFileSync(COMPOSE_FILE, 'utf8'), { merge: true }) as Compose;
}

/** The environment compose gives a service, as its process sees it, for a given host environment. */
function serviceEnv(compose: Compose, service: string, hostEnv: Record<string, string> = {}): Record<string, string> {
  const env = compose.services[service]?.environment;
  if (!env) throw new Error(`service ${service} has no environment`);
  return Object.fromEntries(Object.entries(env).map(([key, value]) => [key, interpolate(String(value), hostEnv)]));
}

/** Bind mounts of a service: [source relative to docker/, target in the container]. */
function bindMounts(service: ComposeService): [string, string][] {
  return (service.volumes ?? [])
    .filter((v) => v.startsWith('./') || v.startsWith('../'))
    .map((v) => {
      const [source, target] = v.split(':');
      return [source!, target!];
    });
}

function dockerConfig(hostEnv: Record<string, string> = {}): Config {
  const env = serviceEnv(loadCompose(), 'pgrelay', hostEnv);
  return parseConfig(fs.readFileSync(CONFIG_FILE, 'utf8'), { source: CONFIG_FILE, env });
}

/** The stages of the Dockerfile: FROM line and the instructions after it. */
function dockerfileStages(): { from: string; lines: string[] }[] {
  const lines = fs
    .readFileSync(DOCKERFILE, 'utf8')
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  const stages: { from: string; lines: string[] }[] = [];
  for (const line of lines) {
    if (/^FROM\s/i.test(line)) stages.push({ from: line, lines: [] });
    else stages.at(-1)?.lines.push(line);
  }
  return stages;
}

describe('docker/pgrelay.yaml', () => {
  it('passes check-config with the environment compose gives the pgrelay service', () => {
    const env = serviceEnv(loadCompose(), 'pgrelay');
    const out: string[] = [];
    const err: string[] = [];
    const code = checkConfigCommand(CONFIG_FILE, { write: (t) => out.push(t) }, { write: (t) => err.push(t) }, env);
    expect(err.join('')).toBe('');
    expect(code).toBe(0);
    expect(out.join('')).toBe(`ok: ${CONFIG_FILE} (4 nodes, 1 users)\n`);
  });

  it('takes its passwords from the environment, the ones the PostgreSQL containers are created with', () => {
    const hostEnv = { APP_PASSWORD: 'app-from-env', POSTGRES_PASSWORD: 'super-from-env', REPLICATION_PASSWORD: 'r' };
    const config = dockerConfig(hostEnv);
    const primaryEnv = serviceEnv(loadCompose(), 'primary', hostEnv);
    expect(config.users).toEqual([{ name: primaryEnv.APP_USER, password: 'app-from-env' }]);
    expect(primaryEnv.APP_PASSWORD).toBe('app-from-env');
    expect(config.failover).toMatchObject({ mode: 'managed', user: primaryEnv.POSTGRES_USER, password: 'super-from-env' });
    expect(primaryEnv.POSTGRES_PASSWORD).toBe('super-from-env');
    // with compose's defaults too, pgrelay and the primary agree
    const defaults = dockerConfig();
    expect(defaults.users[0]!.password).toBe(serviceEnv(loadCompose(), 'primary').APP_PASSWORD);
    expect(defaults.failover.password).toBe(serviceEnv(loadCompose(), 'primary').POSTGRES_PASSWORD);
  });

  it('holds no password itself: without the environment, check-config names the missing variables', () => {
    let error: unknown;
    try {
      parseConfig(fs.readFileSync(CONFIG_FILE, 'utf8'), { source: CONFIG_FILE, env: {} });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(InvalidConfigError);
    const lines = (error as InvalidConfigError).lines().join('\n');
    expect(lines).toContain('users[0].password');
    expect(lines).toContain('PGRELAY_APP_PASSWORD');
    expect(lines).toContain('failover.password');
    expect(lines).toContain('PGRELAY_ADMIN_PASSWORD');
  });

  it('admin on all interfaces of its container only with a token, /status behind it too; Prometheus\'s host name allowed', () => {
    const config = dockerConfig({ ADMIN_TOKEN: 'a-token-from-the-environment' });
    expect(config.admin).toMatchObject({ token: 'a-token-from-the-environment', read_access: 'probes', allowed_hosts: ['pgrelay'] });
    expect(fs.readFileSync(PROMETHEUS_FILE, 'utf8')).toContain('targets: ["pgrelay:9930"]');
  });

  it('listens on all interfaces of its container, on the ports compose publishes', () => {
    const config = dockerConfig();
    expect(config.listen).toEqual({ host: '0.0.0.0', port: 6432 });
    expect(config.admin).toMatchObject({ host: '0.0.0.0', port: 9930 });
    const ports = loadCompose().services.pgrelay!.ports!;
    expect(ports).toEqual([`127.0.0.1:6432:${config.listen.port}`, `127.0.0.1:9930:${config.admin.port}`]);
  });
});

describe('docker/compose.yaml', () => {
  it('runs the nodes of the config as postgres:15 services: primary, synchronous standby, two async replicas', () => {
    const compose = loadCompose();
    const config = dockerConfig();
    const postgresServices = Object.entries(compose.services)
      .filter(([, s]) => s.image === 'postgres:15')
      .map(([name]) => name);
    expect(config.nodes.map((n) => [n.name, n.role])).toEqual([
      ['primary', 'primary'],
      ['standby1', 'standby'],
      ['replica1', 'replica'],
      ['replica2', 'replica'],
    ]);
    expect(postgresServices.sort()).toEqual(config.nodes.map((n) => n.name).sort());
    for (const node of config.nodes) {
      expect(node.host, `node ${node.name} is reached by its service name`).toBe(node.name);
      expect(node.port).toBe(5432);
    }

    const primary = config.nodes.find((n) => n.role === 'primary')!;
    const primaryEnv = serviceEnv(compose, primary.name);
    const standby = config.nodes.find((n) => n.role === 'standby')!;
    expect(primaryEnv.SYNC_STANDBY, 'the primary makes the config standby its synchronous standby').toBe(standby.name);
    expect(primaryEnv.POSTGRES_DB).toBe(primaryEnv.APP_USER);
    expect(bindMounts(compose.services[primary.name]!)).toContainEqual(['./init/primary.sh', '/docker-entrypoint-initdb.d/10-pgrelay-primary.sh']);

    for (const node of config.nodes.filter((n) => n.role !== 'primary')) {
      const service = compose.services[node.name]!;
      const env = serviceEnv(compose, node.name);
      expect(env.NODE_NAME, 'slot and application_name').toBe(node.name);
      expect(env.PRIMARY_HOST).toBe(primary.host);
      expect(env.REPLICATION_USER).toBe(primaryEnv.REPLICATION_USER);
      expect(env.REPLICATION_PASSWORD).toBe(primaryEnv.REPLICATION_PASSWORD);
      expect(service.entrypoint).toEqual(['bash', '/pgrelay-init/follower.sh']);
      expect(bindMounts(service)).toContainEqual(['./init/follower.sh', '/pgrelay-init/follower.sh']);
      expect(service.depends_on).toEqual({ primary: { condition: 'service_healthy' } });
      // each node keeps its data in a volume of its own
      const dataVolume = service.volumes!.find((v) => v.endsWith(':/var/lib/postgresql/data'))!;
      expect(Object.keys(compose.volumes ?? {})).toContain(dataVolume.split(':')[0]);
    }
  });

  it('builds pgrelay from the Dockerfile and mounts the config where the image looks for it', () => {
    const compose = loadCompose();
    const pgrelay = compose.services.pgrelay!;
    expect(pgrelay.build).toEqual({ context: '..', dockerfile: 'Dockerfile' });
    expect(fs.existsSync(path.resolve(DOCKER_DIR, pgrelay.build!.context, pgrelay.build!.dockerfile))).toBe(true);
    const cmd = dockerfileStages().at(-1)!.lines.find((l) => l.startsWith('CMD'))!;
    const args = JSON.parse(cmd.slice('CMD'.length)) as string[];
    const configPath = args[args.indexOf('--config') + 1];
    expect(bindMounts(pgrelay)).toContainEqual(['./pgrelay.yaml', configPath]);
    // pgrelay starts once every node is up
    expect(Object.keys(pgrelay.depends_on as object).sort()).toEqual(dockerConfig().nodes.map((n) => n.name).sort());
  });

  it('has Prometheus read docker/prometheus.yml', () => {
    const prometheus = loadCompose().services.prometheus!;
    expect(prometheus.image).toMatch(/^prom\/prometheus:/);
    expect(bindMounts(prometheus)).toEqual([['./prometheus.yml', '/etc/prometheus/prometheus.yml']]);
  });

  it('docker/prometheus.yml scrapes pgrelay on its admin port', () => {
    const config = dockerConfig();
    expect(fs.readFileSync(PROMETHEUS_FILE, 'utf8')).toContain(`pgrelay:${config.admin.port}`);
  });

  it('mounts only files that exist; the init scripts are executable and parse', () => {
    const compose = loadCompose();
    const sources = new Set(Object.values(compose.services).flatMap((s) => bindMounts(s).map(([source]) => source)));
    expect([...sources].sort()).toEqual(['./init/follower.sh', './init/primary.sh', './pgrelay.yaml', './prometheus.yml']);
    for (const source of sources) {
      const file = path.join(DOCKER_DIR, source);
      expect(fs.existsSync(file), source).toBe(true);
      if (!source.endsWith('.sh')) continue;
      expect(fs.statSync(file).mode & 0o111, `${source} is executable`).toBe(0o111);
      expect(fs.readFileSync(file, 'utf8').startsWith('#!/usr/bin/env bash\n')).toBe(true);
      const check = spawnSync('bash', ['-n', file], { encoding: 'utf8' });
      expect(check.stderr).toBe('');
      expect(check.status).toBe(0);
    }
  });
});

describe('Dockerfile', () => {
  it('builds in a stage of its own and runs production dependencies only, as a non-root user', () => {
    const stages = dockerfileStages();
    expect(stages.length).toBeGreaterThanOrEqual(2);
    const [build, runtime] = [stages[0]!, stages.at(-1)!];
    expect(build.lines.some((l) => /^RUN npm ci\b/.test(l))).toBe(true);
    expect(build.lines).toContain('RUN npm run build');
    expect(runtime.lines.some((l) => /^RUN npm ci\b.*--omit=dev/.test(l))).toBe(true);
    expect(runtime.lines.some((l) => l.startsWith('COPY --from=') && l.includes('/app/dist'))).toBe(true);
    expect(runtime.lines).toContain('USER node');
    expect(runtime.lines).toContain('EXPOSE 6432 9930');
    expect(runtime.lines).toContain('ENTRYPOINT ["node","dist/main.js"]');
    expect(runtime.lines).toContain('CMD ["start","--config","/etc/pgrelay/pgrelay.yaml"]');
    // USER comes before the process starts, and nothing after it switches back
    const userIndex = runtime.lines.indexOf('USER node');
    expect(runtime.lines.slice(userIndex + 1).some((l) => l.startsWith('USER'))).toBe(false);
  });

  it('keeps the build context small: .dockerignore leaves out node_modules, dist and tests', () => {
    const ignored = fs
      .readFileSync(path.join(ROOT, '.dockerignore'), 'utf8')
      .split('\n')
      .map((l) => l.trim());
    for (const entry of ['node_modules', 'dist', 'test', '.git']) expect(ignored).toContain(entry);
    for (const needed of ['src', 'bin', 'config', 'package.json', 'package-lock.json', 'tsconfig.json']) expect(ignored).not.toContain(needed);
  });
});
