import { loadModule, scanSync, type ScanToken } from 'libpg-query';
import { beforeAll, describe, expect, it } from 'vitest';
import { maskLiterals, splitRanges, splitStatements } from '../../src/classify/lexer.js';

const key = (sql: string): string => maskLiterals(sql).key;
const N = '\0n';
const S = '\0s';

describe('maskLiterals', () => {
  it('masks numbers of every form and keeps parameters', () => {
    expect(key('SELECT 1, 1.5, .5, 1e10, 2.5E-3, 0x1F, 0o17, 0b101, 1_000_000 WHERE a = $1')).toBe(
      `SELECT ${N}, ${N}, ${N}, ${N}, ${N}, ${N}, ${N}, ${N}, ${N} WHERE a = $1`,
    );
  });

  it('keeps digits inside identifiers and the dots of ranges', () => {
    expect(key('SELECT t1.c2 FROM t1')).toBe('SELECT t1.c2 FROM t1');
    expect(key('SELECT a[1:2]')).toBe(`SELECT a[${N}:${N}]`);
    expect(key('SELECT -1')).toBe(`SELECT -${N}`);
  });

  it('masks standard strings with doubled quotes', () => {
    expect(key("SELECT 'it''s', 'a'")).toBe(`SELECT ${S}, ${S}`);
  });

  it('masks E strings with backslash escapes', () => {
    expect(key("SELECT E'\\'', e'a\\\\', 'b'")).toBe(`SELECT ${S}, ${S}, ${S}`);
    expect(key("SELECT E'\\' ; DELETE FROM t'")).toBe(`SELECT ${S}`);
    expect(key("SELECT E'it''s'")).toBe(`SELECT ${S}`);
  });

  it('a backslash does not escape in a standard string', () => {
    expect(key("SELECT 'a\\', 'b'")).toBe(`SELECT ${S}, ${S}`);
  });

  it('masks B, X, N and U& strings but not U& identifiers', () => {
    expect(key("SELECT B'101', X'1F', N'x', U&'d\\0061t'")).toBe(`SELECT ${S}, ${S}, ${S}, ${S}`);
    expect(key('SELECT U&"d\\0061t"')).toBe('SELECT U&"d\\0061t"');
  });

  it('string prefixes only start a token', () => {
    // xe'…' is the identifier "xe" followed by a string; abcE is an identifier
    expect(key("SELECT abcE'x'")).toBe(`SELECT abcE${S}`);
  });

  it('masks dollar quotes, nested tags, and keeps identifiers with $', () => {
    expect(key('SELECT $$a;b$$')).toBe(`SELECT ${S}`);
    expect(key("SELECT $tag$ it's $$ nested $$ ; UPDATE t SET a=1 $tag$")).toBe(`SELECT ${S}`);
    expect(key('SELECT $a$ $b$ x $b$ $a$, 1')).toBe(`SELECT ${S}, ${N}`);
    expect(key('SELECT a$b$c FROM t')).toBe('SELECT a$b$c FROM t');
    expect(key('SELECT $1, $23')).toBe('SELECT $1, $23');
  });

  it('keeps quoted identifiers as they are', () => {
    expect(key('SELECT "a""b", "1" FROM "T"')).toBe('SELECT "a""b", "1" FROM "T"');
  });

  it('drops comments, nested block comments included', () => {
    expect(key('SELECT /* x */ 1')).toBe(`SELECT   ${N}`);
    expect(key('select/*x*/1')).toBe(`select ${N}`);
    expect(key('/* a /* b */ still; */ SELECT 2')).toBe(`SELECT ${N}`);
    expect(key('-- c\nSELECT 3')).toBe(`SELECT ${N}`);
    expect(key("SELECT 1 -- it's")).toBe(`SELECT ${N}  `);
  });

  it('runs unterminated literals and comments to the end', () => {
    const U = '\0u';
    expect(key("SELECT 'abc")).toBe(`SELECT ${U}`);
    expect(key("SELECT 'abc''")).toBe(`SELECT ${U}`);
    expect(key("SELECT E'abc\\'")).toBe(`SELECT ${U}`);
    expect(key('SELECT $x$ abc')).toBe(`SELECT ${U}`);
    expect(key('SELECT /* abc')).toBe(`SELECT ${U}`);
    expect(key('SELECT 1 /* a /* b */')).toBe(`SELECT ${N} ${U}`);
    expect(key('SELECT "abc')).toBe('SELECT "abc');
  });

  it('gives one key to texts that differ only in literals', () => {
    expect(key('SELECT * FROM t WHERE aid = 12345')).toBe(key('SELECT * FROM t WHERE aid = 678'));
    expect(key("UPDATE t SET a = 'x' WHERE id = 1")).toBe(key("UPDATE t SET a = 'yy' WHERE id = 22"));
    expect(key('SELECT a FROM t')).not.toBe(key('SELECT b FROM t'));
  });

  it('reads hints from comments only', () => {
    expect(maskLiterals('/* pgrelay:primary */ SELECT 1')).toMatchObject({ hint: 'primary', key: `SELECT ${N}` });
    expect(maskLiterals('SELECT 1 /*pgrelay:replica*/').hint).toBe('replica');
    expect(maskLiterals('SELECT 1 -- pgrelay:replica').hint).toBe('replica');
    expect(maskLiterals('/* PGRELAY:Primary */ SELECT 1').hint).toBe('primary');
    expect(maskLiterals("SELECT '/* pgrelay:primary */'").hint).toBeUndefined();
    expect(maskLiterals('SELECT $$/* pgrelay:primary */$$').hint).toBeUndefined();
    expect(maskLiterals('/* app: pgrelay:primary */ SELECT 1').hint).toBeUndefined();
    expect(maskLiterals('/* pgrelay:max_lag_ms=500 */ SELECT 1')).toMatchObject({ hint: undefined, maxLagMs: 500 });
    expect(maskLiterals('/* pgrelay:max_lag_ms=500 */ /* pgrelay:max_lag_ms=200, replica */ SELECT 1')).toMatchObject({ hint: 'replica', maxLagMs: 200 });
    expect(maskLiterals('/* pgrelay:replica */ /* pgrelay:primary */ SELECT 1').hint).toBe('primary');
    expect(maskLiterals('/* pgrelay:max_lag_ms=abc */ SELECT 1').maxLagMs).toBeUndefined();
  });

  it('knows an empty text', () => {
    for (const sql of ['', '  \n', '/* x */', '-- y', ';', ' ; ;/* z */']) expect(maskLiterals(sql).empty, JSON.stringify(sql)).toBe(true);
    for (const sql of ['x', "''", '1', '"a"', '$$ $$', '(']) expect(maskLiterals(sql).empty, sql).toBe(false);
  });
});

describe('splitStatements', () => {
  it('splits on top-level semicolons only', () => {
    expect(splitStatements("SELECT 'a;b'; SELECT E'\\';'; SELECT $$;$$; SELECT \"x;y\"; SELECT 1 /* ; */ -- ;\n; SELECT 2")).toEqual([
      "SELECT 'a;b'",
      "SELECT E'\\';'",
      'SELECT $$;$$',
      'SELECT "x;y"',
      'SELECT 1',
      'SELECT 2',
    ]);
  });

  it('drops empty and comment-only statements and surrounding comments', () => {
    expect(splitStatements(' ; /* c */ ; SELECT 1 /* t */ ;; -- end')).toEqual(['SELECT 1']);
    expect(splitStatements('/* lead */ SET a = 1 /* mid */ + 1')).toEqual(['SET a = 1 /* mid */ + 1']);
    expect(splitStatements('')).toEqual([]);
  });

  it('keeps semicolons inside parentheses (rule actions)', () => {
    const rule = 'CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); INSERT INTO b VALUES (2))';
    expect(splitStatements(`${rule}; SELECT 1`)).toEqual([rule, 'SELECT 1']);
  });

  it('keeps BEGIN ATOMIC bodies together', () => {
    const fn = 'CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; SELECT 2; END';
    expect(splitStatements(`${fn}; BEGIN; SELECT 3; END`)).toEqual([fn, 'BEGIN', 'SELECT 3', 'END']);
    const proc = 'CREATE PROCEDURE p() BEGIN ATOMIC INSERT INTO t VALUES (1); END';
    expect(splitStatements(`${proc}; SELECT 1`)).toEqual([proc, 'SELECT 1']);
  });

  it('reports ranges with their terminator', () => {
    const sql = 'SELECT 1 ; SELECT 2';
    expect(splitRanges(sql)).toEqual([
      { start: 0, end: 8, terminator: 9 },
      { start: 11, end: 19, terminator: 19 },
    ]);
  });
});

describe('agrees with PostgreSQL\'s own scanner', () => {
  beforeAll(async () => {
    await loadModule();
  });

  const FRAGMENTS = [
    'SELECT', 'FROM', 'a', 'tbl_1', 'a$b', '"q;uo""ted"', 'U&"x"',
    '1', '42', '1.5', '.5', '1e10', '2.5E-3', '0x1F', '1_000',
    "'a'", "'it''s'", "'a\\'", "E'a\\'b'", "e'x''y'", "B'101'", "X'1F'", "N'n;'", "U&'d\\0061t'",
    '$$a;b$$', '$t$ $$ ; $t$', '$a$x$a$',
    '/* c; */', '/* a /* b */ c */', '-- x;\n', '/* pgrelay:primary */',
    '$1', '$12', ',', '(', ')', '+', '-', '::', ';', '=', '*', '||',
  ];

  // a small deterministic PRNG (mulberry32), so that a failure is reproducible
  function prng(seed: number): () => number {
    return () => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  /** The key and statement count that the scanner's tokens imply, under maskLiterals' conventions. */
  function expected(sql: string, tokens: ScanToken[]): { key: string; statements: number } {
    let key = '';
    let last = -1;
    let statements = 0;
    let tokensInStatement = 0;
    let depth = 0;
    for (let k = 0; k < tokens.length; k++) {
      const t = tokens[k]!;
      if (t.tokenName === 'C_COMMENT' || t.tokenName === 'SQL_COMMENT') {
        if (last >= 0) {
          key += sql.slice(last, t.start) + ' ';
          last = t.end;
        }
        continue;
      }
      if (last < 0) last = t.start;
      if (t.text === '(') depth++;
      if (t.text === ')') depth = Math.max(0, depth - 1);
      if (t.text === ';' && depth === 0) {
        if (tokensInStatement > 0) statements++;
        tokensInStatement = 0;
        continue;
      }
      tokensInStatement++;
      const next = tokens[k + 1];
      // N'…' is scanned as the keyword N followed by a string
      if (/^[nN]$/.test(t.text) && next?.tokenName === 'SCONST' && next.start === t.end) continue;
      const isString = t.tokenName === 'SCONST' || /^([bBxX]|[uU]&)'/.test(t.text);
      const isNumber = t.tokenName === 'ICONST' || t.tokenName === 'FCONST';
      if (isString || isNumber) {
        const prev = tokens[k - 1];
        const start = prev && /^[nN]$/.test(prev.text) && prev.end === t.start && t.tokenName === 'SCONST' ? prev.start : t.start;
        key += sql.slice(last, start) + (isString ? '\0s' : '\0n');
        last = t.end;
      }
    }
    if (tokensInStatement > 0) statements++;
    return { key: last < 0 ? '' : key + sql.slice(last), statements };
  }

  it('on where literals, comments and statements are in 3000 random texts', () => {
    // CLASSIFY_FUZZ_SEED / CLASSIFY_FUZZ_TEXTS explore further
    const random = prng(Number(process.env['CLASSIFY_FUZZ_SEED'] ?? 20261126));
    const texts = Number(process.env['CLASSIFY_FUZZ_TEXTS'] ?? 3000);
    let compared = 0;
    for (let n = 0; n < texts; n++) {
      const parts: string[] = [];
      const count = 1 + Math.floor(random() * 12);
      for (let k = 0; k < count; k++) parts.push(FRAGMENTS[Math.floor(random() * FRAGMENTS.length)]!, random() < 0.8 ? ' ' : '');
      const sql = parts.join('');
      let tokens: ScanToken[];
      try {
        tokens = scanSync(sql).tokens;
      } catch {
        continue; // a lexical error (trailing junk after a number, …): nothing to compare
      }
      compared++;
      const want = expected(sql, tokens);
      expect(maskLiterals(sql).key, sql).toBe(want.key);
      expect(splitRanges(sql).length, sql).toBe(want.statements);
    }
    expect(compared).toBeGreaterThan(texts / 2);
  });
});
