/**
 * The cache key of a long text (bulk INSERTs, long IN lists), and a short text with the same
 * decision. Such texts are rarely the same shape twice when keyed by their masked text: a bulk
 * INSERT of 1,000 rows and one of 1,001 rows differ, and parameter numbers ($1 … $3000) differ
 * per row; and PostgreSQL's parser (libpg-query, on the event loop) costs about 2 µs per
 * character: a 600 kB INSERT took 2 s. So a long key is folded:
 *
 * - quoted identifiers are written in hex (`"a(b"` → `"61286"`), so that nothing below looks
 *   inside them;
 * - parameter numbers are dropped (`$17` → `$`): the decision never depends on them;
 * - a run of four or more of the same masked literal (`1, 2, 3, 4` → `\0n,\0n,\0n,\0n`)
 *   becomes one, marked;
 * - a run of four or more identical parenthesized groups (`(\0n,\0s), (\0n,\0s), …`, one level
 *   of nested parentheses allowed) becomes one, marked.
 *
 * Repeating a group or a literal adds the same nodes to the parse tree again: it changes no
 * route, pin, effect, statement count or function name, so folded texts share the decision, and
 * the folded key with literals and parameters filled back in (`representative`) is a short text
 * whose decision is theirs — as long as that decision reads no literal's value (the classifier
 * parses the real text when it does). A folded key that is still long is replaced by its SHA-256.
 * Every folded key starts with NUL, which no text from the wire holds, so it never meets the key
 * of a short text.
 */
import { createHash } from 'node:crypto';

/** A quoted identifier in a masked key (strings and comments are masked already). */
const QUOTED_IDENTIFIER = /"((?:[^"]|"")*)"/g;
const HEX_IDENTIFIER = /"([0-9a-f]*)"/g;
/** A parameter reference that is not part of an identifier (`x$1` is an identifier). */
const PARAMETER = /(?<![\p{L}\p{N}_$])\$\d+/gu;
const FOLDED_PARAMETER = /(?<![\p{L}\p{N}_$])\$(?!\d)/gu;
/**
 * A run of four or more of the same masked literal (see lexer.ts: NUL then a letter). Shorter runs
 * stay: the position of a function's argument can decide (set_config's third), and no built-in
 * whose arguments decide takes more than three.
 */
const LITERAL_RUN = /(\0[a-z])(?:\s*,\s*\1){3,}/g;
/** A run of four or more identical parenthesized groups, one level of nesting inside. */
const GROUP_RUN = /(\((?:[^()]|\([^()]*\))*\))(?:\s*,\s*\1){3,}/g;
const FOLD_MARK = '\0*';
const FOLDED = '\0L';
const HASHED = '\0H';

export function longKey(key: string, maxLength: number): string {
  const folded =
    FOLDED +
    key
      .replace(QUOTED_IDENTIFIER, (_, name: string) => `"${Buffer.from(name, 'utf8').toString('hex')}"`)
      .replace(PARAMETER, '$')
      .replace(LITERAL_RUN, `$1${FOLD_MARK}`)
      .replace(GROUP_RUN, `$1${FOLD_MARK}`);
  return folded.length <= maxLength ? folded : HASHED + createHash('sha256').update(folded).digest('hex');
}

/**
 * A short SQL text with the folded key's shape (one row for many, `0` and `''` for literals,
 * `$1` for parameters), or undefined when the key was hashed or holds an unterminated literal.
 */
export function representative(folded: string): string | undefined {
  if (!folded.startsWith(FOLDED) || folded.includes('\0u')) return undefined;
  return folded
    .slice(FOLDED.length)
    .replaceAll(FOLD_MARK, '')
    .replaceAll('\0n', '0')
    .replaceAll('\0s', "''")
    .replace(FOLDED_PARAMETER, '$1')
    .replace(HEX_IDENTIFIER, (_, hex: string) => `"${Buffer.from(hex, 'hex').toString('utf8')}"`);
}
