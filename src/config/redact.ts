/**
 * A copy of the config that is safe to show (/status, logs): every value under a key named like a
 * secret (`password`, `server_password`, any `…secret`/`…token`) becomes "***", and the password in
 * a URL's user-info (`http://user:pw@host`) becomes "***". The input is not modified.
 */
import type { Config } from './types.js';

export const REDACTED = '***';

const secretKey = /(password|secret|token)$/i;

export function redactConfig(config: Config): Config {
  return redact(config, false) as Config;
}

/** `http://user:pw@host/` → `http://user:***@host/`; other text unchanged. */
export function redactUrl(text: string): string {
  return text.replace(/^([a-z][a-z0-9+.-]*:\/\/[^/?#@:]*):[^/?#@]*@/i, `$1:${REDACTED}@`);
}

function redact(value: unknown, secret: boolean): unknown {
  if (Array.isArray(value)) return value.map((item) => redact(item, secret));
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([key, inner]) => [key, redact(inner, secretKey.test(key))]));
  }
  if (secret && value !== undefined) return REDACTED;
  return typeof value === 'string' ? redactUrl(value) : value;
}
