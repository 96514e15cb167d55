/**
 * `${NAME}` / `${NAME:-default}` substitution inside scalar string values of the config file.
 *
 * - `${NAME}`: the value of the environment variable NAME; an error when NAME is not set (an empty
 *   value counts as set).
 * - `${NAME:-default}`: the value of NAME, or `default` when NAME is unset or empty (as in sh).
 *   The default is taken literally up to the first `}`; it is not substituted again.
 * - `$${` stands for a literal `${` (for a password that contains it). Any other `$` is literal.
 * - NAME is `[A-Za-z_][A-Za-z0-9_]*`. A `${` that does not form a reference is an error, so that a
 *   typo never silently becomes part of a password.
 * - One pass: text that comes out of a variable is never substituted again.
 *
 * Problems name the variable, never its value.
 */
export type EnvSubstitution =
  | { readonly ok: true; readonly value: string; readonly substituted: boolean }
  | { readonly ok: false; readonly problems: readonly string[] };

const reference = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/y;

export function substituteEnv(text: string, env: NodeJS.ProcessEnv): EnvSubstitution {
  if (!text.includes('${')) return { ok: true, value: text, substituted: false };
  let out = '';
  let substituted = false;
  const problems: string[] = [];
  let i = 0;
  while (i < text.length) {
    const dollar = text.indexOf('$', i);
    if (dollar === -1) {
      out += text.slice(i);
      break;
    }
    out += text.slice(i, dollar);
    if (text.startsWith('$${', dollar)) {
      out += '${';
      i = dollar + 3;
      continue;
    }
    if (!text.startsWith('${', dollar)) {
      out += '$';
      i = dollar + 1;
      continue;
    }
    reference.lastIndex = dollar;
    const match = reference.exec(text);
    if (match === null) {
      problems.push(
        'malformed environment reference: write ${NAME} or ${NAME:-default} (NAME of letters, digits and _), or $${ for a literal "${"',
      );
      break;
    }
    const name = match[1]!;
    const fallback = match[2];
    const value = env[name];
    substituted = true;
    if (fallback !== undefined) {
      out += value === undefined || value === '' ? fallback : value;
    } else if (value === undefined) {
      problems.push(`environment variable ${name} is not set (write \${${name}:-default} to give a default)`);
    } else {
      out += value;
    }
    i = dollar + match[0].length;
  }
  return problems.length > 0 ? { ok: false, problems } : { ok: true, value: out, substituted };
}


/** The text with every `${` written as `$${`, so that substitution gives it back unchanged (for generated configs). */
export function escapeEnvReferences(text: string): string {
  return text.replaceAll('${', () => '$${');
}
