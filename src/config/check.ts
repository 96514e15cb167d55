/**
 * `pgrelay check-config FILE`: prints `ok: FILE (N nodes, M users)` and returns 0, or prints every
 * problem on its own line (format in issues.ts) to `err` and returns 1.
 */
import { ConfigError } from '../errors.js';
import { InvalidConfigError } from './issues.js';
import { loadConfig } from './load.js';

export interface TextSink {
  write(text: string): unknown;
}

export function checkConfigCommand(path: string, out: TextSink, err: TextSink, env?: NodeJS.ProcessEnv): number {
  try {
    const config = loadConfig(path, env);
    out.write(`ok: ${path} (${config.nodes.length} nodes, ${config.users.length} users)\n`);
    return 0;
  } catch (error) {
    if (error instanceof InvalidConfigError) {
      for (const line of error.lines()) err.write(`${line}\n`);
      const count = error.errors.length;
      err.write(`${path}: ${count} ${count === 1 ? 'error' : 'errors'}\n`);
      return 1;
    }
    if (error instanceof ConfigError) {
      err.write(`${path}: ${error.message}\n`);
      return 1;
    }
    throw error;
  }
}
