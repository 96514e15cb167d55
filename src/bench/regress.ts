/**
 * `npm run regress` — PostgreSQL's own regression suite through pgrelay (issue 16).
 *
 *   npm run regress -- --source DIR [--dlpath DIR] [--schedule parallel|serial] [--max-connections 4]
 *                      [--pool-size 20] [--diff-lines 20] [--timeout-min 90] [--no-direct] [--keep]
 *
 * DIR is a PostgreSQL src/test/regress directory of the installed major version (sql/, expected/,
 * data/, parallel_schedule) that the user supplies: nothing is fetched. The C test modules
 * (regress.so, autoinc.so, refint.so) are looked for in --dlpath (default DIR); without them the
 * tests that load them fail in both runs alike.
 *
 * Builds a local cluster (primary, synchronous standby, two async replicas), runs pg_regress with
 * --use-existing once straight against the primary (the baseline) and once through pgrelay in a
 * child process with default routing (reads on the standby and replicas, transaction pooling),
 * each into a freshly created `regression` database, and prints the counts and the tests that
 * failed only through pgrelay with the first lines of their diffs. Exits non-zero only when the
 * suite could not be run; failing tests are the measurement, not an error.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LocalCluster } from '../local/cluster.js';
import { PgBinaries } from '../local/pg-binaries.js';
import { message, parseOrUsage, runCommand, UsageError } from './command.js';
import { chownTo } from './peers.js';
import { counts, failedInBoth, parseProgress, splitDiffs, summaryText, type RegressRun } from './regress-report.js';
import { startRelayProcess, type RelayNode } from './relay-process.js';
import { RunResources } from './run-resources.js';
import { Service } from './service.js';

interface Options {
  source: string;
  dlpath: string | undefined;
  schedule: 'parallel' | 'serial';
  maxConnections: number;
  poolSize: number;
  diffLines: number;
  timeoutMin: number;
  direct: boolean;
  keep: boolean;
  pgRegress: string | undefined;
}

const USAGE = `usage: npm run regress -- --source DIR [--dlpath DIR] [--schedule parallel|serial] [--max-connections N]
       [--pool-size N] [--diff-lines N] [--timeout-min N] [--pg-regress PATH] [--no-direct] [--keep]
DIR: a PostgreSQL src/test/regress directory (sql/, expected/, data/, parallel_schedule) of the installed major version`;

const DATABASE = 'regression';
/** What pg_regress's create_database() sets, which --use-existing skips. */
const DATABASE_SETTINGS = ['lc_messages', 'lc_monetary', 'lc_numeric', 'lc_time'].map((name) => `${name} TO 'C'`).concat(["bytea_output TO 'hex'", "timezone_abbreviations TO 'Default'"]);


function parseOptions(argv: string[]): Options {
  const options: Options = { source: '', dlpath: undefined, schedule: 'parallel', maxConnections: 4, poolSize: 20, diffLines: 20, timeoutMin: 90, direct: true, keep: false, pgRegress: undefined };
  const ints: Record<string, 'maxConnections' | 'poolSize' | 'diffLines' | 'timeoutMin'> = {
    'max-connections': 'maxConnections',
    'pool-size': 'poolSize',
    'diff-lines': 'diffLines',
    'timeout-min': 'timeoutMin',
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('--')) throw new UsageError(`unexpected argument "${arg}"`);
    const eq = arg.indexOf('=');
    const flag = eq > 0 ? arg.slice(2, eq) : arg.slice(2);
    const value = () => {
      const v = eq > 0 ? arg.slice(eq + 1) : argv[++i];
      if (v === undefined || v === '') throw new UsageError(`--${flag} needs a value`);
      return v;
    };
    if (flag in ints) {
      const raw = value();
      const n = Number(raw);
      if (!Number.isInteger(n) || n < 1) throw new UsageError(`--${flag} expects a whole number ≥ 1, got "${raw}"`);
      options[ints[flag]!] = n;
    } else if (flag === 'source') options.source = path.resolve(value());
    else if (flag === 'dlpath') options.dlpath = path.resolve(value());
    else if (flag === 'pg-regress') options.pgRegress = path.resolve(value());
    else if (flag === 'schedule') {
      const s = value();
      if (s !== 'parallel' && s !== 'serial') throw new UsageError(`--schedule expects parallel or serial, got "${s}"`);
      options.schedule = s;
    } else if (flag === 'no-direct') options.direct = false;
    else if (flag === 'keep') options.keep = true;
    else if (flag === 'help' || flag === 'h') throw new UsageError('');
    else throw new UsageError(`unknown option --${flag}`);
  }
  if (options.source === '') throw new UsageError('--source DIR is required');
  for (const part of ['sql', 'expected', 'parallel_schedule']) {
    if (!fs.existsSync(path.join(options.source, part))) throw new UsageError(`--source ${options.source}: no ${part} there (give a PostgreSQL src/test/regress directory)`);
  }
  return options;
}

/** Debian: /usr/lib/postgresql/N/lib/pgxs/src/test/regress/pg_regress (postgresql-client-N). */
function findPgRegress(binDir: string): string | undefined {
  const candidates = [path.join(binDir, '..', 'lib', 'pgxs', 'src', 'test', 'regress', 'pg_regress')];
  const pgxs = spawnSync(path.join(binDir, 'pg_config'), ['--pgxs'], { encoding: 'utf8' });
  if (pgxs.status === 0) candidates.push(path.join(path.dirname(pgxs.stdout.trim()), '..', 'test', 'regress', 'pg_regress'));
  return candidates.map((c) => path.resolve(c)).find((c) => fs.existsSync(c));
}

/** The parallel schedule with one test per line (PostgreSQL 14+ ship no serial_schedule). */
function serialSchedule(source: string, file: string): void {
  const own = path.join(source, 'serial_schedule');
  if (fs.existsSync(own)) {
    fs.copyFileSync(own, file);
    return;
  }
  const lines: string[] = [];
  for (const line of fs.readFileSync(path.join(source, 'parallel_schedule'), 'utf8').split('\n')) {
    const m = /^test:\s*(.*)$/.exec(line);
    if (m) for (const name of m[1]!.split(/\s+/).filter(Boolean)) lines.push(`test: ${name}`);
  }
  fs.writeFileSync(file, `${lines.join('\n')}\n`);
}

const say = (line: string) => process.stdout.write(`[regress] ${line}\n`);

async function main(argv: string[]): Promise<number> {
  const options = parseOrUsage(() => parseOptions(argv), USAGE);
  if (options === undefined) return 2;
  const bins = PgBinaries.find();
  const pgRegress = options.pgRegress ?? findPgRegress(bins.binDir);
  if (pgRegress === undefined || !fs.existsSync(pgRegress)) {
    process.stderr.write(`pg_regress not found next to ${bins.binDir} (Debian: apt-get install postgresql-client-15); give --pg-regress PATH\n`);
    return 1;
  }
  say(`${execFileSync(pgRegress, ['--version'], { encoding: 'utf8' }).trim()}, server ${execFileSync(bins.path('postgres'), ['--version'], { encoding: 'utf8' }).trim()}`);
  const dlpath = options.dlpath ?? options.source;
  const missing = ['regress', 'autoinc', 'refint'].filter((m) => !fs.existsSync(path.join(dlpath, `${m}.so`)));
  if (missing.length > 0) say(`warning: ${missing.map((m) => `${m}.so`).join(', ')} not in ${dlpath}: the tests that load the C test modules will fail in every run`);

  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgrelay-regress-'));
  fs.chmodSync(workDir, 0o755);
  const runAs = process.getuid?.() === 0 ? 'postgres' : undefined;
  chownTo(workDir, runAs);
  const schedule = path.join(workDir, 'schedule');
  if (options.schedule === 'serial') serialSchedule(options.source, schedule);
  else fs.copyFileSync(path.join(options.source, 'parallel_schedule'), schedule);
  fs.chmodSync(schedule, 0o644);

  const resources = new RunResources(say, () => {
    if (!options.keep) fs.rmSync(workDir, { recursive: true, force: true });
  });
  const services = resources.services;
  let cluster: LocalCluster | undefined;

  const runs: RegressRun[] = [];
  let failure: string | undefined;
  let summary: string | undefined;
  try {
    say(`local cluster (primary, synchronous standby, 2 async replicas) in ${workDir}`);
    cluster = resources.cluster = await LocalCluster.create({
      baseDir: path.join(workDir, 'cluster'),
      replicas: 2,
      standby: true,
      settings: { max_connections: 200, max_prepared_transactions: 10 },
      onProgress: (step) => say(`  ${step}`),
    });
    const c = cluster;
    const nodes: RelayNode[] = c.nodes.map((n) => ({ name: n.name, host: n.host, port: n.port, role: n.role }));
    const primary = nodes.find((n) => n.role === 'primary')!;

    const freshDatabase = async () => {
      await c.query('primary', `DROP DATABASE IF EXISTS ${DATABASE} WITH (FORCE)`, [], { superuser: true, database: 'postgres' });
      // roles a test left behind would make the next run's CREATE ROLE fail
      const roles = await c.query<{ rolname: string }>('primary', `SELECT rolname FROM pg_roles WHERE rolname LIKE 'regress%'`, [], { superuser: true, database: 'postgres' });
      for (const { rolname } of roles) {
        await c.query('primary', `DROP ROLE "${rolname.replace(/"/g, '""')}"`, [], { superuser: true, database: 'postgres' }).catch((error: unknown) => say(`  could not drop role ${rolname} left by the previous run: ${message(error)}`));
      }
      await c.query('primary', `CREATE DATABASE ${DATABASE} TEMPLATE=template0`, [], { superuser: true, database: 'postgres' });
      for (const setting of DATABASE_SETTINGS) await c.query('primary', `ALTER DATABASE ${DATABASE} SET ${setting}`, [], { superuser: true, database: 'postgres' });
      for (const node of nodes) await c.waitForReplay(node.name, 120_000);
    };

    const runSuite = async (label: string, port: number): Promise<RegressRun> => {
      const outDir = path.join(workDir, label);
      fs.mkdirSync(outDir, { mode: 0o755 });
      chownTo(outDir, runAs);
      const args = [
        '--use-existing',
        `--host=127.0.0.1`,
        `--port=${port}`,
        `--user=${c.superuser}`,
        `--dbname=${DATABASE}`,
        `--inputdir=${options.source}`,
        `--outputdir=${outDir}`,
        `--bindir=${bins.binDir}`,
        `--dlpath=${dlpath}`,
        `--schedule=${schedule}`,
        `--max-connections=${options.maxConnections}`,
      ];
      const env: NodeJS.ProcessEnv = { ...process.env, PGPASSWORD: c.superuserPassword };
      for (const name of ['PGDATABASE', 'PGSERVICE', 'PGOPTIONS', 'PGSSLMODE', 'PGCONNECT_TIMEOUT', 'PGAPPNAME']) delete env[name];
      say(`pg_regress ${label} (port ${port}, --max-connections=${options.maxConnections}, ${options.schedule} schedule)`);
      const started = Date.now();
      const service = Service.start(`pg_regress-${label}`, pgRegress, args, { cwd: outDir, env, logFile: path.join(outDir, 'pg_regress.out'), runAs });
      services.push(service);
      const timeout = new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), options.timeoutMin * 60_000).unref());
      const outcome = await Promise.race([service.exited, timeout]);
      if (outcome === 'timeout') {
        await service.stop(2000, 'SIGTERM');
        throw new Error(`pg_regress ${label} did not finish within ${options.timeoutMin} min (see ${outDir}/pg_regress.out)`);
      }
      services.splice(services.indexOf(service), 1);
      const output = fs.readFileSync(path.join(outDir, 'pg_regress.out'), 'utf8');
      const diffsFile = path.join(outDir, 'regression.diffs');
      const run: RegressRun = {
        label,
        tests: parseProgress(output),
        diffs: splitDiffs(fs.existsSync(diffsFile) ? fs.readFileSync(diffsFile, 'utf8') : ''),
        exitCode: outcome,
        resultsDir: path.join(outDir, 'results'),
      };
      if (run.tests.length === 0) throw new Error(`pg_regress ${label} ran no test (exit code ${outcome}); its output:\n${output.slice(-3000)}`);
      const n = counts(run);
      say(`  ${label}: ${n.passed}/${n.run} passed in ${Math.round((Date.now() - started) / 1000)} s`);
      return run;
    };

    if (options.direct) {
      await freshDatabase();
      runs.push(await runSuite('direct', primary.port));
    }
    await freshDatabase();
    say(`pgrelay in a child process, every node, default routing, pool size ${options.poolSize}`);
    const relay = await startRelayProcess({ name: 'pgrelay', dir: workDir, nodes, user: c.superuser, password: c.superuserPassword, poolSize: options.poolSize });
    services.push(relay.service);
    runs.push(await runSuite('pgrelay', relay.port));
    const relayRun = runs.find((r) => r.label === 'pgrelay')!;
    const directRun = runs.find((r) => r.label === 'direct');
    const bothFailed = new Map<string, string>();
    if (directRun) for (const name of failedInBoth(relayRun, directRun)) bothFailed.set(name, compareResults(directRun, relayRun, name));
    summary = summaryText(runs, relayRun, directRun, options.diffLines, bothFailed);
  } catch (error) {
    failure = message(error);
  } finally {
    await resources.stop();
    if (options.keep) say(`kept ${workDir} (results, regression.diffs, pg_regress.out and pgrelay.out per run)`);
    else fs.rmSync(workDir, { recursive: true, force: true });
  }

  if (summary === undefined && runs.length > 0) summary = summaryText(runs, undefined, undefined, options.diffLines);
  if (summary !== undefined) process.stdout.write(`\n${summary}\n`);
  if (failure !== undefined) {
    process.stderr.write(`regress: ${failure}\n`);
    return 1;
  }
  return 0;
}

/** `diff -U3` of one test's output directly and through pgrelay ('' when the same). */
function compareResults(direct: RegressRun, relay: RegressRun, name: string): string {
  const a = path.join(direct.resultsDir, `${name}.out`);
  const b = path.join(relay.resultsDir, `${name}.out`);
  if (!fs.existsSync(a) || !fs.existsSync(b)) return `(no results/${name}.out in ${fs.existsSync(a) ? 'the pgrelay run' : 'the direct run'})\n`;
  const result = spawnSync('diff', ['-U3', a, b], { encoding: 'utf8' });
  if (result.status === 0) return '';
  if (result.status === 1) return result.stdout;
  throw new Error(`diff ${a} ${b} failed: ${result.stderr}`);
}


runCommand('regress', () => main(process.argv.slice(2)));
