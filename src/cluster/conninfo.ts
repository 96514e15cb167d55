/**
 * libpq connection strings as they appear in `primary_conninfo`: either `key=value` pairs (values
 * optionally single-quoted, with backslash escapes) or a `postgresql://` URI. Failover re-points
 * a replica by replacing the host and port of its own conninfo, keeping everything else (user,
 * passfile or password, application_name, TLS settings) as the operator wrote it.
 *
 * A conninfo may hold a password: never log one, parsed or not.
 */

export class ConninfoError extends Error {
  override readonly name = 'ConninfoError';
}

/** Parses `key=value` pairs; the order of keys is kept. */
export function parseConninfo(text: string): Map<string, string> {
  const out = new Map<string, string>();
  let i = 0;
  const n = text.length;
  const skipSpace = () => {
    while (i < n && /\s/.test(text[i]!)) i++;
  };
  for (;;) {
    skipSpace();
    if (i >= n) return out;
    const keyStart = i;
    while (i < n && text[i] !== '=' && !/\s/.test(text[i]!)) i++;
    const key = text.slice(keyStart, i);
    skipSpace();
    if (key === '' || text[i] !== '=') throw new ConninfoError(`missing "=" after "${key}" in connection string`);
    i++;
    skipSpace();
    let value = '';
    if (text[i] === "'") {
      i++;
      for (;;) {
        if (i >= n) throw new ConninfoError(`unterminated quoted value for "${key}" in connection string`);
        const c = text[i++]!;
        if (c === "'") break;
        if (c === '\\' && i < n) value += text[i++]!;
        else value += c;
      }
    } else {
      while (i < n && !/\s/.test(text[i]!)) {
        const c = text[i++]!;
        if (c === '\\' && i < n) value += text[i++]!;
        else value += c;
      }
    }
    out.set(key, value);
  }
}

/** Writes `key=value` pairs, quoting a value only when it needs it (empty, spaces, quotes, backslashes). */
export function formatConninfo(values: ReadonlyMap<string, string>): string {
  const parts: string[] = [];
  for (const [key, value] of values) {
    const plain = value !== '' && !/[\s'\\]/.test(value);
    parts.push(plain ? `${key}=${value}` : `${key}='${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`);
  }
  return parts.join(' ');
}

const URI = /^postgres(?:ql)?:\/\//i;

/**
 * The same connection string pointing at host:port. `hostaddr` (which would override the host) is
 * dropped; a multi-host string is replaced by the single new host.
 */
export function repointConninfo(text: string, host: string, port: number): string {
  if (URI.test(text)) return repointUri(text, host, port);
  const values = parseConninfo(text);
  values.delete('hostaddr');
  if (!values.has('host')) {
    // keep `host` near the start for readability: rebuild with it first
    const rebuilt = new Map<string, string>([['host', host], ['port', String(port)]]);
    for (const [key, value] of values) if (key !== 'port') rebuilt.set(key, value);
    return formatConninfo(rebuilt);
  }
  values.set('host', host);
  values.set('port', String(port));
  return formatConninfo(values);
}

function repointUri(text: string, host: string, port: number): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new ConninfoError('primary_conninfo is a URI with several hosts or an invalid form; cannot re-point it');
  }
  url.hostname = host.includes(':') ? `[${host}]` : host;
  url.port = String(port);
  url.searchParams.delete('hostaddr');
  url.searchParams.delete('host');
  url.searchParams.delete('port');
  return url.toString();
}

/** host and port a conninfo points at, when it names exactly one (for comparisons only). */
export function conninfoTarget(text: string): { host: string | undefined; port: number | undefined } {
  try {
    if (URI.test(text)) {
      const url = new URL(text);
      return { host: url.hostname.replace(/^\[|\]$/g, '') || undefined, port: url.port ? Number(url.port) : undefined };
    }
    const values = parseConninfo(text);
    const port = values.get('port');
    return { host: values.get('hostaddr') ?? values.get('host'), port: port ? Number(port) : undefined };
  } catch {
    return { host: undefined, port: undefined };
  }
}
