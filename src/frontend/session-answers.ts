import { ProxyError, SqlState } from '../errors.js';
import { errorResponse } from '../protocol/messages.js';

/**
 * Answers pgrelay gives a client on its own (no server said them), built from plain values. Node
 * names appear (they are the configuration's names); addresses and library messages never do.
 */

/** As PostgreSQL: nothing runs in a failed transaction. */
export const IN_FAILED_TRANSACTION = errorResponse({
  severity: 'ERROR',
  code: SqlState.inFailedTransaction,
  message: 'current transaction is aborted, commands ignored until end of transaction block',
});

export const SHUTTING_DOWN = errorResponse({ severity: 'FATAL', code: SqlState.adminShutdown, message: 'terminating connection: pgrelay is shutting down' });

/** `serverFatal`: the text of a FATAL the server sent before it closed (its own words). */
function lostText(node: string, serverFatal: string | undefined): string {
  return `connection to node ${node} lost${serverFatal === undefined ? '' : ` (${serverFatal})`}`;
}

/**
 * The server connection of a unit under way was lost. `outcome`: 'unknown' when a COMMIT (or a
 * write outside a transaction) was in flight, which may have committed before the connection
 * went (08007, as PostgreSQL's transaction_resolution_unknown); 'not committed' when a
 * transaction was open and no COMMIT of it was sent; 'read' otherwise (reads only, safe to retry).
 */
export function connectionLost(node: string, serverFatal: string | undefined, outcome: LostOutcome): Buffer {
  if (outcome === 'unknown') {
    return errorResponse({
      severity: 'ERROR',
      code: SqlState.transactionResolutionUnknown,
      message: `${lostText(node, serverFatal)} while a commit or a write was in flight; whether it committed is not known`,
      hint: 'Check whether the change was made before retrying it.',
    });
  }
  const open = outcome === 'not committed';
  return errorResponse({
    severity: 'ERROR',
    code: SqlState.connectionFailure,
    message: `${lostText(node, serverFatal)}${open ? '; the transaction did not commit' : ''}`,
    hint: open ? 'No COMMIT of the transaction was sent. Issue ROLLBACK and retry.' : 'The statement may or may not have completed. It is safe to retry reads.',
  });
}

/** What a client whose server connection was lost can be told of its work in flight (see connectionLost). */
export type LostOutcome = 'unknown' | 'not committed' | 'read';

/** The text told with the next statement of a client whose idle transaction's connection was lost. */
export function idleTransactionLost(node: string, serverFatal: string | undefined): string {
  return `${lostText(node, serverFatal)}; the transaction did not commit`;
}

/** The answer to a statement after an idle transaction's connection was lost (`notice`), or 25P02. */
export function transactionAborted(notice: string | undefined): Buffer {
  if (notice === undefined) return IN_FAILED_TRANSACTION;
  return errorResponse({ severity: 'ERROR', code: SqlState.connectionFailure, message: notice, hint: 'The transaction did not commit. Issue ROLLBACK and retry.' });
}

/** A pinned session's connection was lost: its state is gone with it, the client is closed. */
export function pinnedConnectionLost(node: string): Buffer {
  return errorResponse({ severity: 'FATAL', code: SqlState.connectionFailure, message: `server connection to node ${node} lost; this session's state (temporary tables, LISTEN, session locks) is gone` });
}

/**
 * The ErrorResponse for an error pgrelay raised (a ProxyError's client text; anything else is
 * 58000). A retryable error (a connect that timed out, a full pool, no primary yet, reads refused
 * for stale replicas) says so in its hint: nothing of the statement reached a server.
 */
export function errorAnswer(error: unknown, severity: 'ERROR' | 'FATAL'): Buffer {
  const proxyError = toProxyError(error);
  return errorResponse({ severity, code: proxyError.sqlstate, message: proxyError.clientMessage, hint: proxyError.retryable ? RETRY_HINT : undefined });
}

export const RETRY_HINT = 'pgrelay did not send the statement to a server; it is safe to retry.';

export function toProxyError(error: unknown): ProxyError {
  if (error instanceof ProxyError) return error;
  return new ProxyError(SqlState.systemError, 'pgrelay internal error');
}
