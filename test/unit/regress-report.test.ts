import { describe, expect, it } from 'vitest';
import { counts, diffHead, failedInBoth, failedOnlyIn, parseProgress, splitDiffs, summaryText, type RegressRun } from '../../src/bench/regress-report.js';

// pg_regress 15's progress lines, as it prints them (a test of its own, then a parallel group)
const PROGRESS_15 = [
  '============== running regression test queries        ==============',
  'test tablespace                   ... ok          412 ms',
  'parallel group (3 tests):  char boolean name',
  '     boolean                      ... ok           81 ms',
  '     char                         ... FAILED       64 ms',
  '     name                         ... failed (ignored)       70 ms',
  'test sequence                     ... FAILED (test process exited with exit code 2)      120 ms',
  '',
  '=======================',
  ' 2 of 5 tests failed, 1 of these failures ignored. ',
  '=======================',
].join('\n');

// pg_regress 16's TAP lines
const PROGRESS_16 = ['ok 1         - tablespace                                412 ms', '# parallel group (2 tests):  boolean char', 'ok 2         + boolean                                    81 ms', 'not ok 3     + char                                       64 ms', '1..3'].join('\n');

const DIFFS = [
  'diff -U3 /src/expected/char.out /out/results/char.out',
  '--- /src/expected/char.out\t2026-01-01',
  '+++ /out/results/char.out\t2026-01-01',
  '@@ -1,3 +1,3 @@',
  '-a',
  '+b',
  'diff -U3 /src/expected/sequence_1.out /out/results/sequence.out',
  '--- /src/expected/sequence_1.out',
  '+++ /out/results/sequence.out',
  '@@ -10 +10 @@',
  '-currval 1',
  '+ERROR:  currval of sequence "s" is not yet defined in this session',
  '',
].join('\n');

const run = (label: string, statuses: Record<string, 'ok' | 'failed' | 'ignored'>, diffs = new Map<string, string>()): RegressRun => ({
  label,
  tests: Object.entries(statuses).map(([name, status]) => ({ name, status })),
  diffs,
  exitCode: 1,
  resultsDir: `/out/${label}/results`,
});

describe('regress report', () => {
  it('reads every test and its status from pg_regress 15 progress lines', () => {
    expect(parseProgress(PROGRESS_15)).toEqual([
      { name: 'tablespace', status: 'ok' },
      { name: 'boolean', status: 'ok' },
      { name: 'char', status: 'failed' },
      { name: 'name', status: 'ignored' },
      { name: 'sequence', status: 'failed' },
    ]);
  });

  it('reads pg_regress 16 TAP lines too', () => {
    expect(parseProgress(PROGRESS_16)).toEqual([
      { name: 'tablespace', status: 'ok' },
      { name: 'boolean', status: 'ok' },
      { name: 'char', status: 'failed' },
    ]);
  });

  it('splits regression.diffs by test, an alternative expected file included', () => {
    const diffs = splitDiffs(DIFFS);
    expect([...diffs.keys()]).toEqual(['char', 'sequence']);
    expect(diffHead(diffs.get('sequence'), 10)).toEqual(['@@ -10 +10 @@', '-currval 1', '+ERROR:  currval of sequence "s" is not yet defined in this session']);
    expect(diffHead(diffs.get('char'), 1)).toEqual(['@@ -1,3 +1,3 @@', '… (2 more lines)']);
    expect(diffHead(undefined, 5)).toEqual(['(no diff in regression.diffs)']);
  });

  it('names the tests that failed only through pgrelay', () => {
    const direct = run('direct', { a: 'ok', b: 'failed', c: 'ok', d: 'ok' });
    const relay = run('pgrelay', { a: 'ok', b: 'failed', c: 'failed', d: 'ignored', e: 'failed' });
    // c and d passed directly; e did not run directly; b failed in both
    expect(failedOnlyIn(relay, direct)).toEqual(['c', 'd', 'e']);
    expect(failedOnlyIn(direct, relay)).toEqual([]);
    expect(counts(relay)).toEqual({ run: 5, passed: 1, failed: 3, ignored: 1, failedNames: ['b', 'c', 'e'] });
  });

  it('prints the counts and the first diff lines of each pgrelay-only failure', () => {
    const direct = run('direct', { char: 'ok', sequence: 'ok' });
    const relay = run('pgrelay', { char: 'ok', sequence: 'failed' }, splitDiffs(DIFFS));
    const text = summaryText([direct, relay], relay, direct, 5);
    expect(text).toContain('direct: 2 tests run, 2 passed, 0 failed');
    expect(text).toContain('pgrelay: 2 tests run, 1 passed, 1 failed');
    expect(text).toContain('failed only through pgrelay: 1 (sequence)');
    expect(text).toContain('  +ERROR:  currval of sequence "s" is not yet defined in this session');
  });

  it('tells a test that failed in both runs alike from one whose output through pgrelay differs', () => {
    const direct = run('direct', { rules: 'failed', triggers: 'failed', char: 'ok' });
    const relay = run('pgrelay', { rules: 'failed', triggers: 'failed', char: 'ok' });
    expect(failedInBoth(relay, direct)).toEqual(['rules', 'triggers']);
    const both = new Map([
      ['rules', ''],
      ['triggers', 'diff -U3 a b\n--- a\n+++ b\n@@ -1 +1 @@\n-NOTICE:  1 tuple(s) deleted\n+ERROR:  permission denied\n'],
    ]);
    const text = summaryText([direct, relay], relay, direct, 5, both);
    expect(text).toContain('failed only through pgrelay: 0');
    expect(text).toContain('failed in both runs: 2; same output through pgrelay as directly: rules');
    expect(text).toContain('output through pgrelay differs from the direct output: 1 (triggers)');
    expect(text).toContain('  +ERROR:  permission denied');
  });
});
