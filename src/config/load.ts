/**
 * YAML text or file → validated, defaulted Config, or an InvalidConfigError listing every problem
 * with its key path and line/column (format in issues.ts).
 *
 * Order: YAML syntax (if the text is not valid YAML, only those errors are reported), then each key
 * against the schema (schema.ts: types, ranges, enums, unknown keys, `${ENV}` substitution), then
 * the rules between keys (validate.ts), then — for loadConfig — the files named by tls.cert,
 * tls.key, server_tls.ca, admin.cert and admin.key. All problems of a stage are reported together, in file order.
 */
import { accessSync, constants, readFileSync, statSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { LineCounter, Scalar, parseDocument, type Node as YamlNode } from 'yaml';
import { InvalidConfigError, type ConfigIssue } from './issues.js';
import { INVALID, ReadContext } from './reader.js';
import { configSpec } from './schema.js';
import type { Config } from './types.js';
import { validateConfig } from './validate.js';

export interface ParseConfigOptions {
  /** file name used in messages */
  source?: string;
  /** for `${NAME}` substitution; default process.env */
  env?: NodeJS.ProcessEnv;
  /**
   * When given, relative paths in tls.cert, tls.key, server_tls.ca, admin.cert and admin.key are resolved against this
   * directory (the result holds absolute paths) and the files must exist and be readable.
   */
  baseDir?: string;
}

export function parseConfig(text: string, options: ParseConfigOptions = {}): Config {
  const { source } = options;
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: false, merge: true });
  if (doc.errors.length > 0) {
    // the parser's own messages never quote the source text, so no secret can leak through them
    const issues = doc.errors.map((error): ConfigIssue => {
      const { line, col } = lineCounter.linePos(error.pos[0]);
      const message = error.code === 'MULTIPLE_DOCS' ? 'a config file holds one YAML document (remove the second ---)' : error.message;
      return { path: '', line, column: col, message: `invalid YAML: ${message}` };
    });
    throw new InvalidConfigError(issues, source);
  }

  const ctx = new ReadContext(doc, lineCounter, options.env ?? process.env, configSpec);
  const root = (doc.contents as YamlNode | null) ?? new Scalar(null);
  const at = ctx.positionOf(root) ?? { line: 1, column: 1 };
  ctx.remember('', at);
  const config = configSpec.read({ path: '', node: root, at }, ctx);
  if (config !== INVALID) {
    validateConfig(config, ctx);
    if (options.baseDir !== undefined) checkFiles(config, options.baseDir, ctx);
  }
  if (config === INVALID || ctx.issues.length > 0) throw new InvalidConfigError(inFileOrder(ctx.issues), source);
  return config;
}

/** Reads and parses `path`; relative TLS file paths are resolved against the file's directory. */
export function loadConfig(path: string, env?: NodeJS.ProcessEnv): Config {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new InvalidConfigError([{ path: '', message: `cannot read the config file: ${describeFsError(error)}` }], path);
  }
  return parseConfig(text, { source: path, baseDir: dirname(resolve(path)), ...(env === undefined ? {} : { env }) });
}

function checkFiles(config: Config, baseDir: string, ctx: ReadContext): void {
  const check = (path: string, file: string | undefined): string | undefined => {
    if (file === undefined || ctx.hasIssuesUnder(path)) return undefined;
    const full = isAbsolute(file) ? file : resolve(baseDir, file);
    try {
      if (!statSync(full).isFile()) {
        ctx.report(path, ctx.locate(path), `${full} is not a file`);
        return file;
      }
      accessSync(full, constants.R_OK);
    } catch (error) {
      ctx.report(path, ctx.locate(path), `cannot read ${full}: ${describeFsError(error)}`);
      return file;
    }
    return full;
  };
  const cert = check('tls.cert', config.tls.cert);
  const key = check('tls.key', config.tls.key);
  const ca = check('server_tls.ca', config.server_tls.ca);
  if (cert !== undefined) config.tls.cert = cert;
  if (key !== undefined) config.tls.key = key;
  if (ca !== undefined) config.server_tls.ca = ca;
  const adminCert = check('admin.cert', config.admin.cert);
  const adminKey = check('admin.key', config.admin.key);
  if (adminCert !== undefined) config.admin.cert = adminCert;
  if (adminKey !== undefined) config.admin.key = adminKey;
}

function describeFsError(error: unknown): string {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  switch (code) {
    case 'ENOENT':
      return 'no such file';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'EISDIR':
      return 'it is a directory';
    default:
      return code ?? String(error);
  }
}

function inFileOrder(issues: readonly ConfigIssue[]): ConfigIssue[] {
  return issues
    .map((issue, i) => ({ issue, i }))
    .sort((a, b) => (a.issue.line ?? Infinity) - (b.issue.line ?? Infinity) || (a.issue.column ?? 0) - (b.issue.column ?? 0) || a.i - b.i)
    .map(({ issue }) => issue);
}
