import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../util/log.js';
import { checkAdminRequest, type AdminAccessConfig } from './admin-guard.js';

export type AdminHandler = (request: http.IncomingMessage, body: string) => Promise<AdminResponse> | AdminResponse;

export interface AdminResponse {
  status: number;
  /** an async iterable is streamed (chunked), one write per item, as the items come */
  body: string | Buffer | AsyncIterable<string>;
  contentType?: string;
}

/**
 * The admin HTTP port: a small router from "METHOD /path" to handlers. The handlers live with
 * what they report on (app.ts wires them); this file only serves them, each request after
 * admin-guard.ts let it through (Host, Origin, token, JSON content type); handlers that take a
 * body parse it as JSON and refuse anything else (400). HTTPS when admin.cert and admin.key are set.
 */
export class AdminServer {
  private server: http.Server | undefined;
  private secure = false;
  private readonly routes = new Map<string, AdminHandler>();

  /** `access`: the current admin settings (token, read access, hosts), read per request (reload) */
  constructor(
    private readonly log: Logger,
    private readonly access: () => AdminAccessConfig,
  ) {}

  /** `path` ending in `/*` serves every path under it (the handler reads the rest from request.url). */
  route(method: string, path: string, handler: AdminHandler): this {
    this.routes.set(`${method} ${path}`, handler);
    return this;
  }

  private handlerFor(method: string | undefined, path: string): AdminHandler | undefined {
    const exact = this.routes.get(`${method} ${path}`);
    if (exact) return exact;
    const wanted = `${method} ${path}`;
    for (const [key, handler] of this.routes) {
      const prefix = key.slice(0, -1); // "DELETE /admin/cluster/nodes/"
      if (key.endsWith('/*') && wanted.length > prefix.length && wanted.startsWith(prefix)) return handler;
    }
    return undefined;
  }

  listen(host: string, port: number, tls?: { cert: string; key: string }): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      const serve = (request: http.IncomingMessage, response: http.ServerResponse) => void this.serve(request, response);
      this.secure = tls !== undefined;
      const server = tls ? https.createServer({ cert: readFileSync(tls.cert), key: readFileSync(tls.key) }, serve) : http.createServer(serve);
      server.keepAliveTimeout = 5000;
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        this.server = server;
        resolve(server.address() as AddressInfo);
      });
    });
  }

  private async serve(request: http.IncomingMessage, response: http.ServerResponse): Promise<void> {
    const path = (request.url ?? '/').split('?')[0]!;
    const verdict = checkAdminRequest({ method: request.method ?? 'GET', path, headers: request.headers }, this.access(), this.secure);
    if (!verdict.ok) {
      this.log.warn({ method: request.method, path, status: verdict.status, reason: verdict.error }, 'admin request refused');
      response.writeHead(verdict.status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...verdict.headers });
      response.end(JSON.stringify({ error: verdict.error }) + '\n');
      request.resume();
      return;
    }
    const handler = this.handlerFor(request.method, path);
    try {
      if (!handler) {
        const allowed = [...this.routes.keys()].filter((k) => k.endsWith(` ${path}`));
        send(response, allowed.length > 0 ? { status: 405, body: 'method not allowed\n' } : { status: 404, body: 'not found\n' });
        return;
      }
      let body = '';
      for await (const chunk of request) {
        body += chunk;
        if (body.length > 1 << 20) throw new Error('request body too large');
      }
      const result = await handler(request, body);
      if (typeof result.body === 'string' || Buffer.isBuffer(result.body)) send(response, { ...result, body: result.body });
      else await stream(response, result, result.body);
    } catch (error) {
      if (response.headersSent) {
        this.log.warn({ path, err: error instanceof Error ? error.message : String(error) }, 'admin response stream failed');
        response.destroy();
        return;
      }
      this.log.warn({ path, err: error instanceof Error ? error.message : String(error) }, 'admin request failed');
      send(response, { status: 500, body: JSON.stringify({ error: error instanceof Error ? error.message : String(error) }) + '\n', contentType: 'application/json' });
    }
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (!this.server) return resolve();
      this.server.closeAllConnections();
      this.server.close(() => resolve());
    });
  }
}

/** Writes each item as it comes, waiting for 'drain' when the client reads slowly; stops early if it goes away. */
async function stream(response: http.ServerResponse, result: AdminResponse, items: AsyncIterable<string>): Promise<void> {
  response.writeHead(result.status, { 'content-type': result.contentType ?? 'text/plain; charset=utf-8', 'cache-control': 'no-store' });
  response.flushHeaders();
  for await (const item of items) {
    if (response.destroyed) continue; // the producer runs to its end; nobody reads any more
    if (!response.write(item)) await new Promise<void>((resolve) => {
      const done = () => {
        response.off('drain', done);
        response.off('close', done);
        resolve();
      };
      response.on('drain', done);
      response.on('close', done);
    });
  }
  response.end();
}

function send(response: http.ServerResponse, result: AdminResponse & { body: string | Buffer }): void {
  response.writeHead(result.status, { 'content-type': result.contentType ?? 'text/plain; charset=utf-8', 'cache-control': 'no-store' });
  response.end(result.body);
}

export function json(status: number, value: unknown): AdminResponse {
  return { status, body: JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 2) + '\n', contentType: 'application/json' };
}
