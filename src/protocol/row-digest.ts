/**
 * What a run of statements answered, reduced to numbers that can be compared with a run of the
 * same statements elsewhere: per completed statement (CommandComplete or EmptyQueryResponse) its
 * row count (per failed one, an ErrorResponse, -1 minus the rows it sent first; per Execute that
 * stopped at its row limit, PortalSuspended, SUSPENDED_ROWS plus its rows) and two 32-bit
 * sums of one hash per DataRow (or CopyData, of a COPY … TO STDOUT). A sum does not depend on the order of
 * the rows (a read without ORDER BY may return them in another order on another node); two lanes
 * with different hashes make a chance collision ~2^-64.
 *
 * Hot path: the bytes are hashed where they lie (views of the server's read buffer, a row's body
 * possibly split across chunks); nothing is allocated per row. `results` grows by three numbers
 * per statement.
 */
export class RowDigest {
  /** per statement: rows, lane-1 sum, lane-2 sum (three numbers each) */
  readonly results: number[] = [];
  private h1 = SEED_1;
  private h2 = SEED_2;
  private rows = 0;
  private sum1 = 0;
  private sum2 = 0;

  /** Bytes of the current DataRow's body (in order; a body may come in several parts). */
  add(b: Buffer, start: number, end: number): void {
    let h1 = this.h1;
    let h2 = this.h2;
    for (let i = start; i < end; i++) {
      const c = b[i]!;
      h1 = Math.imul(h1 ^ c, 0x01000193); // FNV-1a
      h2 = Math.imul(h2 + c, 0x5bd1e995) ^ (h2 >>> 13);
    }
    this.h1 = h1;
    this.h2 = h2;
  }

  /** The current DataRow ended. */
  rowEnd(): void {
    this.sum1 = (this.sum1 + fmix(this.h1)) | 0;
    this.sum2 = (this.sum2 + fmix(this.h2 ^ 0x9e3779b9)) | 0;
    this.rows++;
    this.h1 = SEED_1;
    this.h2 = SEED_2;
  }

  /** A statement completed (its CommandComplete or EmptyQueryResponse). */
  statementEnd(): void {
    this.results.push(this.rows, this.sum1, this.sum2);
    this.rows = 0;
    this.sum1 = 0;
    this.sum2 = 0;
  }

  /**
   * A statement failed (its ErrorResponse): a result of its own, told from a completed one by its
   * row count, with the rows it sent before the error. A run that fails at the same statement
   * elsewhere (the same statement failing on the same data) answers alike; one that does not
   * fail there, or fails elsewhere, differs.
   */
  statementFailed(): void {
    this.results.push(-1 - this.rows, this.sum1, this.sum2);
    this.rows = 0;
    this.sum1 = 0;
    this.sum2 = 0;
  }

  /**
   * An Execute stopped at its row limit (PortalSuspended): a result of its own, told from a
   * completed statement by its row count (SUSPENDED_ROWS more). Run again with the same limit
   * elsewhere, the same portal stops after the same rows, or ends sooner and differs.
   */
  portalSuspended(): void {
    this.results.push(SUSPENDED_ROWS + this.rows, this.sum1, this.sum2);
    this.rows = 0;
    this.sum1 = 0;
    this.sum2 = 0;
  }

  reset(): void {
    this.results.length = 0;
    this.rows = 0;
    this.sum1 = 0;
    this.sum2 = 0;
    this.h1 = SEED_1;
    this.h2 = SEED_2;
  }
}

/** Added to the row count of a part of a portal that stopped at its row limit (see portalSuspended). */
export const SUSPENDED_ROWS = 2 ** 40;

const SEED_1 = 0x811c9dc5 | 0;
const SEED_2 = 0x2545f491;

/** murmur3's finalizer: every input bit reaches every output bit */
function fmix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

/**
 * The first statement (0-based) whose answer differs between two runs, or -1 when they answered
 * alike (the same statements completed, each with the same row count and sums).
 */
export function firstDifference(expected: readonly number[], actual: readonly number[]): number {
  const n = Math.max(expected.length, actual.length);
  for (let i = 0; i < n; i += 3) {
    if (expected[i] !== actual[i] || expected[i + 1] !== actual[i + 1] || expected[i + 2] !== actual[i + 2]) return i / 3;
  }
  return -1;
}
