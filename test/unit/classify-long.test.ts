import { describe, expect, it, vi } from 'vitest';

// What libpg-query is asked to parse for a long text: a short text of the same shape, never the
// whole bulk INSERT (the parser costs ~2 µs per character on the event loop); the whole text only
// when the decision reads a literal's value.
const parsed: number[] = [];
vi.mock('libpg-query', async (importOriginal) => {
  const real = await importOriginal<typeof import('libpg-query')>();
  return {
    ...real,
    parseSync: (sql: string) => {
      parsed.push(sql.length);
      return real.parseSync(sql);
    },
  };
});

const { Classifier } = await import('../../src/classify/classifier.js');

const rows = (n: number, row: (i: number) => string) => Array.from({ length: n }, (_, i) => row(i)).join(', ');

describe('long texts are parsed in a short form', () => {
  it('a 300 kB bulk INSERT (literals, or parameters and quoted identifiers) costs one parse of a short text', async () => {
    const k = await Classifier.create();
    parsed.length = 0;
    const literals = `INSERT INTO t (a, b) VALUES ${rows(12_000, (i) => `(${i}, 'v${i}')`)}`;
    expect(literals.length).toBeGreaterThan(200_000);
    expect(k.classify(literals)).toMatchObject({ route: 'primary', pin: false, reason: 'INSERT writes' });
    const params = `INSERT INTO "T(1)" ("a,b", "c") VALUES ${rows(12_000, (i) => `($${2 * i + 1}, $${2 * i + 2}::"my(type)")`)} RETURNING "a,b"`;
    expect(k.classify(params)).toMatchObject({ route: 'primary', pin: false });
    expect(parsed).toHaveLength(2);
    expect(Math.max(...parsed)).toBeLessThan(200);
  });

  it('a long read with a volatile function is decided from its short form, and stays off the replicas', async () => {
    const k = await Classifier.create();
    k.setVolatility(new Map([['audit', 'v']]));
    parsed.length = 0;
    const list = rows(40_000, (i) => String(i));
    expect(k.classify(`SELECT * FROM t WHERE id IN (${list})`).route).toBe('replica');
    expect(k.classify(`SELECT audit(id) FROM t WHERE id IN (${list})`)).toMatchObject({ route: 'primary', reason: 'calls volatile function audit()' });
    expect(Math.max(...parsed)).toBeLessThan(200);
  });

  it('a decision that reads a literal parses the real text', async () => {
    const k = await Classifier.create();
    parsed.length = 0;
    const text = `SELECT set_config('app.tenant', '7', 'false') FROM t WHERE id IN (${rows(5000, (i) => String(i))})`;
    expect(k.classify(text).pin).toBe(true);
    expect(k.classify(text.replace("'false'", "'true'")).pin).toBe(false);
    expect(parsed).toContain(text.length);
  });
});
