/** Where each statement of a multi-statement text starts, as an index into splitStatements(sql). */
import { splitRanges } from './lexer.js';

/** Character offsets of UTF-8 byte offsets into `sql` (the parser reports byte positions). */
function charOffsets(sql: string, bytes: readonly number[]): number[] {
  // eslint-disable-next-line no-control-regex
  if (!/[^\x00-\x7f]/.test(sql)) return [...bytes];
  const out: number[] = [];
  let byte = 0;
  let k = 0;
  for (let i = 0; k < bytes.length; i++) {
    while (k < bytes.length && bytes[k]! <= byte) {
      out.push(i);
      k++;
    }
    if (i >= sql.length) break;
    const c = sql.charCodeAt(i);
    if (c < 0x80) byte += 1;
    else if (c < 0x800) byte += 2;
    else if (c >= 0xd800 && c <= 0xdbff) {
      byte += 4;
      i++;
    } else byte += 3;
  }
  while (out.length < bytes.length) out.push(sql.length);
  return out;
}

/** For each parsed statement, its index in splitStatements(sql). */
export function statementIndexes(sql: string, locations: readonly number[]): number[] {
  const ranges = splitRanges(sql);
  return charOffsets(sql, locations).map((offset, k) => {
    const i = ranges.findIndex((r) => r.terminator >= offset);
    return i >= 0 ? i : k;
  });
}
