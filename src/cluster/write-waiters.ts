/**
 * Writes waiting for a WAL position (read-your-writes): each committed write registers here with
 * the sequence number of its registration, and a primary sample sent after it hands its position
 * to every write registered up to the sample's moment (`release`).
 *
 * Writes waiting while the primary cannot be sampled are capped: past MAX_WAITING_WRITES the oldest
 * are forgotten. That is safe — a client whose write is forgotten keeps reading from the primary
 * until a later write of its own gets a position — and keeps memory bounded.
 */
const MAX_WAITING_WRITES = 65_536;

interface Waiter {
  seq: number;
  done: (lsn: bigint) => void;
}

export class WriteWaiters {
  /** writes registered so far */
  private seq = 0;
  private waiters: Waiter[] = [];
  private head = 0;

  /** The sequence number of the write registered last (a sample sent now covers it). */
  get last(): number {
    return this.seq;
  }

  /** Writes still waiting for a WAL position. */
  get pending(): number {
    return this.waiters.length - this.head;
  }

  add(done: (lsn: bigint) => void): void {
    this.waiters.push({ seq: ++this.seq, done });
    if (this.pending > MAX_WAITING_WRITES) this.forgetOldest();
  }

  /** Hands `lsn` to every write registered up to `seq` (the sample was sent after them). */
  release(seq: number, lsn: bigint): void {
    const waiters = this.waiters;
    let i = this.head;
    while (i < waiters.length && waiters[i]!.seq <= seq) waiters[i++]!.done(lsn);
    if (i === waiters.length) {
      this.waiters = [];
      this.head = 0;
    } else if (i > 1024 && i * 2 > waiters.length) {
      this.waiters = waiters.slice(i);
      this.head = 0;
    } else this.head = i;
  }

  private forgetOldest(): void {
    this.waiters = this.waiters.slice(this.head + (this.pending >> 1));
    this.head = 0;
  }
}
