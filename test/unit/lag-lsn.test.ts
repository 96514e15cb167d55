import { describe, expect, it } from 'vitest';
import { formatLsn, lsnDistance, parseLsn } from '../../src/cluster/lsn.js';

describe('LSN parsing', () => {
  it('reads both halves as hexadecimal', () => {
    expect(parseLsn('0/0')).toBe(0n);
    expect(parseLsn('0/3000148')).toBe(0x3000148n);
    expect(parseLsn('1/0')).toBe(0x1_0000_0000n);
    expect(parseLsn('16/B374D848')).toBe(0x16_b374_d848n);
    expect(parseLsn('ffffffff/FFFFFFFF')).toBe(0xffff_ffff_ffff_ffffn);
  });

  it('round-trips through PostgreSQL notation', () => {
    for (const text of ['0/0', '0/3000148', '16/B374D848', 'FFFFFFFF/FFFFFFFF', 'A/1']) expect(formatLsn(parseLsn(text))).toBe(text);
  });

  it('orders positions across the 32-bit boundary', () => {
    expect(parseLsn('1/0') > parseLsn('0/FFFFFFFF')).toBe(true);
    expect(lsnDistance(parseLsn('1/0'), parseLsn('0/FFFFFFFF'))).toBe(1);
  });

  it('refuses what is not an LSN', () => {
    for (const bad of ['', '0', '/0', '0/', '0/0/0', 'x/1', '123456789/0', ' 0/0', '0/0 ', '-1/0']) expect(() => parseLsn(bad), bad).toThrow(/invalid LSN/);
  });

  it('measures distance, never negative', () => {
    expect(lsnDistance(parseLsn('0/2000'), parseLsn('0/1000'))).toBe(0x1000);
    expect(lsnDistance(parseLsn('0/1000'), parseLsn('0/2000'))).toBe(0);
    expect(lsnDistance(5n, 5n)).toBe(0);
  });
});
