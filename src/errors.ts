/**
 * Errors that pgrelay reports deliberately. Each carries a SQLSTATE so that the frontend can turn
 * it into an ErrorResponse; anything that is not a ProxyError is logged and the client sees a
 * generic 58000 failure, so internal messages never leak.
 */
export type Severity = 'ERROR' | 'FATAL';

export const SqlState = {
  protocolViolation: '08P01',
  connectionFailure: '08006',
  transactionResolutionUnknown: '08007',
  connectionException: '08000',
  cannotConnectNow: '57P03',
  adminShutdown: '57P01',
  queryCanceled: '57014',
  invalidPassword: '28P01',
  invalidAuthorization: '28000',
  tooManyConnections: '53300',
  featureNotSupported: '0A000',
  readOnlyTransaction: '25006',
  serializationFailure: '40001',
  inFailedTransaction: '25P02',
  invalidParameterValue: '22023',
  undefinedPreparedStatement: '26000',
  duplicatePreparedStatement: '42P05',
  insufficientPrivilege: '42501',
  systemError: '58000',
  internalError: 'XX000',
} as const;

export type SqlStateCode = (typeof SqlState)[keyof typeof SqlState];

export class ProxyError extends Error {
  readonly sqlstate: string;
  readonly severity: Severity;
  /** transient, and nothing reached a server: the client is told it may retry (see session-answers) */
  readonly retryable: boolean;

  constructor(sqlstate: string, message: string, options: { severity?: Severity; retryable?: boolean; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ProxyError';
    this.sqlstate = sqlstate;
    this.severity = options.severity ?? 'ERROR';
    this.retryable = options.retryable ?? false;
  }

  /**
   * The text a client may see: the message, unless it wraps another error (a library's, whose
   * text can carry addresses and system details): then a stable text for the SQLSTATE. The full
   * message is for the log.
   */
  get clientMessage(): string {
    if (this.cause === undefined || this.cause instanceof ProxyError) return this.message;
    return STABLE_MESSAGES[this.sqlstate] ?? 'pgrelay internal error';
  }
}

/** What a client is told for an error that wraps an internal one, by SQLSTATE. */
const STABLE_MESSAGES: Readonly<Record<string, string>> = {
  [SqlState.connectionFailure]: 'could not connect to the server',
  [SqlState.connectionException]: 'connection to the server failed',
  [SqlState.cannotConnectNow]: 'the server cannot accept connections now',
  [SqlState.protocolViolation]: 'protocol violation',
};

/** A configuration problem, pointing at the key path and (when known) the line/column in the file. */
export class ConfigError extends Error {
  constructor(
    message: string,
    readonly path: string,
    readonly line?: number,
    readonly column?: number,
  ) {
    super(message);
    this.name = 'ConfigError';
  }
}
