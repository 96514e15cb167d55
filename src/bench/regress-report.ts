/**
 * Reading what pg_regress wrote (its progress lines and regression.diffs) and comparing a run
 * through pgrelay with a run straight against the primary (`npm run regress`, issue 16).
 */

export type RegressStatus = 'ok' | 'failed' | 'ignored';

export interface RegressTest {
  name: string;
  status: RegressStatus;
}

export interface RegressRun {
  label: string;
  tests: RegressTest[];
  /** test name → its part of regression.diffs (header line included) */
  diffs: Map<string, string>;
  exitCode: number | null;
  /** pg_regress's results/ directory of this run */
  resultsDir: string;
}

/**
 * pg_regress prints one line per test: `test NAME ... ok 12 ms` for a test of its own,
 * `     NAME ... FAILED 12 ms` inside a parallel group (15 and older; 16 adds `ok N` / `not ok N`
 * TAP lines, read too).
 */
const PROGRESS = /^(?:test\s+|\s+)(\S+)\s+\.\.\.\s+(ok|FAILED|failed \(ignored\))(?:\s|$)/;
const TAP = /^(not ok|ok)\s+\d+\s+[-+]?\s*(\S+)(?:\s+\d+ ms)?(\s+# \(ignored\))?/;

export function parseProgress(output: string): RegressTest[] {
  const tests: RegressTest[] = [];
  for (const line of output.split('\n')) {
    const classic = PROGRESS.exec(line);
    if (classic) {
      const word = classic[2]!;
      tests.push({ name: classic[1]!, status: word === 'ok' ? 'ok' : word === 'FAILED' ? 'failed' : 'ignored' });
      continue;
    }
    const tap = TAP.exec(line);
    if (tap) tests.push({ name: tap[2]!, status: tap[3] ? 'ignored' : tap[1] === 'ok' ? 'ok' : 'failed' });
  }
  return tests;
}

/** pg_regress starts each test's diff with `diff OPTIONS EXPECTED RESULTS/NAME.out`. */
const DIFF_HEADER = /^diff .*\/results\/([^/\s]+)\.out$/;

export function splitDiffs(text: string): Map<string, string> {
  const diffs = new Map<string, string>();
  let name: string | undefined;
  let lines: string[] = [];
  const flush = () => {
    if (name !== undefined) diffs.set(name, (diffs.get(name) ?? '') + lines.join('\n') + '\n');
  };
  for (const line of text.split('\n')) {
    const header = DIFF_HEADER.exec(line);
    if (header) {
      flush();
      name = header[1]!;
      lines = [line];
    } else if (name !== undefined) lines.push(line);
  }
  flush();
  return diffs;
}

export interface RunCounts {
  run: number;
  passed: number;
  failed: number;
  ignored: number;
  failedNames: string[];
}

export function counts(run: RegressRun): RunCounts {
  const failedNames = run.tests.filter((t) => t.status === 'failed').map((t) => t.name);
  return {
    run: run.tests.length,
    passed: run.tests.filter((t) => t.status === 'ok').length,
    failed: failedNames.length,
    ignored: run.tests.filter((t) => t.status === 'ignored').length,
    failedNames,
  };
}

/** Tests that failed (or were ignored-failed) in `run` but passed in `baseline`, or that the baseline did not run. */
export function failedOnlyIn(run: RegressRun, baseline: RegressRun): string[] {
  const passedInBaseline = new Set(baseline.tests.filter((t) => t.status === 'ok').map((t) => t.name));
  const ranInBaseline = new Set(baseline.tests.map((t) => t.name));
  return run.tests.filter((t) => t.status !== 'ok' && (passedInBaseline.has(t.name) || !ranInBaseline.has(t.name))).map((t) => t.name);
}

/** The first `maxLines` lines of a test's diff after the `diff`, `---` and `+++` header lines. */
export function diffHead(diff: string | undefined, maxLines: number): string[] {
  if (diff === undefined) return ['(no diff in regression.diffs)'];
  const body = diff.split('\n').filter((line, i) => !(i < 3 && /^(diff |--- |\+\+\+ )/.test(line)));
  while (body.length > 0 && body[body.length - 1] === '') body.pop();
  return body.length > maxLines ? [...body.slice(0, maxLines), `… (${body.length - maxLines} more lines)`] : body;
}

/** Tests that failed in both runs (neither passed). */
export function failedInBoth(a: RegressRun, b: RegressRun): string[] {
  const notOkInB = new Set(b.tests.filter((t) => t.status !== 'ok').map((t) => t.name));
  return a.tests.filter((t) => t.status !== 'ok' && notOkInB.has(t.name)).map((t) => t.name);
}

/**
 * For the tests that failed in both runs (for instance because the regress sources are of another
 * minor version than the server), `bothFailed` holds the diff of the direct run's output against
 * the output through pgrelay: '' when they are the same, so pgrelay changed nothing.
 */
export function summaryText(
  runs: readonly RegressRun[],
  relay: RegressRun | undefined,
  direct: RegressRun | undefined,
  diffLines: number,
  bothFailed: ReadonlyMap<string, string> = new Map(),
): string {
  const out: string[] = [];
  for (const run of runs) {
    const c = counts(run);
    out.push(`${run.label}: ${c.run} tests run, ${c.passed} passed, ${c.failed} failed${c.ignored > 0 ? `, ${c.ignored} failed (ignored)` : ''}`);
    if (c.failed > 0) out.push(`  failed: ${c.failedNames.join(', ')}`);
  }
  if (relay !== undefined && direct !== undefined) {
    const only = failedOnlyIn(relay, direct);
    out.push('', `failed only through pgrelay: ${only.length}${only.length > 0 ? ` (${only.join(', ')})` : ''}`);
    for (const name of only) {
      out.push('', `--- ${name} (first lines of its diff through pgrelay)`);
      for (const line of diffHead(relay.diffs.get(name), diffLines)) out.push(`  ${line}`);
    }
    if (bothFailed.size > 0) {
      const same = [...bothFailed].filter(([, diff]) => diff === '').map(([name]) => name);
      const differ = [...bothFailed].filter(([, diff]) => diff !== '').map(([name]) => name);
      out.push('', `failed in both runs: ${bothFailed.size}; same output through pgrelay as directly: ${same.length > 0 ? same.join(', ') : 'none'}`);
      out.push(`failed in both runs, output through pgrelay differs from the direct output: ${differ.length}${differ.length > 0 ? ` (${differ.join(', ')})` : ''}`);
      for (const name of differ) {
        out.push('', `--- ${name} (first lines of direct output → output through pgrelay)`);
        for (const line of diffHead(bothFailed.get(name), diffLines)) out.push(`  ${line}`);
      }
    }
    const directOnly = failedOnlyIn(direct, relay);
    if (directOnly.length > 0) out.push('', `failed only directly (not through pgrelay): ${directOnly.join(', ')}`);
  }
  return out.join('\n');
}
