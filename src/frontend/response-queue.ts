/**
 * What a server connection still owes the client, one entry per message sent to it that gets an
 * answer (in order: the server answers strictly in order). The session pops entries as answers
 * arrive, which tells it when a unit is done, which answers to swallow (those to messages pgrelay
 * injected) and where to insert answers it makes itself (a Parse it did not need to send).
 *
 * A ring buffer of small integers plus a parallel array of payloads: no allocation per message.
 */
export const Expect = {
  Query: 1, // simple Query or FunctionCall: ends at ReadyForQuery
  Sync: 2, // ends at ReadyForQuery
  Parse: 3, // ParseComplete
  Bind: 4, // BindComplete
  Close: 5, // CloseComplete
  Describe: 6, // RowDescription or NoData (after ParameterDescription for a statement)
  Execute: 7, // CommandComplete, EmptyQueryResponse or PortalSuspended
  SyntheticParseComplete: 8, // pgrelay answers ParseComplete itself
  SyntheticCloseComplete: 9, // pgrelay answers CloseComplete itself
  SyntheticDeallocate: 10, // pgrelay answers `DEALLOCATE name` itself (payload text: the name; an answer: sent through the extended protocol)
  SyntheticAnswer: 11, // pgrelay answers a message itself (payload answer: the bytes; see CausalityToken)
} as const;

/** The answers to this entry are not for the client (pgrelay sent the message). */
export const SWALLOW = 16;
const KIND_MASK = 15;

/** Entries a queue starts with (a power of two); it doubles when full (an idle client's costs little). */
const INITIAL_ENTRIES = 8;

export class ResponseQueue<P> {
  private kinds = new Int32Array(INITIAL_ENTRIES);
  private payloads: (P | undefined)[] = new Array(INITIAL_ENTRIES);
  private head = 0;
  private count = 0;

  get length(): number {
    return this.count;
  }

  push(kind: number, payload?: P): void {
    if (this.count === this.kinds.length) this.grow();
    const at = (this.head + this.count) & (this.kinds.length - 1);
    this.kinds[at] = kind;
    this.payloads[at] = payload;
    this.count++;
  }

  /** Kind (with flags) of the oldest entry, or 0 when empty. */
  peek(): number {
    return this.count === 0 ? 0 : this.kinds[this.head]!;
  }

  peekKind(): number {
    return this.peek() & KIND_MASK;
  }

  peekPayload(): P | undefined {
    return this.count === 0 ? undefined : this.payloads[this.head];
  }

  shift(): void {
    if (this.count === 0) return;
    this.payloads[this.head] = undefined;
    this.head = (this.head + 1) & (this.kinds.length - 1);
    this.count--;
  }

  /** Whether an entry after the oldest one matches (a scan: for rare paths only). */
  someAfterHead(predicate: (kind: number, payload: P | undefined) => boolean): boolean {
    for (let i = 1; i < this.count; i++) {
      const at = (this.head + i) & (this.kinds.length - 1);
      if (predicate(this.kinds[at]! & KIND_MASK, this.payloads[at])) return true;
    }
    return false;
  }

  /** Whether an entry matches, the oldest included; `entry` with its flags (a scan: for rare paths only). */
  some(predicate: (entry: number, payload: P | undefined) => boolean): boolean {
    for (let i = 0; i < this.count; i++) {
      const at = (this.head + i) & (this.kinds.length - 1);
      if (predicate(this.kinds[at]!, this.payloads[at])) return true;
    }
    return false;
  }

  clear(): void {
    while (this.count > 0) this.shift();
    this.head = 0;
  }

  private grow(): void {
    const size = this.kinds.length * 2;
    const kinds = new Int32Array(size);
    const payloads: (P | undefined)[] = new Array(size);
    for (let i = 0; i < this.count; i++) {
      const from = (this.head + i) & (this.kinds.length - 1);
      kinds[i] = this.kinds[from]!;
      payloads[i] = this.payloads[from];
    }
    this.kinds = kinds;
    this.payloads = payloads;
    this.head = 0;
  }
}

export function kindOf(entry: number): number {
  return entry & KIND_MASK;
}
