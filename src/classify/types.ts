/**
 * The classifier's vocabulary: where a statement may run and what it does to the client's session.
 * The semantics are those of DESIGN.md ("Routing rules"); the choices it leaves open are written
 * down beside the type they concern.
 */

/**
 * `primary`: must run on the primary. `replica`: may run on a fresh replica. `any`: session or
 * transaction control (SET, COMMIT, DEALLOCATE…) that runs wherever the client's work runs.
 */
export type Route = 'primary' | 'replica' | 'any';

/** `provolatile` of pg_proc: volatile, stable, immutable. */
export type Volatility = 'v' | 's' | 'i';

/**
 * What a statement does to session (or transaction) state, in statement order. Values are not
 * copied here: a `set` carries the index of its statement in `splitStatements(sql)`, and the
 * caller replays that slice of its own text (classifications are cached per statement shape, so
 * they never hold a text's literals).
 *
 * - `set`/`reset`: `SET name …` / `RESET name` at session level (never `SET LOCAL`). `SET SESSION
 *   CHARACTERISTICS AS TRANSACTION …` is a `set` named `session_characteristics`.
 * - `reset_all`, `discard_all`: `RESET ALL`, `DISCARD ALL`. Both are followed by
 *   `default_read_only: false`, since they clear that setting too.
 * - `deallocate`: `DEALLOCATE [PREPARE] name`, or `DEALLOCATE ALL` (name null).
 * - `begin`: `BEGIN` / `START TRANSACTION`, `readOnly` when it says `READ ONLY`.
 * - `commit`: `COMMIT`/`END`, and `PREPARE TRANSACTION` (it ends the client's transaction block;
 *   the prepared transaction is finished later by `COMMIT PREPARED`, a primary statement).
 * - `rollback`: `ROLLBACK`/`ABORT` (not `ROLLBACK TO SAVEPOINT`).
 * - `set_transaction_read_only`: `SET TRANSACTION READ ONLY` (not SERIALIZABLE, which a replica
 *   cannot run), `SET [LOCAL] transaction_read_only` to a true value.
 * - `default_read_only`: `SET default_transaction_read_only`, `SET SESSION CHARACTERISTICS AS
 *   TRANSACTION READ ONLY|READ WRITE`, their RESET (false: the server default is assumed off).
 */
export type SessionEffect =
  | { readonly type: 'set'; readonly name: string; readonly statement: number }
  | { readonly type: 'reset'; readonly name: string; readonly statement: number }
  | { readonly type: 'reset_all' }
  | { readonly type: 'discard_all' }
  | { readonly type: 'deallocate'; readonly name: string | null }
  | { readonly type: 'begin'; readonly readOnly: boolean }
  | { readonly type: 'commit' }
  | { readonly type: 'rollback' }
  | { readonly type: 'set_transaction_read_only' }
  | { readonly type: 'default_read_only'; readonly value: boolean };

/**
 * The decision for one SQL text. Classifications come out of a cache and are shared between
 * calls: treat them as read-only.
 */
export interface Classification {
  readonly route: Route;
  /** after this statement the client is pinned to one primary connection (route is then primary) */
  readonly pin: boolean;
  /** human text, e.g. "SELECT without writes", "INSERT writes", "calls nextval()" */
  readonly reason: string;
  /** in statement order; empty for most statements */
  readonly effects: readonly SessionEffect[];
  /** how many statements the text holds (0 for an empty text) */
  readonly statements: number;
  /** a `/* pgrelay:primary *\/` or `/* pgrelay:replica *\/` comment in the text */
  readonly hint?: 'primary' | 'replica';
  /** from a `/* pgrelay:max_lag_ms=500 *\/` comment */
  readonly maxLagMs?: number;
  /**
   * From a `/* pgrelay:after_lsn=0/16B3748 *\/` comment (a causality token): a read runs only where
   * that WAL position has been replayed. Read from each text itself, never from the shape's cache.
   */
  readonly afterLsn?: bigint;
  /** an `after_lsn=` value that is not a WAL position, as written: the statement is refused (22P02) */
  readonly badAfterLsn?: string;
  /**
   * Functions the text calls that are neither known built-in reads nor known writers, as
   * PostgreSQL resolves their names (unquoted names folded to lower case), schema-qualified if
   * written so. Their volatility decided the route (see Classifier.setVolatility).
   */
  readonly userFunctions: readonly string[];
  /**
   * The text calls currval() or lastval(): it reads what nextval() last returned in the server
   * backend, which under transaction pooling may be another client's (see SequenceAffinity).
   */
  readonly readsSequences?: true;
  /**
   * The text names settings: SET / SET LOCAL / RESET / SHOW statements, calls of set_config(),
   * current_setting() or pg_show_all_settings(), reads of pg_settings. The names themselves (often
   * literals, which the shape masks) are read from the text (see PlaceholderGuard).
   */
  readonly namesSettings?: true;
  /**
   * Why the statement's answer cannot be checked by running it again on another node: a call
   * whose answer depends on the server or the moment (`now()`, `CURRENT_TIMESTAMP`, `random()`,
   * `inet_server_port()`, …), or a cursor (`DECLARE`). An optimistic transaction moves to the
   * primary before such a statement.
   */
  readonly unverifiable?: string;
  /**
   * A transaction setting a hot standby runs as the primary does (`SET LOCAL`, `SET TRANSACTION
   * ISOLATION LEVEL READ COMMITTED | REPEATABLE READ`, `SET CONSTRAINTS`; not READ WRITE, not
   * SERIALIZABLE): as the first statement of a transaction whose BEGIN pgrelay holds, it may start
   * an optimistic transaction on a replica (ORMs send it right after BEGIN).
   */
  readonly opensOnReplica?: true;
  /**
   * The text calls `set_config(name, value, true)`: a setting for the transaction only, which a
   * replica runs as the primary does (the row-level-security pattern sets its tenant so in every
   * transaction). Not when the name is the transaction's own isolation, read-only or deferrable
   * (a hot standby refuses those): such a text goes to the primary.
   */
  readonly localSettings?: true;
}

export interface ClassifierOptions {
  /** shapes kept in the LRU cache; default 5000, 0 disables the cache */
  cacheSize?: number;
  /**
   * Functions forced by config (`routing.functions`): names under `primary` always route to the
   * primary, names under `replica` may go to replicas. They override both the built-in lists and
   * the volatility map. A bare name matches any schema; `schema.name` matches only that schema.
   */
  functions?: { primary?: readonly string[]; replica?: readonly string[] };
}
