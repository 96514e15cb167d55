/**
 * `synchronous_standby_names` as PostgreSQL reads it:
 *   `[FIRST] k (a, b, …)` — commits wait for the k highest-priority connected standbys;
 *   `ANY k (a, b, …)`     — commits wait for any k of them (quorum);
 *   `a, b, …`             — the same as FIRST 1 (a, b, …);
 *   ''                    — no synchronous replication.
 * Names are matched against application_name case-insensitively; `*` matches any standby.
 */
export interface SyncStandbyNames {
  method: 'none' | 'first' | 'any';
  count: number;
  /** lower-cased names (quoted names keep their case, as PostgreSQL compares case-insensitively anyway) */
  names: string[];
}

const NONE: SyncStandbyNames = { method: 'none', count: 0, names: [] };

export function parseSyncStandbyNames(text: string): SyncStandbyNames {
  const tokens = tokenize(text);
  if (tokens.length === 0) return NONE;
  let at = 0;
  let method: 'first' | 'any' = 'first';
  let count = 1;
  const head = tokens[0]!;
  if (!head.quoted && /^(first|any)$/i.test(head.text) && tokens[1] && /^\d+$/.test(tokens[1].text)) {
    method = head.text.toLowerCase() as 'first' | 'any';
    count = Number(tokens[1].text);
    at = 2;
  } else if (!head.quoted && /^\d+$/.test(head.text) && tokens[1]?.text === '(') {
    count = Number(head.text);
    at = 1;
  }
  const parenthesized = tokens[at]?.text === '(' && !tokens[at]!.quoted;
  if (parenthesized) at++;
  const names: string[] = [];
  for (; at < tokens.length; at++) {
    const token = tokens[at]!;
    if (!token.quoted && (token.text === ',' || token.text === ')')) continue;
    names.push(token.text.toLowerCase());
  }
  if (names.length === 0) return NONE;
  return { method, count: Math.max(1, count), names };
}

/** A value naming exactly these standbys (FIRST 1 when one, else FIRST 1 over them in order). */
export function formatSyncStandbyNames(applicationNames: readonly string[]): string {
  if (applicationNames.length === 0) return '';
  const quoted = applicationNames.map((name) => `"${name.replace(/"/g, '""')}"`);
  return quoted.length === 1 ? quoted[0]! : `FIRST 1 (${quoted.join(', ')})`;
}

/** Whether `applicationName` is listed (or matched by `*`). */
export function listsStandby(parsed: SyncStandbyNames, applicationName: string): boolean {
  const name = applicationName.toLowerCase();
  return parsed.names.some((n) => n === '*' || n === name);
}

function tokenize(text: string): { text: string; quoted: boolean }[] {
  const out: { text: string; quoted: boolean }[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    if (/\s/.test(c)) {
      i++;
    } else if (c === '(' || c === ')' || c === ',') {
      out.push({ text: c, quoted: false });
      i++;
    } else if (c === '"') {
      let value = '';
      i++;
      while (i < text.length) {
        if (text[i] === '"') {
          if (text[i + 1] === '"') {
            value += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        value += text[i++];
      }
      out.push({ text: value, quoted: true });
    } else {
      let value = '';
      while (i < text.length && !/[\s(),"]/.test(text[i]!)) value += text[i++];
      out.push({ text: value, quoted: false });
    }
  }
  return out;
}
