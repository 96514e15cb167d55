/**
 * Durations and sizes as written in the config file.
 *
 * Durations: a number is milliseconds; a string is a number followed by a unit, PostgreSQL-like:
 * `us`, `ms`, `s`, `m` or `min`, `h`, `d` (`250ms`, `2s`, `1.5s`, `1m`, `1h`). Units are case-sensitive
 * (`1M` is not a duration). A string without a unit is milliseconds.
 *
 * Sizes: a number is bytes; a string is a number followed by `B`, `kB`, `MB`, `GB` or `TB`, 1024-based
 * as in PostgreSQL (`16MB` = 16 × 1024 × 1024 bytes). Units are matched without regard to case, and
 * `KiB`/`MiB`/`GiB`/`TiB` are accepted too. Fractions are rounded to whole bytes.
 */

const durationUnitsMs: Readonly<Record<string, number>> = {
  us: 0.001,
  ms: 1,
  s: 1000,
  m: 60_000,
  min: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

const sizeUnitsBytes: Readonly<Record<string, number>> = {
  b: 1,
  kb: 1024,
  kib: 1024,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
  tb: 1024 ** 4,
  tib: 1024 ** 4,
};

const quantity = /^\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*$/;

export const DURATION_UNITS = 'ms, s, m/min, h, d';
export const SIZE_UNITS = 'B, kB, MB, GB, TB; 1kB = 1024 B';

/** setTimeout fires at once for anything longer, so no configured duration may exceed it (~24.8 days). */
export const MAX_DURATION_MS = 2 ** 31 - 1;

/** `"1.5s"` → 1500; `undefined` when the text is not a duration. */
export function parseDuration(text: string): number | undefined {
  const match = quantity.exec(text);
  if (match === null) return undefined;
  const unit = match[2] === '' ? 'ms' : match[2]!;
  const factor = durationUnitsMs[unit];
  if (factor === undefined) return undefined;
  return Number(match[1]) * factor;
}

/** `"16MB"` → 16777216; `undefined` when the text is not a size. */
export function parseSize(text: string): number | undefined {
  const match = quantity.exec(text);
  if (match === null) return undefined;
  const unit = match[2] === '' ? 'b' : match[2]!.toLowerCase();
  const factor = sizeUnitsBytes[unit];
  if (factor === undefined) return undefined;
  return Math.round(Number(match[1]) * factor);
}

/** The shortest exact spelling: 1500 → "1500ms", 60000 → "1m", 2000 → "2s". For messages and docs. */
export function formatDuration(ms: number): string {
  for (const [unit, factor] of [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) {
    if (ms >= factor && ms % factor === 0) return `${ms / factor}${unit}`;
  }
  return `${ms}ms`;
}

/** The shortest exact spelling: 16777216 → "16MB", 1000 → "1000B". */
export function formatSize(bytes: number): string {
  for (const [unit, factor] of [['TB', 1024 ** 4], ['GB', 1024 ** 3], ['MB', 1024 ** 2], ['kB', 1024]] as const) {
    if (bytes >= factor && bytes % factor === 0) return `${bytes / factor}${unit}`;
  }
  return `${bytes}B`;
}
