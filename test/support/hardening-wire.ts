import net from 'node:net';
import { errorFields, type BackendMessage } from './protocol-client.js';

/**
 * A raw TCP conversation with pgrelay for the hardening tests: write any bytes (well-formed or
 * not), then look at what came back and whether pgrelay closed the socket. What pgrelay sends is
 * cut into messages here, strictly: a frame with an impossible length from pgrelay is itself a
 * failure (`malformedReply`).
 */
export class Conversation {
  readonly received: Buffer[] = [];
  /** single bytes answering SSLRequest/GSSENCRequest, when `expectNegotiation` */
  negotiation = '';
  closed = false;
  /** bytes the kernel accepted from us before the socket closed */
  bytesWritten = 0;
  /** why the socket closed on our side, if it errored (ECONNRESET, EPIPE) */
  socketError: string | undefined;
  private readonly closedPromise: Promise<void>;
  private pendingNegotiation: number;

  private constructor(
    readonly socket: net.Socket,
    expectNegotiation: number,
  ) {
    this.pendingNegotiation = expectNegotiation;
    socket.on('data', (chunk: Buffer) => {
      let at = 0;
      while (this.pendingNegotiation > 0 && at < chunk.length && this.received.length === 0) {
        this.negotiation += String.fromCharCode(chunk[at]!);
        this.pendingNegotiation--;
        at++;
      }
      if (at < chunk.length) this.received.push(chunk.subarray(at));
    });
    socket.on('error', (error) => (this.socketError = (error as NodeJS.ErrnoException).code ?? error.message));
    this.closedPromise = new Promise((resolve) =>
      socket.once('close', () => {
        this.closed = true;
        this.bytesWritten = socket.bytesWritten;
        resolve();
      }),
    );
  }

  /** `expectNegotiation`: how many one-byte SSL/GSS answers come before typed messages. */
  static open(port: number, expectNegotiation = 0): Promise<Conversation> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: '127.0.0.1', port });
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        socket.setNoDelay(true);
        resolve(new Conversation(socket, expectNegotiation));
      });
    });
  }

  write(data: Buffer): Promise<void> {
    if (this.closed || this.socket.destroyed) return Promise.resolve();
    return new Promise((resolve) => this.socket.write(data, () => resolve()));
  }

  /** Half-closes our side: we send nothing more (as a client that gave up would). */
  end(): void {
    if (!this.socket.destroyed) this.socket.end();
  }

  /** Waits until pgrelay closed the socket, at most `boundMs` (then the socket is destroyed). */
  async waitClosed(boundMs: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const closedInTime = await Promise.race([
      this.closedPromise.then(() => true),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), boundMs))),
    ]);
    clearTimeout(timer);
    if (!closedInTime) this.destroy();
    return closedInTime;
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** The messages received so far; throws on a frame pgrelay should never send. */
  messages(): BackendMessage[] {
    const data = Buffer.concat(this.received);
    const out: BackendMessage[] = [];
    let at = 0;
    while (data.length - at >= 5) {
      const length = data.readInt32BE(at + 1);
      if (length < 4) throw new Error(`malformedReply: frame of declared length ${length} from pgrelay`);
      if (data.length - at < 1 + length) break;
      out.push({ type: String.fromCharCode(data[at]!), body: Buffer.from(data.subarray(at + 5, at + 1 + length)) });
      at += 1 + length;
    }
    if (at !== data.length && this.closed) throw new Error(`malformedReply: ${data.length - at} trailing bytes of an incomplete frame from pgrelay`);
    return out;
  }

  /** Severity and SQLSTATE of every ErrorResponse received. */
  errors(): { severity: string; code: string; message: string }[] {
    return this.messages()
      .filter((m) => m.type === 'E')
      .map((m) => {
        const f = errorFields(m.body);
        return { severity: f.get('S') ?? '', code: f.get('C') ?? '', message: f.get('M') ?? '' };
      });
  }
}

/** A StartupMessage-shaped packet with a chosen length word (for bad-length tests). */
export function startupWithLength(length: number, code: number, body: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(8);
  head.writeInt32BE(length, 0);
  head.writeInt32BE(code, 4);
  return Buffer.concat([head, body]);
}

/** The 8-byte SSLRequest (or GSSENCRequest with `gss`). */
export function sslRequest(gss = false): Buffer {
  return startupWithLength(8, gss ? 80877104 : 80877103);
}

/** A CancelRequest packet. */
export function cancelRequest(processId: number, secretKey: number): Buffer {
  const packet = Buffer.alloc(16);
  packet.writeInt32BE(16, 0);
  packet.writeInt32BE(80877102, 4);
  packet.writeInt32BE(processId, 8);
  packet.writeInt32BE(secretKey, 12);
  return packet;
}

/** Sends a CancelRequest on its own connection, as libpq's PQcancel does; resolves once pgrelay closed it. */
export async function sendCancel(port: number, processId: number, secretKey: number): Promise<void> {
  const c = await Conversation.open(port);
  await c.write(cancelRequest(processId, secretKey));
  if (!(await c.waitClosed(10_000))) throw new Error('pgrelay did not close a CancelRequest connection');
}
