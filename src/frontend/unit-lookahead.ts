import type { Classification } from '../classify/classifier.js';
import { FrontendCode } from '../protocol/codes.js';
import { readCString } from '../protocol/messages.js';

/** What the look-ahead at an extended unit's later messages found. */
export type UnitAhead =
  /** a later message of the unit writes (or pins, or cannot be told): the unit runs on the primary */
  | 'write'
  /** the unit's end (Sync, Flush, a Query, Terminate) is in, and none of its messages writes */
  | 'reads'
  /** the unit's end is not in yet: wait for more of it */
  | 'incomplete';

/** What the look-ahead needs from the session. */
export interface AheadHost {
  classify(text: string): Classification;
  /** the classification of a statement the client prepared before ('' = its unnamed statement) */
  statement(name: string): Classification | undefined;
  /** whether a statement must run on the primary (see targetOf) */
  wantsPrimary(classification: Classification | undefined): boolean;
  /** only statements the unit runs count (Bind, Query), not those it only parses or describes */
  runOnly?: boolean;
}

/**
 * An extended unit's messages, as far as they are in: `current`, the message that starts it
 * (being handled), and `rest`, the client bytes not handled yet: whether any of them writes. A
 * unit that starts with a read and writes later (Parse/Bind/Execute of a SELECT, then of an
 * INSERT, one Sync) runs on the primary as a whole. The end is a Sync, or a Flush (the client
 * waits for answers before sending more: what it sends after is not seen here), a Query or a
 * Terminate.
 */
export function lookAhead(current: Buffer, rest: Buffer, host: AheadHost, known?: Classification): UnitAhead {
  const parsed: Parsed = { byName: undefined, known };
  const first = scan(current, host, parsed);
  parsed.known = undefined;
  return first === 'write' ? 'write' : scan(rest, host, parsed);
}

interface Parsed {
  /** statements parsed in the unit, by name (a Bind of the unnamed statement the unit parses is that one); made at its first Parse */
  byName: Map<string, Classification> | undefined;
  /** the classification of `current` when it is a Parse, known to the caller (its text is not decoded and classified again) */
  known: Classification | undefined;
}

function scan(bytes: Buffer, host: AheadHost, parsed: Parsed): UnitAhead {
  let at = 0;
  while (at + 5 <= bytes.length) {
    const code = bytes[at]!;
    const end = at + 1 + bytes.readInt32BE(at + 1);
    if (end > bytes.length || end < at + 5) return 'incomplete';
    const start = at + 5;
    at = end;
    switch (code) {
      case FrontendCode.Sync:
      case FrontendCode.Flush:
      case FrontendCode.Terminate:
        return 'reads';
      case FrontendCode.Query: {
        const [text] = readCString(bytes, start, end);
        return host.wantsPrimary(host.classify(text)) ? 'write' : 'reads';
      }
      case FrontendCode.Parse: {
        const [name, textStart] = readCString(bytes, start, end);
        const classification = parsed.known ?? host.classify(readCString(bytes, textStart, end)[0]);
        if (!host.runOnly && host.wantsPrimary(classification)) return 'write';
        (parsed.byName ??= new Map()).set(name, classification);
        break;
      }
      case FrontendCode.Bind: {
        const [, statementStart] = readCString(bytes, start, end);
        const [name] = readCString(bytes, statementStart, end);
        const classification = parsed.byName?.get(name) ?? host.statement(name);
        if (host.wantsPrimary(classification)) return 'write';
        break;
      }
      case FrontendCode.Describe:
      case FrontendCode.Close:
      case FrontendCode.Execute:
        break;
      default:
        // a FunctionCall, COPY data, anything unexpected: the primary
        return 'write';
    }
  }
  return 'incomplete';
}
