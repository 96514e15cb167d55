import { FrontendCode } from '../protocol/codes.js';
import { readCString } from '../protocol/messages.js';
import { RowDigest } from '../protocol/row-digest.js';

/** A portal bound during the transaction (see OptimisticLog.portals). */
interface BoundPortal {
  parse: Buffer;
  bind: Buffer;
  /** an Execute of it is kept: its Bind is on the primary too, later Executes are kept alone */
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
 * client messages that ran there (simple Queries as sent; the first Execute of a portal as a
 * self-contained Parse of the unnamed statement with the client's text and parameter types, a
 * Bind of the client's portal with its parameter values and result formats, and the Execute with
 * its row limit; a later Execute of the same portal, and a Close of it, alone; each with a Sync),
 * and what they answered (a RowDigest, fed by the session's ServerMessageScanner while the
 * answers were forwarded). Each kept frame run ends in one ReadyForQuery.
 *
 * Inside the transaction block a Sync closes no portal: a portal read in parts (Executes with a
 * row limit, as pgjdbc reads a result with a fetch size and cursors do) is read again in the same
 * parts, each compared as an answer of its own, whether it was read to its end, left before it,
 * or read between other statements; and it is there on the primary, at the same row, for the
 * client to read on after the move. A statement that failed is kept: run again, it must fail at
 * the same place (so a transaction that went on after a ROLLBACK TO SAVEPOINT, as pgjdbc's
 * `autosave` does, can move).
 *
 * Not replayable (a move then fails with 40001): an Execute of a portal bound before the
 * transaction, or of a statement the log cannot rebuild.
 */
export class OptimisticLog {
  readonly digest = new RowDigest();
  /** the frame runs to send again, in order, each `times` times over (see runs) */
  private readonly kept: Buffer[] = [];
  private readonly times: number[] = [];
  /** bytes kept (a part of a portal repeating the one before it adds none) */
  bytes = 0;
  /** why the log cannot be run again, if it cannot */
  private broken: string | undefined;
  /** statements parsed during the transaction, by client name: their Parse body from the text on */
  private readonly parsed = new Map<string, Buffer>();
  /** portals bound during the transaction: the Parse body of their statement, the Bind's body after the statement name, whether it was run */
  private readonly portals = new Map<string, BoundPortal>();

  constructor(private readonly statements: ParsedStatements) {}

  reset(): void {
    this.digest.reset();
    this.kept.length = 0;
    this.times.length = 0;
    this.bytes = 0;
    this.broken = undefined;
    this.parsed.clear();
    this.portals.clear();
  }

  /** Why the log cannot be run again (undefined: it can). */
  get unreplayable(): string | undefined {
    return this.broken;
  }

  /** A client message (code, body [start, end)) that ran on the replica in the transaction. */
  record(code: number, b: Buffer, start: number, end: number): void {
    switch (code) {
      case FrontendCode.Query:
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
        const [portal, limitAt] = readCString(b, start, end);
        const bound = this.portals.get(portal);
        const limit = b.readInt32BE(limitAt);
        if (bound === undefined) this.broken ??= 'a portal bound outside the transaction was read';
        else if (bound.run) this.keepPart(portalRun(FrontendCode.Execute, portal, limit));
        else {
          bound.run = true;
          this.keep(executeRun(bound.parse, portal, bound.bind, limit));
        }
        return;
      }
      case FrontendCode.Close:
        if (b[start] === 0x50) {
          const portal = readCString(b, start + 1, end)[0];
          // a portal bound again later must not be there any more
          if (this.portals.get(portal)?.run) this.keep(portalRun(FrontendCode.Close, portal, 0));
          this.portals.delete(portal);
        }
        return;
      default:
        return;
    }
  }

  /** The frame runs to send again, in order (each ends in one ReadyForQuery). */
  runs(): Buffer[] {
    const out: Buffer[] = [];
    for (let i = 0; i < this.kept.length; i++) for (let k = 0; k < this.times[i]!; k++) out.push(this.kept[i]!);
    return out;
  }

  private keep(run: Buffer): void {
    this.kept.push(run);
    this.times.push(1);
    this.bytes += run.length;
  }

  /**
   * A later part of a portal: the same as the run before it (a cursor read on, as a fetch size
   * does) is counted there, not kept again, so that a long read in parts stays small.
   */
  private keepPart(run: Buffer): void {
    const last = this.kept.length - 1;
    if (last >= 0 && this.kept[last]!.equals(run)) this.times[last]!++;
    else this.keep(run);
  }
}

/**
 * Parse of the unnamed statement (`parse`: its body from the text on), Bind of `portal` to it
 * (`bind`: the Bind's body after the statement name), Execute with `limit`, then Sync.
 */
export function executeRun(parse: Buffer, portal: string, bind: Buffer, limit: number): Buffer {
  const name = Buffer.byteLength(portal);
  const out = Buffer.allocUnsafe(6 + parse.length + 7 + name + bind.length + 10 + name + SYNC.length);
  let at = 0;
  out[at] = FrontendCode.Parse;
  out.writeInt32BE(4 + 1 + parse.length, at + 1);
  out[at + 5] = 0; // the unnamed statement
  parse.copy(out, at + 6);
  at += 6 + parse.length;
  out[at] = FrontendCode.Bind;
  out.writeInt32BE(4 + name + 2 + bind.length, at + 1);
  out.write(portal, at + 5);
  out[at + 5 + name] = 0;
  out[at + 6 + name] = 0; // of the unnamed statement
  bind.copy(out, at + 7 + name);
  at += 7 + name + bind.length;
  at = writePortalMessage(out, at, FrontendCode.Execute, portal, name, limit);
  SYNC.copy(out, at);
  return out;
}

/** An Execute of `portal` with `limit`, or a Close of it (`code`), then Sync. */
function portalRun(code: number, portal: string, limit: number): Buffer {
  const name = Buffer.byteLength(portal);
  const out = Buffer.allocUnsafe((code === FrontendCode.Execute ? 10 : 7) + name + SYNC.length);
  SYNC.copy(out, writePortalMessage(out, 0, code, portal, name, limit));
  return out;
}

/** Writes an Execute (name, limit) or a Close of a portal ('P', name) at `at`; returns where it ends. */
function writePortalMessage(out: Buffer, at: number, code: number, portal: string, name: number, limit: number): number {
  out[at] = code;
  if (code === FrontendCode.Execute) {
    out.writeInt32BE(4 + name + 1 + 4, at + 1);
    out.write(portal, at + 5);
    out[at + 5 + name] = 0;
    out.writeInt32BE(limit, at + 6 + name);
    return at + 10 + name;
  }
  out.writeInt32BE(4 + 1 + name + 1, at + 1);
  out[at + 5] = 0x50; // 'P': a portal
  out.write(portal, at + 6);
  out[at + 6 + name] = 0;
  return at + 7 + name;
}
