import { FrontendCode } from '../protocol/codes.js';
import type { Classification } from '../classify/classifier.js';

/**
 * A named statement as prepared on server connections. Statements with the same text and
 * parameter types share one server-side name, so each server connection prepares a statement once
 * no matter how many clients use it.
 */
export interface ServerStatement {
  readonly name: string;
  readonly text: string;
  /** the complete Parse message with the server-side name, ready to write */
  readonly parse: Buffer;
  readonly classification: Classification;
  /** a server accepted this Parse once: later Parses of it are answered without a server */
  parsed: boolean;
}

/** Server-side statement names are this prefix and a counter: `pgrelay_1`, `pgrelay_2`, … */
export const SERVER_STATEMENT_PREFIX = 'pgrelay_';

export class StatementRegistry {
  private readonly byKey = new Map<string, ServerStatement>();
  private counter = 0;

  constructor(private readonly maxEntries = 100_000) {}

  /**
   * The shared statement for a client's Parse body (after the client's name): text, then the
   * parameter types. `rest` is the Parse body from the query text on.
   */
  intern(text: string, rest: Buffer, classification: Classification): ServerStatement {
    const key = rest.toString('latin1');
    let statement = this.byKey.get(key);
    if (statement) return statement;
    if (this.byKey.size >= this.maxEntries) this.byKey.clear(); // names stay unique: counter keeps going
    const name = `${SERVER_STATEMENT_PREFIX}${(++this.counter).toString(36)}`;
    statement = { name, text, parse: buildParse(name, rest), classification, parsed: false };
    this.byKey.set(key, statement);
    return statement;
  }

  get size(): number {
    return this.byKey.size;
  }
}

function buildParse(name: string, rest: Buffer): Buffer {
  const nameBytes = Buffer.byteLength(name);
  const out = Buffer.allocUnsafe(1 + 4 + nameBytes + 1 + rest.length);
  out[0] = FrontendCode.Parse;
  out.writeInt32BE(out.length - 1, 1);
  out.write(name, 5, 'latin1');
  out[5 + nameBytes] = 0;
  rest.copy(out, 6 + nameBytes);
  return out;
}

/**
 * Rewrites a Bind or Describe/Close-like message so that it names the server-side statement:
 * `code`, then `before` (bytes kept before the name, e.g. the portal name), the new name, then
 * the bytes after the client's name.
 */
export function renameInMessage(code: number, src: Buffer, beforeStart: number, beforeEnd: number, afterStart: number, afterEnd: number, name: string): Buffer {
  const nameBytes = Buffer.byteLength(name);
  const beforeLength = beforeEnd - beforeStart;
  const afterLength = afterEnd - afterStart;
  const out = Buffer.allocUnsafe(1 + 4 + beforeLength + nameBytes + 1 + afterLength);
  out[0] = code;
  out.writeInt32BE(out.length - 1, 1);
  src.copy(out, 5, beforeStart, beforeEnd);
  out.write(name, 5 + beforeLength, 'latin1');
  out[5 + beforeLength + nameBytes] = 0;
  src.copy(out, 6 + beforeLength + nameBytes, afterStart, afterEnd);
  return out;
}
