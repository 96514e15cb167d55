/**
 * `pool.max_per_node`: the server connections one node may have open (idle, lent or connecting)
 * across all of its pools — every user and database. A pool that may grow by its own size but
 * not by the node's waits for a slot: its unit waits as it would for a connection of its own
 * pool (FIFO, `checkout_timeout_ms`, then 53300). A slot comes from an idle connection of
 * another pool of the node (closed to make room), or when any of the node's connections closes.
 */
export interface BudgetedPool {
  /** connections open or opening in this pool */
  readonly total: number;
  readonly closed: boolean;
  /** closes one idle connection to give its slot to another pool; false when it has none */
  evictIdle(): boolean;
  /** the pool's units waiting for a connection */
  readonly waitingCount: number;
  /** serves the pool's waiters (called when a slot may be free) */
  serveWaiters(): void;
}

export class NodeBudget {
  readonly pools = new Set<BudgetedPool>();
  /** pools with units waiting for a slot, in the order they started waiting */
  private readonly waiting: BudgetedPool[] = [];
  private waking = false;

  /** 0 = no cap */
  constructor(public cap: number) {}

  private get hasRoom(): boolean {
    return this.cap <= 0 || this.open < this.cap;
  }

  private get open(): number {
    let sum = 0;
    for (const pool of this.pools) sum += pool.total;
    return sum;
  }

  /** Whether `pool` may open one more connection now, closing another pool's idle one if needed. */
  mayOpen(pool: BudgetedPool): boolean {
    if (this.hasRoom) return true;
    for (const other of this.pools) if (other !== pool && other.evictIdle()) return true;
    return false;
  }

  /** `pool` has units waiting for a slot. */
  wait(pool: BudgetedPool): void {
    if (!this.waiting.includes(pool)) this.waiting.push(pool);
  }

  /** Whether some other pool is waiting for a slot (an idle connection then gives its slot up). */
  othersWaiting(pool: BudgetedPool): boolean {
    return this.waiting.some((p) => p !== pool && !p.closed && p.waitingCount > 0);
  }

  /** A connection of the node closed (or failed to open): waiting pools try again, oldest first. */
  freed(): void {
    if (this.waking || this.waiting.length === 0) return;
    this.waking = true;
    try {
      while (this.waiting.length > 0 && this.hasRoom) {
        const pool = this.waiting[0]!;
        if (!pool.closed && pool.waitingCount > 0) pool.serveWaiters();
        // served, or blocked by its own size (its releases serve it): it stops waiting for a
        // slot; still blocked by the cap: it keeps its place at the head
        if (pool.closed || pool.waitingCount === 0 || this.hasRoom) this.waiting.shift();
        else break;
      }
    } finally {
      this.waking = false;
    }
  }

  /** The cap changed (reload): a higher one may serve waiters now. */
  resize(cap: number): void {
    this.cap = cap;
    this.freed();
  }
}
