/**
 * Small combinators that read a YAML document node by node into typed values, recording every
 * problem with its key path and line/column instead of stopping at the first one.
 *
 * A spec reads one slot (a value node plus its path and position) and returns the value or INVALID
 * (after reporting why). `obj` rejects unknown keys (with a "did you mean"), fills defaults and
 * reports missing required keys; `list` reads each item. Scalars go through `${ENV}` substitution
 * first (env.ts). A string that spells a number or a boolean is accepted where one is expected
 * (that is how values from the environment arrive).
 */
import { Scalar, isAlias, isMap, isScalar, isSeq, type Document, type LineCounter, type Node as YamlNode } from 'yaml';
import { substituteEnv } from './env.js';
import type { ConfigIssue } from './issues.js';
import { suggestKey } from './suggest.js';
import { DURATION_UNITS, MAX_DURATION_MS, SIZE_UNITS, formatDuration, formatSize, parseDuration, parseSize } from './units.js';

export const INVALID: unique symbol = Symbol('invalid');
export type Read<T> = T | typeof INVALID;

export interface Position {
  readonly line: number;
  readonly column: number;
}

/** A value found in the document. */
export interface Slot {
  readonly path: string;
  /** aliases already followed */
  readonly node: YamlNode;
  readonly at: Position | undefined;
}

export interface Spec<T> {
  /** what is allowed, completing "expected …" */
  readonly expected: string;
  read(slot: Slot, ctx: ReadContext): Read<T>;
  /** for the key index ("it belongs under routing") */
  readonly fields?: Readonly<Record<string, Field<unknown>>>;
  readonly item?: Spec<unknown>;
}

export class ReadContext {
  readonly issues: ConfigIssue[] = [];
  private readonly positions = new Map<string, Position>();
  private readonly keyPositions = new Map<string, Position>();
  /** leaf key → every full path (list items as `[]`) where the schema has it */
  private readonly keyIndex = new Map<string, string[]>();

  constructor(
    private readonly doc: Document,
    private readonly lineCounter: LineCounter,
    readonly env: NodeJS.ProcessEnv,
    root: Spec<unknown>,
  ) {
    this.index(root, '');
  }

  positionOf(node: { range?: readonly number[] | null } | null | undefined): Position | undefined {
    const offset = node?.range?.[0];
    if (offset === undefined) return undefined;
    const { line, col } = this.lineCounter.linePos(offset);
    return { line, column: col };
  }

  positionAtOffset(offset: number): Position {
    const { line, col } = this.lineCounter.linePos(offset);
    return { line, column: col };
  }

  report(path: string, at: Position | undefined, message: string): void {
    this.issues.push(at === undefined ? { path, message } : { path, line: at.line, column: at.column, message });
  }

  /** Record where `path` is written: its value, and its key when it has one. */
  remember(path: string, at: Position | undefined, keyAt?: Position): void {
    if (at !== undefined) this.positions.set(path, at);
    if (keyAt !== undefined) this.keyPositions.set(path, keyAt);
  }

  /** Whether `path` is written in the file (as opposed to defaulted). */
  has(path: string): boolean {
    return this.positions.has(path);
  }

  /** Where the key of `path` is written (`nodes:`), else where its value is, else its parent. */
  locateKey(path: string): Position | undefined {
    return this.keyPositions.get(path) ?? this.locate(path);
  }

  /** Where `path` is written, or the nearest enclosing key that is. */
  locate(path: string): Position | undefined {
    for (let p = path; ; p = parentPath(p)) {
      const at = this.positions.get(p);
      if (at !== undefined || p === '') return at;
    }
  }

  hasIssuesUnder(path: string): boolean {
    return this.issues.some((issue) => issue.path === path || issue.path.startsWith(`${path}.`) || issue.path.startsWith(`${path}[`));
  }

  /** The node behind an alias; undefined when there is no node; INVALID (reported) for an unknown anchor. */
  resolve(node: YamlNode | null | undefined, path: string): Read<YamlNode | undefined> {
    if (node === null || node === undefined) return undefined;
    if (!isAlias(node)) return node;
    const target = node.resolve(this.doc);
    if (target !== undefined) return target;
    this.report(path, this.positionOf(node), `unknown alias *${node.source}: no anchor &${node.source} before it`);
    return INVALID;
  }

  /** Paths other than `path` where the schema has a key named `key`. */
  elsewhere(key: string, path: string): string[] {
    const pattern = path.replace(/\[\d+\]/g, '[]');
    return (this.keyIndex.get(key) ?? []).filter((p) => p !== pattern);
  }

  private index(spec: Spec<unknown>, path: string): void {
    if (spec.item !== undefined) this.index(spec.item, `${path}[]`);
    for (const [key, field] of Object.entries(spec.fields ?? {})) {
      const full = joinPath(path, key);
      const paths = this.keyIndex.get(key) ?? [];
      paths.push(full);
      this.keyIndex.set(key, paths);
      this.index(field.spec, full);
    }
  }
}

export function joinPath(path: string, key: string): string {
  return path === '' ? key : `${path}.${key}`;
}

export function parentPath(path: string): string {
  const cut = Math.max(path.lastIndexOf('.'), path.lastIndexOf('['));
  return cut <= 0 ? '' : path.slice(0, cut);
}

// ---------------------------------------------------------------------------------------------
// scalars

type ScalarView =
  | { readonly kind: 'string'; readonly value: string; readonly raw: string; readonly fromEnv: boolean }
  | { readonly kind: 'number'; readonly value: number }
  | { readonly kind: 'boolean'; readonly value: boolean }
  | { readonly kind: 'empty' }
  | { readonly kind: 'map' }
  | { readonly kind: 'list' }
  | { readonly kind: 'other' };

/** The scalar in `slot`, with `${ENV}` substituted; INVALID (reported) when substitution fails. */
function view(slot: Slot, ctx: ReadContext): Read<ScalarView> {
  const { node } = slot;
  if (isMap(node)) return { kind: 'map' };
  if (isSeq(node)) return { kind: 'list' };
  if (!isScalar(node)) return { kind: 'other' };
  const value: unknown = node.value;
  if (value === null || value === undefined) return { kind: 'empty' };
  if (typeof value === 'number') return { kind: 'number', value };
  if (typeof value === 'bigint') return { kind: 'number', value: Number(value) };
  if (typeof value === 'boolean') return { kind: 'boolean', value };
  if (typeof value !== 'string') return { kind: 'other' };
  const result = substituteEnv(value, ctx.env);
  if (!result.ok) {
    for (const problem of result.problems) ctx.report(slot.path, slot.at, problem);
    return INVALID;
  }
  return { kind: 'string', value: result.value, raw: value, fromEnv: result.substituted };
}

/** "got …" for a message; never the value of a secret or of an environment variable. */
function describe(found: ScalarView, secret = false): string {
  switch (found.kind) {
    case 'string':
      if (secret) return found.value.trim() === '' ? 'a blank string' : 'a string';
      return found.fromEnv ? `${quote(found.raw)} (from the environment)` : quote(found.value);
    case 'number':
      return secret ? 'a number' : String(found.value);
    case 'boolean':
      return secret ? 'a boolean' : String(found.value);
    case 'empty':
      return 'an empty value';
    case 'map':
      return 'a map';
    case 'list':
      return 'a list';
    case 'other':
      return 'an unsupported value';
  }
}

function quote(text: string): string {
  // userinfo in a URL may hold a password
  const shown = text.replace(/\/\/[^/@\s]*@/g, '//***@');
  return JSON.stringify(shown.length > 60 ? `${shown.slice(0, 57)}...` : shown);
}

function mismatch(slot: Slot, ctx: ReadContext, expected: string, found: ScalarView, secret = false): typeof INVALID {
  ctx.report(slot.path, slot.at, `expected ${expected}, got ${describe(found, secret)}`);
  return INVALID;
}

/** A number, or a string that spells one. */
function numberOf(found: ScalarView): number | undefined {
  if (found.kind === 'number') return found.value;
  if (found.kind === 'string' && /^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$/.test(found.value)) return Number(found.value);
  return undefined;
}

/** Why a scalar was refused: what was expected ("expected …, got …"), or a message of its own. */
type Refusal = { readonly expected: string } | { readonly message: string };

/** A spec for one scalar: `convert` gives its value, or a Refusal. */
function scalar<T extends string | number | boolean>(expected: string, convert: (found: ScalarView) => T | Refusal, secret = false): Spec<T> {
  return {
    expected,
    read(slot, ctx) {
      const found = view(slot, ctx);
      if (found === INVALID) return INVALID;
      const result = convert(found);
      if (typeof result !== 'object') return result;
      if ('message' in result) {
        ctx.report(slot.path, slot.at, result.message);
        return INVALID;
      }
      return mismatch(slot, ctx, result.expected, found, secret);
    },
  };
}

export function str(options: { nonEmpty?: boolean; secret?: boolean } = {}): Spec<string> {
  const expected = options.nonEmpty === true ? 'a non-empty string' : 'a string';
  const quoted = options.secret === true ? 'a string (put the value in quotes)' : `${expected} (put the value in quotes)`;
  return scalar<string>(
    expected,
    (found) => {
      if (found.kind === 'string' && (options.nonEmpty !== true || found.value.trim() !== '')) return found.value;
      return { expected: found.kind === 'number' || found.kind === 'boolean' ? quoted : expected };
    },
    options.secret,
  );
}

function rangeText(min: number, max: number | undefined, note: string | undefined): string {
  const range = max === undefined ? `≥ ${min}` : `from ${min} to ${max}`;
  return note === undefined ? range : `${range} (${note})`;
}

export function int(options: { min: number; max?: number; note?: string }): Spec<number> {
  const expected = `an integer ${rangeText(options.min, options.max, options.note)}`;
  return scalar<number>(expected, (found) => {
    const n = numberOf(found);
    if (n === undefined || !Number.isInteger(n) || n < options.min || (options.max !== undefined && n > options.max)) return { expected };
    return n;
  });
}

export function num(options: { min: number }): Spec<number> {
  const expected = `a number ≥ ${options.min}`;
  return scalar<number>(expected, (found) => {
    const n = numberOf(found);
    return n === undefined || !Number.isFinite(n) || n < options.min ? { expected } : n;
  });
}

/** Milliseconds: a number, or a string with a unit. `positive` rejects 0. */
export function duration(options: { positive?: boolean; max?: number } = {}): Spec<number> {
  const bound = options.positive === true ? '> 0' : '≥ 0';
  const expected = `a number ${bound} or a duration like "250ms" (units: ${DURATION_UNITS})`;
  return scalar<number>(expected, (found) => {
    const ms = found.kind === 'number' ? found.value : found.kind === 'string' ? parseDuration(found.value) : undefined;
    if (ms === undefined || !Number.isFinite(ms) || ms < 0 || (options.positive === true && ms === 0)) return { expected };
    if (options.max !== undefined && ms > options.max) return { message: `expected a duration of at most ${options.max}ms, got ${describe(found)}` };
    if (ms > MAX_DURATION_MS) return { message: `expected a duration of at most ${MAX_DURATION_MS}ms (about ${formatDuration(24 * 86_400_000)}), got ${describe(found)}` };
    return ms;
  });
}

/** Bytes: a number, or a string with a unit (1024-based). */
export function size(options: { min: number; max?: number }): Spec<number> {
  const expected = `a number ${rangeText(options.min, options.max, undefined)} or a size like "16MB" (units: ${SIZE_UNITS})`;
  const expectedShort =
    options.max === undefined ? `a size ≥ ${formatSize(options.min)}` : `a size from ${formatSize(options.min)} to ${formatSize(options.max)}`;
  return scalar<number>(expected, (found) => {
    const bytes = found.kind === 'number' ? found.value : found.kind === 'string' ? parseSize(found.value) : undefined;
    if (bytes === undefined || !Number.isFinite(bytes)) return { expected };
    if (!Number.isInteger(bytes) || bytes < options.min || (options.max !== undefined && bytes > options.max)) return { expected: expectedShort };
    return bytes;
  });
}

export function bool(): Spec<boolean> {
  const expected = 'true or false';
  return scalar<boolean>(expected, (found) => {
    if (found.kind === 'boolean') return found.value;
    if (found.kind === 'string' && (found.value === 'true' || found.value === 'false')) return found.value === 'true';
    return { expected };
  });
}

export function oneOf<const V extends string>(values: readonly V[]): Spec<V> {
  const expected = `one of ${values.join(', ')}`;
  return scalar<V>(expected, (found) => {
    if (found.kind === 'string' && (values as readonly string[]).includes(found.value)) return found.value as V;
    const guess = found.kind === 'string' ? suggestKey(found.value, values) : undefined;
    const hint = guess === undefined ? '' : `; did you mean "${guess}"?`;
    return { message: `expected ${expected}, got ${describe(found)}${hint}` };
  });
}

/** An http:// or https:// URL. */
export function httpUrl(): Spec<string> {
  const expected = 'an http:// or https:// URL like "http://127.0.0.1:8008"';
  return scalar<string>(expected, (found) => {
    if (found.kind === 'string') {
      try {
        const url = new URL(found.value);
        if (url.protocol === 'http:' || url.protocol === 'https:') return found.value;
      } catch {
        // refused below
      }
    }
    return { expected };
  });
}

// ---------------------------------------------------------------------------------------------
// collections

export function list<T>(item: Spec<T>): Spec<T[]> {
  const expected = `a list (each item: ${item.expected})`;
  return {
    expected,
    item: item as Spec<unknown>,
    read(slot, ctx) {
      const { node } = slot;
      if (isScalar(node) && (node.value === null || node.value === undefined)) return [];
      if (!isSeq(node)) {
        const found = view(slot, ctx);
        return found === INVALID ? INVALID : mismatch(slot, ctx, expected, found);
      }
      const out: T[] = [];
      let ok = true;
      node.items.forEach((raw, i) => {
        const path = `${slot.path}[${i}]`;
        const at = ctx.positionOf(raw as YamlNode | null) ?? slot.at;
        ctx.remember(path, at);
        const resolved = ctx.resolve(raw as YamlNode | null, path);
        if (resolved === INVALID) {
          ok = false;
          return;
        }
        if (resolved === undefined || (isScalar(resolved) && (resolved.value === null || resolved.value === undefined))) {
          ctx.report(path, at, `expected ${item.expected}, got an empty value`);
          ok = false;
          return;
        }
        const value = item.read({ path, node: resolved, at }, ctx);
        if (value === INVALID) ok = false;
        else out.push(value);
      });
      return ok ? out : INVALID;
    },
  };
}

export type Field<T> =
  | { readonly kind: 'default'; readonly spec: Spec<T>; readonly fallback: () => T }
  | { readonly kind: 'required'; readonly spec: Spec<T>; readonly hint: string }
  | { readonly kind: 'optional'; readonly spec: Spec<Exclude<T, undefined>> };

/** A key that takes `fallback` when absent (a function for fresh arrays/objects). */
export function withDefault<T>(spec: Spec<T>, fallback: T | (() => T)): Field<T> {
  return { kind: 'default', spec, fallback: typeof fallback === 'function' ? (fallback as () => T) : () => fallback };
}

/** A key that must be present; `hint` says what to write. */
export function required<T>(spec: Spec<T>, hint: string): Field<T> {
  return { kind: 'required', spec, hint };
}

/** A key that is left out of the result when absent. */
export function optional<T>(spec: Spec<T>): Field<T | undefined> {
  return { kind: 'optional', spec: spec as Spec<Exclude<T | undefined, undefined>> };
}

interface Entry {
  readonly key: YamlNode;
  readonly value: YamlNode | null;
}

/**
 * A map with exactly the given keys. An empty value (`tls:` with nothing under it) is an empty map.
 * `ignoreKey` lets through extension keys (`x-…`, for YAML anchors). `<<` merge keys are honoured.
 * When a key is invalid its default is used (the problem is already reported), so later checks can
 * still run; a missing or invalid required key makes the whole map INVALID.
 */
export function obj<T>(fields: { readonly [K in keyof T]-?: Field<T[K]> }, options: { ignoreKey?: (key: string) => boolean } = {}): Spec<T> {
  const names = Object.keys(fields);
  const expected = `a map with keys ${names.join(', ')}`;
  const byName = fields as unknown as Readonly<Record<string, Field<unknown>>>;
  return {
    expected,
    fields: byName,
    read(slot, ctx) {
      const { node } = slot;
      const empty = isScalar(node) && (node.value === null || node.value === undefined);
      if (!isMap(node) && !empty) {
        const found = view(slot, ctx);
        return found === INVALID ? INVALID : mismatch(slot, ctx, expected, found);
      }
      const entries = isMap(node) ? collectEntries(node, slot, ctx) : new Map<string, Entry>();
      const out: Record<string, unknown> = {};
      let ok = true;
      for (const [key, entry] of entries) {
        if (key in byName || options.ignoreKey?.(key) === true) continue;
        ctx.report(joinPath(slot.path, key), ctx.positionOf(entry.key), unknownKeyMessage(key, slot.path, names, ctx));
      }
      for (const name of names) {
        const field = byName[name]!;
        const path = joinPath(slot.path, name);
        const entry = entries.get(name);
        let value: Read<unknown> = INVALID;
        if (entry !== undefined) {
          const keyAt = ctx.positionOf(entry.key);
          const at = ctx.positionOf(entry.value) ?? keyAt;
          ctx.remember(path, at, keyAt);
          const resolved = ctx.resolve(entry.value, path);
          if (resolved !== INVALID) value = field.spec.read({ path, node: resolved ?? new Scalar(null), at }, ctx);
        } else if (field.kind === 'required') {
          ctx.report(path, slot.at, `required key is missing: ${field.hint}`);
        }
        if (value !== INVALID) {
          out[name] = value;
        } else if (field.kind === 'default') {
          out[name] = field.fallback();
        } else if (field.kind === 'required') {
          ok = false;
        }
      }
      return ok ? (out as T) : INVALID;
    },
  };
}

function collectEntries(node: YamlNode, slot: Slot, ctx: ReadContext): Map<string, Entry> {
  const own = new Map<string, Entry>();
  const merged = new Map<string, Entry>();
  if (!isMap(node)) return own;
  for (const pair of node.items) {
    const keyNode = pair.key as YamlNode | null;
    const valueNode = pair.value as YamlNode | null;
    if (isScalar(keyNode) && (typeof keyNode.value === 'symbol' || keyNode.source === '<<')) {
      for (const source of mergeSources(valueNode, slot.path, ctx)) {
        for (const [key, entry] of collectEntries(source, slot, ctx)) if (!merged.has(key)) merged.set(key, entry);
      }
      continue;
    }
    if (!isScalar(keyNode) || (typeof keyNode.value !== 'string' && typeof keyNode.value !== 'number')) {
      ctx.report(slot.path, ctx.positionOf(keyNode) ?? slot.at, 'keys must be plain names, not lists, maps or empty values');
      continue;
    }
    const key = String(keyNode.value);
    const previous = own.get(key);
    if (previous !== undefined) {
      const first = ctx.positionOf(previous.key);
      ctx.report(joinPath(slot.path, key), ctx.positionOf(keyNode), `duplicate key${first === undefined ? '' : ` (first at line ${first.line})`}`);
      continue;
    }
    own.set(key, { key: keyNode, value: valueNode });
  }
  for (const [key, entry] of merged) if (!own.has(key)) own.set(key, entry);
  return own;
}

/** The maps a `<<` key merges in: a map, an alias of one, or a list of them. */
function mergeSources(value: YamlNode | null, path: string, ctx: ReadContext): YamlNode[] {
  const node = ctx.resolve(value, path);
  if (node === INVALID || node === undefined) return [];
  const items = isSeq(node) ? node.items.map((item) => ctx.resolve(item as YamlNode | null, path)) : [node];
  const maps = items.filter((n): n is YamlNode => n !== INVALID && isMap(n));
  if (items.some((n) => n !== INVALID && !isMap(n))) ctx.report(path, ctx.positionOf(value), '<< (merge) takes a map, an alias of a map, or a list of them');
  return maps;
}

function unknownKeyMessage(key: string, parent: string, allowed: readonly string[], ctx: ReadContext): string {
  const where = parent === '' ? 'at the top level' : `in ${parent.replace(/\[\d+\]/g, '[]')}`;
  const guess = suggestKey(key, allowed);
  if (guess !== undefined) return `unknown key "${key}" ${where}; did you mean "${guess}"?`;
  const other = ctx.elsewhere(key, joinPath(parent, key));
  if (other.length > 0) return `unknown key "${key}" ${where}; it belongs at ${other.join(' or ')}`;
  return `unknown key "${key}" ${where}; allowed keys: ${allowed.join(', ')}`;
}
