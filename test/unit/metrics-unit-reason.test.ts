import { beforeAll, describe, expect, it } from 'vitest';
import { Classifier } from '../../src/classify/classifier.js';
import { REROUTED_READONLY, REROUTED_SERIALIZABLE, unitReason } from '../../src/metrics/unit-reason.js';

// pgrelay_units_total{reason}: the classifier's free-text reasons folded into a fixed set of words,
// checked on real classifications.
let classifier: Classifier;

beforeAll(async () => {
  classifier = await Classifier.create();
  classifier.setVolatility(new Map([['my_writer', 'v']]));
});

const cases: [string, string][] = [
  ['SELECT * FROM accounts WHERE id = 42', 'read'],
  ['SELECT 1; SELECT 2', 'read'],
  ['INSERT INTO accounts VALUES (1)', 'write'],
  ['UPDATE accounts SET n = n + 1', 'write'],
  ['CREATE TABLE t (n int)', 'write'],
  ['SELECT txid_current()', 'function'],
  ['SELECT nextval(\'s\')', 'function'],
  ['SELECT currval(\'s\')', 'pin'],
  ['SELECT my_writer()', 'function'],
  ['SELECT 1; SELECT pg_notify(\'c\', \'x\')', 'function'],
  ['BEGIN', 'transaction_control'],
  ['BEGIN READ ONLY', 'transaction_control'],
  ['COMMIT', 'transaction_control'],
  ['ROLLBACK', 'transaction_control'],
  ['SET search_path = app', 'session'],
  ['RESET ALL', 'session'],
  ['/* pgrelay:primary */ SELECT 1', 'hint'],
  ['/* pgrelay:replica */ SELECT my_writer()', 'hint'],
  ['CREATE TEMP TABLE tt (n int)', 'pin'],
  ['LISTEN channel', 'pin'],
  ['SELEC 1', 'parse_error'],
];

describe('unit reasons', () => {
  it.each(cases)('%s → %s', (sql, reason) => {
    expect(unitReason('any', classifier.classify(sql))).toBe(reason);
  });

  it('names the FunctionCall message and units without a statement', () => {
    expect(unitReason('function call', classifier.classify('SELECT 1'))).toBe('function_call');
    expect(unitReason('any', undefined)).toBe('unclassified');
  });

  it('names a read run again on the primary after a replica refused it, whatever its statement', () => {
    expect(unitReason(REROUTED_READONLY, classifier.classify('SELECT * FROM v'))).toBe('rerouted_readonly');
    expect(unitReason(REROUTED_SERIALIZABLE, classifier.classify('SELECT * FROM v'))).toBe('rerouted_serializable');
    expect(unitReason('replica', classifier.classify('SELECT * FROM v'))).toBe('read');
  });

  it('stays a small fixed set however many statement texts there are', () => {
    const reasons = new Set<string>();
    for (let i = 0; i < 200; i++) {
      reasons.add(unitReason('any', classifier.classify(`SELECT f${i}(${i}) FROM t${i}`)));
      reasons.add(unitReason('any', classifier.classify(`INSERT INTO t${i} VALUES (${i})`)));
      reasons.add(unitReason('any', classifier.classify(`SELEC garbage ${i}`)));
    }
    expect(reasons.size).toBeLessThanOrEqual(4);
  });
});
