import { ProxyError, SqlState } from '../errors.js';
import type { BudgetedPool, NodeBudget } from './node-budget.js';
import { ServerConnection, type ServerConnectOptions, type ServerDataHandler, type ServerEndpoint, type ServerLogin } from './server-connection.js';

export interface PoolOptions extends ServerConnectOptions {
  size: number;
  checkoutTimeoutMs: number;
  idleTimeoutMs: number;
  /** a connection this old is closed when it comes back (0 = never) */
  maxLifetimeMs?: number;
}

export type AcquireCallback = (error: Error | undefined, conn: ServerConnection | undefined) => void;

interface Waiter {
  callback: AcquireCallback;
  /** Date.now() after which the waiter gets 53300 */
  deadline: number;
  done: boolean;
}

export interface PoolStats {
  idle: number;
  active: number;
  connecting: number;
  waiting: number;
}

/**
 * Server connections to one node for one (user, database). A connection is in exactly one place:
 * idle (a LIFO stack, so warm connections are reused), active (lent to a session), or being
 * opened. Clients wait in FIFO order when all `size` connections are lent, and get 53300 after
 * `checkoutTimeoutMs`.
 */
export class Pool implements ServerDataHandler, BudgetedPool {
  private readonly idle: ServerConnection[] = [];
  private readonly active = new Set<ServerConnection>();
  private connecting = 0;
  private readonly waiters: Waiter[] = [];
  private waiterHead = 0;
  private expiryTimer: NodeJS.Timeout | undefined;
  closed = false;
  /** the node's cap on connections across its pools (pool.max_per_node), set by the pool set */
  budget: NodeBudget | undefined;
  private sweeper: NodeJS.Timeout | undefined;
  /** parameters reported by the first server connection, for the clients' startup */
  serverParams: Map<string, string> | undefined;
  /** connection failures in a row; reset by a successful connect */
  consecutiveFailures = 0;
  /** observers of broken connections (health checks are told at once) */
  onBroken: ((error: Error | undefined) => void) | undefined;
  /**
   * A connection this pool did not lend came back (its node was re-configured and a new pool took
   * this key): the pool set hands it to the draining pool that lent it.
   */
  onStray: ((conn: ServerConnection, reusable: boolean) => void) | undefined;
  /** set by drain(): called once the last lent connection came back */
  private drained: (() => void) | undefined;

  constructor(
    readonly endpoint: ServerEndpoint,
    readonly login: ServerLogin,
    private options: PoolOptions,
  ) {
    this.armSweeper();
  }

  /** idle_timeout_ms and max_lifetime_ms 0 = idle connections are kept */
  private armSweeper(): void {
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = undefined;
    const sweepMs = Math.min(this.options.idleTimeoutMs || Infinity, this.options.maxLifetimeMs || Infinity);
    if (sweepMs === Infinity) return;
    this.sweeper = setInterval(() => this.closeIdleExpired(), Math.max(10, Math.min(sweepMs / 2, 10_000)));
    this.sweeper.unref();
  }

  get size(): number {
    return this.options.size;
  }

  /** A reload: the new options (timeouts, lifetime, connect settings) apply from now on, the size at once. */
  reconfigure(options: PoolOptions): void {
    const timing = options.idleTimeoutMs !== this.options.idleTimeoutMs || options.maxLifetimeMs !== this.options.maxLifetimeMs;
    const resized = options.size !== this.options.size;
    this.options = options;
    if (timing && !this.closed) this.armSweeper();
    if (resized) this.resize(options.size);
  }

  resize(size: number): void {
    this.options = { ...this.options, size };
    let closed = 0;
    while (this.idle.length > 0 && this.total > size) {
      this.idle.pop()!.terminate();
      closed++;
    }
    this.serveWaiters();
    if (closed > 0) this.budget?.freed();
  }

  get total(): number {
    return this.idle.length + this.active.size + this.connecting;
  }

  stats(): PoolStats {
    return { idle: this.idle.length, active: this.active.size, connecting: this.connecting, waiting: this.waiters.length - this.waiterHead };
  }

  /**
   * Lends a connection: synchronously when one is idle (`preferred` when it is one of them), else
   * after connecting or waiting.
   */
  acquire(callback: AcquireCallback, preferred?: ServerConnection): void {
    if (this.closed || this.drained) {
      callback(this.closedError(), undefined);
      return;
    }
    const conn = (preferred !== undefined && this.takeIdle(preferred)) || this.idle.pop();
    if (conn) {
      this.active.add(conn);
      callback(undefined, conn);
      return;
    }
    if (this.total < this.options.size) {
      if (this.budget === undefined || this.budget.mayOpen(this)) {
        this.open(callback);
        return;
      }
      this.budget.wait(this);
    }
    this.waiters.push({ callback, done: false, deadline: Date.now() + this.options.checkoutTimeoutMs });
    if (this.expiryTimer === undefined) this.armExpiry();
  }

  /** Takes `conn` out of the idle connections, if it is one. */
  private takeIdle(conn: ServerConnection): ServerConnection | undefined {
    const idle = this.idle;
    if (idle[idle.length - 1] === conn) return idle.pop();
    const i = idle.lastIndexOf(conn);
    if (i < 0) return undefined;
    idle.splice(i, 1);
    return conn;
  }

  /** Every connection is lent and none can be opened: a unit would wait (see ServerPipeline). */
  get exhausted(): boolean {
    return this.idle.length === 0 && this.total >= this.options.size;
  }

  /**
   * Whether a self-contained unit should look for a connection to share (pool.pipeline_after):
   * once every connection is lent, or once `after` (> 0) of them are.
   */
  sharesAfter(after: number): boolean {
    return this.exhausted || (after > 0 && this.active.size >= after);
  }

  /** The connections lent now. */
  lent(): Iterable<ServerConnection> {
    return this.active;
  }

  get waitingCount(): number {
    return this.waiters.length - this.waiterHead;
  }

  /** Closes one idle connection so that another pool of the node may open one (node cap). */
  evictIdle(): boolean {
    const conn = this.idle.shift(); // the least recently used
    if (!conn) return false;
    conn.terminate();
    return true;
  }

  /**
   * One timer for all waiters, armed for the oldest: they wait in FIFO order with the same timeout,
   * so the head expires first (a timer per waiter cost a setTimeout and a clearTimeout per unit
   * whenever the pool was busy). After a reload that shortens checkout_timeout_ms, a newer waiter
   * expires no later than the older ones ahead of it.
   */
  private armExpiry(): void {
    this.expiryTimer = undefined;
    const now = Date.now();
    for (let i = this.waiterHead; i < this.waiters.length; i++) {
      const waiter = this.waiters[i]!;
      if (waiter.done) continue;
      this.expiryTimer = setTimeout(() => this.expireWaiters(), Math.max(1, waiter.deadline - now));
      return;
    }
  }

  private expireWaiters(): void {
    const now = Date.now();
    while (this.waiterHead < this.waiters.length) {
      const waiter = this.waiters[this.waiterHead]!;
      if (!waiter.done && waiter.deadline > now) break;
      this.waiters[this.waiterHead++] = undefined as never;
      if (waiter.done) continue;
      waiter.done = true;
      waiter.callback(
        new ProxyError(
          SqlState.tooManyConnections,
          `no server connection to node ${this.endpoint.node} became free within ${this.options.checkoutTimeoutMs} ms (pool size ${this.options.size}${this.budget && this.budget.cap > 0 ? `, pool.max_per_node ${this.budget.cap}` : ''})`,
          { retryable: true },
        ),
        undefined,
      );
    }
    this.compactWaiters();
    this.armExpiry();
  }

  /** Drops served waiters from the front now and then (not each time the queue empties: no churn). */
  private compactWaiters(): void {
    if (this.waiterHead > 64 && this.waiterHead * 2 > this.waiters.length) {
      this.waiters.splice(0, this.waiterHead);
      this.waiterHead = 0;
    }
  }

  private open(callback: AcquireCallback): void {
    this.connecting++;
    ServerConnection.connect(this.endpoint, this.login, this.options).then(
      (conn) => {
        this.connecting--;
        this.consecutiveFailures = 0;
        this.serverParams ??= new Map(conn.params);
        if (this.closed || this.drained) {
          conn.terminate();
          callback(this.closedError(), undefined);
          this.checkDrained();
          this.budget?.freed();
          return;
        }
        this.active.add(conn);
        callback(undefined, conn);
      },
      (error: Error) => {
        this.connecting--;
        this.consecutiveFailures++;
        this.onBroken?.(error);
        callback(error, undefined);
        // a waiter may now get a slot to try again
        this.serveWaiters();
        this.checkDrained();
        this.budget?.freed();
      },
    );
  }

  /** Takes a connection back; it must be idle at a message boundary outside a transaction. */
  release(conn: ServerConnection): void {
    if (!this.active.delete(conn)) {
      this.onStray?.(conn, true);
      return;
    }
    if (conn.closed || this.closed || this.drained || this.total >= this.options.size || this.tooOld(conn)) {
      conn.terminate();
      this.serveWaiters();
      this.checkDrained();
      this.budget?.freed();
      return;
    }
    const waiter = this.nextWaiter();
    if (waiter) {
      this.active.add(conn);
      waiter.callback(undefined, conn);
      return;
    }
    if (this.budget?.othersWaiting(this)) {
      // another pool of the node waits for a slot: this connection gives its slot up
      conn.terminate();
      this.budget.freed();
      return;
    }
    conn.setHandler(this);
    conn.lastUsedAt = Date.now();
    this.idle.push(conn);
  }

  /**
   * Closes a lent connection that must not serve its borrower (see PlaceholderGuard) and lends a
   * new one in its slot instead.
   */
  replace(conn: ServerConnection, callback: AcquireCallback): void {
    this.active.delete(conn);
    conn.setHandler(undefined);
    conn.terminate();
    if (this.closed || this.drained) {
      callback(this.closedError(), undefined);
      this.serveWaiters();
      this.checkDrained();
      this.budget?.freed();
      return;
    }
    this.open(callback);
  }

  /** Drops a lent connection that is broken or in an unknown state. */
  discard(conn: ServerConnection): void {
    const lentHere = this.active.delete(conn);
    conn.setHandler(undefined);
    conn.destroy();
    if (!lentHere) this.onStray?.(conn, false);
    this.serveWaiters();
    this.checkDrained();
    this.budget?.freed();
  }

  /** Whether `conn` is lent by this pool now. */
  owns(conn: ServerConnection): boolean {
    return this.active.has(conn);
  }

  /** drain() was called: nothing more is lent. */
  get draining(): boolean {
    return this.drained !== undefined;
  }

  /**
   * Graceful close (the node left the configuration): nothing more is lent, idle connections close
   * now, waiters are refused, lent connections finish their unit and are closed as they come back;
   * then the pool closes and `onDrained` is called.
   */
  drain(onDrained: () => void): void {
    if (this.closed) {
      onDrained();
      return;
    }
    if (this.drained) return;
    this.drained = onDrained;
    this.drainIdle();
    let waiter: Waiter | undefined;
    while ((waiter = this.nextWaiter())) waiter.callback(this.closedError(), undefined);
    this.checkDrained();
  }

  private checkDrained(): void {
    if (!this.drained || this.closed || this.active.size > 0 || this.connecting > 0) return;
    const done = this.drained;
    this.close();
    done();
  }

  private closedError(): ProxyError {
    return this.drained && !this.closed
      ? new ProxyError(SqlState.cannotConnectNow, `node ${this.endpoint.node} was removed from the configuration`, { retryable: true })
      : new ProxyError(SqlState.adminShutdown, `pool for node ${this.endpoint.node} is closed`);
  }

  private nextWaiter(): Waiter | undefined {
    while (this.waiterHead < this.waiters.length) {
      const waiter = this.waiters[this.waiterHead]!;
      this.waiters[this.waiterHead++] = undefined as never;
      this.compactWaiters();
      if (waiter.done) continue;
      waiter.done = true;
      return waiter;
    }
    return undefined;
  }

  serveWaiters(): void {
    while (this.waiterHead < this.waiters.length && (this.idle.length > 0 || this.total < this.options.size)) {
      if (this.idle.length === 0 && this.budget !== undefined && !this.budget.mayOpen(this)) {
        this.budget.wait(this);
        return;
      }
      const waiter = this.nextWaiter();
      if (!waiter) return;
      const conn = this.idle.pop();
      if (conn) {
        this.active.add(conn);
        waiter.callback(undefined, conn);
      } else this.open(waiter.callback);
    }
  }

  // An idle connection that speaks or closes is broken (e.g. the server was shut down).
  onServerData(conn: ServerConnection): void {
    this.removeIdle(conn);
    conn.destroy();
    this.budget?.freed();
  }

  onServerClose(conn: ServerConnection, error: Error | undefined): void {
    this.removeIdle(conn);
    this.onBroken?.(error);
    this.serveWaiters();
    this.budget?.freed();
  }

  private removeIdle(conn: ServerConnection): void {
    const at = this.idle.indexOf(conn);
    if (at >= 0) this.idle.splice(at, 1);
  }

  /** pool.max_lifetime_ms is over for `conn` */
  private tooOld(conn: ServerConnection, now?: number): boolean {
    const lifetime = this.options.maxLifetimeMs ?? 0;
    return lifetime > 0 && (now ?? Date.now()) - conn.openedAt >= lifetime;
  }

  private closeIdleExpired(): void {
    const now = Date.now();
    const cutoff = this.options.idleTimeoutMs > 0 ? now - this.options.idleTimeoutMs : -Infinity;
    for (let i = this.idle.length - 1; i >= 0; i--) {
      const conn = this.idle[i]!;
      if (conn.lastUsedAt < cutoff || this.tooOld(conn, now)) {
        this.idle.splice(i, 1);
        conn.terminate();
        this.budget?.freed();
      }
    }
  }

  /** Closes idle connections now; lent ones are closed as they come back. */
  drainIdle(): void {
    const idle = this.idle.splice(0);
    for (const conn of idle) conn.terminate();
    if (idle.length > 0) this.budget?.freed();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.sweeper);
    if (this.expiryTimer !== undefined) clearTimeout(this.expiryTimer);
    this.expiryTimer = undefined;
    this.drainIdle();
    for (const conn of this.active) conn.destroy();
    this.active.clear();
    let waiter: Waiter | undefined;
    while ((waiter = this.nextWaiter())) waiter.callback(this.closedError(), undefined);
    this.budget?.pools.delete(this);
    this.budget?.freed();
  }
}
