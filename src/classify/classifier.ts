/**
 * The statement classifier: SQL text → { route, pin, reason, effects }. Pure and synchronous on
 * the hot path: the text is masked by a JS lexer (its *shape*), the shape's decision comes from an
 * LRU cache, and only a new shape pays for PostgreSQL's parser. Two things are applied after the
 * cache, per text: the volatility of the user functions the shape calls, and routing hints.
 *
 * User functions (calls that are neither known built-in reads nor known writers):
 * - `routing.functions.primary` / `.replica` decide first (at analysis time);
 * - then the volatility map (setVolatility, which covers pg_catalog too): 'v' → primary; 's' or
 *   'i' → may go to a replica; a name the map does not hold → primary (a function created since
 *   the map was read, or one that does not exist and will fail there), and onUnknownFunction is
 *   told so that the map is read again;
 * - before the map has been set at all, a user function → primary (nothing is known yet).
 *
 * Hints: `/* pgrelay:primary *\/` sends anything to the primary. `/* pgrelay:replica *\/` sends a
 * read, a session statement, or a call of a volatile user function to a replica, but never a
 * statement known to write (or pin): that stays on the primary and the reason says the hint was
 * ignored. Empty texts stay `any` whatever the hint. `/* pgrelay:max_lag_ms=N *\/` and
 * `/* pgrelay:after_lsn=X/Y *\/` (a causality token) are values of each text, never of its shape:
 * they are read by the lexer for every text and added to the shape's classification.
 */
import { loadModule } from 'libpg-query';
import { analyze, type AnalyzeOptions, type ShapeDecision } from './analyze.js';
import { TRANSACTION_CHARACTERISTICS } from './collector.js';
import { maskLiterals, type MaskedText } from './lexer.js';
import { longKey, representative } from './long-key.js';
import type { Classification, ClassifierOptions, Route, Volatility } from './types.js';

export type { Classification, ClassifierOptions, Route, SessionEffect, Volatility } from './types.js';
export { maskLiterals, splitStatements } from './lexer.js';

/** Keys longer than this are folded (bulk INSERTs, long IN lists: see long-key.ts). */
const MAX_KEY_LENGTH = 16_384;

interface CacheEntry {
  readonly decision: ShapeDecision;
  /** when the entry last moved to the young end of the LRU order (in cache insertions) */
  stamp: number;
  /** the hint-free classification, valid while `generation` matches the volatility map's */
  resolved: Classification | undefined;
  generation: number;
}

const EMPTY: Classification = Object.freeze({ route: 'any', pin: false, reason: 'empty query', effects: [], statements: 0, userFunctions: [] });

export class Classifier {
  readonly stats = { hits: 0, misses: 0 };
  private readonly cache = new Map<string, CacheEntry>();
  private volatility: ReadonlyMap<string, Volatility> | undefined;
  /** changes whenever a classification made before may no longer hold (the volatility map changed) */
  generation = 0;
  /** counts moves to the young end of the LRU order */
  private clock = 0;

  private constructor(
    private readonly cacheSize: number,
    private readonly analyzeOptions: AnalyzeOptions,
  ) {}

  /** Loads the parser (WASM) once; then every call is synchronous. */
  static async create(options: ClassifierOptions = {}): Promise<Classifier> {
    await loadModule();
    // as written (a quoted "MyFunc") and folded to lower case (an unquoted MyFunc)
    const lower = (names: readonly string[] | undefined): Set<string> => new Set((names ?? []).flatMap((n) => [n, n.toLowerCase()]));
    return new Classifier(Math.max(0, options.cacheSize ?? 5000), {
      forcedPrimary: lower(options.functions?.primary),
      forcedReplica: lower(options.functions?.replica),
    });
  }

  /**
   * The volatility of the database's functions: name → pg_proc.provolatile. Keys are bare names
   * (`f`) or schema-qualified ones (`app.f`); a call written `app.f()` looks up `app.f`, then `f`.
   * With overloads, give a name its most volatile value.
   */
  /** told when a statement calls a function the volatility map does not hold (so it can be re-read) */
  onUnknownFunction: ((name: string) => void) | undefined;

  setVolatility(map: ReadonlyMap<string, Volatility>): void {
    this.volatility = map;
    this.generation++;
  }

  classify(sql: string): Classification {
    // A text with nothing to mask (extended-protocol texts with $n parameters, BEGIN, COMMIT) is
    // its own key: found without running the lexer. A key holds no comment (so no hint) and every
    // mask holds a NUL, which a text from the wire cannot.
    const unmasked = this.cache.get(sql);
    if (unmasked !== undefined && !sql.includes('\0')) {
      this.stats.hits++;
      this.touch(sql, unmasked);
      return transactionCharacteristics(this.resolved(unmasked), sql);
    }
    const masked = maskLiterals(sql);
    if (masked.empty) return hasHints(masked) ? withHints(EMPTY, masked) : EMPTY;
    const entry = this.lookup(masked.key.length > MAX_KEY_LENGTH ? longKey(masked.key, MAX_KEY_LENGTH) : masked.key, sql);
    const resolved = transactionCharacteristics(this.resolved(entry), sql);
    if (!hasHints(masked)) return resolved;
    return this.applyHint(entry.decision, resolved, masked);
  }

  /** The entry's hint-free classification, resolved again when the volatility map changed. */
  private resolved(entry: CacheEntry): Classification {
    if (entry.resolved === undefined || entry.generation !== this.generation) {
      entry.resolved = this.resolve(entry.decision);
      entry.generation = this.generation;
    }
    return entry.resolved;
  }

  private lookup(key: string, sql: string): CacheEntry {
    const cached = this.cache.get(key);
    if (cached !== undefined) {
      this.stats.hits++;
      this.touch(key, cached);
      return cached;
    }
    this.stats.misses++;
    const entry: CacheEntry = { decision: this.analyze(key, sql), stamp: ++this.clock, resolved: undefined, generation: -1 };
    if (this.cacheSize > 0 && entry.decision.cacheable) {
      if (this.cache.size >= this.cacheSize) {
        const oldest = this.cache.keys().next();
        if (!oldest.done) this.cache.delete(oldest.value);
      }
      this.cache.set(key, entry);
    }
    return entry;
  }

  /**
   * The decision for a text. A long text whose key folds to a short shape is decided by parsing a
   * short text of that shape instead (see long-key.ts), unless that decision reads a literal.
   */
  private analyze(key: string, sql: string): ShapeDecision {
    const short = key === sql ? undefined : representative(key);
    if (short !== undefined) {
      const decision = analyze(short, this.analyzeOptions);
      if (decision.cacheable) return decision;
    }
    return analyze(sql, this.analyzeOptions);
  }

  /**
   * Refreshes a hit's place in the LRU order, but only once it is in the older half: hot shapes
   * then cost one Map lookup, and an entry still cannot be evicted while it is being used.
   */
  private touch(key: string, cached: CacheEntry): void {
    if (this.clock - cached.stamp >= this.cacheSize >> 1) {
      this.cache.delete(key);
      this.cache.set(key, cached);
      cached.stamp = ++this.clock;
    }
  }

  /** The shape's decision with the volatility of its user functions applied. */
  private resolve(d: ShapeDecision): Classification {
    let route: Route = d.route;
    let reason = d.reason;
    if (route !== 'primary') {
      const volatile = this.firstVolatile(d.userFunctions);
      if (volatile !== undefined) {
        route = 'primary';
        reason = volatile;
      }
    }
    return Object.freeze({
      route,
      pin: d.pin,
      reason,
      effects: Object.freeze(d.effects),
      statements: d.statements,
      userFunctions: Object.freeze(d.userFunctions),
      ...(d.readsSequences === true ? { readsSequences: true as const } : {}),
      ...(d.namesSettings === true ? { namesSettings: true as const } : {}),
      ...(d.unverifiable === undefined ? {} : { unverifiable: d.unverifiable }),
      ...(d.opensOnReplica === true ? { opensOnReplica: true as const } : {}),
      ...(d.localSettings === true ? { localSettings: true as const } : {}),
    });
  }

  /** Why the first user function that may write sends the text to the primary, if one does. */
  private firstVolatile(functions: readonly string[]): string | undefined {
    const map = this.volatility;
    for (const name of functions) {
      if (map === undefined) return `calls ${name}() whose volatility is not known yet`;
      let v = map.get(name);
      if (v === undefined) {
        const dot = name.lastIndexOf('.');
        if (dot >= 0) v = map.get(name.slice(dot + 1));
      }
      if (v === 'v') return `calls volatile function ${name}()`;
      if (v === undefined) {
        // not in pg_proc when last read: created since, or a typo the server will report
        this.onUnknownFunction?.(name);
        return `calls ${name}() whose volatility is not known yet`;
      }
    }
    return undefined;
  }

  private applyHint(d: ShapeDecision, resolved: Classification, hints: TextHints): Classification {
    const hint = hints.hint;
    let { route, reason } = resolved;
    if (hint === 'primary' && route !== 'primary') {
      route = 'primary';
      reason = 'hint pgrelay:primary';
    } else if (hint === 'replica') {
      if (d.route === 'primary' || d.pin) reason = `${reason} (pgrelay:replica hint ignored: the statement writes)`;
      else if (route !== 'replica') {
        route = 'replica';
        reason = 'hint pgrelay:replica';
      }
    }
    return withHints({ ...resolved, route, reason }, hints);
  }
}

/** What a text's own comments say (read per text, after the shape's cached decision). */
type TextHints = Pick<MaskedText, 'hint' | 'maxLagMs' | 'afterLsn' | 'badAfterLsn'>;

/**
 * A text whose shape sets a transaction-local setting (Classification.localSettings) that names
 * one of the transaction's own characteristics (read from the text itself: the name is masked in
 * the shape) goes to the primary.
 */
function transactionCharacteristics(c: Classification, sql: string): Classification {
  if (c.localSettings !== true || c.route === 'primary' || !TRANSACTION_CHARACTERISTICS.test(sql)) return c;
  return Object.freeze({ ...c, route: 'primary' as const, reason: "set_config() of the transaction's isolation, read-only or deferrable setting: a hot standby refuses it", localSettings: undefined });
}

function hasHints(h: TextHints): boolean {
  return h.hint !== undefined || h.maxLagMs !== undefined || h.afterLsn !== undefined || h.badAfterLsn !== undefined;
}

function withHints(c: Classification, h: TextHints): Classification {
  return {
    ...c,
    ...(h.hint !== undefined ? { hint: h.hint } : {}),
    ...(h.maxLagMs !== undefined ? { maxLagMs: h.maxLagMs } : {}),
    ...(h.afterLsn !== undefined ? { afterLsn: h.afterLsn } : {}),
    ...(h.badAfterLsn !== undefined ? { badAfterLsn: h.badAfterLsn } : {}),
  };
}
