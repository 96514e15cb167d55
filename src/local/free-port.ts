/**
 * Free loopback TCP ports for nodes. The port is found by binding port 0 and closing, so another
 * process can still take it before PostgreSQL binds: callers retry a start that fails with
 * "Address already in use". Ports handed out recently are remembered so that nodes built in
 * parallel by this process never get the same one.
 */
import net from 'node:net';

const RECENT_LIMIT = 256;
const recentlyHandedOut: number[] = [];

export async function findFreePort(host = '127.0.0.1'): Promise<number> {
  for (;;) {
    const port = await bindAndRelease(host);
    if (recentlyHandedOut.includes(port)) continue;
    recentlyHandedOut.push(port);
    if (recentlyHandedOut.length > RECENT_LIMIT) recentlyHandedOut.shift();
    return port;
  }
}

function bindAndRelease(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, host, () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => (port > 0 ? resolve(port) : reject(new Error('could not read the bound port'))));
    });
  });
}
