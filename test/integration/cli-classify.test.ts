import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';

// `pgrelay classify` (the contract in DESIGN.md): one JSON string per line on stdin, one JSON
// object per line on stdout. Runs the built CLI (npm test builds dist/ first).

interface Case {
  sql: string;
  route: string;
  pin?: boolean;
}

function runClassify(input: string): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['dist/main.js', 'classify'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(out.split('\n').filter(Boolean)) : reject(new Error(`exit ${code}: ${err}`))));
    child.stdin.end(input);
  });
}

describe('pgrelay classify', () => {
  it('answers every corpus case with route, pin and a reason', async () => {
    const cases = [
      ...(parse(readFileSync('test/fixtures/routing-corpus.yaml', 'utf8')) as Case[]),
      ...(parse(readFileSync('test/fixtures/routing-corpus-extra.yaml', 'utf8')) as Case[]),
    ];
    const lines = await runClassify(cases.map((c) => JSON.stringify(c.sql)).join('\n') + '\n');
    expect(lines).toHaveLength(cases.length);
    lines.forEach((line, i) => {
      const decision = JSON.parse(line) as { route: string; pin: boolean; reason: string };
      expect({ sql: cases[i]!.sql, route: decision.route, pin: decision.pin }).toEqual({ sql: cases[i]!.sql, route: cases[i]!.route, pin: cases[i]!.pin ?? false });
      expect(decision.reason.length).toBeGreaterThan(0);
    });
  });

  it('keeps going after a line that is not a JSON string', async () => {
    const lines = await runClassify('not json\n"SELECT 1"\n');
    expect(JSON.parse(lines[0]!)).toHaveProperty('error');
    expect(JSON.parse(lines[1]!)).toMatchObject({ route: 'replica', pin: false });
  });
});
