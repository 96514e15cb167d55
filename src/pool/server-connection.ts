import net from 'node:net';
import tls from 'node:tls';
import { serialize } from 'pg-protocol';
import { ServerAuthExchange, type ServerAuthMethod } from '../auth/server-auth.js';
import { tlsOptions, type ServerTlsSettings } from '../auth/server-tls.js';
import type { ScramClientKeys } from '../auth/scram.js';
import { BackendCode } from '../protocol/codes.js';
import { FrameReader } from '../protocol/frame-reader.js';
import { readCString, readErrorFields } from '../protocol/messages.js';
import { ProxyError, SqlState } from '../errors.js';

export interface ServerEndpoint {
  node: string;
  host: string;
  port: number;
}

export interface ServerLogin {
  user: string;
  /** the password, or SCRAM keys (pass-through of a client's proof for a verifier-only user) */
  readonly password: string | ScramClientKeys;
  database: string;
}

export interface ServerConnectOptions {
  connectTimeoutMs: number;
  /** server_tls with the CA read (auth/server-tls.ts); also used for cancel requests */
  tls: ServerTlsSettings;
  /** the authentication methods a server may ask for (`server_auth.require_auth`) */
  requireAuth: ReadonlySet<ServerAuthMethod>;
}

/** Receives a server connection's bytes while a client session (or the pool) owns it. */
export interface ServerDataHandler {
  onServerData(conn: ServerConnection, chunk: Buffer): void;
  onServerClose(conn: ServerConnection, error: Error | undefined): void;
  /**
   * The handler takes `chunk` as a view of the connection's read buffer, valid during the call
   * only: whatever it still references afterwards (a queued socket write) must keep the
   * connection paused (`socket.pause()`) until it is done with it. Other handlers get a copy.
   */
  readonly borrowsChunks?: boolean;
}

/** Bytes a plaintext server connection reads at most at once, into its own reused buffer. */
const READ_BUFFER_BYTES = 64 * 1024;

let nextId = 1;

/**
 * One authenticated connection to a node. After `connect` resolves it is idle at a message
 * boundary; whoever owns it installs a handler and streams bytes through. It knows nothing about
 * clients: the session keeps the protocol bookkeeping; this class keeps what belongs to the
 * server side (its backend key, its prepared statements, the session state applied to it).
 */
export class ServerConnection {
  readonly id = nextId++;
  readonly params = new Map<string, string>();
  processId = 0;
  secretKey = 0;
  /** server-side names of statements prepared on this connection */
  readonly prepared = new Set<string>();
  /** the session-state SQL last applied here ('' = none since connect) */
  appliedState = '';
  /** the number of the client whose unit ran here last (SequenceAffinity; 0 = none yet) */
  lastClient = 0;
  /** custom (dotted) parameters defined on this backend, as far as seen (PlaceholderGuard) */
  placeholders: Set<string> | undefined;
  /** token of the client unnamed statement that is currently parsed here */
  unnamedToken = 0;
  closed = false;
  lastUsedAt = Date.now();
  /** Date.now() when the connection was made (pool.max_lifetime_ms) */
  readonly openedAt = this.lastUsedAt;
  /** transaction status from the last ReadyForQuery */
  txStatus = 0x49;
  private handler: ServerDataHandler | undefined;
  /** CancelRequests for this backend that PostgreSQL has not taken yet */
  private cancelsInFlight = 0;
  private afterCancels: (() => void)[] = [];

  /** where bytes go during startup (copies), before a handler takes over */
  private startupSink: ((chunk: Buffer) => void) | undefined;

  private constructor(
    readonly endpoint: ServerEndpoint,
    readonly login: ServerLogin,
    readonly socket: net.Socket,
    /** reads land in one reused buffer (plaintext): chunks are views, copied unless borrowed */
    private readonly viewsOfReadBuffer: boolean,
    private readonly tls: ServerTlsSettings,
  ) {}

  /** A chunk from the socket (a view of the read buffer when `viewsOfReadBuffer`). */
  private receive(chunk: Buffer): void {
    if (this.startupSink) {
      this.startupSink(this.viewsOfReadBuffer ? Buffer.from(chunk) : chunk);
      return;
    }
    const handler = this.handler;
    if (!handler) return;
    handler.onServerData(this, this.viewsOfReadBuffer && handler.borrowsChunks !== true ? Buffer.from(chunk) : chunk);
  }

  get node(): string {
    return this.endpoint.node;
  }

  static connect(endpoint: ServerEndpoint, login: ServerLogin, options: ServerConnectOptions): Promise<ServerConnection> {
    return new Promise((resolve, reject) => {
      // Plaintext connections read into a buffer of their own, reused for every read: a result
      // streamed to a client allocates nothing per chunk (the client session borrows the bytes).
      // TLS connections read through the TLS layer, which hands out fresh chunks.
      const plaintext = options.tls.mode === 'disable';
      let receive: ((chunk: Buffer) => void) | undefined;
      const raw = plaintext
        ? net.connect({
            host: endpoint.host,
            port: endpoint.port,
            onread: {
              buffer: Buffer.allocUnsafe(READ_BUFFER_BYTES),
              callback: (bytes: number, buffer: Uint8Array) => {
                receive?.((buffer as Buffer).subarray(0, bytes));
                return true;
              },
            },
          })
        : net.connect({ host: endpoint.host, port: endpoint.port });
      raw.setNoDelay(true);
      let settled = false;
      const timer = setTimeout(() => fail(new ProxyError(SqlState.connectionFailure, `timeout connecting to node ${endpoint.node} after ${options.connectTimeoutMs} ms`, { retryable: true })), options.connectTimeoutMs);
      const fail = (error: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        raw.destroy();
        reject(error instanceof ProxyError ? error : new ProxyError(SqlState.connectionFailure, `cannot connect to node ${endpoint.node}: ${error.message}`, { retryable: true, cause: error }));
      };
      raw.once('error', fail);
      raw.once('close', () => fail(new Error('connection closed during startup')));
      raw.once('connect', () => {
        negotiateTls(raw, endpoint, options.tls)
          .then((socket) => {
            socket.on('error', fail);
            socket.once('close', () => fail(new Error('connection closed during startup')));
            const conn = new ServerConnection(endpoint, login, socket, plaintext, options.tls);
            if (plaintext) receive = (chunk) => conn.receive(chunk);
            else socket.on('data', (chunk: Buffer) => conn.receive(chunk));
            return conn.startup(options.requireAuth);
          })
          .then((conn) => {
            if (settled) {
              conn.destroy();
              return;
            }
            settled = true;
            clearTimeout(timer);
            raw.removeAllListeners('error');
            raw.removeAllListeners('close');
            conn.socket.removeAllListeners('error');
            conn.socket.removeAllListeners('close');
            conn.listen();
            resolve(conn);
          })
          .catch(fail);
      });
    });
  }

  /** StartupMessage, authentication, then ParameterStatus/BackendKeyData until ReadyForQuery. */
  private startup(requireAuth: ReadonlySet<ServerAuthMethod>): Promise<ServerConnection> {
    return new Promise((resolve, reject) => {
      const reader = new FrameReader();
      const auth = new ServerAuthExchange(this.endpoint.node, this.login, requireAuth);
      const onData = (chunk: Buffer) => {
        try {
          reader.push(chunk);
          while (reader.next()) {
            const { buffer: b, start, end } = reader;
            switch (reader.code) {
              case BackendCode.Authentication: {
                const answer = auth.request(b.readInt32BE(start), b.subarray(start + 4, end));
                if (answer) this.socket.write(answer);
                break;
              }
              case BackendCode.ParameterStatus: {
                const [name, next] = readCString(b, start, end);
                const [value] = readCString(b, next, end);
                this.params.set(name, value);
                break;
              }
              case BackendCode.BackendKeyData:
                this.processId = b.readInt32BE(start);
                this.secretKey = b.readInt32BE(start + 4);
                break;
              case BackendCode.ErrorResponse: {
                const fields = readErrorFields(b, start, end);
                throw new ProxyError(fields.get('C') ?? SqlState.connectionFailure, fields.get('M') ?? 'server refused the connection', {
                  severity: 'FATAL',
                  retryable: fields.get('C') === SqlState.cannotConnectNow,
                });
              }
              case BackendCode.NoticeResponse:
              case BackendCode.NegotiateProtocolVersion:
                break;
              case BackendCode.ReadyForQuery:
                if (auth.method === undefined) throw new ProxyError(SqlState.protocolViolation, `node ${this.endpoint.node} sent ReadyForQuery before AuthenticationOk`, { severity: 'FATAL' });
                this.startupSink = undefined;
                if (reader.pending > 0) throw new Error('unexpected data after ReadyForQuery');
                resolve(this);
                return;
              default:
                throw new Error(`unexpected message ${String.fromCharCode(reader.code)} during startup`);
            }
          }
        } catch (error) {
          this.startupSink = undefined;
          reject(error);
        }
      };
      this.startupSink = onData;
      this.socket.write(serialize.startup({ user: this.login.user, database: this.login.database }));
    });
  }

  private listen(): void {
    const onGone = (error?: Error) => {
      if (this.closed) return;
      this.closed = true;
      this.handler?.onServerClose(this, error);
    };
    this.socket.on('error', onGone);
    this.socket.on('close', () => onGone(undefined));
  }

  /**
   * Cancels what this backend runs now, over a new connection. Until PostgreSQL has taken the
   * request (it closes that connection after signalling the backend), `whenCancelsSettled` holds
   * back: a connection given to another client before then could have that client's query
   * cancelled.
   */
  cancel(): void {
    this.cancelsInFlight++;
    void sendCancel(this.endpoint, this.processId, this.secretKey, this.tls).then(() => {
      if (--this.cancelsInFlight > 0) return;
      const waiting = this.afterCancels;
      this.afterCancels = [];
      for (const fn of waiting) fn();
    });
  }

  /** A cancel sent for this backend has not been taken yet. */
  get cancelsPending(): boolean {
    return this.cancelsInFlight > 0;
  }

  /** Calls `fn` now, or once every cancel sent for this backend has been taken. */
  whenCancelsSettled(fn: () => void): void {
    if (this.cancelsInFlight === 0) fn();
    else this.afterCancels.push(fn);
  }

  setHandler(handler: ServerDataHandler | undefined): void {
    this.handler = handler;
  }

  write(data: Buffer): boolean {
    return this.socket.write(data);
  }

  destroy(): void {
    if (!this.closed) {
      this.closed = true;
      this.handler?.onServerClose(this, undefined);
    }
    this.socket.destroy();
  }

  /** Polite close: Terminate, then end the socket. */
  terminate(): void {
    if (!this.closed) {
      this.closed = true;
      this.socket.end(TERMINATE);
    }
  }
}

const TERMINATE = serialize.end();

/**
 * SSLRequest, then the TLS handshake under server_tls (auth/server-tls.ts). A server without TLS
 * ('N') is used in plaintext only under prefer. A certificate that does not verify fails the
 * connection with the reason (unknown CA, wrong host name).
 */
function negotiateTls(raw: net.Socket, endpoint: ServerEndpoint, settings: ServerTlsSettings): Promise<net.Socket> {
  if (settings.mode === 'disable') return Promise.resolve(raw);
  return new Promise((resolve, reject) => {
    raw.once('data', (answer: Buffer) => {
      if (answer[0] === 0x53) {
        const secure = tls.connect({ socket: raw, ...tlsOptions(settings, endpoint.host) });
        secure.setNoDelay(true);
        secure.once('secureConnect', () => resolve(secure));
        secure.once('error', (error: Error) =>
          reject(new ProxyError(SqlState.connectionFailure, `TLS to node ${endpoint.node} failed (server_tls.mode ${settings.mode}): ${error.message}`, { cause: error })),
        );
      } else if (settings.mode !== 'prefer') {
        reject(new ProxyError(SqlState.connectionFailure, `node ${endpoint.node} does not support TLS (server_tls.mode ${settings.mode})`));
      } else resolve(raw);
    });
    raw.write(serialize.requestSsl());
  });
}

/**
 * Sends a CancelRequest for a server backend over a fresh connection, under the same server_tls
 * as the data path: over TLS when the mode asks for it (the server takes a CancelRequest after
 * SSLRequest); never in plaintext to a server that must use TLS.
 */
export function sendCancel(endpoint: ServerEndpoint, processId: number, secretKey: number, settings: ServerTlsSettings = { mode: 'disable' }): Promise<void> {
  return new Promise((resolve) => {
    const raw = net.connect({ host: endpoint.host, port: endpoint.port });
    let socket: net.Socket = raw;
    const done = () => {
      socket.destroy();
      raw.destroy();
      resolve();
    };
    raw.setTimeout(5000, done);
    raw.once('error', done);
    raw.once('close', done);
    raw.once('connect', () => {
      negotiateTls(raw, endpoint, settings).then((secure) => {
        socket = secure;
        secure.once('error', done);
        secure.end(serialize.cancel(processId, secretKey));
      }, done);
    });
  });
}
