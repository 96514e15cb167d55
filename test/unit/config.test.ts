import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import { checkConfigCommand } from '../../src/config/check.js';
import { describeDiff, diffConfig } from '../../src/config/diff.js';
import { escapeEnvReferences, substituteEnv } from '../../src/config/env.js';
import { InvalidConfigError, formatIssue } from '../../src/config/issues.js';
import { loadConfig, parseConfig } from '../../src/config/load.js';
import { REDACTED, redactConfig } from '../../src/config/redact.js';
import { editDistance, suggestKey } from '../../src/config/suggest.js';
import { defaults, type Config } from '../../src/config/types.js';
import { parseDuration, parseSize } from '../../src/config/units.js';

const examplePath = fileURLToPath(new URL('../../config/pgrelay.example.yaml', import.meta.url));

/** Strips the common indentation of a template literal, and its first and last empty lines. */
function yaml(strings: TemplateStringsArray, ...values: unknown[]): string {
  const text = String.raw({ raw: strings }, ...values).replace(/^\n/, '').replace(/\n[ ]*$/, '\n');
  const indent = Math.min(...text.split('\n').filter((line) => line.trim() !== '').map((line) => /^ */.exec(line)![0].length));
  return text
    .split('\n')
    .map((line) => line.slice(indent))
    .join('\n');
}

const minimalNodes = yaml`
  nodes:
    - name: primary
      host: 127.0.0.1
      role: primary
  users:
    - name: app
      password: secret
`;

/** parseConfig that must fail; returns the error. */
function failure(text: string, env: NodeJS.ProcessEnv = {}): InvalidConfigError {
  try {
    parseConfig(text, { source: 'pgrelay.yaml', env });
  } catch (error) {
    expect(error).toBeInstanceOf(InvalidConfigError);
    expect(error).toBeInstanceOf(ConfigError);
    return error as InvalidConfigError;
  }
  throw new Error('expected parseConfig to throw');
}

interface BrokenCase {
  name: string;
  text: string;
  env?: NodeJS.ProcessEnv;
  path: string;
  line: number;
  column?: number;
  /** substrings of that issue's message */
  says: string[];
}

const broken: BrokenCase[] = [
  {
    name: 'a lifetime that is not a duration',
    text: minimalNodes + 'pool:\n  max_lifetime_ms: forever\n',
    path: 'pool.max_lifetime_ms',
    line: 9,
    says: ['forever'],
  },
  {
    name: 'wrong type: string for an integer',
    text: minimalNodes + 'pool:\n  size: lots\n',
    path: 'pool.size',
    line: 9,
    column: 9,
    says: ['expected an integer ≥ 1, got "lots"'],
  },
  {
    name: 'wrong type: scalar for a section',
    text: minimalNodes + 'listen: 6432\n',
    path: 'listen',
    line: 8,
    says: ['expected a map with keys host, port, got 6432'],
  },
  {
    name: 'wrong type: map for a list',
    text: yaml`
      nodes:
        primary: {host: 127.0.0.1}
      users: [{name: app, password: x}]
    `,
    path: 'nodes',
    line: 2,
    says: ['expected a list (each item: a map with keys name, host', 'got a map'],
  },
  {
    name: 'wrong type: yes is not a boolean in YAML 1.2',
    text: minimalNodes + 'failover:\n  allow_data_loss: yes\n',
    path: 'failover.allow_data_loss',
    line: 9,
    column: 20,
    says: ['expected true or false, got "yes"'],
  },
  {
    name: 'unknown top-level key with a suggestion',
    text: minimalNodes + 'rooting:\n  consistency: eventual\n',
    path: 'rooting',
    line: 8,
    column: 1,
    says: ['unknown key "rooting" at the top level', 'did you mean "routing"?'],
  },
  {
    name: 'unknown nested key with a suggestion',
    text: minimalNodes + 'health:\n  interval_ms: 1s\n  intervall_ms: 2s\n',
    path: 'health.intervall_ms',
    line: 10,
    column: 3,
    says: ['unknown key "intervall_ms" in health', 'did you mean "interval_ms"?'],
  },
  {
    name: 'unknown key: a forgotten unit suffix',
    text: minimalNodes + 'routing:\n  max_lag: 2s\n',
    path: 'routing.max_lag',
    line: 9,
    says: ['did you mean "max_lag_ms"?'],
  },
  {
    name: 'unknown key inside a node',
    text: yaml`
      nodes:
        - name: primary
          host: 127.0.0.1
          role: primary
          wieght: 2
      users: [{name: app, password: x}]
    `,
    path: 'nodes[0].wieght',
    line: 5,
    column: 5,
    says: ['unknown key "wieght" in nodes[]', 'did you mean "weight"?'],
  },
  {
    name: 'unknown key that belongs elsewhere',
    text: minimalNodes + 'max_lag_ms: 500\n',
    path: 'max_lag_ms',
    line: 8,
    says: ['it belongs at routing.max_lag_ms'],
  },
  {
    name: 'unknown key without a close match lists the allowed keys',
    text: minimalNodes + 'log:\n  colour: true\n',
    path: 'log.colour',
    line: 9,
    says: ['allowed keys: level, format'],
  },
  {
    name: 'bad duration',
    text: yaml`
      nodes:
        - name: primary
          host: 127.0.0.1
          role: primary
      users:
        - name: app
          password: secret
      routing:
        consistency: session
        balance: latency
        fallback: primary
        lag_interval_ms: 250ms
        max_lag_bytes: 0
        max_lag_ms: fast
    `,
    path: 'routing.max_lag_ms',
    line: 14,
    column: 15,
    says: ['expected a number ≥ 0 or a duration like "250ms"', 'got "fast"'],
  },
  {
    name: 'bad duration unit',
    text: minimalNodes + 'health:\n  timeout_ms: 2 weeks\n',
    path: 'health.timeout_ms',
    line: 9,
    says: ['a duration like "250ms"', 'got "2 weeks"'],
  },
  {
    name: 'zero where a duration must be positive',
    text: minimalNodes + 'health:\n  interval_ms: 0\n',
    path: 'health.interval_ms',
    line: 9,
    says: ['expected a number > 0'],
  },
  {
    name: 'duration longer than a timer can wait',
    text: minimalNodes + 'failover:\n  wait_ms: 30d\n',
    path: 'failover.wait_ms',
    line: 9,
    says: ['at most 2147483647ms'],
  },
  {
    name: 'bad size',
    text: minimalNodes + 'routing:\n  max_lag_bytes: 16 parsecs\n',
    path: 'routing.max_lag_bytes',
    line: 9,
    says: ['a size like "16MB"', 'got "16 parsecs"'],
  },
  {
    name: 'size out of range',
    text: minimalNodes + 'client:\n  max_message_bytes: 2GB\n',
    path: 'client.max_message_bytes',
    line: 9,
    says: ['expected a size from 8kB to 1GB, got "2GB"'],
  },
  {
    name: 'bad enum lists the allowed values',
    text: minimalNodes + 'pool:\n  mode: statement\n',
    path: 'pool.mode',
    line: 9,
    column: 9,
    says: ['expected one of transaction, session, got "statement"'],
  },
  {
    name: 'bad routing.transactions',
    text: minimalNodes + 'routing:\n  transactions: replica\n',
    path: 'routing.transactions',
    line: 9,
    says: ['expected one of optimistic, primary, got "replica"'],
  },
  {
    name: 'bad routing.optimistic_max_bytes',
    text: minimalNodes + 'routing:\n  optimistic_max_bytes: lots\n',
    path: 'routing.optimistic_max_bytes',
    line: 9,
    says: ['a size like "16MB"', 'got "lots"'],
  },
  {
    name: 'bad enum with a near miss',
    text: minimalNodes + 'routing:\n  balance: round-robin\n',
    path: 'routing.balance',
    line: 9,
    says: ['one of latency, round_robin, random, least_connections, weighted', 'did you mean "round_robin"?'],
  },
  {
    name: 'bad node role',
    text: yaml`
      nodes:
        - name: primary
          host: 127.0.0.1
          role: master
      users: [{name: app, password: x}]
    `,
    path: 'nodes[0].role',
    line: 4,
    says: ['expected one of primary, standby, replica, got "master"'],
  },
  {
    name: 'negative weight',
    text: yaml`
      nodes:
        - name: primary
          host: 127.0.0.1
          role: primary
        - name: replica1
          host: 127.0.0.1
          port: 5433
          weight: -1
      users: [{name: app, password: x}]
    `,
    path: 'nodes[1].weight',
    line: 8,
    column: 13,
    says: ['expected a number ≥ 0, got -1'],
  },
  {
    name: 'negative duration',
    text: minimalNodes + 'routing:\n  max_lag_ms: -5\n',
    path: 'routing.max_lag_ms',
    line: 9,
    says: ['expected a number ≥ 0', 'got -5'],
  },
  {
    name: 'pool.size below 1',
    text: minimalNodes + 'pool:\n  size: 0\n',
    path: 'pool.size',
    line: 9,
    says: ['expected an integer ≥ 1, got 0'],
  },
  {
    name: 'health.failures below 1',
    text: minimalNodes + 'health:\n  failures: 0\n',
    path: 'health.failures',
    line: 9,
    says: ['expected an integer ≥ 1, got 0'],
  },
  {
    name: 'node port out of range',
    text: yaml`
      nodes:
        - name: primary
          host: 127.0.0.1
          port: 70000
          role: primary
      users: [{name: app, password: x}]
    `,
    path: 'nodes[0].port',
    line: 4,
    column: 11,
    says: ['expected an integer from 1 to 65535, got 70000'],
  },
  {
    name: 'node port 0 is not allowed',
    text: yaml`
      nodes:
        - {name: primary, host: 127.0.0.1, port: 0, role: primary}
      users: [{name: app, password: x}]
    `,
    path: 'nodes[0].port',
    line: 2,
    says: ['expected an integer from 1 to 65535, got 0'],
  },
  {
    name: 'listen port out of range',
    text: minimalNodes + 'listen:\n  port: 65536\n',
    path: 'listen.port',
    line: 9,
    says: ['expected an integer from 0 to 65535 (0 picks a free port), got 65536'],
  },
  {
    name: 'listen and admin on the same port',
    text: minimalNodes + 'listen:\n  port: 7000\nadmin:\n  port: 7000\n',
    path: 'admin.port',
    line: 11,
    says: ['listen and admin both use 127.0.0.1:7000'],
  },
  {
    name: 'duplicate node names',
    text: yaml`
      nodes:
        - name: primary
          host: 127.0.0.1
          role: primary
        - name: replica1
          host: 127.0.0.1
          port: 5433
        - name: replica1
          host: 127.0.0.1
          port: 5434
      users: [{name: app, password: x}]
    `,
    path: 'nodes[2].name',
    line: 8,
    column: 11,
    says: ['duplicate node name "replica1"', 'nodes[1] at line 5'],
  },
  {
    name: 'two nodes at the same address',
    text: yaml`
      nodes:
        - name: primary
          host: 127.0.0.1
          role: primary
        - name: replica1
          host: 127.0.0.1
          port: 5432
      users: [{name: app, password: x}]
    `,
    path: 'nodes[1]',
    line: 7,
    says: ['same address 127.0.0.1:5432 as node "primary"'],
  },
  {
    name: 'empty node name',
    text: yaml`
      nodes:
        - name: ""
          host: 127.0.0.1
          role: primary
      users: [{name: app, password: x}]
    `,
    path: 'nodes[0].name',
    line: 2,
    says: ['expected a non-empty string, got ""'],
  },
  {
    name: 'node without host',
    text: yaml`
      nodes:
        - name: primary
          role: primary
      users: [{name: app, password: x}]
    `,
    path: 'nodes[0].host',
    line: 2,
    says: ['required key is missing'],
  },
  {
    name: 'no primary',
    text: yaml`
      users: [{name: app, password: x}]
      nodes:
        - name: standby1
          host: 127.0.0.1
          role: standby
        - name: replica1
          host: 127.0.0.1
          port: 5433
    `,
    path: 'nodes',
    line: 2,
    column: 1,
    says: ['no primary', 'standby1: standby, replica1: replica'],
  },
  {
    name: 'more than one primary',
    text: yaml`
      nodes:
        - name: db1
          host: 127.0.0.1
          role: primary
        - name: db2
          host: 127.0.0.1
          port: 5433
          role: primary
      users: [{name: app, password: x}]
    `,
    path: 'nodes',
    line: 8,
    says: ['more than one primary', '"db1" at line 4', '"db2" at line 8'],
  },
  {
    name: 'nodes missing',
    text: 'users: [{name: app, password: x}]\n',
    path: 'nodes',
    line: 1,
    says: ['required key is missing', 'failover.mode: patroni'],
  },
  {
    name: 'users missing',
    text: yaml`
      nodes:
        - {name: primary, host: 127.0.0.1, role: primary}
    `,
    path: 'users',
    line: 1,
    says: ['required key is missing'],
  },
  {
    name: 'users empty',
    text: yaml`
      nodes:
        - {name: primary, host: 127.0.0.1, role: primary}
      users: []
    `,
    path: 'users',
    line: 3,
    says: ['at least one user is required'],
  },
  {
    name: 'duplicate user names',
    text: yaml`
      nodes:
        - {name: primary, host: 127.0.0.1, role: primary}
      users:
        - {name: app, password: a}
        - {name: app, password: b}
    `,
    path: 'users[1].name',
    line: 5,
    says: ['duplicate user name "app"'],
  },
  {
    name: 'user without a password under scram',
    text: yaml`
      nodes:
        - {name: primary, host: 127.0.0.1, role: primary}
      users:
        - name: app
    `,
    path: 'users[0].password',
    line: 4,
    says: ['required key is missing', 'auth.method: trust'],
  },
  {
    name: 'missing environment variable',
    text: yaml`
      nodes:
        - {name: primary, host: 127.0.0.1, role: primary}
      users:
        - name: app
          password: \${PGRELAY_TEST_UNSET_PASSWORD}
    `,
    path: 'users[0].password',
    line: 5,
    column: 15,
    says: ['environment variable PGRELAY_TEST_UNSET_PASSWORD is not set', '${PGRELAY_TEST_UNSET_PASSWORD:-default}'],
  },
  {
    name: 'malformed environment reference',
    text: yaml`
      nodes:
        - {name: primary, host: 127.0.0.1, role: primary}
      users:
        - name: app
          password: pre\${not a name}
    `,
    path: 'users[0].password',
    line: 5,
    says: ['malformed environment reference'],
  },
  {
    name: 'tls cert without key',
    text: minimalNodes + 'tls:\n  cert: server.crt\n',
    path: 'tls.cert',
    line: 9,
    column: 9,
    says: ['tls.cert is set but tls.key is not'],
  },
  {
    name: 'tls key without cert',
    text: minimalNodes + 'tls:\n  key: server.key\n',
    path: 'tls.key',
    line: 9,
    says: ['tls.key is set but tls.cert is not'],
  },
  {
    name: 'tls required without cert and key',
    text: minimalNodes + 'tls:\n  required: true\n',
    path: 'tls.required',
    line: 9,
    says: ['needs tls.cert and tls.key'],
  },
  {
    name: 'patroni mode without endpoints',
    text: 'users: [{name: app, password: x}]\nfailover:\n  mode: patroni\n',
    path: 'failover.mode',
    line: 3,
    says: ['needs patroni.endpoints'],
  },
  {
    name: 'patroni endpoint that is not a URL',
    text: 'users: [{name: app, password: x}]\nfailover: {mode: patroni}\npatroni:\n  endpoints:\n    - 10.0.0.1:8008\n',
    path: 'patroni.endpoints[0]',
    line: 5,
    says: ['an http:// or https:// URL'],
  },
  {
    name: 'function listed as both primary and replica',
    text: minimalNodes + 'routing:\n  functions:\n    primary: [my_fn]\n    replica: [other, my_fn]\n',
    path: 'routing.functions.replica[1]',
    line: 11,
    says: ['"my_fn" is listed under both'],
  },
  {
    name: 'duplicate key',
    text: minimalNodes + 'pool:\n  size: 5\n  size: 6\n',
    path: 'pool.size',
    line: 10,
    says: ['duplicate key (first at line 9)'],
  },
  {
    name: 'unknown alias',
    text: minimalNodes + 'pool: *nowhere\n',
    path: 'pool',
    line: 8,
    says: ['unknown alias *nowhere'],
  },
  {
    name: 'YAML syntax error',
    text: minimalNodes + 'pool:\n  size: 5\n   mode: session\n',
    path: '',
    line: 9,
    says: ['invalid YAML', 'Nested mappings are not allowed'],
  },
  {
    name: 'YAML syntax error in a password is not quoted',
    text: minimalNodes.replace('password: secret', 'password: "secret') + 'pool: {size: 5}\n',
    path: '',
    line: 9,
    says: ['invalid YAML: Missing closing "quote'],
  },
  {
    name: 'empty list item',
    text: 'nodes:\n  - {name: p, host: h, role: primary}\n  -\nusers: [{name: app, password: x}]\n',
    path: 'nodes[1]',
    line: 3,
    says: ['expected a map with keys name, host, port, role, weight, got an empty value'],
  },
  {
    name: 'scalar where a list is expected',
    text: minimalNodes + 'routing:\n  functions:\n    primary: nextval\n',
    path: 'routing.functions.primary',
    line: 10,
    says: ['expected a list (each item: a non-empty string), got "nextval"'],
  },
  {
    name: 'two YAML documents',
    text: minimalNodes + '---\npool: {size: 1}\n',
    path: '',
    line: 8,
    says: ['invalid YAML: a config file holds one YAML document'],
  },
  {
    name: 'not a map at the top',
    text: '- nodes\n- users\n',
    path: '',
    line: 1,
    says: ['expected a map with keys listen, admin, nodes, users', 'got a list'],
  },
];

describe('parseConfig: broken configs name the key path and line', () => {
  it.each(broken)('$name', ({ text, env, path, line, column, says }) => {
    const error = failure(text, env);
    const issue = error.errors.find((candidate) => candidate.path === path);
    expect(issue, `no issue for ${path} in:\n${error.message}`).toBeDefined();
    expect(issue!.line).toBe(line);
    if (column !== undefined) expect(issue!.column).toBe(column);
    for (const text of says) expect(issue!.message).toContain(text);
    const formatted = formatIssue(issue!, 'pgrelay.yaml');
    expect(error.message).toContain(formatted);
    expect(formatted).toMatch(new RegExp(`^pgrelay\\.yaml: ${path === '' ? '' : `${escape(path)} at `}line ${line}, column \\d+: `));
  });

  it('formats the example message from the design exactly', () => {
    const error = failure(broken.find((c) => c.name === 'bad duration')!.text);
    expect(error.message).toBe(
      'pgrelay.yaml: routing.max_lag_ms at line 14, column 15: expected a number ≥ 0 or a duration like "250ms" (units: ms, s, m/min, h, d), got "fast"',
    );
    expect(error.path).toBe('routing.max_lag_ms');
    expect(error.line).toBe(14);
    expect(error.column).toBe(15);
  });

  it('collects every problem, in file order, one per line of the message', () => {
    const error = failure(yaml`
      nodes:
        - name: primary
          host: 127.0.0.1
          port: 99999
          role: primary
      users: [{name: app, password: x}]
      pool:
        mode: statement
        sise: 3
      health:
        failures: 0
    `);
    expect(error.errors.map((issue) => [issue.path, issue.line])).toEqual([
      ['nodes[0].port', 4],
      ['pool.mode', 8],
      ['pool.sise', 9],
      ['health.failures', 11],
    ]);
    expect(error.message.split('\n')).toHaveLength(4);
    expect(error.lines()).toEqual(error.message.split('\n'));
    // the inherited ConfigError fields are those of the first problem
    expect([error.path, error.line]).toEqual(['nodes[0].port', 4]);
  });

  it('does not report "no primary" when the nodes already have their own errors', () => {
    const error = failure(yaml`
      nodes:
        - {name: primary, host: 127.0.0.1, port: nope, role: primary}
      users: [{name: app, password: x}]
    `);
    expect(error.errors.map((issue) => issue.path)).toEqual(['nodes[0].port']);
  });
});

describe('parseConfig: secrets never appear in messages', () => {
  it('does not quote the text around a YAML syntax error', () => {
    const error = failure(minimalNodes.replace('password: secret', "password: 'secret: with: colons"));
    expect(error.message).toMatch(/invalid YAML/);
    expect(error.message).not.toContain('secret');
  });

  it('does not quote a password of the wrong type', () => {
    const error = failure(minimalNodes.replace('password: secret', 'password: 982451653'));
    expect(error.message).toContain('users[0].password at line 7');
    expect(error.message).toContain('got a number');
    expect(error.message).not.toContain('982451653');
  });

  it('does not quote a value that came from the environment', () => {
    const error = failure(minimalNodes + 'listen:\n  port: ${PGRELAY_PORT}\n', { PGRELAY_PORT: 'hunter2-not-a-port' });
    expect(error.message).toContain('listen.port at line 9');
    expect(error.message).toContain('"${PGRELAY_PORT}" (from the environment)');
    expect(error.message).not.toContain('hunter2');
  });

  it('does not quote the password in a URL', () => {
    const error = failure('users: [{name: a, password: x}]\nfailover: {mode: patroni}\npatroni:\n  endpoints: ["ftp://u:topsecret@h"]\n');
    expect(error.message).toContain('patroni.endpoints[0] at line 4');
    expect(error.message).not.toContain('topsecret');
  });
});

describe('parseConfig: values', () => {
  it('fills every default', () => {
    const config = parseConfig(minimalNodes, { env: {} });
    expect(config.nodes).toEqual([{ name: 'primary', host: '127.0.0.1', port: 5432, role: 'primary', weight: 1 }]);
    expect(config.users).toEqual([{ name: 'app', password: 'secret' }]);
    const { nodes, users, ...rest } = config;
    expect(rest).toEqual(defaults);
  });

  it('failover.evidence_max_age_ms: a duration, unset by default (derived from health)', () => {
    expect(parseConfig(minimalNodes + 'failover:\n  evidence_max_age_ms: 5s\n', { env: {} }).failover.evidence_max_age_ms).toBe(5000);
    expect(parseConfig(minimalNodes, { env: {} }).failover.evidence_max_age_ms).toBeUndefined();
    const error = failure(minimalNodes + 'failover:\n  evidence_max_age_ms: 0\n');
    expect(error.message).toContain('failover.evidence_max_age_ms at line 9');
  });

  it('treats an empty section as all defaults', () => {
    const config = parseConfig(minimalNodes + 'pool:\ntls:\n', { env: {} });
    expect(config.pool).toEqual(defaults.pool);
    expect(config.tls).toEqual({ required: false });
  });

  it('pool.max_lifetime_ms: an hour by default (PgBouncer\'s server_lifetime), a duration, 0 = never', () => {
    expect(defaults.pool.max_lifetime_ms).toBe(3_600_000);
    expect(parseConfig(minimalNodes + 'pool:\n  max_lifetime_ms: 2h\n', { env: {} }).pool.max_lifetime_ms).toBe(7_200_000);
    expect(parseConfig(minimalNodes + 'pool:\n  max_lifetime_ms: 0\n', { env: {} }).pool.max_lifetime_ms).toBe(0);
  });

  it('returns fresh arrays, not the shared defaults', () => {
    const a = parseConfig(minimalNodes, { env: {} });
    a.routing.functions.primary.push('f');
    const b = parseConfig(minimalNodes, { env: {} });
    expect(b.routing.functions.primary).toEqual([]);
  });

  it.each([
    ['250', 250],
    ['250ms', 250],
    ['2s', 2000],
    ['1.5s', 1500],
    ['1m', 60_000],
    ['1min', 60_000],
    ['1h', 3_600_000],
    ['1d', 86_400_000],
    ['250 ms', 250],
    ['.5s', 500],
  ])('duration %s = %d ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
    expect(parseConfig(`${minimalNodes}routing:\n  max_lag_ms: ${text}\n`, { env: {} }).routing.max_lag_ms).toBe(ms);
  });

  it.each(['fast', '1M', '1w', '-1s', 's', '1 s s', ''])('not a duration: %j', (text) => {
    expect(parseDuration(text)).toBeUndefined();
  });

  it.each([
    ['0', 0],
    ['512B', 512],
    ['1kB', 1024],
    ['1KB', 1024],
    ['16MB', 16 * 1024 * 1024],
    ['16 MiB', 16 * 1024 * 1024],
    ['1GB', 1024 ** 3],
    ['1.5kB', 1536],
  ])('size %s = %d bytes', (text, bytes) => {
    expect(parseSize(text)).toBe(bytes);
    expect(parseConfig(`${minimalNodes}routing:\n  max_lag_bytes: ${text}\n`, { env: {} }).routing.max_lag_bytes).toBe(bytes);
  });

  it.each(['16 parsecs', 'MB', '1Mb/s'])('not a size: %j', (text) => {
    expect(parseSize(text)).toBeUndefined();
  });

  it('parses client.max_message_bytes as a size and numbers as-is', () => {
    const config = parseConfig(`${minimalNodes}client:\n  max_message_bytes: 64MB\nhealth:\n  interval_ms: 500\n`, { env: {} });
    expect(config.client.max_message_bytes).toBe(64 * 1024 * 1024);
    expect(config.health.interval_ms).toBe(500);
  });

  it('reads routing.transactions and routing.optimistic_max_bytes (defaults: optimistic, 1MB)', () => {
    const defaults = parseConfig(minimalNodes, { env: {} });
    expect(defaults.routing.transactions).toBe('optimistic');
    expect(defaults.routing.optimistic_max_bytes).toBe(1024 * 1024);
    const config = parseConfig(`${minimalNodes}routing:\n  transactions: primary\n  optimistic_max_bytes: 64kB\n`, { env: {} });
    expect(config.routing.transactions).toBe('primary');
    expect(config.routing.optimistic_max_bytes).toBe(64 * 1024);
  });

  it('reads pool.pipeline_depth and pool.pipeline_after', () => {
    const defaults = parseConfig(minimalNodes, { env: {} });
    expect([defaults.pool.pipeline_depth, defaults.pool.pipeline_after]).toEqual([1, 0]);
    const config = parseConfig(`${minimalNodes}pool:\n  pipeline_depth: 8\n  pipeline_after: 2\n`, { env: {} });
    expect([config.pool.pipeline_depth, config.pool.pipeline_after]).toEqual([8, 2]);
    const error = failure(`${minimalNodes}pool:\n  pipeline_after: -1\n`);
    expect(error.errors).toEqual([expect.objectContaining({ path: 'pool.pipeline_after', line: 9 })]);
    expect(error.message).toContain('pool.pipeline_after at line 9');
  });

  it('allows port 0 for listen and admin', () => {
    const config = parseConfig(`${minimalNodes}listen: {port: 0}\nadmin: {port: 0}\n`, { env: {} });
    expect([config.listen.port, config.admin.port]).toEqual([0, 0]);
  });

  it('allows several standbys', () => {
    const config = parseConfig(
      yaml`
        nodes:
          - {name: p, host: h, role: primary}
          - {name: s1, host: h, port: 5433, role: standby}
          - {name: s2, host: h, port: 5434, role: standby}
        users: [{name: app, password: x}]
      `,
      { env: {} },
    );
    expect(config.nodes.map((node) => node.role)).toEqual(['primary', 'standby', 'standby']);
  });

  it('allows patroni mode without nodes', () => {
    const config = parseConfig('users: [{name: app, password: x}]\nfailover: {mode: patroni}\npatroni: {endpoints: ["http://127.0.0.1:8008"]}\n', { env: {} });
    expect(config.nodes).toEqual([]);
    expect(config.patroni.endpoints).toEqual(['http://127.0.0.1:8008']);
  });

  it('allows an empty password under auth.method trust', () => {
    const config = parseConfig('nodes: [{name: p, host: h, role: primary}]\nusers: [{name: app}]\nauth: {method: trust}\n', { env: {} });
    expect(config.users[0]!.password).toBe('');
  });

  it('honours anchors, merge keys and ignores top-level x- keys', () => {
    const config = parseConfig(
      yaml`
        x-node: &node
          host: 10.0.0.5
          weight: 2
        nodes:
          - <<: *node
            name: primary
            role: primary
          - <<: *node
            name: replica1
            port: 5433
            weight: 3
        users: [{name: app, password: x}]
      `,
      { env: {} },
    );
    expect(config.nodes).toEqual([
      { name: 'primary', host: '10.0.0.5', port: 5432, role: 'primary', weight: 2 },
      { name: 'replica1', host: '10.0.0.5', port: 5433, role: 'replica', weight: 3 },
    ]);
  });
});

describe('environment substitution', () => {
  const text = minimalNodes.replace('password: secret', 'password: ${PGRELAY_APP_PASSWORD:-fallback}');

  it('uses the variable when set', () => {
    expect(parseConfig(text, { env: { PGRELAY_APP_PASSWORD: 's3cr3t' } }).users[0]!.password).toBe('s3cr3t');
  });

  it('uses the default when unset or empty', () => {
    expect(parseConfig(text, { env: {} }).users[0]!.password).toBe('fallback');
    expect(parseConfig(text, { env: { PGRELAY_APP_PASSWORD: '' } }).users[0]!.password).toBe('fallback');
  });

  it('turns a substituted number into a number', () => {
    const config = parseConfig(`${minimalNodes}listen:\n  port: \${PGRELAY_PORT:-6433}\n  host: \${PGRELAY_HOST}\n`, {
      env: { PGRELAY_HOST: '0.0.0.0' },
    });
    expect(config.listen).toEqual({ host: '0.0.0.0', port: 6433 });
  });

  it.each([
    ['plain', 'plain', true],
    ['a${X}b', 'axb', true],
    ['${X}${Y:-d}', 'xd', true],
    ['$${X}', '${X}', true],
    ['cost $5', 'cost $5', true],
    ['${Y:-}', '', true],
    ['${EMPTY}', '', true],
    ['${X', '', false],
    ['${1X}', '', false],
    ['${MISSING}', '', false],
  ])('%j → %j', (input, output, ok) => {
    const result = substituteEnv(input, { X: 'x', EMPTY: '' });
    expect(result.ok).toBe(ok);
    if (result.ok) expect(result.value).toBe(output);
  });

  it.each(['plain', '${X}', '$${X}', 'a$b${c}$', '$$$${'])('escapeEnvReferences(%j) comes back unchanged', (text) => {
    expect(substituteEnv(escapeEnvReferences(text), { X: 'no', c: 'no' })).toMatchObject({ ok: true, value: text });
  });

  it('does not substitute twice', () => {
    const result = substituteEnv('${A}', { A: '${B}', B: 'no' });
    expect(result).toEqual({ ok: true, value: '${B}', substituted: true });
  });
});

describe('the example file', () => {
  it('parses, and shows every default', () => {
    const config = loadConfig(examplePath, {});
    expect(config.nodes.map((node) => [node.name, node.host, node.port, node.role])).toEqual([
      ['primary', '127.0.0.1', 5432, 'primary'],
      ['standby1', '127.0.0.1', 5433, 'standby'],
      ['replica1', '127.0.0.1', 5434, 'replica'],
      ['replica2', '127.0.0.1', 5435, 'replica'],
    ]);
    expect(config.users).toEqual([{ name: 'app', password: 'app' }]);
    const { nodes, users, ...rest } = config;
    expect(rest).toEqual(defaults);
  });

  it('takes the app password from the environment', () => {
    expect(loadConfig(examplePath, { PGRELAY_APP_PASSWORD: 'from-env' }).users[0]!.password).toBe('from-env');
  });
});

describe('loadConfig and check-config', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pgrelay-config-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const write = (name: string, text: string): string => {
    const path = join(dir, name);
    writeFileSync(path, text);
    return path;
  };
  const sink = () => {
    const chunks: string[] = [];
    return { chunks, write: (text: string) => chunks.push(text), text: () => chunks.join('') };
  };

  it('names the file in every message', () => {
    const path = write('bad.yaml', minimalNodes + 'pool:\n  size: -1\n');
    expect(() => loadConfig(path, {})).toThrow(`${path}: pool.size at line 9, column 9: expected an integer ≥ 1, got -1`);
  });

  it('reports a file that cannot be read', () => {
    const path = join(dir, 'missing.yaml');
    expect(() => loadConfig(path, {})).toThrow(InvalidConfigError);
    expect(() => loadConfig(path, {})).toThrow(`${path}: cannot read the config file: no such file`);
  });

  it('resolves TLS files against the config directory and checks that they exist', () => {
    mkdirSync(join(dir, 'certs'));
    writeFileSync(join(dir, 'certs', 'server.crt'), 'cert');
    writeFileSync(join(dir, 'certs', 'server.key'), 'key');
    const good = write('tls.yaml', minimalNodes + 'tls:\n  cert: certs/server.crt\n  key: certs/server.key\n');
    expect(loadConfig(good, {}).tls).toEqual({ cert: join(dir, 'certs', 'server.crt'), key: join(dir, 'certs', 'server.key'), required: false });

    const bad = write('tls-bad.yaml', minimalNodes + 'tls:\n  cert: certs/server.crt\n  key: certs/nope.key\n');
    let error: unknown;
    try {
      loadConfig(bad, {});
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(InvalidConfigError);
    expect((error as InvalidConfigError).errors).toEqual([
      { path: 'tls.key', line: 10, column: 8, message: `cannot read ${join(dir, 'certs', 'nope.key')}: no such file` },
    ]);
  });

  it('does not check files in parseConfig without baseDir', () => {
    expect(parseConfig(minimalNodes + 'tls:\n  cert: /nonexistent/c\n  key: /nonexistent/k\n', { env: {} }).tls.cert).toBe('/nonexistent/c');
  });

  it('check-config prints ok with the counts', () => {
    const out = sink();
    const err = sink();
    expect(checkConfigCommand(examplePath, out, err, {})).toBe(0);
    expect(out.text()).toBe(`ok: ${examplePath} (4 nodes, 1 users)\n`);
    expect(err.text()).toBe('');
  });

  it('check-config prints each error on its own line', () => {
    const path = write('two-errors.yaml', minimalNodes + 'pool:\n  size: 0\n  mode: statement\n');
    const out = sink();
    const err = sink();
    expect(checkConfigCommand(path, out, err, {})).toBe(1);
    expect(out.text()).toBe('');
    const lines = err.text().trimEnd().split('\n');
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatch(/: pool\.size at line 9, column 9: /);
    expect(lines[1]).toMatch(/: pool\.mode at line 10, column 9: /);
    expect(lines[2]).toBe(`${path}: 2 errors`);
  });
});

describe('suggestions', () => {
  it.each([
    ['rooting', ['routing', 'pool'], 'routing'],
    ['maxLagMs', ['max_lag_ms', 'max_lag_bytes'], 'max_lag_ms'],
    ['max-lag-ms', ['max_lag_ms'], 'max_lag_ms'],
    ['max_lag', ['max_lag_ms', 'max_lag_bytes'], 'max_lag_ms'],
    ['zzzzzz', ['routing'], undefined],
    ['x', ['ca'], undefined],
  ])('%s → %s', (key, candidates, expected) => {
    expect(suggestKey(key, candidates)).toBe(expected);
  });

  it('computes edit distances', () => {
    expect(editDistance('kitten', 'sitting')).toBe(3);
    expect(editDistance('', 'abc')).toBe(3);
    expect(editDistance('same', 'same')).toBe(0);
  });
});

describe('diffConfig', () => {
  const base = (): Config => parseConfig(loadExampleText(), { env: {} });

  it('reports nothing for equal configs', () => {
    const diff = diffConfig(base(), base());
    expect(diff.changed).toBe(false);
    expect(diff.keys).toEqual([]);
    expect(describeDiff(diff)).toBe('no changes');
  });

  it('reports nodes added, removed and changed', () => {
    const old = base();
    const next = base();
    next.nodes = next.nodes.filter((node) => node.name !== 'replica2');
    next.nodes.push({ name: 'replica3', host: '127.0.0.1', port: 5436, role: 'replica', weight: 1 });
    next.nodes[2] = { ...next.nodes[2]!, port: 6000, weight: 5 };
    const diff = diffConfig(old, next);
    expect(diff.nodes.added.map((node) => node.name)).toEqual(['replica3']);
    expect(diff.nodes.removed.map((node) => node.name)).toEqual(['replica2']);
    expect(diff.nodes.changed).toEqual([{ name: 'replica1', before: old.nodes[2], after: next.nodes[2], fields: ['port', 'weight'] }]);
    expect(diff.nodes.reordered).toBe(false);
    expect(diff.restartRequired).toEqual([]);
    expect(describeDiff(diff)).toBe('nodes +replica3 -replica2 ~replica1(port,weight)');
  });

  it('reports a change of node order (the first standby is the failover target)', () => {
    const old = base();
    const next = base();
    next.nodes.reverse();
    const diff = diffConfig(old, next);
    expect(diff.nodes.reordered).toBe(true);
    expect(diff.changed).toBe(true);
  });

  it('reports users by name only', () => {
    const old = base();
    const next = base();
    next.users = [{ name: 'app', password: 'rotated-secret' }, { name: 'report', password: 'other-secret' }];
    const diff = diffConfig(old, next);
    expect(diff.users).toEqual({ added: ['report'], removed: [], changed: ['app'] });
    expect(JSON.stringify(diff)).not.toContain('secret');
  });

  it('reports changed keys per section', () => {
    const old = base();
    const next = base();
    next.pool.size = 50;
    next.routing.max_lag_ms = 200;
    next.routing.functions.primary = ['my_writer'];
    next.health.failures = 5;
    next.failover.mode = 'follow';
    const diff = diffConfig(old, next);
    expect(diff.sections).toEqual(['pool', 'routing', 'health', 'failover']);
    expect(diff.keys).toEqual(['pool.size', 'routing.max_lag_ms', 'routing.functions.primary', 'health.failures', 'failover.mode']);
    expect(diff.restartRequired).toEqual([]);
  });

  it('lists keys that need a restart', () => {
    const old = base();
    const next = base();
    next.listen.port = 7432;
    next.admin.host = '0.0.0.0';
    next.tls = { cert: '/c', key: '/k', required: false };
    next.log.level = 'debug';
    const diff = diffConfig(old, next);
    expect(diff.restartRequired).toEqual(['listen.port', 'admin.host']);
    expect(diff.keys).toEqual(['listen.port', 'admin.host', 'tls.cert', 'tls.key', 'log.level']);
    expect(describeDiff(diff)).toBe('tls.cert, tls.key, log.level; restart needed for listen.port, admin.host');
  });
});

describe('redactConfig', () => {
  it('never shows a password, and leaves the input alone', () => {
    const config = parseConfig(
      yaml`
        nodes: [{name: p, host: h, role: primary}]
        users:
          - {name: app, password: pw-one-7781, server_user: app_rw, server_password: pw-two-7782}
          - {name: report, password: pw-three-7783}
        failover: {mode: follow}
        patroni: {endpoints: ["http://patroni:pw-four-7784@10.0.0.1:8008/"]}
      `,
      { env: {} },
    );
    const redacted = redactConfig(config);
    const text = JSON.stringify(redacted);
    expect(text).not.toMatch(/pw-(one|two|three|four)/);
    expect(redactConfig(config).users).toEqual([
      { name: 'app', password: REDACTED, server_user: 'app_rw', server_password: REDACTED },
      { name: 'report', password: REDACTED },
    ]);
    expect(redacted.patroni.endpoints).toEqual([`http://patroni:${REDACTED}@10.0.0.1:8008/`]);
    expect(redacted.nodes).toEqual(config.nodes);
    expect(config.users[0]!.password).toBe('pw-one-7781');
  });
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function loadExampleText(): string {
  return readFileSync(examplePath, 'utf8');
}
