/**
 * A short history of the primary's WAL position over time, to turn a replica's replay position
 * into a lag in time: how long ago the primary was where the replica is now.
 *
 * Samples are (time, LSN) pairs, oldest first, LSNs never decreasing. For a replay position R:
 * - no sample is past R: the replica has everything the primary had at the last sample (lag 0,
 *   also when the primary has been idle for hours: an idle primary does not make lag grow);
 * - sample i is the oldest past R and sample i-1 is not: the primary passed R between the two; the
 *   crossing time is interpolated by WAL position (exact under a steady write rate; with bursty
 *   writes the figure is good to one sample interval);
 * - even the oldest sample is past R: the lag is at least `now - oldest` (`beyondHistory`), the real
 *   figure is unknown.
 *
 * Storage is a fixed ring buffer: samples closer than `minSpacingMs` to the previous one are
 * dropped, so the buffer holds `horizonMs` of history whatever the sampling rate.
 */
export interface LagEstimate {
  lagMs: number;
  /** the replay position is older than every sample kept: lagMs is a lower bound */
  beyondHistory: boolean;
}

export class LagHistory {
  private readonly times: Float64Array;
  private readonly lsns: BigUint64Array;
  private head = 0;
  private count = 0;

  constructor(
    readonly horizonMs: number,
    readonly minSpacingMs: number,
  ) {
    const capacity = Math.ceil(horizonMs / Math.max(minSpacingMs, 1)) + 2;
    this.times = new Float64Array(capacity);
    this.lsns = new BigUint64Array(capacity);
  }

  get size(): number {
    return this.count;
  }

  /** The newest sample, if any. */
  latest(): { atMs: number; lsn: bigint } | undefined {
    if (this.count === 0) return undefined;
    const i = this.slot(this.count - 1);
    return { atMs: this.times[i]!, lsn: this.lsns[i]! };
  }

  /** The oldest sample still kept, if any. */
  oldest(): { atMs: number; lsn: bigint } | undefined {
    if (this.count === 0) return undefined;
    return { atMs: this.times[this.head]!, lsn: this.lsns[this.head]! };
  }

  /**
   * Records that the primary was at `lsn` at `atMs`. A position behind the newest sample (another
   * primary, another timeline) starts the history afresh.
   */
  add(atMs: number, lsn: bigint): void {
    if (this.count > 0) {
      const last = this.slot(this.count - 1);
      if (lsn < this.lsns[last]!) this.clear();
      else if (atMs < this.times[last]!) return;
      else if (atMs - this.times[last]! < this.minSpacingMs && lsn !== this.lsns[last]) {
        // too close to the previous sample to be worth a slot; the next one will be kept
        return;
      } else if (lsn === this.lsns[last] && this.count > 1 && this.lsns[this.slot(this.count - 2)] === lsn) {
        // idle primary: one run of equal positions needs only its first and its last sample
        this.times[last] = atMs;
        this.evict(atMs);
        return;
      }
    }
    if (this.count === this.times.length) {
      this.head = (this.head + 1) % this.times.length;
      this.count--;
    }
    const i = this.slot(this.count);
    this.times[i] = atMs;
    this.lsns[i] = lsn;
    this.count++;
    this.evict(atMs);
  }

  clear(): void {
    this.head = 0;
    this.count = 0;
  }

  /** The lag, at `atMs`, of a node that has replayed up to `replayLsn`; undefined with no samples. */
  lag(replayLsn: bigint, atMs: number): LagEstimate | undefined {
    if (this.count === 0) return undefined;
    // the oldest sample past replayLsn (binary search: positions never decrease)
    let lo = 0;
    let hi = this.count;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.lsns[this.slot(mid)]! > replayLsn) hi = mid;
      else lo = mid + 1;
    }
    if (lo === this.count) return { lagMs: 0, beyondHistory: false };
    const after = this.slot(lo);
    if (lo === 0) return { lagMs: Math.max(0, atMs - this.times[after]!), beyondHistory: true };
    const before = this.slot(lo - 1);
    const t0 = this.times[before]!;
    const t1 = this.times[after]!;
    const l0 = this.lsns[before]!;
    const l1 = this.lsns[after]!;
    const fraction = Number(replayLsn - l0) / Number(l1 - l0);
    const crossedAt = t0 + fraction * (t1 - t0);
    return { lagMs: Math.max(0, atMs - crossedAt), beyondHistory: false };
  }

  /** Drops samples older than the horizon, keeping the newest of them as the history's start. */
  private evict(nowMs: number): void {
    const cutoff = nowMs - this.horizonMs;
    while (this.count > 1 && this.times[this.slot(1)]! <= cutoff) {
      this.head = (this.head + 1) % this.times.length;
      this.count--;
    }
  }

  private slot(index: number): number {
    return (this.head + index) % this.times.length;
  }
}
