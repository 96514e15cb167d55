import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger, prettyLine } from '../../src/util/log.js';

function capture(level = 'debug', pretty = false) {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString('utf8').split('\n')) if (line !== '') lines.push(line);
      callback();
    },
  });
  return { lines, log: createLogger({ level, pretty, destination }) };
}

describe('logger', () => {
  it('writes one JSON object per line with a level word, an ISO time, the name and the message', () => {
    const { lines, log } = capture();
    log.debug({ node: 'replica1' }, 'lag measured');
    log.info('pgrelay listening');
    log.warn({ sqlstate: '53300' }, 'unit failed in pgrelay');
    log.error('boom');
    const entries = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(entries.map((e) => e.level)).toEqual(['debug', 'info', 'warn', 'error']);
    expect(entries.map((e) => e.msg)).toEqual(['lag measured', 'pgrelay listening', 'unit failed in pgrelay', 'boom']);
    for (const e of entries) {
      expect(e.name).toBe('pgrelay');
      expect(e.time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    }
    expect(entries[0]!.node).toBe('replica1');
  });

  it('drops entries below its level', () => {
    const { lines, log } = capture('warn');
    log.info('not shown');
    log.debug('not shown');
    log.warn('shown');
    expect(lines).toHaveLength(1);
  });

  it('censors password, parameter and SQL fields wherever a careless caller puts them', () => {
    const { lines, log } = capture();
    log.info({ password: 'p1-secret', user: { name: 'app', password: 'p2-secret', server_password: 'p3-secret' } }, 'a');
    log.info({ config: { users: [{ name: 'app', password: 'p4-secret' }] } }, 'b');
    log.info({ params: ['v1-secret'], query: 'SELECT v2-secret', sql: 'x-secret', unit: { parameters: ['v3-secret'] } }, 'c');
    const text = lines.join('\n');
    expect(text).not.toMatch(/secret/);
    expect(text).toContain('"user":{"name":"app","password":"***","server_password":"***"}');
    expect(text).toContain('"users":[{"name":"app","password":"***"}]');
  });

  it('writes pretty lines for people', () => {
    const { lines, log } = capture('info', true);
    log.warn({ node: 'replica1' }, 'replica is stale');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^\d\d:\d\d:\d\d\.\d{3} warn  replica is stale \{"node":"replica1"\}$/);
    expect(prettyLine('{"level":"info","time":"2026-01-02T03:04:05.678Z","name":"pgrelay","msg":"hello"}')).toBe('03:04:05.678 info  hello\n');
  });
});
