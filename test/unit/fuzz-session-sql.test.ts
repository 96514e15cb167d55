import fc from 'fast-check';
import { loadModule, parseSync } from 'libpg-query';
import { beforeAll, describe, expect, it } from 'vitest';
import { Classifier } from '../../src/classify/classifier.js';
import { maskLiterals, splitStatements } from '../../src/classify/lexer.js';
import { SessionState, stateTransition } from '../../src/frontend/session-state.js';

// pgrelay writes SQL of its own from client input: startup parameters become `SET name TO value`
// statements replayed on whatever server connection serves the client next. Checked here with
// PostgreSQL's own parser: whatever a client puts in a parameter's name or value, the text
// pgrelay builds is one SET of exactly that name and value, or something the server refuses to
// parse, never a second statement. And the classifier, which sees every statement a client sends,
// answers for any text without throwing.

beforeAll(async () => {
  await loadModule();
});

interface SetStatement {
  name: string;
  value: string;
}

/** The statements of `sql` if PostgreSQL's grammar accepts it; undefined on a syntax error. */
function parseSets(sql: string): (SetStatement | 'other')[] | undefined {
  let tree: { stmts?: { stmt: Record<string, unknown> }[] };
  try {
    tree = parseSync(sql) as typeof tree;
  } catch {
    return undefined;
  }
  return (tree.stmts ?? []).map(({ stmt }) => {
    const set = stmt.VariableSetStmt as { kind?: string; name?: string; args?: { A_Const?: { sval?: { sval?: string } } }[] } | undefined;
    if (!set || set.kind !== 'VAR_SET_VALUE' || set.args?.length !== 1 || !set.args[0]!.A_Const) return 'other';
    return { name: set.name ?? '', value: set.args[0]!.A_Const.sval?.sval ?? '' };
  });
}

const noNul = (s: string) => !s.includes('\0');
// under NAMEDATALEN (63 bytes), so that the parser does not truncate the name
const anyName = fc.string({ unit: 'grapheme', minLength: 1, maxLength: 15 }).filter((s) => noNul(s) && Buffer.byteLength(s) <= 63);
const anyValue = fc.string({ unit: 'binary', maxLength: 80 }).filter(noNul);
const hostileValue = fc.oneof(
  anyValue,
  fc.constantFrom("'; DROP TABLE t; --", "\\'; SELECT 1; --", "x' ; RESET ALL; SET a TO 'b", "$$; SELECT 1; $$", "E'\\\\'", "\\", "'", "''", "\\'"),
);
const plainName = fc.stringMatching(/^[a-z_][a-z0-9_]{0,10}\.[a-z_][a-z0-9_]{0,10}$/);

describe('session state SQL built from client input', () => {
  it('is one SET of exactly the name and value, or a syntax error — never another statement', () => {
    let parsed = 0;
    fc.assert(
      fc.property(anyName, hostileValue, (name, value) => {
        const sql = new SessionState(new Map([[name, value]])).sql();
        const statements = parseSets(sql);
        if (statements === undefined) return; // the server refuses it: the client gets that error
        parsed++;
        expect(statements).toHaveLength(1);
        const [set] = statements;
        expect(set).not.toBe('other');
        const { name: parsedName, value: parsedValue } = set as SetStatement;
        expect(parsedName.toLowerCase()).toBe(name.toLowerCase());
        expect(parsedValue).toBe(value);
      }),
      { numRuns: 1000 },
    );
    // most names are quoted identifiers the grammar accepts: the property is not vacuous
    expect(parsed).toBeGreaterThan(500);
  });

  it('parses for every custom parameter name (a.b) with any value', () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.tuple(plainName, hostileValue), { selector: ([n]) => n, minLength: 1, maxLength: 4 }), (pairs) => {
        const state = new SessionState(new Map(pairs));
        const sql = stateTransition('SET something TO 1', state.sql());
        const statements = parseSets(sql);
        expect(statements, sql).toBeDefined();
        // the reset of the previous state (RESET …) comes first, then exactly the client's settings
        expect(statements!.filter((s) => s !== 'other')).toEqual(pairs.map(([name, value]) => ({ name, value })));
        expect(statements!.length).toBeGreaterThan(pairs.length);
      }),
      { numRuns: 500 },
    );
  });
});

describe('classifier on arbitrary client text', () => {
  let classifier: Classifier;
  beforeAll(async () => {
    classifier = await Classifier.create({ cacheSize: 200 });
  });

  const sqlish = fc
    .array(
      fc.oneof(
        fc.constantFrom('SELECT', 'INSERT', 'INTO', 'FROM', 'WHERE', 'BEGIN', 'COMMIT', 'SET', 'RESET', 'DO', '$$', '$x$', "'", '"', ';', '/*', '*/', '--', '\n', 'E\'', '\\', '(', ')', 'pgrelay:primary', 'pgrelay:replica', 'nextval(', ' ', ','),
        fc.string({ unit: 'grapheme', maxLength: 8 }),
      ),
      { maxLength: 40 },
    )
    .map((parts) => parts.join(' '));

  it('classifies any text without throwing, the same way twice', () => {
    fc.assert(
      fc.property(fc.oneof(sqlish, fc.string({ unit: 'binary', maxLength: 200 })), (text) => {
        const first = classifier.classify(text);
        expect(['primary', 'replica', 'any']).toContain(first.route);
        expect(classifier.classify(text)).toEqual(first);
        maskLiterals(text);
        expect(splitStatements(text).join('').length).toBeLessThanOrEqual(text.length);
      }),
      { numRuns: 2000 },
    );
  });
});
