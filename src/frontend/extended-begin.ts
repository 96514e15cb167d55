import { ProxyError } from '../errors.js';
import { FrontendCode } from '../protocol/codes.js';
import { readCString } from '../protocol/messages.js';

/** A Bind or Execute of a BEGIN is smaller than this. */
const MAX_MESSAGE = 64 * 1024;

/** A BEGIN sent through the extended protocol, found in the client's buffered messages. */
export interface ExtendedBegin {
  /** the messages it takes, the current one included: Parse, Bind, Execute (3) or Bind, Execute (2), one more with a Describe */
  messages: number;
  /** a Describe of the portal comes between the Bind and the Execute (as libpq's PQsendQueryParams sends, psycopg 3) */
  described: boolean;
  /** a Parse of the BEGIN comes first: its statement name ('' = the unnamed one) */
  parsed: string | undefined;
}

/**
 * Whether the extended-protocol message being handled (`current`, a Parse or a Bind) starts a BEGIN
 * that pgrelay can hold as it holds a simple-Query one (see ClientTransaction): Parse of the
 * BEGIN text with no parameter types, Bind of that statement to a portal with no parameters,
 * Execute of that portal — or, for a statement prepared before (`preparedBegin`: its name is a
 * BEGIN), Bind and Execute only; a Describe of the portal may come before the Execute (libpq's
 * PQsendQueryParams sends one: psycopg 3 sends its BEGIN and every command of its own so). This
 * is how pgjdbc up to 42.7.6 opens a transaction with autocommit off (its default extended query
 * mode: in front of the transaction's first statement, in the same run up to its Sync, with a
 * named statement once it was used `prepareThreshold` times). 'incomplete': the messages are not all in yet; undefined: anything
 * else (a Describe of something else, parameters, …): the BEGIN goes to a server.
 */
export function findExtendedBegin(current: Buffer, rest: Buffer, preparedBegin: (name: string) => boolean): ExtendedBegin | 'incomplete' | undefined {
  try {
    return find(current, rest, preparedBegin);
  } catch (error) {
    // fields past a message's end: not held; the server (or the session) judges the message
    if (error instanceof RangeError || error instanceof ProxyError) return undefined;
    throw error;
  }
}

function find(current: Buffer, rest: Buffer, preparedBegin: (name: string) => boolean): ExtendedBegin | 'incomplete' | undefined {
  const frames = [current];
  let at = 0;
  while (frames.length < 4 && at + 5 <= rest.length) {
    const end = at + 1 + rest.readInt32BE(at + 1);
    // a length below 4: not held, the session refuses the message when it reaches it; a BEGIN's
    // Bind and Execute are small (nor is a large message waited for here)
    if (end < at + 5 || end - at > MAX_MESSAGE) return undefined;
    if (end > rest.length) break;
    frames.push(rest.subarray(at, end));
    at = end;
  }
  let index = 0;
  let parsed: string | undefined;
  if (current[0] === FrontendCode.Parse) {
    const [name, textStart] = readCString(current, 5, current.length);
    const [, typesStart] = readCString(current, textStart, current.length);
    if (current.readInt16BE(typesStart) !== 0) return undefined;
    parsed = name;
    index = 1;
  }
  const bind = frames[index];
  if (bind === undefined) return 'incomplete';
  if (bind[0] !== FrontendCode.Bind) return undefined;
  const [portal, statementStart] = readCString(bind, 5, bind.length);
  const [statement, formatsStart] = readCString(bind, statementStart, bind.length);
  if (parsed !== undefined ? statement !== parsed : !preparedBegin(statement)) return undefined;
  // no parameter formats, no parameters (the result formats do not matter: a BEGIN has no rows)
  if (bind.readInt16BE(formatsStart) !== 0 || bind.readInt16BE(formatsStart + 2) !== 0) return undefined;
  let next = frames[index + 1];
  if (next === undefined) return 'incomplete';
  const described = next[0] === FrontendCode.Describe;
  if (described) {
    // a Describe of the same portal (its answer: NoData, a BEGIN has no rows)
    if (next[5] !== 0x50 /* P */ || readCString(next, 6, next.length)[0] !== portal) return undefined;
    next = frames[index + 2];
    if (next === undefined) return 'incomplete';
  }
  if (next[0] !== FrontendCode.Execute) return undefined;
  const [executed] = readCString(next, 5, next.length);
  if (executed !== portal) return undefined;
  return { messages: index + (described ? 3 : 2), parsed, described };
}
