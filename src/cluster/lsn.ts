/**
 * WAL positions. PostgreSQL prints an LSN as two hexadecimal halves, `X/Y` (high and low 32 bits);
 * pgrelay keeps it as a bigint so that lag in bytes is a subtraction.
 */

const LSN = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/;

/** Parses `X/Y` (as `pg_current_wal_lsn()::text` prints it) into a byte position. */
export function parseLsn(text: string): bigint {
  const match = LSN.exec(text);
  if (!match) throw new Error(`invalid LSN "${text}"`);
  return (BigInt(`0x${match[1]!}`) << 32n) | BigInt(`0x${match[2]!}`);
}

/** The byte position in PostgreSQL's own notation (upper-case hex, no leading zeros). */
export function formatLsn(lsn: bigint): string {
  if (lsn < 0n || lsn > 0xffffffffffffffffn) throw new RangeError(`LSN out of range: ${lsn}`);
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}

/** Bytes from `behind` to `ahead`, 0 when `behind` is not behind; as a number (exact below 8 PiB). */
export function lsnDistance(ahead: bigint, behind: bigint): number {
  return ahead > behind ? Number(ahead - behind) : 0;
}
