import { describe, expect, it } from 'vitest';
import { conninfoTarget, ConninfoError, parseConninfo, repointConninfo } from '../../src/cluster/conninfo.js';
import { parseLsn } from '../../src/cluster/health-probe.js';
import { slotName } from '../../src/cluster/node-admin.js';
import { formatSyncStandbyNames, listsStandby, parseSyncStandbyNames } from '../../src/cluster/sync-standby-names.js';
import { formatLsn } from '../../src/cluster/switchover.js';

describe('primary_conninfo re-pointing', () => {
  it('replaces host and port and keeps everything else (quoted form, as pg_basebackup -R writes it)', () => {
    const before = "host='127.0.0.1' port='36693' user='replicator' passfile='/tmp/pgrelay-x/pgpass' application_name='standby1'";
    const after = repointConninfo(before, '127.0.0.1', 40001);
    expect(parseConninfo(after)).toEqual(
      new Map([
        ['host', '127.0.0.1'],
        ['port', '40001'],
        ['user', 'replicator'],
        ['passfile', '/tmp/pgrelay-x/pgpass'],
        ['application_name', 'standby1'],
      ]),
    );
  });

  it('quotes only values that need it', () => {
    expect(repointConninfo("host='old' port='1' user='rep' application_name='standby1' passfile='/a b/pgpass'", '127.0.0.1', 2)).toBe(
      "host=127.0.0.1 port=2 user=rep application_name=standby1 passfile='/a b/pgpass'",
    );
  });

  it('parses unquoted values, spaces around "=", and escapes', () => {
    expect(parseConninfo("host = db1 port=5432 password='it\\'s a \\\\secret' sslmode=require")).toEqual(
      new Map([
        ['host', 'db1'],
        ['port', '5432'],
        ['password', "it's a \\secret"],
        ['sslmode', 'require'],
      ]),
    );
  });

  it('round-trips a password with quotes and backslashes', () => {
    const after = repointConninfo("host=a port=1 password='o\\'re\\\\il'", 'b', 2);
    expect(parseConninfo(after).get('password')).toBe("o're\\il");
    expect(conninfoTarget(after)).toEqual({ host: 'b', port: 2 });
  });

  it('drops hostaddr (it would override the new host) and adds host/port when missing', () => {
    expect(parseConninfo(repointConninfo('hostaddr=10.0.0.1 user=r', 'db2', 5433))).toEqual(
      new Map([
        ['host', 'db2'],
        ['port', '5433'],
        ['user', 'r'],
      ]),
    );
  });

  it('re-points a URI', () => {
    expect(repointConninfo('postgresql://rep:pw@old-host:5432/replication?application_name=r1&hostaddr=10.0.0.1', 'new-host', 6543)).toBe(
      'postgresql://rep:pw@new-host:6543/replication?application_name=r1',
    );
  });

  it('refuses a malformed string instead of guessing', () => {
    expect(() => parseConninfo("host='unterminated")).toThrow(ConninfoError);
    expect(() => parseConninfo('host')).toThrow(ConninfoError);
  });
});

describe('synchronous_standby_names', () => {
  it.each([
    ['', { method: 'none', count: 0, names: [] }],
    ['standby1', { method: 'first', count: 1, names: ['standby1'] }],
    ['s1, s2', { method: 'first', count: 1, names: ['s1', 's2'] }],
    ['FIRST 1 (standby1)', { method: 'first', count: 1, names: ['standby1'] }],
    ['2 (a, b, c)', { method: 'first', count: 2, names: ['a', 'b', 'c'] }],
    ['ANY 2 (a,"B c",*)', { method: 'any', count: 2, names: ['a', 'b c', '*'] }],
    ['"first"', { method: 'first', count: 1, names: ['first'] }],
  ])('parses %j', (text, expected) => {
    expect(parseSyncStandbyNames(text)).toEqual(expected);
  });

  it('matches application names case-insensitively and * as any', () => {
    expect(listsStandby(parseSyncStandbyNames('FIRST 1 (Standby1)'), 'standby1')).toBe(true);
    expect(listsStandby(parseSyncStandbyNames('ANY 1 (*)'), 'whatever')).toBe(true);
    expect(listsStandby(parseSyncStandbyNames('a'), 'b')).toBe(false);
  });

  it('formats names quoted, so that any application_name survives', () => {
    expect(formatSyncStandbyNames(['replica1'])).toBe('"replica1"');
    expect(formatSyncStandbyNames(['a"b', 'c'])).toBe('FIRST 1 ("a""b", "c")');
    expect(parseSyncStandbyNames(formatSyncStandbyNames(['a"b', 'c'])).names).toEqual(['a"b', 'c']);
  });
});

describe('small helpers', () => {
  it('LSN text and bytes', () => {
    expect(parseLsn('0/3000060')).toBe(0x3000060n);
    expect(parseLsn('16/B374D848')).toBe((0x16n << 32n) | 0xb374d848n);
    expect(formatLsn(parseLsn('16/B374D848')!)).toBe('16/B374D848');
    expect(parseLsn(null)).toBeUndefined();
  });

  it('slot names are [a-z0-9_]', () => {
    expect(slotName('Replica-1.eu')).toBe('replica_1_eu');
  });
});
