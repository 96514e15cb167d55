import { maskLiterals } from '../classify/lexer.js';
import { formatLsn } from '../cluster/lsn.js';
import { ProxyError, SqlState } from '../errors.js';
import { BackendCode, FrontendCode, TxStatus } from '../protocol/codes.js';
import { commandComplete, message, parseComplete, readCString } from '../protocol/messages.js';
import type { ClientStatements } from './client-statements.js';
import { type LocalAnswerHost, LocalStatements } from './local-statements.js';
import type { SessionServices } from './session-services.js';
import { quoteLiteral } from './session-state.js';
import type { Step } from './unit-state.js';

/** The setting pgrelay answers itself. */
export const LAST_WRITE_LSN = 'pgrelay.last_write_lsn';

/** Texts that may concern this module; every other Query and Parse costs this one test. */
const MENTIONS = /pgrelay|synchronous_commit|set_config/i;
const FORGETS = /discard|deallocate/i;
const SHOW = /^show\s+((?:"[^"]*"|[a-z_][a-z_0-9$]*)(?:\s*\.\s*(?:"[^"]*"|[a-z_][a-z_0-9$]*))*)\s*;?\s*$/i;

/** one part of a dotted name: quoted (its text) or not */
const NAME_PART = /"([^"]*)"|([a-z_][a-z_0-9$]*)/gi;

/** type oid of text */
const TEXT_OID = 25;

/** What the causality token needs from its session. */
export interface CausalityHost extends LocalAnswerHost {
  /** the session's key for read-your-writes */
  readonly session: object;
  readonly services: SessionServices;
  readonly statements: ClientStatements;
  /** the message being handled waits (its rest runs through resumeWith) */
  park(): void;
  resumeWith(next: Step): void;
}

/**
 * The causality token of issue #17 (DESIGN "Fast read-your-writes"): `SHOW pgrelay.last_write_lsn`
 * is answered by pgrelay, without a server, with the WAL position of the session's last write
 * (Freshness.lastWritePosition; `0/0` when it wrote nothing through this pgrelay, as
 * pg_lsn's zero), through the simple protocol and the extended one (Parse, Bind, Describe of the
 * statement or the portal, Execute, Close), inside a transaction and out of it, in order with
 * what the server still owes. A client hands the token to another connection (or another
 * pgrelay), whose reads carry `/* pgrelay:after_lsn=X/Y *\/` (see Freshness.readConstraints).
 *
 * Where a client can tell it is not talking to PostgreSQL directly: the name is recognised only
 * as a statement on its own (a multi-statement Query sends it to the server, which knows no such
 * setting: 42704, as for any other `pgrelay.*` name); in a failed transaction the statement goes
 * to the server, which answers 25P02 as it would. A text whose `after_lsn` value is not a WAL
 * position runs as `SELECT 'value'::pg_lsn` instead, so that the server raises PostgreSQL's own
 * 22P02 at the place (Parse, or the Query) and with the transaction effects it would.
 *
 * It also tells the remote_apply shortcut (cluster/remote-apply.ts) about texts that may change
 * synchronous_commit other than a session-level SET (which the session state tracks).
 */
export class CausalityToken extends LocalStatements<true> {
  constructor(protected override readonly host: CausalityHost) {
    super(host, LAST_WRITE_LSN);
  }

  /**
   * A client message before the session handles it: true when answered here, a message to handle
   * instead (a refusal raised by the server), or false to go on as usual.
   */
  intercept(code: number, b: Buffer, start: number, end: number): boolean | Buffer {
    if (code === FrontendCode.Query) return this.onQuery(b, start, end);
    if (code === FrontendCode.Parse) return this.onParse(b, start, end);
    return this.active && this.answerHeld(code, b, start, end);
  }

  protected describeStatement(): Buffer {
    return Buffer.concat([message(BackendCode.ParameterDescription, (w) => w.int16(0)), rowDescription(0)]);
  }

  protected describePortal(_held: true, format: number): Buffer {
    return rowDescription(format);
  }

  protected execute(): void {
    this.withPosition((lsn) => this.answer([dataRow(lsn), commandComplete('SHOW')], false));
  }

  private onQuery(b: Buffer, start: number, end: number): boolean | Buffer {
    const forgets = (this.statements?.size ?? 0) > 0;
    if (!forgets && !mentions(b, start, end - 1)) return false;
    const text = b.toString('utf8', start, end - 1);
    if (forgets && FORGETS.test(text) && this.forgets(text)) return true;
    if (!MENTIONS.test(text)) return false;
    const replaced = this.refusal(text);
    if (replaced !== undefined) return message(FrontendCode.Query, (w) => w.cstring(replaced));
    if (!this.isShow(text)) return false;
    this.withPosition((lsn) => this.answer([rowDescription(0), dataRow(lsn), commandComplete('SHOW')], true));
    return true;
  }

  private onParse(b: Buffer, start: number, end: number): boolean | Buffer {
    const [name, textStart] = readCString(b, start, end);
    this.statements?.delete(name);
    const textEnd = b.indexOf(0, textStart);
    if (textEnd < 0 || textEnd >= end) throw new RangeError('unterminated string in message');
    if (!mentions(b, textStart, textEnd)) return false;
    const text = b.toString('utf8', textStart, textEnd);
    const typesStart = textEnd + 1;
    const replaced = this.refusal(text);
    if (replaced !== undefined) return message(FrontendCode.Parse, (w) => w.cstring(name).cstring(replaced).bytes(b.subarray(typesStart, end)));
    if (!this.isShow(text)) return false;
    // the name now means this statement (pgrelay replaces a name the client uses, as for any Parse)
    if (name !== '') this.host.statements.delete(name);
    this.hold(name, true);
    this.answer([parseComplete], false);
    return true;
  }

  /**
   * DISCARD ALL / DEALLOCATE ALL forget the client's statements here too (and go on to the server);
   * a lone `DEALLOCATE name` of one held here is answered here (true).
   */
  private forgets(text: string): boolean {
    const classification = this.host.services.classifier.classify(text);
    for (const effect of classification.effects) {
      if (effect.type === 'discard_all' || (effect.type === 'deallocate' && effect.name === null)) this.statements?.clear();
    }
    const effect = classification.effects[0];
    if (classification.statements !== 1 || effect?.type !== 'deallocate' || effect.name === null || this.statements?.delete(effect.name) !== true) return false;
    this.answer([commandComplete('DEALLOCATE')], true);
    return true;
  }

  /** The text to run instead of a text whose after_lsn is not a WAL position (PostgreSQL's own 22P02), else undefined. */
  private refusal(text: string): string | undefined {
    // the classifier reads hints per text (a cache hit for the shape)
    const classification = this.host.services.classifier.classify(text);
    if (classification.badAfterLsn !== undefined) return `SELECT ${quoteLiteral(classification.badAfterLsn)}::pg_lsn`;
    const setConfig = /set_config/i.test(text);
    if (setConfig || /synchronous_commit/i.test(text)) {
      // a session-level SET is the session state's, a read (SHOW, current_setting()) changes
      // nothing; anything else may change the level unseen
      const own = classification.effects.some((e) => (e.type === 'set' || e.type === 'reset') && e.name.toLowerCase() === 'synchronous_commit');
      if (setConfig || (!own && classification.route !== 'replica')) this.host.services.syncCommitTouched(this.host.session, setConfig);
    }
    return undefined;
  }

  /** The statement is `SHOW pgrelay.last_write_lsn` (any case, quoted or not), and may be answered here. */
  private isShow(text: string): boolean {
    const m = SHOW.exec(maskLiterals(text).key);
    if (!m) return false;
    const name = [...m[1]!.matchAll(NAME_PART)].map((part) => part[1] ?? part[2]).join('.').toLowerCase();
    // in a failed transaction the server answers (25P02), as it would any statement
    return name === LAST_WRITE_LSN && this.host.txStatus() !== TxStatus.Failed && this.host.lease.conn?.txStatus !== TxStatus.Failed;
  }

  /** `then` gets the session's last write position: at once when known, else once the primary is sampled. */
  private withPosition(then: (lsn: bigint) => void): void {
    const host = this.host;
    let state: 'asking' | 'parked' | 'done' = 'asking';
    let known = 0n;
    let timer: NodeJS.Timeout | undefined;
    host.services.lastWritePosition(host.session, (lsn) => {
      if (state === 'asking') known = lsn;
      else if (state === 'parked') {
        clearTimeout(timer);
        host.resumeWith(() => then(lsn));
      }
      state = 'done';
    });
    if ((state as string) === 'done') return then(known);
    state = 'parked';
    const config = host.services.config();
    timer = setTimeout(() => {
      if (state !== 'parked') return;
      state = 'done';
      const error = new ProxyError(SqlState.cannotConnectNow, "the position of this session's last write is not known yet: the primary could not be asked for it", { retryable: true });
      host.resumeWith(() => host.failUnit(error));
    }, Math.max(config.health.timeout_ms, Math.min(config.failover.wait_ms, 30_000)));
    timer.unref();
    host.park();
  }
}

const P = 0x70;
const S = 0x73;
const PGRELAY = Buffer.from('pgrelay');
const SYNCHRONOUS_COMMIT = Buffer.from('synchronous_commit');
const SET_CONFIG = Buffer.from('set_config');

/**
 * Whether the bytes may name pgrelay, synchronous_commit or set_config (any case): the test every
 * Query and Parse pays, on the bytes, before any text is made of them (about a tenth of decoding
 * the text and matching MENTIONS on it).
 */
export function mentions(b: Buffer, start: number, end: number): boolean {
  for (let i = start; i < end; i++) {
    const c = b[i]! | 0x20;
    if (c === P) {
      if (wordAt(b, i, end, PGRELAY)) return true;
    } else if (c === S && (wordAt(b, i, end, SYNCHRONOUS_COMMIT) || wordAt(b, i, end, SET_CONFIG))) return true;
  }
  return false;
}

/** `word` (lower case) at `i`, letters compared in any case. */
function wordAt(b: Buffer, i: number, end: number, word: Buffer): boolean {
  if (end - i < word.length) return false;
  for (let k = 1; k < word.length; k++) {
    const w = word[k]!;
    const c = b[i + k]!;
    if (c !== w && (w < 0x61 || w > 0x7a || (c | 0x20) !== w)) return false;
  }
  return true;
}

/** One text column named last_write_lsn; `format` as the client's Bind asked (text's binary form is its bytes). */
function rowDescription(format: number): Buffer {
  return message(BackendCode.RowDescription, (w) => w.int16(1).cstring('last_write_lsn').int32(0).int16(0).int32(TEXT_OID).int16(-1).int32(-1).int16(format));
}

function dataRow(lsn: bigint): Buffer {
  const value = Buffer.from(formatLsn(lsn));
  return message(BackendCode.DataRow, (w) => w.int16(1).int32(value.length).bytes(value));
}
