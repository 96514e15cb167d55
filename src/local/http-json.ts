/** A small JSON-over-HTTP client for Patroni's REST API and etcd's gRPC gateway. */

/** A small JSON-over-HTTP call with a timeout (Patroni's REST API and etcd's gateway). */
export async function httpJson(method: 'GET' | 'POST' | 'PATCH', url: string, body?: unknown, timeoutMs = 5_000): Promise<unknown> {
  const response = await fetch(url, {
    method,
    signal: AbortSignal.timeout(timeoutMs),
    ...(body === undefined ? {} : { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${url}: HTTP ${response.status} ${text.trim().slice(0, 300)}`);
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}
