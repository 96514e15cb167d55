import { describe, expect, it } from 'vitest';
import { NodeBudget, type BudgetedPool } from '../../src/pool/node-budget.js';

/** A pool as the budget sees it: counts only. */
class FakePool implements BudgetedPool {
  closed = false;
  waitingCount = 0;
  served = 0;
  constructor(
    public total: number,
    public idle: number,
    private readonly budget: NodeBudget,
  ) {
    budget.pools.add(this);
  }
  evictIdle(): boolean {
    if (this.idle === 0) return false;
    this.idle--;
    this.total--;
    return true;
  }
  serveWaiters(): void {
    while (this.waitingCount > 0) {
      if (!this.budget.mayOpen(this)) {
        this.budget.wait(this);
        return;
      }
      this.waitingCount--;
      this.total++;
      this.served++;
    }
  }
}

describe('NodeBudget (pool.max_per_node)', () => {
  it('0 means no cap', () => {
    const budget = new NodeBudget(0);
    const a = new FakePool(1000, 0, budget);
    expect(budget.mayOpen(a)).toBe(true);
  });

  it('counts every pool of the node; an idle connection of another pool gives its slot up', () => {
    const budget = new NodeBudget(3);
    const a = new FakePool(2, 1, budget);
    const b = new FakePool(1, 0, budget);
    expect(budget.mayOpen(b)).toBe(true); // a's idle connection was closed for it
    expect(a).toMatchObject({ total: 1, idle: 0 });
    b.total++;
    expect(budget.mayOpen(b)).toBe(false); // 3 open, none idle elsewhere
    expect(budget.mayOpen(a)).toBe(false);
  });

  it('waiting pools are served oldest first when a slot frees, and only while there is room', () => {
    const budget = new NodeBudget(2);
    const a = new FakePool(2, 0, budget);
    const b = new FakePool(0, 0, budget);
    const c = new FakePool(0, 0, budget);
    b.waitingCount = 2;
    c.waitingCount = 1;
    b.serveWaiters();
    c.serveWaiters();
    expect(budget.othersWaiting(a)).toBe(true);
    a.total--; // one of a's connections closed
    budget.freed();
    expect([b.served, c.served]).toEqual([1, 0]);
    a.total--;
    budget.freed();
    expect([b.served, c.served]).toEqual([2, 0]);
    b.total--;
    budget.freed();
    expect([b.served, c.served]).toEqual([2, 1]);
    expect(budget.othersWaiting(a)).toBe(false);
  });

  it('a higher cap (reload) serves waiting pools at once', () => {
    const budget = new NodeBudget(1);
    new FakePool(1, 0, budget);
    const b = new FakePool(0, 0, budget);
    b.waitingCount = 1;
    b.serveWaiters();
    expect(b.served).toBe(0);
    budget.resize(2);
    expect(b.served).toBe(1);
  });
});
