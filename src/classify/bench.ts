/**
 * Micro-benchmark of the classifier's hot path. `node dist/classify/bench.js` prints the numbers.
 * - maskNs: maskLiterals alone (the per-text cost on a cache hit, before the Map lookup)
 * - cachedNs: classify() of one shape with varying literals (pgbench-like simple-protocol reads)
 * - uncachedNs: classify() of distinct shapes (every call parses with libpg-query)
 */
import { pathToFileURL } from 'node:url';
import { Classifier } from './classifier.js';
import { maskLiterals } from './lexer.js';

export interface ClassifyBenchResult {
  cachedNs: number;
  uncachedNs: number;
  maskNs: number;
}

const SHAPES = [
  (i: number) => `SELECT abalance FROM pgbench_accounts WHERE aid = ${i}`,
  (i: number) => `UPDATE pgbench_accounts SET abalance = abalance + ${i % 5000} WHERE aid = ${i}`,
  (i: number) => `SELECT id, name, created_at FROM accounts WHERE email = 'user${i}@example.com' AND status IN ('active', 'pending') ORDER BY created_at DESC LIMIT 20`,
  (i: number) => `INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (${i % 10}, ${i % 3}, ${i}, ${-i}, CURRENT_TIMESTAMP)`,
];

function nsPerOp(iterations: number, fn: (i: number) => void): number {
  const start = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) fn(i);
  return Number(process.hrtime.bigint() - start) / iterations;
}

/** Best of a few rounds, after a warm-up, to keep a noisy machine's numbers comparable. */
function best(rounds: number, measure: () => number): number {
  measure();
  let min = Infinity;
  for (let r = 0; r < rounds; r++) min = Math.min(min, measure());
  return Math.round(min);
}

export async function benchClassify(): Promise<ClassifyBenchResult> {
  const texts = Array.from({ length: 4096 }, (_, i) => SHAPES[i % SHAPES.length]!(i + 1));
  let sink = 0;

  const maskNs = best(5, () => nsPerOp(200_000, (i) => (sink += maskLiterals(texts[i & 4095]!).key.length)));

  const cached = await Classifier.create();
  const cachedNs = best(5, () => nsPerOp(200_000, (i) => (sink += cached.classify(texts[i & 4095]!).statements)));

  // every call a new shape (identifiers differ), so every call parses; the cache still inserts and evicts
  const uncached = await Classifier.create();
  let shape = 0;
  const uncachedNs = best(3, () => nsPerOp(2_000, () => (sink += uncached.classify(`SELECT c${shape} FROM t${shape++} WHERE a = 1 AND b = 'x'`).statements)));
  if (uncached.stats.hits !== 0) throw new Error('uncached benchmark hit the cache');

  if (sink === -1) console.log(sink);
  return { cachedNs, uncachedNs, maskNs };
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  console.log(JSON.stringify(await benchClassify()));
}
