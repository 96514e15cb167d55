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

/**
 * The statements shared between clients, by Parse body, bounded in bytes (`maxBytes`, read at
 * each new statement: a reload applies): the least recently used go first. A statement that goes
 * stays with the clients that named it and on the connections that prepared it (each connection
 * keeps a bounded number, see ClientStatements.evictFrom); the same text parsed again gets a new
 * server-side name (names stay unique: the counter keeps going).
 */
export class StatementRegistry {
  /** most recently used last */
  private readonly byKey = new Map<string, ServerStatement>();
  private counter = 0;
  private totalBytes = 0;

  constructor(private readonly maxBytes: () => number = () => 64 * 1024 * 1024) {}

  /**
   * The shared statement for a client's Parse body (after the client's name): text, then the
   * parameter types. `rest` is the Parse body from the query text on.
   */
  intern(text: string, rest: Buffer, classification: Classification): ServerStatement {
    const key = rest.toString('latin1');
    let statement = this.byKey.get(key);
    if (statement) {
      this.byKey.delete(key);
      this.byKey.set(key, statement);
      return statement;
    }
    const name = `${SERVER_STATEMENT_PREFIX}${(++this.counter).toString(36)}`;
    statement = { name, text, parse: buildParse(name, rest), classification, parsed: false };
    this.byKey.set(key, statement);
    this.totalBytes += entryBytes(key, statement);
    const max = this.maxBytes();
    for (const [oldKey, old] of this.byKey) {
      if (this.totalBytes <= max || old === statement) break;
      this.byKey.delete(oldKey);
      this.totalBytes -= entryBytes(oldKey, old);
    }
    return statement;
  }

  get size(): number {
    return this.byKey.size;
  }

  /** what the kept statements take, approximately (key, text and Parse message) */
  get bytes(): number {
    return this.totalBytes;
  }
}

/** The bytes one entry holds: its key (a latin1 string, one byte a character), text (two) and Parse message. */
function entryBytes(key: string, statement: ServerStatement): number {
  return key.length + statement.text.length * 2 + statement.parse.length + 200;
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
