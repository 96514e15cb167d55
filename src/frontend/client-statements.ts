import type { Classification } from '../classify/classifier.js';
import { isLoneDeallocate, refusedDeallocate, type DeallocateRefusal } from '../classify/deallocate.js';
import { FrontendCode } from '../protocol/codes.js';
import { message } from '../protocol/messages.js';
import { SERVER_STATEMENT_PREFIX, type ServerStatement } from './prepared-statements.js';
import { quoteLiteral } from './session-state.js';

/** Per-statement bookkeeping carried by the response-queue entries that complete a statement. */
export interface StatementPayload {
  classification: Classification;
  /** the text the classification was made from, for the values of SET effects */
  text: string;
  /** on a Parse entry: the shared statement it prepares (marked parsed, or forgotten on error) */
  statement?: ServerStatement;
  /** on a client's Parse entry: the client's name for it */
  name?: string;
  /** on a SyntheticAnswer entry: the bytes pgrelay answers, and whether a ReadyForQuery ends them (a simple Query) */
  answer?: { data: Buffer; ready: boolean };
}

/** What a server connection knows of statements (ServerConnection has these fields). */
export interface StatementHolder {
  /** server-side names prepared on it */
  readonly prepared: Set<string>;
  /** whose unnamed statement it holds (a token of the client that parsed it), 0 = none known */
  unnamedToken: number;
}

let unnamedTokens = 0;

const CLOSE_UNNAMED_STATEMENT = message(FrontendCode.Close, (w) => w.int8(0x53).cstring(''));

/**
 * One client's statement names: its named statements (each mapped to a shared server-side
 * statement, see StatementRegistry), its unnamed statement (kept as the Parse to send again on
 * another connection), and the portal bound last. Decides what a server connection needs before
 * a message naming a statement can run there; writes nothing itself.
 */
export class ClientStatements {
  /** made on first use (most clients name no statement) */
  private named: Map<string, ServerStatement> | undefined;
  private unnamedParse: Buffer | undefined;
  /** the classification of the unnamed statement's text */
  unnamedPayload: StatementPayload | undefined;
  private unnamedToken = 0;
  /** the statement of the portal bound last (for Execute) */
  portalPayload: StatementPayload | undefined;

  get(name: string): ServerStatement | undefined {
    return this.named?.get(name);
  }

  /** The Parse body of statement `name` ('' = the unnamed one) from its text on (text, parameter types), if known. */
  parseBody(name: string): Buffer | undefined {
    const parse = name === '' ? this.unnamedParse : this.named?.get(name)?.parse;
    if (parse === undefined) return undefined;
    return parse.subarray(parse.indexOf(0, 5) + 1);
  }

  has(name: string): boolean {
    return this.named?.has(name) === true;
  }

  set(name: string, statement: ServerStatement): void {
    (this.named ??= new Map()).set(name, statement);
  }

  delete(name: string): void {
    this.named?.delete(name);
  }

  /** DISCARD ALL / DEALLOCATE ALL. */
  clear(): void {
    this.named?.clear();
  }

  /** A Parse of the unnamed statement goes to `holder`: from now on it holds this client's. */
  parsedUnnamed(parse: Buffer, payload: StatementPayload, holder: StatementHolder): void {
    this.unnamedParse = Buffer.from(parse);
    this.unnamedPayload = payload;
    this.unnamedToken = ++unnamedTokens;
    holder.unnamedToken = this.unnamedToken;
  }

  /**
   * Before a Bind or Describe of the unnamed statement on `holder`: the message to send first
   * (this client's Parse again, or a Close of another client's unnamed statement, which must not
   * be bound by this one), or undefined when the connection holds this client's already.
   */
  restoreUnnamed(holder: StatementHolder): Buffer | undefined {
    if (holder.unnamedToken === this.unnamedToken) return undefined;
    holder.unnamedToken = this.unnamedToken;
    return this.unnamedParse ?? CLOSE_UNNAMED_STATEMENT;
  }

  /**
   * Close of the client's unnamed statement: true = send it to `holder` (it holds this client's),
   * false = answer CloseComplete without the server (another client's unnamed statement stays;
   * closing one that does not exist is no error). The client has no unnamed statement afterwards.
   */
  closeUnnamed(holder: StatementHolder): boolean {
    const own = holder.unnamedToken === this.unnamedToken;
    if (own) holder.unnamedToken = 0;
    this.unnamedParse = undefined;
    this.unnamedPayload = undefined;
    this.unnamedToken = 0;
    return own;
  }

  /** The Parse to send before `statement` can be used on `holder`, or undefined when it is prepared there. */
  prepareOn(holder: StatementHolder, statement: ServerStatement): Buffer | undefined {
    if (holder.prepared.delete(statement.name)) {
      holder.prepared.add(statement.name); // the most recently used last (see evictFrom)
      return undefined;
    }
    holder.prepared.add(statement.name);
    return statement.parse;
  }

  /**
   * The server-side statements a connection keeps beyond `max` (0 = no cap), least recently used
   * first, but never `keep` (the one just prepared): forgotten here, for the caller to Close there.
   */
  evictFrom(holder: StatementHolder, max: number, keep: string): string[] {
    const prepared = holder.prepared;
    if (max <= 0 || prepared.size <= max) return [];
    const evicted: string[] = [];
    for (const name of prepared) {
      if (prepared.size <= max) break;
      if (name === keep) continue;
      prepared.delete(name);
      evicted.push(name);
    }
    return evicted;
  }

  /**
   * A client's Parse that failed or was skipped: its name means nothing on the server, unless a
   * Parse of that name still to be answered (pipelined after a Sync) maps it again.
   */
  parseFailed(name: string, statement: ServerStatement, mappedAgainLater: boolean): void {
    if (this.named?.get(name) !== statement || mappedAgainLater) return;
    this.named?.delete(name);
  }

  /**
   * A lone `DEALLOCATE name` of one of this client's protocol-level statements (only the client's
   * name goes: the server-side statement is shared), or a lone `DEALLOCATE ALL` of a client that is
   * not pinned (it forgets the client's names, as PgBouncer does: `statement` undefined); undefined
   * when the statement is something else (a pinned client's DEALLOCATE ALL runs on its connection).
   */
  deallocateTarget(classification: Classification, pinned: boolean): { name: string | null; statement: ServerStatement | undefined } | undefined {
    if (!isLoneDeallocate(classification)) return undefined;
    const effect = classification.effects[0]!;
    if (effect.type !== 'deallocate') return undefined;
    if (effect.name === null) return pinned ? undefined : { name: null, statement: undefined };
    const statement = this.named?.get(effect.name);
    return statement && { name: effect.name, statement };
  }

  /**
   * A DEALLOCATE of the text that must not reach the shared server connection: another client's
   * server-side statement in any statement of the text, or ALL where pgrelay could not follow it
   * (see classify/deallocate.ts). `alone`: the text came as a simple Query holding this one statement.
   */
  refusedDeallocate(classification: Classification, alone: boolean): DeallocateRefusal | undefined {
    if (classification.effects.length === 0) return undefined;
    return refusedDeallocate(classification, { isOwn: (name) => this.named?.has(name) === true, serverPrefix: SERVER_STATEMENT_PREFIX, alone });
  }
}

/**
 * A statement that fails on the server with the refusal's SQLSTATE and message (for another
 * client's statement exactly as a DEALLOCATE of a statement that does not exist, 26000; a
 * transaction is aborted as it would be), without touching the server's statements.
 */
export function refusalText(refused: DeallocateRefusal): string {
  const body = `BEGIN RAISE EXCEPTION USING ERRCODE = '${refused.sqlstate}', MESSAGE = ${quoteLiteral(refused.message)}; END`;
  return `DO ${quoteLiteral(body)}`;
}

export function refuseDeallocate(refused: DeallocateRefusal): Buffer {
  return message(FrontendCode.Query, (w) => w.cstring(refusalText(refused)));
}

/** A Parse message like the client's but with another text and no parameter types. */
export function parseWithText(name: string, text: string): Buffer {
  return message(FrontendCode.Parse, (w) => w.cstring(name).cstring(text).int16(0));
}

export { isLoneDeallocate };

/**
 * DISCARD ALL or DEALLOCATE ALL that reaches the server (a pinned client's, or a DISCARD): it drops
 * the connection's prepared statements, pgrelay's among them, at once (a rollback does not bring
 * them back); what the client sent after it waits for its outcome, so that pgrelay prepares them
 * again where they are gone.
 */
export function forgetsStatements(classification: Classification): boolean {
  return classification.effects.some((effect) => effect.type === 'discard_all' || (effect.type === 'deallocate' && effect.name === null));
}
