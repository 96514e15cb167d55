import { describe, expect, it } from 'vitest';
import { ProxyError, SqlState } from '../../src/errors.js';
import { errorAnswer, RETRY_HINT } from '../../src/frontend/session-answers.js';
import { readErrorFields } from '../../src/protocol/messages.js';

// What a client sees of an error pgrelay raises: a stable text with its SQLSTATE, never the
// internal message of a library error, and a retry hint where nothing reached a server.

function fields(message: Buffer): Map<string, string> {
  expect(String.fromCharCode(message[0]!)).toBe('E');
  return readErrorFields(message, 5, message.length);
}

describe('errorAnswer', () => {
  it('passes a deliberate ProxyError’s text and SQLSTATE', () => {
    const f = fields(errorAnswer(new ProxyError(SqlState.cannotConnectNow, 'no replica can serve this read'), 'ERROR'));
    expect(f.get('C')).toBe('57P03');
    expect(f.get('M')).toBe('no replica can serve this read');
    expect(f.get('S')).toBe('ERROR');
    expect(f.has('H')).toBe(false);
  });

  it('hides the text of a wrapped library error (addresses, system messages) behind a stable one', () => {
    const cause = Object.assign(new Error('connect ECONNREFUSED 10.1.2.3:5432'), { code: 'ECONNREFUSED' });
    const error = new ProxyError(SqlState.connectionFailure, `cannot connect to node primary: ${cause.message}`, { retryable: true, cause });
    const f = fields(errorAnswer(error, 'ERROR'));
    expect(f.get('C')).toBe('08006');
    expect(f.get('M')).toBe('could not connect to the server');
    expect([...f.values()].join(' ')).not.toMatch(/ECONNREFUSED|10\.1\.2\.3/);
    expect(f.get('H')).toBe(RETRY_HINT);
  });

  it('turns anything that is not a ProxyError into 58000 without its text', () => {
    const f = fields(errorAnswer(new TypeError("Cannot read properties of undefined (reading 'x')"), 'FATAL'));
    expect(f.get('C')).toBe('58000');
    expect(f.get('M')).toBe('pgrelay internal error');
    expect(f.get('S')).toBe('FATAL');
  });
});
