import { randomBytes } from 'node:crypto';
import type net from 'node:net';
import tls from 'node:tls';
import { verifyMd5Response } from '../auth/md5.js';
import { ScramServerExchange, SCRAM_MECHANISM } from '../auth/scram.js';
import type { UserDirectory } from '../auth/user-directory.js';
import type { AuthMethod } from '../config/types.js';
import { ProxyError, SqlState } from '../errors.js';
import { FrontendCode, StartupCode } from '../protocol/codes.js';
import { FrameReader, parseStartupParameters, readStartupPacket } from '../protocol/frame-reader.js';
import {
  authenticationMd5,
  authenticationOk,
  authenticationSasl,
  authenticationSaslContinue,
  authenticationSaslFinal,
  negotiateProtocolVersion,
  readCString,
  sslAccepted,
  sslRefused,
} from '../protocol/messages.js';

export interface HandshakeOptions {
  authMethod: AuthMethod;
  users: UserDirectory;
  tls: tls.SecureContext | undefined;
  tlsRequired: boolean;
  maxStartupBytes: number;
  /** a CancelRequest arrived: the handshake ends there */
  onCancel(processId: number, secretKey: number): void;
  /** the connection is now TLS: what pgrelay says from here on (errors too) goes through `socket` */
  onTls?(socket: tls.TLSSocket): void;
}

export interface Handshake {
  socket: net.Socket;
  user: string;
  database: string;
  /** startup parameters to carry into the session (everything but user, database, options handled) */
  params: Map<string, string>;
  /** bytes that came after the last handshake message */
  leftover: Buffer;
  tls: boolean;
}

/** Startup parameters that are not session settings. */
const NOT_SETTINGS = new Set(['user', 'database', 'replication', 'options']);

/**
 * The first phase of a client connection: SSLRequest/GSSENCRequest negotiation, the
 * StartupMessage (or a CancelRequest), then authentication. Resolves with the authenticated
 * client; rejects with a ProxyError that the caller sends as a FATAL ErrorResponse.
 */
export function clientHandshake(initial: net.Socket, options: HandshakeOptions): Promise<Handshake | undefined> {
  return new Promise((resolve, reject) => {
    let socket: net.Socket = initial;
    let buffered: Buffer = Buffer.alloc(0);
    let secure = false;
    let phase: 'startup' | 'lookup' | 'auth' = 'startup';
    let auth: AuthStep | undefined;
    let reader: FrameReader | undefined;
    let user = '';
    let database = '';
    let params = new Map<string, string>();
    let settled = false;

    const finish = (result: Handshake | undefined | Error) => {
      if (settled) return;
      settled = true;
      socket.off('data', onData);
      socket.off('close', onClose);
      if (result instanceof Error) reject(result);
      else resolve(result);
    };
    const onClose = () => finish(undefined);

    /** The exchange starts (after an auth_query lookup, when the user is not in the config). */
    const beginAuth = () => {
      phase = 'auth';
      reader = new FrameReader(64 * 1024);
      auth = startAuth(options, user, socket);
      if (auth.done) {
        socket.write(authenticationOk);
        return finish({ socket, user, database, params, leftover: buffered, tls: secure });
      }
      if (buffered.length === 0) return;
      const rest = buffered;
      buffered = Buffer.alloc(0);
      onData(rest);
    };

    const onData = (chunk: Buffer) => {
      try {
        if (phase === 'lookup') {
          buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
          return;
        }
        if (phase === 'startup') {
          buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
          for (;;) {
            const packet = readStartupPacket(buffered, options.maxStartupBytes);
            if (!packet) return;
            buffered = buffered.subarray(packet.consumed);
            if (packet.code === StartupCode.SSLRequest || packet.code === StartupCode.GSSENCRequest) {
              if (buffered.length > 0) throw new ProxyError(SqlState.protocolViolation, 'received unencrypted data after SSL request', { severity: 'FATAL' });
              if (packet.code === StartupCode.SSLRequest && options.tls && !secure) {
                socket.off('data', onData);
                socket.write(sslAccepted);
                const tlsSocket = new tls.TLSSocket(socket, { isServer: true, secureContext: options.tls });
                tlsSocket.setNoDelay?.(true);
                socket.off('close', onClose);
                socket = tlsSocket;
                secure = true;
                options.onTls?.(tlsSocket);
                socket.on('data', onData);
                socket.on('close', onClose);
                socket.on('error', (error) => finish(new ProxyError(SqlState.protocolViolation, `TLS handshake failed: ${error.message}`, { severity: 'FATAL' })));
                return;
              }
              socket.write(sslRefused);
              continue;
            }
            if (packet.code === StartupCode.CancelRequest) {
              if (packet.body.length >= 8) options.onCancel(packet.body.readInt32BE(0), packet.body.readInt32BE(4));
              socket.destroy();
              finish(undefined);
              return;
            }
            const major = packet.code >>> 16;
            const minor = packet.code & 0xffff;
            if (major !== 3) {
              throw new ProxyError(SqlState.featureNotSupported, `unsupported frontend protocol ${major}.${minor}: server supports 3.0 to 3.0`, { severity: 'FATAL' });
            }
            if (options.tlsRequired && !secure) {
              throw new ProxyError(SqlState.invalidAuthorization, 'pgrelay requires TLS: connect with sslmode=require', { severity: 'FATAL' });
            }
            const all = parseStartupParameters(packet.body);
            const unsupported = [...all.keys()].filter((k) => k.startsWith('_pq_.'));
            if (minor > 0 || unsupported.length > 0) socket.write(negotiateProtocolVersion(0, unsupported));
            user = all.get('user') ?? '';
            if (user === '') throw new ProxyError(SqlState.invalidAuthorization, 'no PostgreSQL user name specified in startup packet', { severity: 'FATAL' });
            database = all.get('database') || user;
            const replication = all.get('replication');
            if (replication !== undefined && !['false', 'off', 'no', '0'].includes(replication.toLowerCase())) {
              throw new ProxyError(SqlState.featureNotSupported, 'pgrelay does not proxy replication connections', { severity: 'FATAL' });
            }
            params = new Map();
            for (const [key, value] of all) if (!NOT_SETTINGS.has(key) && !key.startsWith('_pq_.')) params.set(key, value);
            for (const [key, value] of parseOptions(all.get('options') ?? '')) params.set(key, value);
            if (options.users.needsLookup(user)) {
              phase = 'lookup';
              options.users.lookup(user).then(
                () => {
                  if (settled) return;
                  try {
                    beginAuth();
                  } catch (error) {
                    finish(error instanceof Error ? error : new Error(String(error)));
                  }
                },
                () => finish(new ProxyError(SqlState.cannotConnectNow, 'pgrelay cannot look up users right now (auth_query failed)', { severity: 'FATAL' })),
              );
              return;
            }
            beginAuth();
            return;
          }
        }
        reader!.push(chunk);
        while (reader!.next()) {
          if (reader!.code !== FrontendCode.Password) throw new ProxyError(SqlState.protocolViolation, `expected a password response, got message type ${reader!.code}`, { severity: 'FATAL' });
          auth!.step(reader!.buffer.subarray(reader!.start, reader!.end));
          if (auth!.done) {
            socket.write(authenticationOk);
            return finish({ socket, user, database, params, leftover: reader!.drain(), tls: secure });
          }
        }
      } catch (error) {
        finish(error instanceof Error ? error : new Error(String(error)));
      }
    };
    socket.on('data', onData);
    socket.on('close', onClose);
  });
}

interface AuthStep {
  done: boolean;
  step(body: Buffer): void;
}

function passwordFailed(user: string): ProxyError {
  return new ProxyError(SqlState.invalidPassword, `password authentication failed for user "${user}"`, { severity: 'FATAL' });
}

function startAuth(options: HandshakeOptions, user: string, socket: net.Socket): AuthStep {
  const entry = options.users.get(user);
  if (options.authMethod === 'trust') {
    if (!entry) throw new ProxyError(SqlState.invalidAuthorization, `role "${user}" is not allowed to connect through pgrelay`, { severity: 'FATAL' });
    return { done: true, step() {} };
  }
  // md5: an unknown user is asked for an md5 password too, and refused the same way as a wrong
  // password (the method asked for must not tell which users exist)
  if (options.authMethod === 'md5' && (entry === undefined || entry.password !== undefined)) {
    const salt = randomBytes(4);
    socket.write(authenticationMd5(salt));
    return {
      done: false,
      step(body) {
        const [response] = readCString(body, 0, body.length);
        if (entry?.password === undefined || !verifyMd5Response(user, entry.password, salt, response)) throw passwordFailed(user);
        this.done = true;
      },
    };
  }
  // SCRAM-SHA-256 (also for md5 users whose config holds only a SCRAM verifier, as PostgreSQL does)
  const exchange = new ScramServerExchange(options.users.secretFor(user));
  socket.write(authenticationSasl([SCRAM_MECHANISM]));
  let stage = 0;
  return {
    done: false,
    step(body) {
      if (stage === 0) {
        const [mechanism, after] = readCString(body, 0, body.length);
        if (mechanism !== SCRAM_MECHANISM) throw new ProxyError(SqlState.protocolViolation, `client selected an invalid SASL authentication mechanism`, { severity: 'FATAL' });
        const length = body.readInt32BE(after);
        const data = body.toString('utf8', after + 4, length < 0 ? after + 4 : after + 4 + length);
        socket.write(authenticationSaslContinue(exchange.handleClientFirst(data)));
        stage = 1;
        return;
      }
      const result = exchange.handleClientFinal(body.toString('utf8'));
      if (!result.ok || !entry) throw passwordFailed(user);
      options.users.proveClientKey(user, exchange.clientKey!);
      socket.write(authenticationSaslFinal(result.serverFinal));
      this.done = true;
    },
  };
}

/** `options=-c a=b -c c=d` (and `--a=b`) from the startup packet, as settings. */
export function parseOptions(options: string): Map<string, string> {
  const out = new Map<string, string>();
  const words: string[] = [];
  let current = '';
  for (let i = 0; i < options.length; i++) {
    const ch = options[i]!;
    if (ch === '\\' && i + 1 < options.length) current += options[++i];
    else if (ch === ' ' || ch === '\t') {
      if (current) words.push(current);
      current = '';
    } else current += ch;
  }
  if (current) words.push(current);
  for (let i = 0; i < words.length; i++) {
    let setting: string | undefined;
    if (words[i] === '-c' && i + 1 < words.length) setting = words[++i];
    else if (words[i]!.startsWith('-c')) setting = words[i]!.slice(2);
    else if (words[i]!.startsWith('--')) setting = words[i]!.slice(2);
    if (!setting) continue;
    const eq = setting.indexOf('=');
    if (eq > 0) out.set(setting.slice(0, eq).replace(/-/g, '_'), setting.slice(eq + 1));
  }
  return out;
}
