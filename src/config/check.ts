/**
 * `pgrelay check-config FILE`: prints `ok: FILE (N nodes, M users)` and returns 0, or prints every
 * problem on its own line (format in issues.ts) to `err` and returns 1.
 *
 * `pgrelay check-config --connect FILE`: then also the preflight against the servers (the roles'
 * grants, see cluster/capabilities.ts): one line per finding, with the grant that fixes it; returns
 * 1 when a configured feature cannot work (replica reads off, managed failover or switchover
 * impossible) or a node could not be checked.
 */
import { describeReport, disablesConfiguredFeature, runPreflight } from '../cluster/preflight.js';
import { ConfigError } from '../errors.js';
import { InvalidConfigError } from './issues.js';
import { loadConfig } from './load.js';
import type { Config } from './types.js';

export interface TextSink {
  write(text: string): unknown;
}

export function checkConfigCommand(path: string, out: TextSink, err: TextSink, env?: NodeJS.ProcessEnv): number {
  return checkConfig(path, out, err, env) ? 0 : 1;
}

export async function checkConfigConnectCommand(path: string, out: TextSink, err: TextSink, env?: NodeJS.ProcessEnv): Promise<number> {
  const config = checkConfig(path, out, err, env);
  if (!config) return 1;
  const nodes = config.nodes.map((n) => ({ name: n.name, host: n.host, port: n.port, configuredRole: n.role }));
  const report = await runPreflight(config, nodes, undefined);
  for (const line of describeReport(report)) (line.level === 'error' ? err : out).write(`${line.level}: ${line.text}\n`);
  if (disablesConfiguredFeature(report)) {
    err.write(`${path}: a configured feature cannot work with these roles (see the grants above)\n`);
    return 1;
  }
  if (report.unchecked.length > 0) {
    err.write(`${path}: ${[...new Set(report.unchecked.map((u) => u.node))].join(', ')} could not be checked\n`);
    return 1;
  }
  out.write(`ok: ${path}: the servers let pgrelay do what the configuration asks\n`);
  return 0;
}

/** The loaded config, or undefined after printing why it is invalid. */
function checkConfig(path: string, out: TextSink, err: TextSink, env?: NodeJS.ProcessEnv): Config | undefined {
  try {
    const config = loadConfig(path, env);
    out.write(`ok: ${path} (${config.nodes.length} nodes, ${config.users.length} users)\n`);
    return config;
  } catch (error) {
    if (error instanceof InvalidConfigError) {
      for (const line of error.lines()) err.write(`${line}\n`);
      const count = error.errors.length;
      err.write(`${path}: ${count} ${count === 1 ? 'error' : 'errors'}\n`);
      return undefined;
    }
    if (error instanceof ConfigError) {
      err.write(`${path}: ${error.message}\n`);
      return undefined;
    }
    throw error;
  }
}
