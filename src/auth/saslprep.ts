/**
 * SASLprep-lite (RFC 4013 on top of RFC 3454), as PostgreSQL applies it to SCRAM passwords.
 *
 * What matters is to derive the same bytes as PostgreSQL's `pg_saslprep` (used by the server when it
 * stores `PASSWORD 'plain'` and by libpq): otherwise a verifier made by PostgreSQL and a password
 * in pgrelay's config disagree. Like PostgreSQL, preparation never fails: when the password cannot
 * be prepared (prohibited characters, or empty after mapping) the raw password is used.
 *
 * Steps, mirroring `pg_saslprep`:
 * 1. Pure ASCII → unchanged (the common case, exactly like PostgreSQL).
 * 2. Map: non-ASCII spaces (C.1.2) → U+0020; "commonly mapped to nothing" (B.1) removed.
 * 3. Empty after mapping → raw password.
 * 4. Normalize with NFKC (`String.prototype.normalize`).
 * 5. Prohibited characters (C.2–C.9), checked — as PostgreSQL does — on the mapped input, not on the
 *    normalized output → raw password.
 *
 * The "lite" part, deliberately left out (they only matter for exotic passwords):
 * - the bidirectional rule (RFC 3454 §6: RandALCat/LCat mixing), which JS regexes cannot express
 *   without Bidi_Class tables;
 * - the A.1 check for code points unassigned in Unicode 3.2.
 * A password hitting one of those is prepared by PostgreSQL as its raw bytes but NFKC-normalized
 * here; the two only differ when NFKC actually changes the string.
 */
export function saslprep(password: string): string {
  if (isAscii(password)) return password;

  let mapped = '';
  for (const ch of password) {
    const code = ch.codePointAt(0)!;
    if (inRanges(code, NON_ASCII_SPACE)) mapped += ' ';
    else if (!inRanges(code, MAPPED_TO_NOTHING)) mapped += ch;
  }
  if (mapped.length === 0) return password;

  for (const ch of mapped) {
    if (inRanges(ch.codePointAt(0)!, PROHIBITED)) return password;
  }
  return mapped.normalize('NFKC');
}

function isAscii(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    if (text.charCodeAt(i) > 0x7f) return false;
  }
  return true;
}

type Ranges = readonly (readonly [number, number])[];

function inRanges(code: number, ranges: Ranges): boolean {
  for (const [first, last] of ranges) {
    if (code < first) return false; // ranges are sorted
    if (code <= last) return true;
  }
  return false;
}

/** RFC 3454 C.1.2 */
const NON_ASCII_SPACE: Ranges = [
  [0x00a0, 0x00a0],
  [0x1680, 0x1680],
  [0x2000, 0x200b],
  [0x202f, 0x202f],
  [0x205f, 0x205f],
  [0x3000, 0x3000],
];

/** RFC 3454 B.1 */
const MAPPED_TO_NOTHING: Ranges = [
  [0x00ad, 0x00ad],
  [0x034f, 0x034f],
  [0x1806, 0x1806],
  [0x180b, 0x180d],
  [0x200b, 0x200d],
  [0x2060, 0x2060],
  [0xfe00, 0xfe0f],
  [0xfeff, 0xfeff],
];

/**
 * Union of RFC 3454 C.2.1 and C.2.2 (controls), C.3 (private use), C.4 (non-characters),
 * C.5 (surrogates: a lone one in a JS string), C.6–C.9. Sorted, merged.
 */
const PROHIBITED: Ranges = [
  [0x0000, 0x001f],
  [0x007f, 0x009f],
  [0x0340, 0x0341],
  [0x06dd, 0x06dd],
  [0x070f, 0x070f],
  [0x180e, 0x180e],
  [0x200c, 0x200f],
  [0x2028, 0x202e],
  [0x2060, 0x2063],
  [0x206a, 0x206f],
  [0x2ff0, 0x2ffb],
  [0xd800, 0xf8ff],
  [0xfdd0, 0xfdef],
  [0xfeff, 0xfeff],
  [0xfff9, 0xffff],
  [0x1d173, 0x1d17a],
  [0x1fffe, 0x1ffff],
  [0x2fffe, 0x2ffff],
  [0x3fffe, 0x3ffff],
  [0x4fffe, 0x4ffff],
  [0x5fffe, 0x5ffff],
  [0x6fffe, 0x6ffff],
  [0x7fffe, 0x7ffff],
  [0x8fffe, 0x8ffff],
  [0x9fffe, 0x9ffff],
  [0xafffe, 0xaffff],
  [0xbfffe, 0xbffff],
  [0xcfffe, 0xcffff],
  [0xdfffe, 0xdffff],
  [0xe0001, 0xe0001],
  [0xe0020, 0xe007f],
  [0xefffe, 0xeffff],
  [0xf0000, 0x10ffff],
];
