import { randomInt } from 'node:crypto';
import net from 'node:net';
import type tls from 'node:tls';
import type { Config } from '../config/types.js';
import type { NodeStatus } from '../cluster/topology.js';
import { ProxyError, SqlState } from '../errors.js';
import type { Metrics } from '../metrics/metrics.js';
import type { Pool } from '../pool/pool.js';
import { runInternalQuery } from '../pool/internal-query.js';
import type { ServerConnection } from '../pool/server-connection.js';
import { backendKeyData, errorResponse, parameterStatus, readyIdle } from '../protocol/messages.js';
import { isUnreachable } from '../routing/unit-route.js';
import type { UserDirectory } from '../auth/user-directory.js';
import type { Logger } from '../util/log.js';
import { clientHandshake, type Handshake } from './client-handshake.js';
import type { AppServices, SessionServices } from './session-services.js';
import { ClientSession } from './session.js';
import { startupSyncCommitRefusal } from '../routing/sync-commit-floor.js';
import { stateTransition } from './session-state.js';

export interface FrontendDeps {
  /** what every session uses, built once by the App */
  services: AppServices;
  users: UserDirectory;
  tls: () => tls.SecureContext | undefined;
  /** workers mode: process ids that name the worker, and cancels for another worker's sessions */
  backendKeys?: { next(taken: (processId: number) => boolean): number; cancelElsewhere(processId: number, secretKey: number): void };
}

/**
 * Parameters told to every client as pgrelay's own, whatever the server: pgrelay is one logical
 * primary (writes go to the primary whichever server serves a read), which is what libpq's
 * target_session_attrs=read-write|primary and pgjdbc's targetServerType=primary ask of it.
 * (A server connection's own ParameterStatus for them is dropped: see ServerReplies.)
 */
const LOGICAL_PRIMARY_PARAMETERS: ReadonlyMap<string, string> = new Map([['in_hot_standby', 'off']]);

/**
 * The client-facing side: accepts connections, runs the handshake, starts sessions, and keeps the
 * map of sessions by pgrelay's own backend key for CancelRequests.
 */
export class Frontend {
  /** per pool: startup settings known to apply, with the parameters the server reported for them */
  private readonly checkedStartup = new WeakMap<Pool, Map<string, Map<string, string>>>();
  private server: net.Server | undefined;
  private readonly sessions = new Map<number, ClientSession>();
  private readonly sockets = new Set<net.Socket>();
  private pinnedCount = 0;
  private accepting = true;
  /** the App's services, plus the frontend's own bookkeeping of sessions: handed to every session */
  private readonly services: SessionServices;
  private readonly metrics: Metrics;
  private readonly log: Logger;

  constructor(private readonly deps: FrontendDeps) {
    this.services = {
      ...deps.services,
      pinned: (delta) => this.pinned(delta),
      sessionClosed: (session) => this.sessionClosed(session),
    };
    this.metrics = deps.services.metrics;
    this.log = deps.services.log;
  }

  private config(): Config {
    return this.services.config();
  }

  listen(host: string, port: number): Promise<net.AddressInfo> {
    return new Promise((resolve, reject) => {
      const server = net.createServer({ noDelay: true }, (socket) => this.onConnection(socket));
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        server.on('error', (error) => this.log.error({ err: error.message }, 'listener error'));
        this.server = server;
        resolve(server.address() as net.AddressInfo);
      });
    });
  }

  get clientCount(): number {
    return this.sockets.size;
  }

  get sessionCount(): number {
    return this.sessions.size;
  }

  private onConnection(socket: net.Socket): void {
    const config = this.config();
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 60_000);
    socket.on('error', () => socket.destroy());
    if (!this.accepting) {
      this.refuse(socket, SqlState.cannotConnectNow, 'pgrelay is shutting down', 'shutdown');
      return;
    }
    if (this.sockets.size >= config.client.max_connections) {
      this.refuse(socket, SqlState.tooManyConnections, 'sorry, too many clients already', 'max_connections');
      return;
    }
    this.sockets.add(socket);
    this.metrics.clientConnections.set(this.sockets.size);
    this.metrics.clientConnectionsTotal.inc();
    socket.once('close', () => {
      this.sockets.delete(socket);
      this.metrics.clientConnections.set(this.sockets.size);
    });
    // the socket pgrelay answers on: the TLS socket once the client asked for TLS
    let current: net.Socket = socket;
    const timer = setTimeout(() => {
      this.metrics.clientsRefused.labels('startup_timeout').inc();
      current.end(errorResponse({ severity: 'FATAL', code: SqlState.protocolViolation, message: 'canceling authentication due to timeout' }));
      socket.destroy();
    }, config.client.startup_timeout_ms);
    clientHandshake(socket, {
      authMethod: config.auth.method,
      users: this.deps.users,
      tls: this.deps.tls(),
      tlsRequired: config.tls.required,
      maxStartupBytes: 10_000,
      onCancel: (processId, secretKey) => this.cancelByKey(processId, secretKey),
      onTls: (tlsSocket) => (current = tlsSocket),
    })
      .then((handshake) => {
        if (!handshake) {
          clearTimeout(timer);
          return;
        }
        return this.startSession(handshake).finally(() => clearTimeout(timer));
      })
      .catch((error: unknown) => {
        clearTimeout(timer);
        if (error instanceof ProxyError && (error.sqlstate === SqlState.invalidPassword || error.sqlstate === SqlState.invalidAuthorization)) {
          this.metrics.authFailures.inc();
          // pgrelay's own message: it names the role, never a password
          this.log.warn({ sqlstate: error.sqlstate, err: error.message }, 'client authentication failed');
        }
        this.sendFatal(current, error);
      });
  }

  private refuse(socket: net.Socket, code: string, text: string, reason: string): void {
    this.metrics.clientsRefused.labels(reason).inc();
    socket.end(errorResponse({ severity: 'FATAL', code, message: text }));
    setTimeout(() => socket.destroy(), 1000).unref();
  }

  private sendFatal(socket: net.Socket, error: unknown): void {
    const proxyError = error instanceof ProxyError ? error : new ProxyError(SqlState.protocolViolation, 'invalid startup sequence');
    if (!(error instanceof ProxyError)) this.log.warn({ err: error instanceof Error ? error.message : String(error) }, 'client handshake failed');
    // a wrapped system or library error: its words go to the log, the client gets a stable text
    else if (proxyError.clientMessage !== proxyError.message) this.log.warn({ sqlstate: proxyError.sqlstate, err: proxyError.message }, 'client refused at startup');
    if (!socket.destroyed) {
      socket.end(errorResponse({ severity: 'FATAL', code: proxyError.sqlstate, message: proxyError.clientMessage }));
      setTimeout(() => socket.destroy(), 1000).unref();
    }
  }

  /** After authentication: checks the startup settings on a server, tells the client its parameters. */
  private async startSession(handshake: Handshake): Promise<void> {
    const { socket } = handshake;
    const refused = startupSyncCommitRefusal(handshake.params, this.config().routing.min_synchronous_commit);
    if (refused) throw refused;
    let processId: number;
    if (this.deps.backendKeys) processId = this.deps.backendKeys.next((id) => this.sessions.has(id));
    else do processId = randomInt(1, 0x7fffffff);
    while (this.sessions.has(processId));
    const session = new ClientSession(this.services, socket, handshake.user, handshake.database, handshake.params, { processId, secretKey: randomInt(-0x80000000, 0x7fffffff) });
    this.sessions.set(processId, session);
    try {
      const params = await this.startupParameters(session);
      if (socket.destroyed) {
        this.sessions.delete(processId);
        return;
      }
      const out: Buffer[] = [];
      for (const [name, value] of params) out.push(parameterStatus(name, LOGICAL_PRIMARY_PARAMETERS.get(name) ?? value));
      out.push(backendKeyData(session.processId, session.secretKey), readyIdle);
      socket.write(Buffer.concat(out));
      if (session.isPinned) this.pinned(+1);
      session.start(handshake.leftover);
    } catch (error) {
      this.sessions.delete(processId);
      throw error;
    }
  }

  /**
   * The ParameterStatus set for a new client: what the primary reports, with the client's own
   * startup settings applied on a server connection (which also checks that they are valid).
   */
  private async startupParameters(session: ClientSession, retried = false): Promise<Map<string, string>> {
    const choice = await this.primaryChoice();
    const pool = this.services.pools.get(choice.name, session.user, session.database);
    const wanted = session.stateSql();
    if (pool.serverParams && wanted === '') return new Map(pool.serverParams);
    // settings that were applied once already: no server connection needed (a saturated pool
    // must not keep new clients from connecting)
    const known = this.checkedStartup.get(pool)?.get(wanted);
    if (known) return new Map(known);
    let conn: ServerConnection;
    try {
      conn = await new Promise<ServerConnection>((resolve, reject) => pool.acquire((error, c) => (error || !c ? reject(error) : resolve(c))));
    } catch (error) {
      // the primary may be going down (failover): ask again, once, when its health is decided
      if (retried || !isUnreachable(error)) throw error;
      this.services.nodeBroken(choice.name, error instanceof Error ? error : undefined);
      await new Promise<void>((resolve) => this.services.whenNodeDecided(choice.name, resolve));
      return this.startupParameters(session, true);
    }
    const params = new Map(pool.serverParams ?? conn.params);
    if (wanted === '' || conn.appliedState === wanted) {
      pool.release(conn);
      return params;
    }
    let result;
    try {
      result = await runInternalQuery(conn, stateTransition(conn.appliedState, wanted));
    } catch (error) {
      pool.discard(conn);
      throw new ProxyError(SqlState.connectionFailure, `node ${choice.name} failed during connection startup`, { severity: 'FATAL', cause: error });
    }
    if (result.error) {
      // the settings are invalid: the connection's state is unknown, and the client is refused as PostgreSQL would
      conn.appliedState = '\0dirty';
      pool.release(conn);
      throw new ProxyError(result.error.get('C') ?? SqlState.invalidParameterValue, result.error.get('M') ?? 'invalid startup parameter', { severity: 'FATAL' });
    }
    conn.appliedState = wanted;
    pool.release(conn);
    for (const [name, value] of result.params) params.set(name, value);
    let checked = this.checkedStartup.get(pool);
    if (!checked) this.checkedStartup.set(pool, (checked = new Map()));
    if (checked.size >= 1000) checked.clear();
    checked.set(wanted, new Map(params));
    return params;
  }

  private primaryChoice(): Promise<NodeStatus> {
    const route = this.services.router.route('primary');
    if (route.kind === 'node') return Promise.resolve(route.node);
    return new Promise((resolve, reject) =>
      this.services.waitForPrimary((error) => {
        const next = this.services.router.route('primary');
        if (error || next.kind !== 'node') reject(error ?? new ProxyError(SqlState.cannotConnectNow, 'no primary available', { severity: 'FATAL' }));
        else resolve(next.node);
      }),
    );
  }

  // ---------------------------------------------------------------- sessions

  private pinned(delta: number): void {
    this.pinnedCount += delta;
    this.metrics.pinnedSessions.set(this.pinnedCount);
  }

  /** A CancelRequest (from a client, or forwarded by another worker). */
  cancelByKey(processId: number, secretKey: number): void {
    const session = this.sessions.get(processId);
    if (!session) return this.deps.backendKeys?.cancelElsewhere(processId, secretKey);
    // a wrong key cancels nothing, and says nothing (as PostgreSQL)
    if (session && session.secretKey === secretKey) session.cancel();
  }

  private sessionClosed(session: { readonly processId: number }): void {
    if (this.sessions.get(session.processId) === session) this.sessions.delete(session.processId);
  }

  /**
   * Stops accepting; existing sessions go on until `closeAll`. server.close() stops listening at
   * once, but its callback waits until every client socket has ended, which only closeAll brings
   * about: waiting for it here hung App.stop for as long as any client stayed connected.
   */
  stopAccepting(): Promise<void> {
    this.accepting = false;
    this.server?.close();
    return Promise.resolve();
  }

  /**
   * Graceful shutdown, after stopAccepting: a client between transactions is told (57P01) and
   * closed at once; a client with a unit or a transaction under way is closed as soon as it is
   * idle again (its COMMIT goes through), or when `graceMs` is over (its transaction rolls back).
   */
  async closeAll(graceMs = 0): Promise<void> {
    const deadline = Date.now() + graceMs;
    for (;;) {
      for (const session of [...this.sessions.values()]) if (!session.busy) session.shutdown();
      if (this.sessions.size === 0 || Date.now() >= deadline) break;
      await new Promise((r) => setTimeout(r, Math.min(50, Math.max(1, deadline - Date.now()))));
    }
    for (const session of [...this.sessions.values()]) session.shutdown();
    for (const socket of this.sockets) socket.destroy();
  }
}
