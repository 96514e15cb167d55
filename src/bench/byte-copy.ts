/**
 * `node dist/bench/byte-copy.js --target HOST:PORT` — the benchmark's measure of what Node.js
 * itself costs a proxy: each client connection gets a server connection of its own and bytes are
 * copied both ways as they come, with no parsing, pooling or routing (so one server connection per
 * client, where the poolers in the run have `pool size`). Prints `byte-copy ready 127.0.0.1:PORT`
 * once listening on a free loopback port. Whatever pgrelay costs above this, per transaction, is
 * pgrelay's own work; what this costs above PgBouncer is the runtime's.
 */
import net from 'node:net';

export interface ByteCopyTarget {
  host: string;
  port: number;
}

/** Listens on a free loopback port and copies each client's bytes to a connection of its own to `target`, and back. */
export function startByteCopy(target: ByteCopyTarget): Promise<net.Server> {
  const server = net.createServer((client) => {
    client.setNoDelay(true);
    const upstream = net.connect(target.port, target.host);
    upstream.setNoDelay(true);
    client.on('data', (chunk: Buffer) => upstream.write(chunk));
    upstream.on('data', (chunk: Buffer) => client.write(chunk));
    const end = (): void => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

function parseTarget(argv: readonly string[]): ByteCopyTarget {
  const at = argv.indexOf('--target');
  const match = at < 0 ? null : /^(127\.\d+\.\d+\.\d+|localhost):(\d+)$/.exec(argv[at + 1] ?? '');
  if (!match) throw new Error('usage: byte-copy --target 127.0.0.1:PORT (loopback only)');
  return { host: match[1]!, port: Number(match[2]) };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const server = await startByteCopy(parseTarget(process.argv.slice(2)));
  const address = server.address() as net.AddressInfo;
  process.stdout.write(`byte-copy ready ${address.address}:${address.port}\n`);
  const stop = (): void => {
    server.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
