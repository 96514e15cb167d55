import { readFileSync } from 'node:fs';
import { PassThrough } from 'node:stream';
import { beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { Classifier, splitStatements } from '../../src/classify/classifier.js';
import { runClassifyCli } from '../../src/classify/cli.js';
import { analyze } from '../../src/classify/analyze.js';
import { refusedDeallocate } from '../../src/classify/deallocate.js';

interface CorpusCase {
  sql: string;
  route: 'primary' | 'replica' | 'any';
  pin?: boolean;
}

function corpus(name: string): CorpusCase[] {
  return parse(readFileSync(new URL(`../fixtures/${name}`, import.meta.url), 'utf8')) as CorpusCase[];
}

let classifier: Classifier;
beforeAll(async () => {
  classifier = await Classifier.create();
});

describe.each(['routing-corpus.yaml', 'routing-corpus-extra.yaml'])('%s', (name) => {
  const cases = corpus(name);
  it('has cases', () => expect(cases.length).toBeGreaterThan(10));
  it.each(cases)('$sql → $route', ({ sql, route, pin }) => {
    const c = classifier.classify(sql);
    expect({ route: c.route, pin: c.pin }, c.reason).toEqual({ route, pin: pin ?? false });
    // a cached answer is the same answer
    expect(classifier.classify(sql)).toEqual(c);
  });
});

describe('reasons', () => {
  it.each([
    ['SELECT 1', 'SELECT without writes'],
    ['INSERT INTO t VALUES (1)', 'INSERT writes'],
    ["SELECT nextval('s')", 'calls nextval()'],
    ['SELECT * FROM t FOR UPDATE', 'SELECT … FOR UPDATE locks rows'],
    ['/* pgrelay:primary */ SELECT 1', 'hint pgrelay:primary'],
    ['SELECT 1; DELETE FROM t', 'statement 2 of 2: DELETE writes'],
  ])('%s: %s', (sql, reason) => {
    expect(classifier.classify(sql).reason).toBe(reason);
  });

  it('a parse error goes to the primary without quoting the text', () => {
    const c = classifier.classify("SELEC 'secret-value'");
    expect(c.route).toBe('primary');
    expect(c.reason).toMatch(/^parse error/);
    expect(c.reason).not.toContain('secret');
    expect(classifier.classify("SELECT 'unterminated secret").reason).not.toContain('secret');
  });
});

describe('effects', () => {
  it('multi-statement SETs carry their statement index into splitStatements', () => {
    const sql = "SET search_path = 'a;b'; SELECT 1; /* c; */ SET statement_timeout TO 5; RESET work_mem; SET LOCAL lock_timeout = 1";
    const c = classifier.classify(sql);
    expect(c.route).toBe('replica');
    expect(c.statements).toBe(5);
    expect(c.effects).toEqual([
      { type: 'set', name: 'search_path', statement: 0 },
      { type: 'set', name: 'statement_timeout', statement: 2 },
      { type: 'reset', name: 'work_mem', statement: 3 },
    ]);
    const parts = splitStatements(sql);
    expect(parts[0]).toBe("SET search_path = 'a;b'");
    expect(parts[2]).toBe('SET statement_timeout TO 5');
    expect(parts[3]).toBe('RESET work_mem');
  });

  it('statement indexes survive multi-byte characters and empty statements', () => {
    const sql = "SELECT 'é€😀';; SET application_name = 'ü'";
    expect(classifier.classify(sql).effects).toEqual([{ type: 'set', name: 'application_name', statement: 1 }]);
    expect(splitStatements(sql)[1]).toBe("SET application_name = 'ü'");
  });

  it('statement indexes skip a BEGIN ATOMIC body', () => {
    const sql = 'CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END; SET x.y = 1';
    const c = classifier.classify(sql);
    expect(c.statements).toBe(2);
    expect(c.effects).toEqual([{ type: 'set', name: 'x.y', statement: 1 }]);
    expect(splitStatements(sql)).toHaveLength(2);
  });

  it.each([
    ['SET TIME ZONE \'UTC\'', [{ type: 'set', name: 'timezone', statement: 0 }]],
    ['SET SESSION search_path TO app', [{ type: 'set', name: 'search_path', statement: 0 }]],
    ['SET ROLE bob', [{ type: 'set', name: 'role', statement: 0 }]],
    ['SET LOCAL search_path TO app', []],
    ['RESET ALL', [{ type: 'reset_all' }, { type: 'default_read_only', value: false }]],
    ['DISCARD ALL', [{ type: 'discard_all' }, { type: 'default_read_only', value: false }]],
    ['DISCARD PLANS', []],
    ['DEALLOCATE p1', [{ type: 'deallocate', name: 'p1' }]],
    ['DEALLOCATE PREPARE p2', [{ type: 'deallocate', name: 'p2' }]],
    ['DEALLOCATE ALL', [{ type: 'deallocate', name: null }]],
    ['BEGIN', [{ type: 'begin', readOnly: false }]],
    ['START TRANSACTION READ WRITE', [{ type: 'begin', readOnly: false }]],
    ['BEGIN READ ONLY', [{ type: 'begin', readOnly: true }]],
    ['COMMIT', [{ type: 'commit' }]],
    ['END', [{ type: 'commit' }]],
    ["PREPARE TRANSACTION 'x'", [{ type: 'commit' }]],
    ['ROLLBACK', [{ type: 'rollback' }]],
    ['ROLLBACK TO SAVEPOINT a', []],
    ['SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY', [{ type: 'set_transaction_read_only' }]],
    ['SET TRANSACTION READ WRITE', []],
    // a hot standby cannot run a serializable transaction: not a read-only transaction for routing
    ['SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY', []],
    // transaction state, not the session's (pg_dump's workers send it inside their transaction)
    ["SET TRANSACTION SNAPSHOT '00000003-0000001B-1'", []],
    ['SET transaction_read_only = on', [{ type: 'set_transaction_read_only' }]],
    ['SET default_transaction_read_only = on', [{ type: 'set', name: 'default_transaction_read_only', statement: 0 }, { type: 'default_read_only', value: true }]],
    ["SET default_transaction_read_only = 'off'", [{ type: 'set', name: 'default_transaction_read_only', statement: 0 }, { type: 'default_read_only', value: false }]],
    ['SET default_transaction_read_only TO DEFAULT', [{ type: 'set', name: 'default_transaction_read_only', statement: 0 }, { type: 'default_read_only', value: false }]],
    ['RESET default_transaction_read_only', [{ type: 'reset', name: 'default_transaction_read_only', statement: 0 }, { type: 'default_read_only', value: false }]],
    ['SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY', [{ type: 'set', name: 'session_characteristics', statement: 0 }, { type: 'default_read_only', value: true }]],
    ['SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE', [{ type: 'set', name: 'session_characteristics', statement: 0 }, { type: 'default_read_only', value: false }]],
    ['BEGIN; INSERT INTO t VALUES (1); COMMIT', [{ type: 'begin', readOnly: false }, { type: 'commit' }]],
  ])('%s', (sql, effects) => {
    const c = classifier.classify(sql);
    expect(c.effects).toEqual(effects);
  });

  it('marks the transaction settings a hot standby runs as the primary does: they may open an optimistic transaction on a replica', () => {
    const opens = (sql: string) => classifier.classify(sql).opensOnReplica === true;
    for (const sql of [
      "SET LOCAL statement_timeout = '5s'",
      'SET LOCAL search_path TO app',
      'SET TRANSACTION ISOLATION LEVEL READ COMMITTED',
      'SET TRANSACTION ISOLATION LEVEL REPEATABLE READ',
      'SET CONSTRAINTS ALL DEFERRED',
      "SET LOCAL transaction_isolation = 'repeatable read'",
    ])
      expect(opens(sql), sql).toBe(true);
    for (const sql of [
      'SET TRANSACTION ISOLATION LEVEL SERIALIZABLE',
      'SET TRANSACTION READ WRITE',
      'SET TRANSACTION ISOLATION LEVEL READ COMMITTED, READ WRITE',
      "SET TRANSACTION SNAPSHOT '00000003-0000001B-1'",
      "SET LOCAL transaction_isolation = 'serializable'",
      "SET LOCAL transaction_read_only = 'off'",
      'SET statement_timeout = 5',
      "SET LOCAL statement_timeout = '5s'; SELECT 1",
      'SELECT 1',
    ])
      expect(opens(sql), sql).toBe(false);
    // the level is a literal here: the cache does not carry one text's answer to another
    expect(opens("SET LOCAL transaction_isolation = 'read committed'")).toBe(true);
    expect(opens("SET LOCAL transaction_isolation = 'serializable'")).toBe(false);
  });

  it('literal values that change an effect are not taken from the cache', () => {
    const on = classifier.classify("SET default_transaction_read_only = 'on'");
    const off = classifier.classify("SET default_transaction_read_only = 'off'");
    expect(on.effects[1]).toEqual({ type: 'default_read_only', value: true });
    expect(off.effects[1]).toEqual({ type: 'default_read_only', value: false });
    expect(classifier.classify("EXPLAIN (ANALYZE 'off') DELETE FROM t").route).toBe('replica');
    expect(classifier.classify("EXPLAIN (ANALYZE 'on') DELETE FROM t").route).toBe('primary');
  });
});

describe('hints', () => {
  it('a replica hint sends a read or session statement to a replica', () => {
    const c = classifier.classify('/* pgrelay:replica */ SELECT 1');
    expect(c).toMatchObject({ route: 'replica', hint: 'replica' });
    expect(classifier.classify('/* pgrelay:replica */ SET search_path = a').route).toBe('replica');
  });

  it('a replica hint cannot send a write to a replica', () => {
    for (const sql of ['/* pgrelay:replica */ DELETE FROM t', "/* pgrelay:replica */ SELECT nextval('s')", '/* pgrelay:replica */ LISTEN x']) {
      const c = classifier.classify(sql);
      expect(c.route, sql).toBe('primary');
      expect(c.reason).toContain('pgrelay:replica hint ignored');
    }
  });

  it('a primary hint wins over a replica hint', () => {
    expect(classifier.classify('/* pgrelay:replica */ /* pgrelay:primary */ SELECT 1').route).toBe('primary');
  });

  it('hints are read from comments anywhere, not from strings or identifiers', () => {
    expect(classifier.classify('SELECT 1 /* pgrelay:primary */').route).toBe('primary');
    expect(classifier.classify('SELECT 1 -- pgrelay:primary').route).toBe('primary');
    expect(classifier.classify("SELECT '/* pgrelay:primary */'")).toMatchObject({ route: 'replica' });
    expect(classifier.classify("SELECT '/* pgrelay:primary */'").hint).toBeUndefined();
    expect(classifier.classify('SELECT 1 AS "/* pgrelay:primary */"').route).toBe('replica');
    expect(classifier.classify("SELECT $$ /* pgrelay:primary */ $$").route).toBe('replica');
  });

  it('max_lag_ms', () => {
    const c = classifier.classify('/* pgrelay:max_lag_ms=500 */ SELECT * FROM t');
    expect(c).toMatchObject({ route: 'replica', maxLagMs: 500 });
    expect(c.hint).toBeUndefined();
    expect(classifier.classify('/* pgrelay:replica max_lag_ms=2000 */ SELECT 1')).toMatchObject({ route: 'replica', hint: 'replica', maxLagMs: 2000 });
    expect(classifier.classify('SELECT 1').maxLagMs).toBeUndefined();
  });

  it('hints do not split the cache: the shape is shared', async () => {
    const k = await Classifier.create();
    k.classify('SELECT * FROM t WHERE a = 1');
    k.classify('/* pgrelay:primary */ SELECT * FROM t WHERE a = 2');
    expect(k.stats).toEqual({ hits: 1, misses: 1 });
  });
});

describe('user functions and volatility', () => {
  it('collects non-builtin functions, schema-qualified if written so', () => {
    const c = classifier.classify('SELECT lower(a), app.score(a), my_fn(b), count(*) FROM t');
    expect(c.userFunctions).toEqual(['app.score', 'my_fn']);
  });

  it('before the volatility map is known, a user function goes to the primary', async () => {
    const k = await Classifier.create();
    const c = k.classify('SELECT my_fn(1)');
    expect(c.route).toBe('primary');
    expect(c.reason).toContain('my_fn');
  });

  it('volatile → primary, stable/immutable → replica, absent → primary and a re-read is asked for', async () => {
    const k = await Classifier.create();
    const unknown: string[] = [];
    k.onUnknownFunction = (name) => unknown.push(name);
    k.setVolatility(new Map([['v_fn', 'v'], ['s_fn', 's'], ['i_fn', 'i'], ['app.q', 'v']]));
    expect(k.classify('SELECT v_fn()')).toMatchObject({ route: 'primary', reason: 'calls volatile function v_fn()' });
    expect(k.classify('SELECT s_fn(), i_fn()').route).toBe('replica');
    expect(k.classify('SELECT not_in_map()').route).toBe('primary');
    expect(unknown).toEqual(['not_in_map']);
    expect(k.classify('SELECT app.q()').route).toBe('primary');
    // a qualified call falls back to the bare name
    expect(k.classify('SELECT other.v_fn()').route).toBe('primary');
    expect(k.classify('SELECT * FROM t WHERE x = s_fn(v_fn())').route).toBe('primary');
  });

  it('a new volatility map re-decides cached shapes', async () => {
    const k = await Classifier.create();
    k.setVolatility(new Map([['f', 's']]));
    expect(k.classify('SELECT f(1)').route).toBe('replica');
    k.setVolatility(new Map([['f', 'v']]));
    expect(k.classify('SELECT f(2)').route).toBe('primary');
    expect(k.stats).toEqual({ hits: 1, misses: 1 });
  });

  it('a replica hint overrides a volatile user function', async () => {
    const k = await Classifier.create();
    k.setVolatility(new Map([['f', 'v']]));
    expect(k.classify('/* pgrelay:replica */ SELECT f()').route).toBe('replica');
  });

  it('config forces functions either way', async () => {
    const k = await Classifier.create({ functions: { primary: ['reads_but_writes', 'app.audit'], replica: ['my_volatile_read', 'nextval'] } });
    k.setVolatility(new Map([['my_volatile_read', 'v'], ['reads_but_writes', 's'], ['audit', 's']]));
    expect(k.classify('SELECT my_volatile_read()').route).toBe('replica');
    expect(k.classify('SELECT reads_but_writes()').route).toBe('primary');
    expect(k.classify('SELECT app.audit()').route).toBe('primary');
    expect(k.classify('SELECT other.audit()').route).toBe('replica');
    expect(k.classify("SELECT nextval('s')").route).toBe('replica');
    expect(k.classify('SELECT lower(x) FROM t').route).toBe('replica');
  });
});

describe('long texts: the folded short form decides as the whole text does', () => {
  const list = Array.from({ length: 4000 }, (_, i) => String(i)).join(', ');
  const rows = Array.from({ length: 1500 }, (_, i) => `(${i}, 'r${i}', $${i + 1})`).join(', ');
  const cases = [...corpus('routing-corpus.yaml'), ...corpus('routing-corpus-extra.yaml')].map((c) => c.sql);
  it.each(cases)('%s', (sql) => {
    const k = classifier;
    for (const tail of [`SELECT 1 FROM t WHERE x IN (${list})`, `INSERT INTO log VALUES ${rows}`]) {
      const text = `${sql}\n;\n${tail}`;
      const whole = analyze(text, { forcedPrimary: new Set(), forcedReplica: new Set() });
      const c = k.classify(text);
      expect({ pin: c.pin, effects: c.effects, statements: c.statements, primary: c.route === 'primary' }).toEqual({
        pin: whole.pin,
        effects: whole.effects,
        statements: whole.statements,
        // a hint comment moves a read (hints are applied after the cache, to any text)
        primary: c.hint === 'primary' || whole.route === 'primary' || whole.userFunctions.length > 0,
      });
    }
  });
});

describe('decisions that read a literal', () => {
  it("set_config(…, true) runs on a replica unless it names the transaction's own characteristics, whichever text of the shape came first", async () => {
    for (const order of [
      ["SELECT set_config('app.tenant', '5', true)", "SELECT set_config('transaction_isolation', 'serializable', true)"],
      ["SELECT set_config('transaction_read_only', 'off', true)", "SELECT set_config('app.tenant', '5', true)"],
    ]) {
      const k = await Classifier.create();
      for (let round = 0; round < 2; round++) {
        for (const sql of order) {
          const c = k.classify(sql);
          expect(c.route, sql).toBe(sql.includes('transaction_') ? 'primary' : 'replica');
          expect(c.pin, sql).toBe(false);
        }
      }
    }
    // a name the text does not write out cannot be checked
    expect(classifier.classify('SELECT set_config($1, $2, true)').route).toBe('primary');
  });


  it("set_config's is_local decides the pin per text, not per shape ('true' and 'false' mask alike)", async () => {
    const k = await Classifier.create();
    expect(k.classify("SELECT set_config('app.tenant', '1', 'true')").pin).toBe(false);
    expect(k.classify("SELECT set_config('app.tenant', '7', 'false')").pin).toBe(true);
    expect(k.classify("SELECT set_config('app.tenant', '8', 'true')").pin).toBe(false);
    expect(k.classify("SELECT set_config('app.tenant', '7', 0)").pin).toBe(true);
    expect(k.classify("SELECT set_config('app.tenant', '7', 1)").pin).toBe(false);
    // keywords are not masked: those shapes stay cached
    expect(k.classify("SELECT set_config('app.tenant', '1', true)").pin).toBe(false);
    expect(k.classify("SELECT set_config('app.tenant', '2', false)").pin).toBe(true);
    // a parameter is not known: pinned
    expect(k.classify('SELECT set_config($1, $2, $3)').pin).toBe(true);
  });

  it('currval and lastval pin (they answer from the backend where nextval ran); nextval and setval alone do not', async () => {
    const k = await Classifier.create();
    for (const sql of ["SELECT currval('s')", 'SELECT lastval()', "SELECT nextval('s'), currval('s')", "SELECT pg_catalog.currval('s')"]) {
      expect(k.classify(sql), sql).toMatchObject({ route: 'primary', pin: true });
    }
    for (const sql of ["SELECT nextval('s')", "SELECT setval('s', 5)", "INSERT INTO t VALUES (nextval('s'))"]) {
      expect(k.classify(sql), sql).toMatchObject({ route: 'primary', pin: false });
    }
    expect(k.classify("SELECT app.currval('s')").pin).toBe(false); // a user function of that name
  });

  it('a text that calls currval or lastval (in any statement, also inside a write or EXPLAIN ANALYZE) reads the sequence state; nextval alone, an advisory lock or a user function of that name does not', async () => {
    const k = await Classifier.create();
    for (const sql of ["SELECT currval('s')", 'SELECT lastval()', "SELECT 1; SELECT currval('s')", "INSERT INTO t VALUES (currval('s'))", "SELECT pg_advisory_lock(1), currval('s')", "EXPLAIN ANALYZE SELECT lastval()"]) {
      expect(k.classify(sql).readsSequences, sql).toBe(true);
    }
    for (const sql of ["SELECT nextval('s')", 'SELECT pg_advisory_lock(1)', "SELECT app.currval('s')", 'SELECT 1']) {
      expect(k.classify(sql).readsSequences, sql).toBeUndefined();
    }
  });
});

describe('views only the primary answers', () => {
  it('pg_prepared_xacts and pg_prepared_xact() go to the primary (a hot standby lists no prepared transaction)', async () => {
    const k = await Classifier.create();
    for (const sql of [
      'SELECT gid FROM pg_prepared_xacts',
      'SELECT * FROM pg_catalog.pg_prepared_xacts WHERE owner = current_user',
      'SELECT count(*) FROM pg_class c JOIN pg_prepared_xacts p ON true',
      'SELECT 1 WHERE EXISTS (SELECT 1 FROM pg_prepared_xacts)',
      'SELECT * FROM pg_prepared_xact()',
    ]) {
      const c = k.classify(sql);
      expect(c, sql).toMatchObject({ route: 'primary', pin: false });
      expect(c.reason, sql).toMatch(/pg_prepared_xact/);
    }
    // other system views and a table of that name in another schema stay reads
    for (const sql of ['SELECT count(*) FROM pg_stat_activity', 'SELECT * FROM app.pg_prepared_xacts', 'SELECT relname FROM pg_class']) {
      expect(k.classify(sql).route, sql).toBe('replica');
    }
  });
});

describe('DEALLOCATE refusals', () => {
  const ctx = (alone: boolean) => ({ isOwn: (n: string) => n === 'mine' || n === 'pgrelay_own', serverPrefix: 'pgrelay_', alone });
  it.each([
    ['DEALLOCATE pgrelay_1', true, '26000'],
    ['SELECT 1; DEALLOCATE pgrelay_1', false, '26000'],
    ['DEALLOCATE PREPARE "pgrelay_1"; SELECT 1', false, '26000'],
    ['SELECT 1; DEALLOCATE ALL', false, '0A000'],
    ['DEALLOCATE ALL', false, '0A000'], // not alone: what the caller says of a text it cannot follow
    ['DEALLOCATE ALL', true, undefined], // answered by the session, or a pinned client's on its own connection
    ['DEALLOCATE pgrelay_own', false, undefined],
    ['SELECT 1; DEALLOCATE mine', false, undefined],
    ['SELECT 1; DEALLOCATE other', false, undefined],
  ] as const)('%s (alone: %s) → %s', (sql, alone, sqlstate) => {
    expect(refusedDeallocate(classifier.classify(sql), ctx(alone))?.sqlstate).toBe(sqlstate);
  });
});

describe('long texts (keys past the cache limit)', () => {
  const rows = (n: number, row: (i: number) => string) => Array.from({ length: n }, (_, i) => row(i)).join(', ');

  it('a bulk INSERT is parsed once per row shape, whatever its row count and values', async () => {
    const k = await Classifier.create();
    const a = k.classify(`INSERT INTO t (a, b) VALUES ${rows(2000, (i) => `(${i}, 'v${i}')`)}`);
    const b = k.classify(`INSERT INTO t (a, b) VALUES ${rows(2500, (i) => `(${i * 7}, 'w')`)}`);
    expect(a).toMatchObject({ route: 'primary', pin: false, reason: 'INSERT writes' });
    expect(b).toEqual(a);
    expect(k.stats.misses).toBe(1);
    // with parameters, as drivers send bulk inserts: numbered differently in every row
    const p1 = k.classify(`INSERT INTO t (a, b) VALUES ${rows(3000, (i) => `($${2 * i + 1}, $${2 * i + 2})`)}`);
    k.classify(`INSERT INTO t (a, b) VALUES ${rows(3100, (i) => `($${2 * i + 1}, $${2 * i + 2})`)}`);
    expect(p1.route).toBe('primary');
    expect(k.stats.misses).toBe(2);
  });

  it('folding keeps what decides: a long read stays a read, a volatile call or a pinning one is seen', async () => {
    const k = await Classifier.create();
    k.setVolatility(new Map([['f', 'v'], ['g', 's']]));
    const list = rows(5000, (i) => String(i));
    expect(k.classify(`SELECT * FROM t WHERE id IN (${list})`).route).toBe('replica');
    expect(k.classify(`SELECT * FROM t WHERE id IN (${list}) AND g(id)`).route).toBe('replica');
    expect(k.classify(`SELECT * FROM t WHERE id IN (${list}) AND f(id)`).route).toBe('primary');
    expect(k.classify(`SELECT * FROM t WHERE id IN (${list}) FOR UPDATE`).route).toBe('primary');
    expect(k.classify(`INSERT INTO t VALUES ${rows(2000, (i) => `(${i}, nextval('s'))`)}`)).toMatchObject({ route: 'primary', pin: false });
    expect(k.classify(`INSERT INTO t VALUES ${rows(2000, (i) => `(${i}, currval('s'))`)}`)).toMatchObject({ route: 'primary', pin: true });
    expect(k.classify(`INSERT INTO t VALUES ${rows(2000, (i) => `(${i}, now())`)}`)).toMatchObject({ route: 'primary', pin: false });
    // a row that differs from the others is not folded away
    expect(k.classify(`INSERT INTO t VALUES ${rows(2000, (i) => `(${i}, now())`)}, (1, pg_advisory_lock(1))`)).toMatchObject({ route: 'primary', pin: true });
    expect(k.classify(`SELECT * FROM t WHERE id IN (${list}); SET search_path = app`).effects).toEqual([{ type: 'set', name: 'search_path', statement: 1 }]);
  });

  it('a long text that does not fold is cached by a hash of its shape', async () => {
    const k = await Classifier.create();
    const columns = rows(3000, (i) => `c${i}`);
    expect(k.classify(`SELECT ${columns} FROM t WHERE x = 1`).route).toBe('replica');
    expect(k.classify(`SELECT ${columns} FROM t WHERE x = 2`).route).toBe('replica');
    expect(k.classify(`SELECT ${columns} FROM t WHERE x = 2 FOR SHARE`).route).toBe('primary');
    expect(k.stats.misses).toBe(2);
  });
});

describe('cache', () => {
  it('two texts differing only in literals: one miss, one hit', async () => {
    const k = await Classifier.create();
    const a = k.classify('SELECT * FROM pgbench_accounts WHERE aid = 12345');
    const b = k.classify('SELECT * FROM pgbench_accounts WHERE aid = 678');
    expect(k.stats).toEqual({ hits: 1, misses: 1 });
    expect(b).toEqual(a);
    k.classify("SELECT * FROM pgbench_accounts WHERE aid = 'x' /* a comment */");
    expect(k.stats).toEqual({ hits: 1, misses: 2 });
    k.classify("SELECT * FROM pgbench_accounts WHERE aid = E'y\\'z' /* another comment */");
    expect(k.stats).toEqual({ hits: 2, misses: 2 });
  });

  it('different identifiers are different shapes', async () => {
    const k = await Classifier.create();
    k.classify('SELECT a FROM t');
    k.classify('SELECT A FROM t');
    expect(k.stats.misses).toBe(2);
  });

  it('is an LRU of cacheSize shapes', async () => {
    const k = await Classifier.create({ cacheSize: 2 });
    k.classify('SELECT a FROM t');
    k.classify('SELECT b FROM t');
    k.classify('SELECT a FROM t'); // hit: a becomes newest
    k.classify('SELECT c FROM t'); // evicts b
    k.classify('SELECT a FROM t'); // hit
    k.classify('SELECT b FROM t'); // miss
    expect(k.stats).toEqual({ hits: 2, misses: 4 });
  });

  it('cacheSize 0 disables the cache', async () => {
    const k = await Classifier.create({ cacheSize: 0 });
    k.classify('SELECT 1');
    k.classify('SELECT 1');
    expect(k.stats).toEqual({ hits: 0, misses: 2 });
  });

  it('empty texts do not touch the cache', async () => {
    const k = await Classifier.create();
    expect(k.classify('')).toMatchObject({ route: 'any', pin: false, statements: 0, reason: 'empty query' });
    expect(k.classify(' /* x */ -- y\n')).toMatchObject({ route: 'any' });
    expect(k.stats).toEqual({ hits: 0, misses: 0 });
  });
});

describe('runClassifyCli', () => {
  it('answers one JSON object per line, errors included', async () => {
    const input = new PassThrough();
    const output = new PassThrough();
    const chunks: string[] = [];
    output.on('data', (b: Buffer) => chunks.push(b.toString()));
    const done = runClassifyCli(input, output, { classifier });
    input.end(['"SELECT 1"', 'not json', '42', JSON.stringify('LISTEN x'), '', JSON.stringify('SET a.b = 1')].join('\n') + '\n');
    await done;
    const lines = chunks.join('').trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toHaveLength(6);
    expect(lines[0]).toEqual({ route: 'replica', pin: false, reason: 'SELECT without writes' });
    expect(lines[1]).toHaveProperty('error');
    expect(lines[2]).toHaveProperty('error');
    expect(lines[3]).toEqual({ route: 'primary', pin: true, reason: 'LISTEN pins the session' });
    expect(lines[4]).toHaveProperty('error');
    expect(lines[5]).toMatchObject({ route: 'any', pin: false });
  });
});
