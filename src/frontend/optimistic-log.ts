import { FrontendCode } from '../protocol/codes.js';
import { readCString } from '../protocol/messages.js';
import { RowDigest } from '../protocol/row-digest.js';

/** A portal bound during the transaction (see OptimisticLog.portals). */
interface BoundPortal {
  parse: Buffer;
  bind: Buffer;
  /** an Execute of it is kept (its later Executes read the rest of the same result) */
  run: boolean;
}

/** Sync, built once: each extended read of the log runs in its own Sync-terminated run. */
const SYNC = Buffer.from([FrontendCode.Sync, 0, 0, 0, 4]);

/** Where a Bind's statement comes from when it was parsed before the transaction (ClientStatements). */
export interface ParsedStatements {
  /** the Parse body of the client's statement `name` ('' = unnamed) from its text on (text, then parameter types), if known */
  parseBody(name: string): Buffer | undefined;
}

/**
 * What an optimistic transaction did on its replica, kept to run again on the primary: the
 * client messages that ran there (simple Queries as sent; each Execute as a self-contained
 * Parse/Bind/Execute of the unnamed statement and portal with the client's text, parameter
 * types, parameter values and result formats, then a Sync), and what they answered (a RowDigest,
 * fed by the session's ServerMessageScanner while the answers were forwarded). Each kept frame
 * run ends in one ReadyForQuery.
 *
 * A portal read in parts (Executes with a row limit, as pgjdbc reads a result with a fetch size
 * and cursors do) is kept once, read whole: its parts must come one after the other, with no
 * other statement between them (so its rows are answered together, one result), and be read to
 * its end by the time the transaction moves. A statement that failed is kept: run again, it
 * must fail at the same place (so a transaction that went on after a ROLLBACK TO SAVEPOINT, as
 * pgjdbc's `autosave` does, can move).
 *
 * Not replayable (a move then fails with 40001): a portal read in parts and not to its end, or
 * with another statement between its parts; an Execute of a portal the log cannot rebuild.
 */
export class OptimisticLog {
  readonly digest = new RowDigest();
  /** the frame runs to send again, in order */
  readonly runs: Buffer[] = [];
  bytes = 0;
  /** why the log cannot be run again, if it cannot */
  private broken: string | undefined;
  /** statements parsed during the transaction, by client name: their Parse body from the text on */
  private readonly parsed = new Map<string, Buffer>();
  /** portals bound during the transaction: the Parse body of their statement, the Bind's body after the statement name, whether it was run */
  private readonly portals = new Map<string, BoundPortal>();
  /** the portal the last statement run was read from (undefined: a simple Query) */
  private lastRead: BoundPortal | undefined;

  constructor(private readonly statements: ParsedStatements) {}

  reset(): void {
    this.digest.reset();
    this.runs.length = 0;
    this.bytes = 0;
    this.broken = undefined;
    this.parsed.clear();
    this.portals.clear();
    this.lastRead = undefined;
  }

  /** Why the log cannot be run again (undefined: it can). */
  get unreplayable(): string | undefined {
    return this.digest.suspended ? 'a portal was read in parts and not to its end (Execute with a row limit)' : this.broken;
  }

  /** A client message (code, body [start, end)) that ran on the replica in the transaction. */
  record(code: number, b: Buffer, start: number, end: number): void {
    switch (code) {
      case FrontendCode.Query:
        this.lastRead = undefined;
        this.keep(Buffer.from(b.subarray(start - 5, end)));
        return;
      case FrontendCode.Parse: {
        const [name, textStart] = readCString(b, start, end);
        this.parsed.set(name, Buffer.from(b.subarray(textStart, end)));
        return;
      }
      case FrontendCode.Bind: {
        const [portal, statementStart] = readCString(b, start, end);
        const [name, afterName] = readCString(b, statementStart, end);
        const parse = this.parsed.get(name) ?? this.statements.parseBody(name);
        if (parse === undefined) this.portals.delete(portal);
        else this.portals.set(portal, { parse, bind: Buffer.from(b.subarray(afterName, end)), run: false });
        return;
      }
      case FrontendCode.Execute: {
        const [portal] = readCString(b, start, end);
        const bound = this.portals.get(portal);
        // a row limit is dropped: the portal is run again whole, once (see the class)
        if (bound === undefined) this.broken ??= 'a portal bound outside the transaction was read';
        else if (!bound.run) {
          bound.run = true;
          this.keep(executeRun(bound.parse, bound.bind));
        } else if (this.lastRead !== bound) this.broken ??= 'a portal was read in parts with other statements between its parts';
        this.lastRead = bound;
        return;
      }
      case FrontendCode.Close:
        if (b[start] === 0x50) this.portals.delete(readCString(b, start + 1, end)[0]);
        return;
      default:
        return;
    }
  }

  private keep(run: Buffer): void {
    this.runs.push(run);
    this.bytes += run.length;
  }
}

/** Parse, Bind and Execute of the unnamed statement and portal, then Sync. */
export function executeRun(parse: Buffer, bind: Buffer): Buffer {
  const out = Buffer.allocUnsafe(6 + parse.length + 7 + bind.length + 10 + SYNC.length);
  let at = 0;
  out[at] = FrontendCode.Parse;
  out.writeInt32BE(4 + 1 + parse.length, at + 1);
  out[at + 5] = 0; // the unnamed statement
  parse.copy(out, at + 6);
  at += 6 + parse.length;
  out[at] = FrontendCode.Bind;
  out.writeInt32BE(4 + 2 + bind.length, at + 1);
  out[at + 5] = 0; // the unnamed portal
  out[at + 6] = 0; // of the unnamed statement
  bind.copy(out, at + 7);
  at += 7 + bind.length;
  out[at] = FrontendCode.Execute;
  out.writeInt32BE(9, at + 1);
  out[at + 5] = 0;
  out.writeInt32BE(0, at + 6);
  at += 10;
  SYNC.copy(out, at);
  return out;
}
