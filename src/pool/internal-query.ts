import { FrontendCode, BackendCode } from '../protocol/codes.js';
import { FrameReader } from '../protocol/frame-reader.js';
import { message, readCString, readErrorFields } from '../protocol/messages.js';
import type { ServerConnection } from './server-connection.js';

export interface InternalResult {
  /** ParameterStatus values the server reported while running it */
  params: Map<string, string>;
  /** the first ErrorResponse's fields (C, M, ...), if any */
  error: Map<string, string> | undefined;
  /** text values of the rows, for small look-ups */
  rows: (string | null)[][];
}

/**
 * Runs a simple query of pgrelay's own on an idle server connection that no client is using and
 * collects its answers. Used for a client's startup settings and small look-ups.
 */
export function runInternalQuery(conn: ServerConnection, sql: string, timeoutMs = 10_000): Promise<InternalResult> {
  return new Promise((resolve, reject) => {
    const reader = new FrameReader();
    const result: InternalResult = { params: new Map(), error: undefined, rows: [] };
    const timer = setTimeout(() => {
      conn.setHandler(undefined);
      conn.destroy();
      reject(new Error(`internal query timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    conn.setHandler({
      onServerData(_conn, chunk) {
        reader.push(chunk);
        while (reader.next()) {
          const { buffer: b, start, end } = reader;
          switch (reader.code) {
            case BackendCode.ParameterStatus: {
              const [name, next] = readCString(b, start, end);
              result.params.set(name, readCString(b, next, end)[0]);
              break;
            }
            case BackendCode.ErrorResponse:
              result.error ??= readErrorFields(b, start, end);
              break;
            case BackendCode.DataRow: {
              const count = b.readInt16BE(start);
              const row: (string | null)[] = [];
              let at = start + 2;
              for (let i = 0; i < count; i++) {
                const length = b.readInt32BE(at);
                at += 4;
                if (length < 0) row.push(null);
                else {
                  row.push(b.toString('utf8', at, at + length));
                  at += length;
                }
              }
              result.rows.push(row);
              break;
            }
            case BackendCode.ReadyForQuery:
              conn.txStatus = b[start]!;
              clearTimeout(timer);
              conn.setHandler(undefined);
              resolve(result);
              return;
            default:
              break;
          }
        }
      },
      onServerClose(_conn, error) {
        clearTimeout(timer);
        reject(error ?? new Error('server connection closed during an internal query'));
      },
    });
    conn.write(message(FrontendCode.Query, (w) => w.cstring(sql)));
  });
}
