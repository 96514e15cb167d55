/**
 * Where a client's current unit is. A session moves between these in one place (its `move`):
 *
 *   idle ──(a message starts a unit)──► open (extended) ──(Sync)──► idle
 *     │                                   │
 *     └──(no connection / primary yet,    └──(pgrelay fails the unit)──► skipping ──(Sync)──► idle
 *         units in flight must finish)──► parked ──(the wait is over)──► idle | open, then `resume`
 *
 * A simple Query runs from idle to idle (its unit ends with the server's ReadyForQuery, which the
 * response queue tracks). Transaction stickiness is the server connection's own status (T or E
 * keeps it), pinning a property of the session.
 */
export type UnitState =
  /** no extended unit is open: the next message starts a unit */
  | { readonly phase: 'idle' }
  /** an extended-protocol unit is open: its messages up to Sync run on its connection */
  | { readonly phase: 'open' }
  /** pgrelay answered the extended unit with an error: its messages up to Sync are dropped */
  | { readonly phase: 'skipping' }
  /**
   * the unit waits (`why`); `open`: the state to go back to; `holds`: the message that parked it
   * is not done with (its rest runs when the wait is over: `resume`, known then) — else it was
   * handled and only what the client sent after it waits
   */
  | { readonly phase: 'parked'; readonly why: WaitReason; readonly open: boolean; readonly holds: boolean; readonly resume: Step | undefined };

export const IDLE: UnitState = { phase: 'idle' };
export const OPEN: UnitState = { phase: 'open' };
export const SKIPPING: UnitState = { phase: 'skipping' };

/** What a parked unit waits for. */
export type WaitReason =
  /** a server connection from a pool */
  | 'connection'
  /** a primary (failover under way) */
  | 'primary'
  /** the health checks' decision about a node a connect to failed */
  | 'node'
  /** a replica past the client's last write (read-your-writes, bounded by routing.fence_wait_ms) */
  | 'fence'
  /** the units in flight on the held connection (pipelining), or the outcome of a statement that forgets prepared statements */
  | 'drain';

/** The rest of a message's handling. */
export type Step = () => void;

/** Whether an extended unit is open (its Sync not seen yet). */
export function unitIsOpen(unit: UnitState): boolean {
  return unit.phase === 'open' || unit.phase === 'skipping' || (unit.phase === 'parked' && unit.open);
}

/** Whether the unit waits (the session reads no further client messages meanwhile). */
export function isParked(unit: UnitState): boolean {
  return unit.phase === 'parked';
}

/** Whether the client message read last is still under way (parked with the rest of its handling). */
export function holdsMessage(unit: UnitState): boolean {
  return unit.phase === 'parked' && unit.holds;
}
