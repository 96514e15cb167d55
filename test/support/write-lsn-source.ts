import type { WriteLsnSource } from '../../src/routing/freshness.js';

/** Collects write callbacks; `sample(lsn)` answers every write registered so far, as the lag monitor does. */
export class Source implements WriteLsnSource {
  waiting: ((lsn: bigint) => void)[] = [];
  afterWrite(done: (lsn: bigint) => void): void {
    this.waiting.push(done);
  }
  sample(lsn: bigint): void {
    const waiting = this.waiting;
    this.waiting = [];
    for (const done of waiting) done(lsn);
  }
}
