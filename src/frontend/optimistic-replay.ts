import type { ServerConnection } from '../pool/server-connection.js';
import { BackendCode } from '../protocol/codes.js';
import { FrameReader } from '../protocol/frame-reader.js';
import { readErrorFields } from '../protocol/messages.js';
import { RowDigest } from '../protocol/row-digest.js';

/** What running an optimistic transaction's log again answered. */
export interface ReplayResult {
  /** per statement after the first run (the BEGIN): rows and sums (see RowDigest.results) */
  results: number[];
  /** the error the first run (the BEGIN's) answered (its fields), if any; later statements' errors are in `results` */
  error: Map<string, string> | undefined;
}

/**
 * Sends `runs` (each ending in one ReadyForQuery: a simple Query, or extended messages and a
 * Sync) to `conn` in one write, with its own data handler meanwhile, and digests what they
 * answer (the first run's answers, the BEGIN's, are not counted). Rejects when the connection
 * closes or `timeoutMs` passes (the connection is then destroyed); `conn.txStatus` follows.
 */
export function replayRuns(conn: ServerConnection, runs: readonly Buffer[], timeoutMs: number): Promise<ReplayResult> {
  return new Promise((resolve, reject) => {
    const reader = new FrameReader();
    const digest = new RowDigest();
    let error: Map<string, string> | undefined;
    let ready = 0;
    const timer = setTimeout(() => {
      conn.setHandler(undefined);
      conn.destroy();
      reject(new Error(`running the transaction's reads again timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    conn.setHandler({
      onServerData(_conn, chunk) {
        reader.push(chunk);
        while (reader.next()) {
          const { buffer: b, start, end } = reader;
          switch (reader.code) {
            case BackendCode.DataRow:
            case BackendCode.CopyData:
              digest.add(b, start, end);
              digest.rowEnd();
              break;
            case BackendCode.CommandComplete:
            case BackendCode.EmptyQueryResponse:
              digest.statementEnd();
              break;
            case BackendCode.PortalSuspended:
              digest.portalSuspended();
              break;
            case BackendCode.ErrorResponse:
              // the BEGIN's run failing fails the replay; a later statement's error is one of its results
              if (ready === 0) error ??= readErrorFields(b, start, end);
              else digest.statementFailed();
              break;
            case BackendCode.ReadyForQuery:
              conn.txStatus = b[start]!;
              if (++ready === 1) digest.reset(); // the BEGIN's answers
              if (ready === runs.length) {
                clearTimeout(timer);
                conn.setHandler(undefined);
                resolve({ results: digest.results, error });
                return;
              }
              break;
            default:
              break;
          }
        }
      },
      onServerClose(_conn, closeError) {
        clearTimeout(timer);
        reject(closeError ?? new Error('server connection closed while the transaction\'s reads ran again'));
      },
    });
    conn.socket.cork();
    for (const run of runs) conn.write(run);
    conn.socket.uncork();
  });
}
