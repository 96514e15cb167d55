import { beforeAll, describe, expect, it } from 'vitest';
import { Classifier } from '../../src/classify/classifier.js';
import { CausalityToken, mentions, type CausalityHost } from '../../src/frontend/causality-token.js';
import { ClientStatements, type StatementPayload } from '../../src/frontend/client-statements.js';
import { Expect, ResponseQueue } from '../../src/frontend/response-queue.js';
import { FrontendCode, TxStatus } from '../../src/protocol/codes.js';
import { message, readCString } from '../../src/protocol/messages.js';

// The causality token's message handling on plain values: what it answers, in which order, what
// it leaves to the session, what it hands on instead.

let classifier: Classifier;
beforeAll(async () => {
  classifier = await Classifier.create();
});

interface Fake {
  token: CausalityToken;
  sent: Buffer[];
  synthetic: StatementPayload[];
  touched: boolean[];
  opened: number;
  conn: { txStatus: number } | undefined;
  queue: ResponseQueue<StatementPayload>;
  position: (done: (lsn: bigint) => void) => void;
}

function fake(): Fake {
  const f = { sent: [], synthetic: [], touched: [], opened: 0, conn: undefined, queue: new ResponseQueue<StatementPayload>(), position: (done: (lsn: bigint) => void) => done(0x16b3748n) } as unknown as Fake;
  const host: CausalityHost = {
    session: {},
    services: {
      classifier,
      config: () => ({ health: { timeout_ms: 1000 }, failover: { wait_ms: 1000 } }),
      lastWritePosition: (_s: object, done: (lsn: bigint) => void) => f.position(done),
      syncCommitTouched: (_s: object, sticky: boolean) => f.touched.push(sticky),
    } as never,
    lease: { get conn() { return f.conn; } } as never,
    queue: f.queue,
    replies: { pushSynthetic: (_kind: number, payload: StatementPayload) => f.synthetic.push(payload) } as never,
    statements: new ClientStatements(),
    txStatus: () => TxStatus.Idle,
    unitOpen: () => f.opened > 0,
    openUnit: () => f.opened++,
    sendToClient: (data) => f.sent.push(data),
    park: () => undefined,
    resumeWith: (next) => next(),
    failUnit: (error) => {
      throw error;
    },
  };
  f.token = new CausalityToken(host);
  return f;
}

function run(f: Fake, frame: Buffer): boolean | Buffer {
  return f.token.intercept(frame[0]!, frame, 5, frame.length);
}

const query = (text: string) => message(FrontendCode.Query, (w) => w.cstring(text));
const parse = (name: string, text: string) => message(FrontendCode.Parse, (w) => w.cstring(name).cstring(text).int16(0));
const bind = (portal: string, statement: string, resultFormat = 0) => message(FrontendCode.Bind, (w) => w.cstring(portal).cstring(statement).int16(0).int16(0).int16(1).int16(resultFormat));
const describe_ = (kind: 'S' | 'P', name: string) => message(FrontendCode.Describe, (w) => w.int8(kind.charCodeAt(0)).cstring(name));
const execute = (portal: string) => message(FrontendCode.Execute, (w) => w.cstring(portal).int32(0));

function splitCodes(b: Buffer): string[] {
  const out: string[] = [];
  for (let i = 0; i < b.length; i += 1 + b.readInt32BE(i + 1)) out.push(String.fromCharCode(b[i]!));
  return out;
}

describe('CausalityToken', () => {
  it('looks further only at texts naming pgrelay, synchronous_commit or set_config, in any case', () => {
    const yes = ['SHOW PgRelay.last_write_lsn', '/* PGRELAY:after_lsn=0/1 */ SELECT 1', 'SET Synchronous_Commit = on', "SELECT SET_CONFIG('a', 'b', true)", 'x pgrelay'];
    const no = ['SELECT abalance FROM pgbench_accounts WHERE aid = 1', 'SELECT pgrela', 'SET synchronous_standby_names = x', 'set_confi', ''];
    for (const text of yes) expect(mentions(Buffer.from(text), 0, Buffer.byteLength(text))).toBe(true);
    for (const text of no) expect(mentions(Buffer.from(text), 0, Buffer.byteLength(text))).toBe(false);
    // only within the bounds given
    expect(mentions(Buffer.from('pgrelay SELECT 1'), 1, 16)).toBe(false);
  });

  it('a simple Query: RowDescription, DataRow, CommandComplete SHOW, ReadyForQuery; any case, quoted, comments', () => {
    for (const text of ['SHOW pgrelay.last_write_lsn', 'show PGRELAY.Last_Write_Lsn;', '/* x */ SHOW "pgrelay"."last_write_lsn"', 'SHOW "pgrelay.last_write_lsn" -- y']) {
      const f = fake();
      expect(run(f, query(text))).toBe(true);
      expect(splitCodes(Buffer.concat(f.sent))).toEqual(['T', 'D', 'C', 'Z']);
      expect(Buffer.concat(f.sent).includes('0/16B3748')).toBe(true);
    }
  });

  it('leaves everything else to the session', () => {
    const f = fake();
    for (const text of ['SHOW pgrelay.unknown', 'SHOW pgrelay.last_write_lsn; SELECT 1', 'SELECT * FROM pgrelay.last_write_lsn', 'SELECT 1', "SELECT 'SHOW pgrelay.last_write_lsn'"]) expect(run(f, query(text))).toBe(false);
    expect(f.sent).toEqual([]);
  });

  it('extended protocol: Parse, Bind, Describe S and P, Execute answered; the binary result format is kept in RowDescription', () => {
    const f = fake();
    expect(run(f, parse('s1', 'SHOW pgrelay.last_write_lsn'))).toBe(true);
    expect(f.opened).toBe(1);
    expect(run(f, describe_('S', 's1'))).toBe(true);
    expect(run(f, bind('', 's1', 1))).toBe(true);
    expect(run(f, describe_('P', ''))).toBe(true);
    expect(run(f, execute(''))).toBe(true);
    expect(splitCodes(Buffer.concat(f.sent))).toEqual(['1', 't', 'T', '2', 'T', 'D', 'C']);
    const portalDescription = f.sent[3]!;
    expect(portalDescription.readInt16BE(portalDescription.length - 2)).toBe(1);
    // another statement bound to the portal: the portal is the server's again
    expect(run(f, bind('', 'other'))).toBe(false);
    expect(run(f, execute(''))).toBe(false);
    // the name parsed again with another text is the server's
    expect(run(f, parse('s1', 'SELECT 1'))).toBe(false);
    expect(run(f, bind('', 's1'))).toBe(false);
  });

  it('with a server connection and answers still owed: in the response queue, behind them', () => {
    const f = fake();
    f.conn = { txStatus: TxStatus.InTransaction };
    f.queue.push(Expect.Execute);
    expect(run(f, query('SHOW pgrelay.last_write_lsn'))).toBe(true);
    expect(f.sent).toEqual([]);
    expect(f.synthetic).toHaveLength(1);
    expect(f.synthetic[0]!.answer!.ready).toBe(true);
    expect(splitCodes(f.synthetic[0]!.answer!.data)).toEqual(['T', 'D', 'C']);
  });

  it('in a failed transaction the server answers (25P02)', () => {
    const f = fake();
    f.conn = { txStatus: TxStatus.Failed };
    expect(run(f, query('SHOW pgrelay.last_write_lsn'))).toBe(false);
  });

  it('a malformed after_lsn: the text is replaced by the pg_lsn cast that fails on the server, parameter types kept', () => {
    const f = fake();
    const q = run(f, query("/* pgrelay:after_lsn=0/XY'Z */ SELECT 1")) as Buffer;
    expect(readCString(q, 5, q.length)[0]).toBe("SELECT '0/XY''Z'::pg_lsn");
    const p = message(FrontendCode.Parse, (w) => w.cstring('n').cstring('SELECT $1 /* pgrelay:after_lsn=nope */').int16(1).int32(23));
    const replaced = run(f, p) as Buffer;
    expect(replaced[0]).toBe(FrontendCode.Parse);
    const [name, at] = readCString(replaced, 5, replaced.length);
    const [text, types] = readCString(replaced, at, replaced.length);
    expect([name, text, replaced.readInt16BE(types), replaced.readInt32BE(types + 2)]).toEqual(['n', "SELECT 'nope'::pg_lsn", 1, 23]);
    expect(run(f, query('/* pgrelay:after_lsn=0/1 */ SELECT 1'))).toBe(false);
  });

  it('tells the remote_apply shortcut about texts that may change synchronous_commit unseen', () => {
    const f = fake();
    run(f, query('SET synchronous_commit = remote_apply'));
    run(f, query('SHOW synchronous_commit'));
    expect(f.touched).toEqual([]);
    run(f, query('SET LOCAL synchronous_commit = on'));
    run(f, query("SELECT set_config('synchronous_commit', 'on', true)"));
    expect(f.touched).toEqual([false, true]);
  });

  it('waits for a position not known yet, then answers', () => {
    const f = fake();
    let later: ((lsn: bigint) => void) | undefined;
    f.position = (done) => (later = done);
    expect(run(f, query('SHOW pgrelay.last_write_lsn'))).toBe(true);
    expect(f.sent).toEqual([]);
    later!(0x2_00000010n);
    expect(splitCodes(Buffer.concat(f.sent))).toEqual(['T', 'D', 'C', 'Z']);
    expect(Buffer.concat(f.sent).includes('2/10')).toBe(true);
  });
});
