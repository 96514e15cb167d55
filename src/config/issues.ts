/**
 * One problem found in a configuration, and the error that carries all of them.
 *
 * Every problem is reported on one line in this format (parts that are unknown are left out):
 *
 *     FILE: KEY.PATH at line L, column C: WHAT IS WRONG, WHAT IS ALLOWED, got WHAT WAS FOUND
 *     pgrelay.yaml: routing.max_lag_ms at line 14, column 15: expected a number ≥ 0 or a duration like "250ms" (units: ms, s, m/min, h, d), got "fast"
 *
 * The loader collects every problem in the file and throws them together as one
 * InvalidConfigError: `errors` holds them all, `message` lists each on its own line, and the
 * inherited `path`/`line`/`column` are those of the first one. Values that came from the
 * environment, and passwords, are never quoted in a message.
 */
import { ConfigError } from '../errors.js';

export interface ConfigIssue {
  /** key path such as `routing.max_lag_ms` or `nodes[2].name`; '' when the problem is not about a key */
  readonly path: string;
  /** 1-based line and column in the file, when known */
  readonly line?: number;
  readonly column?: number;
  readonly message: string;
}

/** One line: `FILE: path at line L, column C: message`. */
export function formatIssue(issue: ConfigIssue, source?: string): string {
  let where = issue.path;
  if (issue.line !== undefined) {
    const at = issue.column === undefined ? `line ${issue.line}` : `line ${issue.line}, column ${issue.column}`;
    where = where === '' ? at : `${where} at ${at}`;
  }
  const head = [source, where].filter((part) => part !== undefined && part !== '').join(': ');
  return head === '' ? issue.message : `${head}: ${issue.message}`;
}

/** Thrown by parseConfig/loadConfig; `errors` holds every problem found, in file order. */
export class InvalidConfigError extends ConfigError {
  readonly errors: readonly ConfigIssue[];
  readonly source: string | undefined;

  constructor(errors: readonly ConfigIssue[], source?: string) {
    if (errors.length === 0) throw new TypeError('InvalidConfigError needs at least one issue');
    const first = errors[0]!;
    super(errors.map((issue) => formatIssue(issue, source)).join('\n'), first.path, first.line, first.column);
    this.name = 'InvalidConfigError';
    this.errors = errors;
    this.source = source;
  }

  /** Each problem formatted on its own line (what `pgrelay check-config` prints). */
  lines(): string[] {
    return this.errors.map((issue) => formatIssue(issue, this.source));
  }
}
