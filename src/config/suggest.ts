/** "Did you mean" for unknown config keys. */

/** Levenshtein distance (insert, delete, substitute; each costs 1). */
export function editDistance(a: string, b: string): number {
  if (a === b) return 0;
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + cost);
    }
    previous = current;
  }
  return previous[b.length]!;
}

/** `maxLagMs`, `max-lag-ms` and `MAX_LAG_MS` all normalise to `maxlagms`. */
function normalise(key: string): string {
  return key.toLowerCase().replace(/[-_\s]/g, '');
}

/**
 * The candidate the unknown key most likely meant: one that differs only in case or separators
 * (camelCase, kebab-case), else the shortest one that is the key plus a `_suffix` (a forgotten unit:
 * `max_lag` → `max_lag_ms`), else the closest within edit distance 2 (ties: the first candidate).
 */
export function suggestKey(key: string, candidates: readonly string[]): string | undefined {
  const wanted = normalise(key);
  const sameWords = candidates.find((candidate) => normalise(candidate) === wanted);
  if (sameWords !== undefined) return sameWords;
  // the key without its unit suffix: `max_lag` for `max_lag_ms`, `interval` for `interval_ms`
  const longer = candidates.filter(
    (candidate) => key.length >= 3 && (candidate.startsWith(`${key.toLowerCase()}_`) || candidate.startsWith(`${key.toLowerCase()}-`)),
  );
  if (longer.length > 0) return longer.reduce((a, b) => (b.length < a.length ? b : a));
  let best: string | undefined;
  let bestDistance = 3;
  for (const candidate of candidates) {
    const distance = editDistance(key.toLowerCase(), candidate);
    // a one- or two-letter key is within distance 2 of every short key: demand a closer match
    if (distance < bestDistance && distance < Math.max(key.length, 2)) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best;
}
