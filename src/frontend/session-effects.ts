import type { SessionEffect } from '../classify/classifier.js';
import { splitStatements } from '../classify/classifier.js';
import { TxStatus } from '../protocol/codes.js';
import { DIRTY_STATE, isSerializable, quoteLiteral, type SessionState } from './session-state.js';
import { PlaceholderGuard } from './placeholder-guard.js';

interface PendingEffect {
  effect: SessionEffect;
  /** the text it came from, for the value of a SET */
  text: string;
}

/** The server connection the unit ran on, as far as its settings and statements go. */
export interface EffectServer {
  appliedState: string;
  readonly prepared: Set<string>;
  unnamedToken: number;
}

/** What an applied `default_transaction_read_only`, DISCARD ALL or DEALLOCATE ALL does to the statements. */
interface Outcome {
  /** DISCARD ALL / DEALLOCATE ALL: the client's named statements are gone (and the server's) */
  forgetStatements: boolean;
  /** DISCARD ALL: the server connection holds no unnamed statement either */
  forgetUnnamed: boolean;
  /** the server connection's settings are exactly `state.sql()` (false: unknown, reset before the next unit) */
  stateExact: boolean;
}

export { DIRTY_STATE };

/**
 * The effects of a client's statements on its session (SET, RESET, DISCARD ALL, DEALLOCATE ALL,
 * `default_transaction_read_only`), applied when they take effect: at the end of a unit outside
 * a transaction, or when the transaction that made them commits. A transaction that rolls back
 * (ROLLBACK, or COMMIT of a failed one) loses its SETs; a unit that failed applies nothing.
 * A SET rolled back to a savepoint is still applied if the transaction commits (ROLLBACK TO is
 * not tracked).
 */
export class SessionEffects {
  /** the session's transactions are read-only by default (routed to a replica) */
  defaultReadOnly = false;
  /** effects of the unit under way */
  private pending: PendingEffect[] = [];
  /** effects of the open transaction, applied when it commits */
  private inTransaction: PendingEffect[] = [];

  /** the DateStyle the server reported last in answer to the client's own statements */
  private reportedDateStyle: string | undefined;

  /**
   * the session's transactions are serializable by default (its startup value, a SET of
   * default_transaction_isolation or of the session characteristics): a hot standby refuses them
   * (0A000), so they are not sent to replicas
   */
  defaultSerializable: boolean;

  /** the client chose its default isolation itself (a startup parameter, a SET): its role's or database's does not apply */
  private ownIsolation: boolean;
  /** a replica refused this client's read as serializable (0A000): its role's or database's default is serializable */
  serverSerializable = false;
  /** custom parameters this client defined, and where (it never sees another client's) */
  readonly placeholders: PlaceholderGuard;

  constructor(private readonly state: SessionState) {
    this.placeholders = new PlaceholderGuard(state.startupNames(), () => state.placeholderNames());
    this.defaultSerializable = state.startupSerializable;
    this.ownIsolation = state.startupIsolation;
  }

  /** The session's transactions are serializable by default, as far as pgrelay knows: they must not run on a replica. */
  get serializable(): boolean {
    return this.defaultSerializable || (this.serverSerializable && !this.ownIsolation);
  }

  /** A ParameterStatus the client was sent (its own statement changed a reported setting). */
  reported(name: string, value: string): void {
    if (name === 'DateStyle') this.reportedDateStyle = value;
  }

  /** A statement of the unit under way completed. */
  collect(effects: readonly SessionEffect[], text: string): void {
    for (const effect of effects) this.pending.push({ effect, text });
  }

  /** The server connection was lost: the unit under way applies nothing. */
  dropPending(): void {
    this.pending = [];
  }

  /** The transaction ended without the server (its connection was lost, the client rolled back). */
  dropTransaction(): void {
    this.inTransaction = [];
  }

  /**
   * The unit ended with transaction status `status`; `failed`: it raised an error; `wasFailed`:
   * the transaction was failed before it (a COMMIT then rolls back). Applies what takes effect
   * now to the session state, the client's statements and the server connection it ran on.
   */
  unitEnded(status: number, failed: boolean, wasFailed: boolean, server: EffectServer | undefined, statements: { clear(): void }): void {
    const outcome = this.apply(status, failed, wasFailed);
    if (!outcome) return;
    if (outcome.forgetStatements) {
      statements.clear();
      server?.prepared.clear();
    }
    if (!server) return;
    if (outcome.forgetUnnamed) server.unnamedToken = 0;
    server.appliedState = outcome.stateExact ? this.state.sql() : DIRTY_STATE;
  }

  private apply(status: number, failed: boolean, wasFailed: boolean): Outcome | undefined {
    const effects = this.pending;
    this.pending = [];
    if (effects.length === 0 && this.inTransaction.length === 0) return undefined;
    // a failed transaction block ends rolled back, even when the client says COMMIT
    let rolledBack = (failed || wasFailed) && status === TxStatus.Idle;
    for (const { effect } of effects) if (effect.type === 'rollback') rolledBack = true;
    if (status !== TxStatus.Idle) {
      this.inTransaction.push(...effects);
      return undefined;
    }
    const all = rolledBack ? effects.filter(({ effect }) => effect.type !== 'set' && effect.type !== 'reset' && effect.type !== 'reset_all') : [...this.inTransaction, ...effects];
    this.inTransaction = [];
    const outcome: Outcome = { forgetStatements: false, forgetUnnamed: false, stateExact: true };
    for (const { effect, text } of all) {
      switch (effect.type) {
        case 'set': {
          let statement = effect.statement === 0 && !text.includes(';') ? text : splitStatements(text)[effect.statement] ?? text;
          // a SET of DateStyle merges with the value before it (`dmy` keeps the output style):
          // what is replayed is the whole value the server reported
          if (effect.name === 'datestyle' && this.reportedDateStyle !== undefined) statement = `SET "DateStyle" TO ${quoteLiteral(this.reportedDateStyle)}`;
          this.state.set(effect.name, statement);
          if (effect.name === 'default_transaction_isolation' || (effect.name === 'session_characteristics' && /\bisolation\s+level\b/i.test(statement))) {
            this.defaultSerializable = isSerializable(statement);
            this.ownIsolation = true;
          }
          break;
        }
        case 'reset':
          if (effect.name === 'default_transaction_isolation') this.isolationReset();
          this.state.reset(effect.name);
          outcome.stateExact = false;
          break;
        case 'reset_all':
          this.state.resetAll(true);
          this.isolationReset();
          outcome.stateExact = false;
          break;
        case 'discard_all':
          this.state.resetAll();
          this.isolationReset();
          this.defaultReadOnly = false;
          outcome.forgetStatements = true;
          outcome.forgetUnnamed = true;
          outcome.stateExact = false;
          break;
        case 'deallocate':
          if (effect.name === null) outcome.forgetStatements = true;
          break;
        case 'default_read_only':
          this.defaultReadOnly = effect.value;
          break;
        default:
          break;
      }
    }
    return outcome;
  }

  /** The client's default isolation is its startup value again (or its role's or database's). */
  private isolationReset(): void {
    this.defaultSerializable = this.state.startupSerializable;
    this.ownIsolation = this.state.startupIsolation;
  }
}
