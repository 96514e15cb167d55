import type { Classification } from '../classify/types.js';
import type { ServerConnection } from '../pool/server-connection.js';
import { FrontendCode } from '../protocol/codes.js';
import { message } from '../protocol/messages.js';

/** Forgets a backend's sequence state: its currval()/lastval() answer 55000 until its next nextval(). */
export const DISCARD_SEQUENCES = message(FrontendCode.Query, (w) => w.cstring('DISCARD SEQUENCES'));

/** numbers of clients, as server connections remember them (ServerConnection.lastClient; 0 = none) */
let clients = 0;

/**
 * A sequence's currval() and lastval() answer what nextval() last returned *in the server
 * backend*. Under transaction pooling a client's nextval (in a statement of its own, or a column
 * default of an INSERT) may have run on a backend that has served other clients since, and its
 * next unit may get a backend where another client drew. So:
 * - each server connection remembers the client whose unit ran on it last; a unit for the primary
 *   takes the idle connection this client used last when no other client has used it since
 *   (affinity): there, currval() is the client's own, even hidden in a column default;
 * - a unit that reads the sequence state (its text calls currval or lastval), that pins the
 *   session (its backend is the client's for good), or of a session already pinned (pool.mode:
 *   session) on a connection another client used last is preceded by `DISCARD SEQUENCES`: the
 *   client gets PostgreSQL's own 55000 "currval of sequence … is not yet defined in this session"
 *   instead of another client's value.
 * The cost on other units: one comparison and one store per unit, and a search of the pool's
 * idle connections (at most pool.size) for units on the primary.
 */
export class SequenceAffinity {
  /** this client's number, which the connections its units run on remember */
  private readonly client = ++clients;
  /** the primary connection this client's last unit there ran on */
  private last: ServerConnection | undefined;

  /** The connection to take for a unit, if idle: the one this client used last, when no other client has since. */
  preferred(): ServerConnection | undefined {
    const conn = this.last;
    return conn !== undefined && conn.lastClient === this.client && !conn.closed ? conn : undefined;
  }

  /**
   * A unit of this client attached `conn`. True when the backend's sequence state must be
   * forgotten before the unit runs (DISCARD_SEQUENCES): `conn` served another client last and the
   * unit reads that state, or pins the session (`pinned`: the session is or will be pinned).
   */
  attached(conn: ServerConnection, onPrimary: boolean, classification: Classification | undefined, pinned: boolean): boolean {
    const foreign = conn.lastClient !== 0 && conn.lastClient !== this.client;
    conn.lastClient = this.client;
    if (onPrimary) this.last = conn;
    return foreign && (pinned || classification?.readsSequences === true || classification?.pin === true);
  }
}
