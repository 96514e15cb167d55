import { InvalidConfigError } from '../../src/config/issues.js';
import { parseConfig } from '../../src/config/load.js';

/** The message of the config error a YAML text must raise (fails the test when it raises none). */
export function configFailure(text: string): string {
  try {
    parseConfig(text);
  } catch (error) {
    if (error instanceof InvalidConfigError) return error.message;
    throw error;
  }
  throw new Error('expected a config error');
}
