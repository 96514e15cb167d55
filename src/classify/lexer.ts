/**
 * A small single-pass SQL lexer over char codes, following PostgreSQL's scan.l closely enough to
 * find where literals, comments and statements begin and end. It never parses: the classifier
 * uses it to build the cache key of a text (its *shape*: literals masked, comments dropped,
 * routing hints read) in well under a microsecond, so that the WASM parser runs once per shape.
 *
 * Assumes `standard_conforming_strings = on` (the default since 9.1): a backslash escapes only in
 * E'…' strings.
 */

/** Placeholders for masked literals. NUL cannot occur in a protocol string, so they never collide
 * with real text. */
const MASK_NUMBER = '\0n';
const MASK_STRING = '\0s';
/** An unterminated literal or comment: the text is a syntax error, whatever its terminated twin does. */
const MASK_UNTERMINATED = '\0u';

/** What the end-of-literal helpers return when the text ends first. */
const UNTERMINATED = -2;

const TAB = 9;
const LF = 10;
const CR = 13;
const SPACE = 32;
const DOUBLE_QUOTE = 34;
const DOLLAR = 36;
const AMPERSAND = 38;
const QUOTE = 39;
const LPAREN = 40;
const RPAREN = 41;
const STAR = 42;
const PLUS = 43;
const MINUS = 45;
const DOT = 46;
const SLASH = 47;
const SEMICOLON = 59;
const BACKSLASH = 92;
const UNDERSCORE = 95;

export type Hint = 'primary' | 'replica';

/** The shape of a text: the cache key plus what the comments said. */
export interface MaskedText {
  /** the text with numbers and strings replaced by placeholders and comments by a space (see maskLiterals) */
  key: string;
  /** from `/* pgrelay:primary *\/` / `/* pgrelay:replica *\/`; primary wins if both appear */
  hint: Hint | undefined;
  /** the smallest `/* pgrelay:max_lag_ms=N *\/` in the text */
  maxLagMs: number | undefined;
  /** the highest `/* pgrelay:after_lsn=X/Y *\/` in the text (a causality token), as a byte position */
  afterLsn: bigint | undefined;
  /** the first `after_lsn=` value that is not a WAL position (as written): the text is refused, 22P02 */
  badAfterLsn: string | undefined;
  /** nothing but whitespace, comments and semicolons */
  empty: boolean;
}

/** One statement of a text: `start`/`end` bound its first and last token (leading and trailing
 * whitespace and comments excluded); `terminator` is the index of its `;` or the text's length. */
export interface StatementRange {
  start: number;
  end: number;
  terminator: number;
}

// PostgreSQL's `space` class: [ \t\n\r\f\v]
function isSpace(c: number): boolean {
  return c === SPACE || (c >= TAB && c <= CR);
}

function isDigit(c: number): boolean {
  return c >= 48 && c <= 57;
}

// ident_start: [A-Za-z\200-\377_]
function isIdentStart(c: number): boolean {
  const l = c | 0x20;
  return (l >= 97 && l <= 122) || c === UNDERSCORE || c >= 128;
}

// ident_cont: [A-Za-z\200-\377_0-9\$]
function isIdentCont(c: number): boolean {
  return isIdentStart(c) || isDigit(c) || c === DOLLAR;
}

/** End of a '…' string or "…" identifier (doubled quote escapes it); `i` is after the opening quote. */
function endOfQuoted(s: string, i: number, quote: string): number {
  for (;;) {
    const j = s.indexOf(quote, i);
    if (j < 0) return UNTERMINATED;
    if (s.charCodeAt(j + 1) !== quote.charCodeAt(0)) return j + 1;
    i = j + 2;
  }
}

/** End of an E'…' string (backslash escapes and '' both work); `i` is after the opening quote. */
function endOfEscapeString(s: string, i: number): number {
  const n = s.length;
  while (i < n) {
    const c = s.charCodeAt(i);
    if (c === BACKSLASH) i += 2;
    else if (c === QUOTE) {
      if (s.charCodeAt(i + 1) !== QUOTE) return i + 1;
      i += 2;
    } else i++;
  }
  return UNTERMINATED;
}

/** If a dollar quote `$tag$` opens at `i`, the index after its closing delimiter; else -1. */
function endOfDollarQuote(s: string, i: number): number {
  let j = i + 1;
  const first = s.charCodeAt(j);
  if (first !== DOLLAR) {
    if (!isIdentStart(first)) return -1;
    j++;
    // dolq_cont: [A-Za-z\200-\377_0-9]
    while (j < s.length) {
      const c = s.charCodeAt(j);
      if (!isIdentStart(c) && !isDigit(c)) break;
      j++;
    }
    if (s.charCodeAt(j) !== DOLLAR) return -1;
  }
  const delimiter = s.slice(i, j + 1);
  const close = s.indexOf(delimiter, j + 1);
  return close < 0 ? UNTERMINATED : close + delimiter.length;
}

/** End of a numeric constant starting at `i` (decimal, 0x/0o/0b, underscores, fraction, exponent). */
function endOfNumber(s: string, i: number): number {
  const n = s.length;
  if (s.charCodeAt(i) === 48) {
    const radix = s.charCodeAt(i + 1) | 0x20;
    if (radix === 120 || radix === 111 || radix === 98) {
      let j = i + 2;
      while (j < n && (isIdentStart(s.charCodeAt(j)) || isDigit(s.charCodeAt(j)))) j++;
      if (j > i + 2) return j;
    }
  }
  let j = i;
  while (j < n && (isDigit(s.charCodeAt(j)) || s.charCodeAt(j) === UNDERSCORE)) j++;
  // "1..2" is an integer followed by "..", not "1." and ".2"
  if (s.charCodeAt(j) === DOT && s.charCodeAt(j + 1) !== DOT) {
    j++;
    while (j < n && (isDigit(s.charCodeAt(j)) || s.charCodeAt(j) === UNDERSCORE)) j++;
  }
  if ((s.charCodeAt(j) | 0x20) === 101) {
    let k = j + 1;
    const sign = s.charCodeAt(k);
    if (sign === PLUS || sign === MINUS) k++;
    if (isDigit(s.charCodeAt(k))) {
      j = k;
      while (j < n && (isDigit(s.charCodeAt(j)) || s.charCodeAt(j) === UNDERSCORE)) j++;
    }
  }
  return j;
}

/** End of a (nested) block comment opened at `i`. */
function endOfBlockComment(s: string, i: number): number {
  const n = s.length;
  let depth = 1;
  let j = i + 2;
  while (j < n) {
    const c = s.charCodeAt(j);
    if (c === SLASH && s.charCodeAt(j + 1) === STAR) {
      depth++;
      j += 2;
    } else if (c === STAR && s.charCodeAt(j + 1) === SLASH) {
      j += 2;
      if (--depth === 0) return j;
    } else j++;
  }
  return UNTERMINATED;
}

/** End of a `--` comment: the newline stays outside it. */
function endOfLineComment(s: string, i: number): number {
  const n = s.length;
  let j = i + 2;
  while (j < n) {
    const c = s.charCodeAt(j);
    if (c === LF || c === CR) return j;
    j++;
  }
  return n;
}

/**
 * End of a string constant with a prefix starting at `i` (E'…', B'…', X'…', N'…', U&'…'), or -1
 * when the identifier at `i` is not such a prefix.
 */
function endOfPrefixedString(s: string, i: number, c: number): number {
  const next = s.charCodeAt(i + 1);
  const l = c | 0x20;
  if (next === QUOTE) {
    if (l === 101) return endOfEscapeString(s, i + 2);
    if (l === 110) return endOfQuoted(s, i + 2, "'");
    // B'…' and X'…' have no '' escape: the first quote ends them
    if (l === 98 || l === 120) {
      const j = s.indexOf("'", i + 2);
      return j < 0 ? UNTERMINATED : j + 1;
    }
    return -1;
  }
  if (l === 117 && next === AMPERSAND && s.charCodeAt(i + 2) === QUOTE) return endOfQuoted(s, i + 3, "'");
  return -1;
}

interface HintAccumulator {
  primary: boolean;
  replica: boolean;
  maxLagMs: number | undefined;
  afterLsn: bigint | undefined;
  badAfterLsn: string | undefined;
}

const newHints = (): HintAccumulator => ({ primary: false, replica: false, maxLagMs: undefined, afterLsn: undefined, badAfterLsn: undefined });

const HINT_PREFIX = /^\s*pgrelay:/i;
const MAX_LAG = /^max_lag_ms=(\d+)$/;
/** as PostgreSQL's pg_lsn input: 1 to 8 hex digits, a slash, 1 to 8 hex digits */
const LSN_VALUE = /^([0-9a-f]{1,8})\/([0-9a-f]{1,8})$/i;

/** Reads `pgrelay:primary`, `pgrelay:replica`, `pgrelay:max_lag_ms=N`, `pgrelay:after_lsn=X/Y` from a comment's content. */
function readHint(content: string, acc: HintAccumulator): void {
  if (!HINT_PREFIX.test(content)) return;
  for (const raw of content.trim().split(/[\s,]+/)) {
    const token = raw.toLowerCase().replace(/^pgrelay:/, '');
    if (token === 'primary') acc.primary = true;
    else if (token === 'replica') acc.replica = true;
    else if (token.startsWith('after_lsn=')) readAfterLsn(raw.slice(raw.indexOf('=') + 1), acc);
    else {
      const m = MAX_LAG.exec(token);
      if (m) {
        const ms = Number(m[1]);
        if (Number.isSafeInteger(ms) && (acc.maxLagMs === undefined || ms < acc.maxLagMs)) acc.maxLagMs = ms;
      }
    }
  }
}

/** An `after_lsn=` value: the highest of the text's positions counts; one that is not a position fails the text. */
function readAfterLsn(value: string, acc: HintAccumulator): void {
  const m = LSN_VALUE.exec(value);
  if (!m) {
    acc.badAfterLsn ??= value;
    return;
  }
  const lsn = (BigInt(`0x${m[1]!}`) << 32n) | BigInt(`0x${m[2]!}`);
  if (acc.afterLsn === undefined || lsn > acc.afterLsn) acc.afterLsn = lsn;
}

/** Whether a comment's content (from `start`) may be a hint: a cheap test before the regex. */
function mayBeHint(s: string, start: number, end: number): boolean {
  while (start < end && isSpace(s.charCodeAt(start))) start++;
  return start < end && (s.charCodeAt(start) | 0x20) === 112; // p
}

/**
 * The cache key of a text and its routing hints. Numeric constants and string constants of every
 * kind ('…', E'…', B'…', X'…', N'…', U&'…', $tag$…$tag$) become placeholders; comments become a
 * space (leading whitespace and comments are dropped, so a hint comment in front of a statement
 * does not make it a new shape); an unterminated literal or comment becomes its own placeholder,
 * so a syntax error never shares a shape with a valid text. Identifiers, keywords, `$1`
 * parameters, other whitespace and case are kept as they are.
 */
export function maskLiterals(sql: string): MaskedText {
  const n = sql.length;
  let key = '';
  let last = 0;
  let empty = true;
  let hints: HintAccumulator | undefined;
  // leading whitespace and comments are left out of the key
  let started = false;
  let i = 0;
  const masked = (from: number, end: number, mask: string): number => {
    if (end === UNTERMINATED) {
      key += sql.slice(last, from) + MASK_UNTERMINATED;
      return (last = n);
    }
    key += sql.slice(last, from) + mask;
    return (last = end);
  };
  while (i < n) {
    const c = sql.charCodeAt(i);
    if (isSpace(c)) {
      i++;
      continue;
    }
    if (!started && !(c === MINUS && sql.charCodeAt(i + 1) === MINUS) && !(c === SLASH && sql.charCodeAt(i + 1) === STAR)) {
      started = true;
      last = i;
    }
    if (c === SEMICOLON) {
      i++;
      continue;
    }
    if (isIdentStart(c)) {
      empty = false;
      const end = endOfPrefixedString(sql, i, c);
      if (end !== -1) {
        i = masked(i, end, MASK_STRING);
        continue;
      }
      i++;
      while (i < n && isIdentCont(sql.charCodeAt(i))) i++;
      continue;
    }
    if (isDigit(c) || (c === DOT && isDigit(sql.charCodeAt(i + 1)))) {
      empty = false;
      i = masked(i, endOfNumber(sql, i), MASK_NUMBER);
      continue;
    }
    switch (c) {
      case QUOTE:
        empty = false;
        i = masked(i, endOfQuoted(sql, i + 1, "'"), MASK_STRING);
        continue;
      case DOUBLE_QUOTE: {
        empty = false;
        const end = endOfQuoted(sql, i + 1, '"');
        i = end === UNTERMINATED ? n : end;
        continue;
      }
      case DOLLAR: {
        empty = false;
        if (isDigit(sql.charCodeAt(i + 1))) {
          i++;
          while (i < n && isDigit(sql.charCodeAt(i))) i++;
          continue;
        }
        const end = endOfDollarQuote(sql, i);
        if (end !== -1) {
          i = masked(i, end, MASK_STRING);
          continue;
        }
        break;
      }
      case MINUS:
        if (sql.charCodeAt(i + 1) === MINUS) {
          const end = endOfLineComment(sql, i);
          if (mayBeHint(sql, i + 2, end)) readHint(sql.slice(i + 2, end), (hints ??= newHints()));
          i = started ? masked(i, end, ' ') : end;
          continue;
        }
        break;
      case SLASH:
        if (sql.charCodeAt(i + 1) === STAR) {
          const end = endOfBlockComment(sql, i);
          const contentEnd = end === UNTERMINATED ? n : end - 2;
          if (mayBeHint(sql, i + 2, contentEnd)) readHint(sql.slice(i + 2, contentEnd), (hints ??= newHints()));
          if (started) i = masked(i, end, ' ');
          else i = end === UNTERMINATED ? n : end;
          continue;
        }
        break;
      default:
        break;
    }
    empty = false;
    i++;
  }
  if (!started) key = '';
  else if (last === 0) key = sql;
  else if (last < n) key += sql.slice(last);
  return {
    key,
    hint: hints === undefined ? undefined : hints.primary ? 'primary' : hints.replica ? 'replica' : undefined,
    maxLagMs: hints?.maxLagMs,
    afterLsn: hints?.afterLsn,
    badAfterLsn: hints?.badAfterLsn,
    empty,
  };
}

/**
 * Where the statements of a text are: split on top-level semicolons, respecting strings, dollar
 * quotes, quoted identifiers, comments, parentheses (rule actions) and psql's heuristic for
 * `CREATE FUNCTION|PROCEDURE … BEGIN ATOMIC … END` bodies. Statements that hold only whitespace
 * and comments are left out, as the server's parser leaves them out.
 */
export function splitRanges(sql: string): StatementRange[] {
  const n = sql.length;
  const out: StatementRange[] = [];
  let start = -1;
  let end = -1;
  let parenDepth = 0;
  let beginDepth = 0;
  // psql's heuristic: the initials of the statement's first identifiers, when they are
  // CREATE [OR REPLACE] FUNCTION|PROCEDURE
  let identCount = 0;
  let initials = '';
  let i = 0;
  const token = (from: number, to: number): void => {
    if (start < 0) start = from;
    end = to;
  };
  while (i < n) {
    const c = sql.charCodeAt(i);
    if (isSpace(c)) {
      i++;
      continue;
    }
    if (isIdentStart(c)) {
      const stringEnd = endOfPrefixedString(sql, i, c);
      if (stringEnd !== -1) {
        const to = stringEnd === UNTERMINATED ? n : stringEnd;
        token(i, to);
        i = to;
        continue;
      }
      const from = i;
      i++;
      while (i < n && isIdentCont(sql.charCodeAt(i))) i++;
      token(from, i);
      const word = i - from <= 9 ? sql.slice(from, i).toLowerCase() : '';
      if (identCount < 4 && (word === 'create' || word === 'function' || word === 'procedure' || word === 'or' || word === 'replace')) {
        if (initials.length === identCount) initials += word[0];
      }
      identCount++;
      if (parenDepth === 0 && (initials.startsWith('cf') || initials.startsWith('cp') || initials === 'corf' || initials === 'corp')) {
        if (word === 'begin') beginDepth++;
        else if (word === 'case' && beginDepth >= 1) beginDepth++;
        else if (word === 'end' && beginDepth > 0) beginDepth--;
      }
      continue;
    }
    if (isDigit(c) || (c === DOT && isDigit(sql.charCodeAt(i + 1)))) {
      const to = endOfNumber(sql, i);
      token(i, to);
      i = to;
      continue;
    }
    let to = i + 1;
    switch (c) {
      case QUOTE:
        to = endOfQuoted(sql, i + 1, "'");
        break;
      case DOUBLE_QUOTE:
        to = endOfQuoted(sql, i + 1, '"');
        break;
      case DOLLAR:
        if (isDigit(sql.charCodeAt(i + 1))) {
          to = i + 1;
          while (to < n && isDigit(sql.charCodeAt(to))) to++;
        } else {
          const dollarEnd = endOfDollarQuote(sql, i);
          if (dollarEnd !== -1) to = dollarEnd;
        }
        break;
      case MINUS:
        if (sql.charCodeAt(i + 1) === MINUS) {
          i = endOfLineComment(sql, i);
          continue;
        }
        break;
      case SLASH:
        if (sql.charCodeAt(i + 1) === STAR) {
          const commentEnd = endOfBlockComment(sql, i);
          i = commentEnd === UNTERMINATED ? n : commentEnd;
          continue;
        }
        break;
      case LPAREN:
        parenDepth++;
        break;
      case RPAREN:
        if (parenDepth > 0) parenDepth--;
        break;
      case SEMICOLON:
        if (parenDepth === 0 && beginDepth === 0) {
          if (start >= 0) out.push({ start, end, terminator: i });
          start = end = -1;
          identCount = 0;
          initials = '';
          i++;
          continue;
        }
        break;
      default:
        break;
    }
    if (to === UNTERMINATED) to = n;
    token(i, to);
    i = to;
  }
  if (start >= 0) out.push({ start, end, terminator: n });
  return out;
}

/** The statements of a text (see splitRanges), each without surrounding whitespace or comments. */
export function splitStatements(sql: string): string[] {
  return splitRanges(sql).map((r) => sql.slice(r.start, r.end));
}
