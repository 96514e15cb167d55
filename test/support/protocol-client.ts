import { createHash } from 'node:crypto';
import net from 'node:net';
import { serialize } from 'pg-protocol';
import { ScramClientExchange } from '../../src/auth/scram.js';
import { startRelay, type Relay } from './relay.js';
import type { SharedCluster } from './shared-cluster.js';

/**
 * A minimal PostgreSQL wire client for protocol-level tests: the startup (any protocol version,
 * any packet), login (SCRAM-SHA-256, md5, cleartext or trust), then raw messages. Frontend
 * messages come from pg-protocol's serializer; backend messages are cut here, independently of
 * pgrelay's own framing code.
 */

/** The cluster with only its primary, for relays whose reads must see the writes just made. */
export function primaryOnly<C extends Pick<SharedCluster, 'nodes'>>(cluster: C): C {
  return { ...cluster, nodes: cluster.nodes.filter((n) => n.role === 'primary') };
}

/**
 * Settings for relays that test the protocol, not failover: no failover, and health checks that
 * a loaded machine (several engineers' suites at once) does not fail, so that the primary is not
 * marked down under a long result.
 */
export const STEADY = { failover: { mode: 'off' }, health: { timeout_ms: 10_000, failures: 10 } } as const;

/** pgrelay in this process in front of the cluster's primary only, with STEADY settings. */
export function startProtocolRelay(cluster: Parameters<typeof startRelay>[0], overrides: Record<string, unknown> = {}): Promise<Relay> {
  return startRelay(primaryOnly(cluster), { ...STEADY, ...overrides });
}

export interface BackendMessage {
  /** the type byte as a character, e.g. 'Z' */
  type: string;
  body: Buffer;
}

export interface RawLogin {
  user: string;
  password: string;
  database: string;
  /** protocol version word; default 3.0 (196608) */
  protocol?: number;
  params?: Record<string, string>;
}

export class RawClient {
  private buffered: Buffer = Buffer.alloc(0);
  private readonly messages: BackendMessage[] = [];
  private waiter: (() => void) | undefined;
  closed = false;
  processId = 0;
  secretKey = 0;
  readonly parameters = new Map<string, string>();

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  /** Opens a TCP connection only (no startup): for tests that send their own first packet. */
  static open(port: number): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: '127.0.0.1', port });
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        socket.setNoDelay(true);
        resolve(new RawClient(socket));
      });
    });
  }

  /** Connects and logs in; resolves after the first ReadyForQuery. */
  static async connect(port: number, login: RawLogin): Promise<RawClient> {
    const client = await RawClient.open(port);
    try {
      await client.login(login);
    } catch (error) {
      client.destroy();
      throw error;
    }
    return client;
  }

  /** Startup and authentication; messages before ReadyForQuery are consumed. */
  async login(login: RawLogin): Promise<BackendMessage[]> {
    this.send(startupPacket(login.protocol ?? 196608, { user: login.user, database: login.database, ...login.params }));
    const seen: BackendMessage[] = [];
    let scram: ScramClientExchange | undefined;
    for (;;) {
      const m = await this.next();
      seen.push(m);
      switch (m.type) {
        case 'R': {
          const kind = m.body.readInt32BE(0);
          if (kind === 10) {
            scram = new ScramClientExchange(login.password);
            this.send(serialize.sendSASLInitialResponseMessage('SCRAM-SHA-256', scram.clientFirst()));
          } else if (kind === 11) this.send(serialize.sendSCRAMClientFinalMessage(scram!.handleServerFirst(m.body.toString('utf8', 4))));
          else if (kind === 12) scram!.verifyServerFinal(m.body.toString('utf8', 4));
          else if (kind === 5) this.send(serialize.password(md5Response(login.user, login.password, m.body.subarray(4, 8))));
          else if (kind === 3) this.send(serialize.password(login.password));
          else if (kind !== 0) throw new Error(`unsupported authentication request ${kind}`);
          break;
        }
        case 'S': {
          const [name, value] = m.body.toString('utf8').split('\0');
          this.parameters.set(name!, value!);
          break;
        }
        case 'K':
          this.processId = m.body.readInt32BE(0);
          this.secretKey = m.body.readInt32BE(4);
          break;
        case 'E':
          throw new ServerError(errorFields(m.body));
        case 'Z':
          return seen;
        default:
          break;
      }
    }
  }

  send(data: Buffer): void {
    this.socket.write(data);
  }

  /** The next backend message; rejects when the connection closes first. */
  async next(): Promise<BackendMessage> {
    for (;;) {
      const m = this.messages.shift();
      if (m) return m;
      if (this.closed) throw new Error('connection closed');
      await new Promise<void>((resolve) => (this.waiter = resolve));
    }
  }

  /** Messages up to and including the first of type `type`. */
  async until(type: string): Promise<BackendMessage[]> {
    const out: BackendMessage[] = [];
    for (;;) {
      const m = await this.next();
      out.push(m);
      if (m.type === type) return out;
    }
  }

  /** Runs a simple query; returns every message up to ReadyForQuery. */
  async query(text: string): Promise<BackendMessage[]> {
    this.send(serialize.query(text));
    return this.until('Z');
  }

  /** Resolves when the server closed the connection; returns the messages that came before. */
  async closedByServer(): Promise<BackendMessage[]> {
    const out: BackendMessage[] = [];
    for (;;) {
      try {
        out.push(await this.next());
      } catch {
        return out;
      }
    }
  }

  destroy(): void {
    this.socket.destroy();
  }

  /**
   * Stops reading for the caller: the socket is paused and handed over with the bytes already
   * received but not yet returned as messages (for tests that read the raw stream themselves).
   */
  release(): { socket: net.Socket; pending: Buffer } {
    this.socket.removeAllListeners('data');
    this.socket.pause();
    const pending = Buffer.concat([...this.messages.map((m) => frame(m)), this.buffered]);
    this.messages.length = 0;
    this.buffered = Buffer.alloc(0);
    return { socket: this.socket, pending };
  }

  private onData(chunk: Buffer): void {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    let at = 0;
    // a single-byte answer to SSLRequest/GSSENCRequest is not a framed message
    while (this.buffered.length - at >= 5) {
      const length = this.buffered.readInt32BE(at + 1);
      if (this.buffered.length - at < 1 + length) break;
      this.messages.push({ type: String.fromCharCode(this.buffered[at]!), body: Buffer.from(this.buffered.subarray(at + 5, at + 1 + length)) });
      at += 1 + length;
    }
    this.buffered = this.buffered.subarray(at);
    this.wake();
  }

  private wake(): void {
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.();
  }
}

export class ServerError extends Error {
  readonly code: string;
  readonly severity: string;
  constructor(readonly fields: Map<string, string>) {
    super(fields.get('M') ?? 'server error');
    this.code = fields.get('C') ?? '';
    this.severity = fields.get('S') ?? '';
  }
}

function frame(m: BackendMessage): Buffer {
  const head = Buffer.alloc(5);
  head[0] = m.type.charCodeAt(0);
  head.writeInt32BE(m.body.length + 4, 1);
  return Buffer.concat([head, m.body]);
}

/** libpq's md5 answer: "md5" + md5(md5(password + user) + salt), computed here independently. */
function md5Response(user: string, password: string, salt: Buffer): string {
  const inner = createHash('md5').update(password + user).digest('hex');
  return `md5${createHash('md5').update(Buffer.concat([Buffer.from(inner), salt])).digest('hex')}`;
}

/** Fields of an ErrorResponse/NoticeResponse body by their one-letter code. */
export function errorFields(body: Buffer): Map<string, string> {
  const fields = new Map<string, string>();
  let at = 0;
  while (at < body.length && body[at] !== 0) {
    const end = body.indexOf(0, at + 1);
    fields.set(String.fromCharCode(body[at]!), body.toString('utf8', at + 1, end));
    at = end + 1;
  }
  return fields;
}

/** The text values of a DataRow body (null for SQL NULL). */
export function dataRow(body: Buffer): (string | null)[] {
  const count = body.readInt16BE(0);
  const values: (string | null)[] = [];
  let at = 2;
  for (let i = 0; i < count; i++) {
    const length = body.readInt32BE(at);
    at += 4;
    if (length < 0) values.push(null);
    else {
      values.push(body.toString('utf8', at, at + length));
      at += length;
    }
  }
  return values;
}

/** Type letters of a message list, e.g. "1 2 T D C Z" as ['1','2','T','D','C','Z']. */
export function types(messages: BackendMessage[]): string[] {
  return messages.map((m) => m.type);
}

/** A StartupMessage with any protocol word (3.0 = 196608, 3.2 = 196610, 2.0 = 131072). */
export function startupPacket(protocol: number, params: Record<string, string>): Buffer {
  const pairs = Object.entries(params).flatMap(([k, v]) => [Buffer.from(`${k}\0`), Buffer.from(`${v}\0`)]);
  const body = Buffer.concat([...pairs, Buffer.from([0])]);
  const head = Buffer.alloc(8);
  head.writeInt32BE(8 + body.length, 0);
  head.writeInt32BE(protocol, 4);
  return Buffer.concat([head, body]);
}

/** A typed frontend message with an arbitrary code and body (for malformed-input tests). */
export function rawMessage(code: string, body: Buffer, declaredLength = body.length + 4): Buffer {
  const out = Buffer.alloc(5 + body.length);
  out[0] = code.charCodeAt(0);
  out.writeInt32BE(declaredLength, 1);
  body.copy(out, 5);
  return out;
}

export { serialize };
