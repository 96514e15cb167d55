/**
 * Patroni's REST API as pgrelay uses it: `GET /cluster` (the members and who leads) and
 * `POST /switchover`. Endpoints are tried in turn, starting with the one that answered last.
 * An endpoint may carry credentials (`http://user:password@host:8008`): they are sent as HTTP
 * basic auth and never appear in a log line or an error message (`label` is the URL without them).
 */

/** One member as `GET /cluster` lists it (Patroni 2.x/3.x). */
export interface PatroniMember {
  name: string;
  /** leader | sync_standby | replica | standby_leader (a standby cluster's leader, in recovery) */
  role: string;
  /** running, streaming (3.0.4+), starting, stopped, crashed, creating replica, … */
  state: string;
  host: string | undefined;
  port: number | undefined;
  timeline: number | undefined;
  /** bytes behind the leader as Patroni last saw it (advisory: pgrelay measures lag itself) */
  lagBytes: number | undefined;
  /** where the member's REST API says it is (`…/patroni`), used to reach the leader directly */
  apiUrl: string | undefined;
  /** member tags, e.g. nofailover, noloadbalance */
  tags: Record<string, unknown>;
}

export interface PatroniClusterView {
  members: PatroniMember[];
  /** the member holding the leader key (role `leader`), if any */
  leader: string | undefined;
  /** the synchronous standby(s) */
  syncStandbys: string[];
  /** Patroni is paused (maintenance mode): it will not fail over */
  paused: boolean;
  /** a switchover Patroni will carry out at a set time (POST /switchover with scheduled_at) */
  scheduledSwitchover: ScheduledSwitchover | undefined;
  /** which endpoint answered (without credentials) */
  endpoint: string;
}

export interface ScheduledSwitchover {
  /** epoch milliseconds */
  atMs: number;
  from: string | undefined;
  to: string | undefined;
}

export class PatroniApiError extends Error {
  constructor(
    message: string,
    /** `unreachable`: no endpoint answered; `http`: an answer with an error status; `invalid`: not a /cluster document */
    readonly code: 'unreachable' | 'http' | 'invalid',
    readonly status?: number,
  ) {
    super(message);
    this.name = 'PatroniApiError';
  }
}

interface Endpoint {
  /** base URL without credentials and without a trailing slash */
  base: string;
  /** for logs: scheme, host and port only */
  label: string;
  authorization: string | undefined;
}

export class PatroniClient {
  private endpoints: Endpoint[] = [];
  /** index of the endpoint that answered last */
  private preferred = 0;

  constructor(urls: readonly string[]) {
    this.configure(urls);
  }

  configure(urls: readonly string[]): void {
    this.endpoints = urls.map(parseEndpoint);
    this.preferred = 0;
  }

  /** Endpoint labels (no credentials), for logs and status. */
  get labels(): string[] {
    return this.endpoints.map((e) => e.label);
  }

  /** `GET /cluster` from the first endpoint that answers with a valid document. */
  async cluster(timeoutMs: number): Promise<PatroniClusterView> {
    const failures: string[] = [];
    for (let i = 0; i < this.endpoints.length; i++) {
      const index = (this.preferred + i) % this.endpoints.length;
      const endpoint = this.endpoints[index]!;
      try {
        const response = await request(endpoint, 'GET', '/cluster', undefined, timeoutMs);
        if (response.status !== 200) throw new PatroniApiError(`HTTP ${response.status}`, 'http', response.status);
        const view = parseClusterDocument(response.text, endpoint.label);
        this.preferred = index;
        return view;
      } catch (error) {
        failures.push(`${endpoint.label}: ${describe(error)}`);
      }
    }
    throw new PatroniApiError(`no Patroni endpoint answered GET /cluster (${failures.join('; ')})`, 'unreachable');
  }

  /**
   * `POST /switchover {leader, candidate, scheduled_at}`. Sent to the leader's own REST API first when it is one
   * of the configured endpoints (the leader acts on it at once; another member would leave it to
   * the leader's next loop), then to the others. Resolves with Patroni's answer text on 2xx;
   * rejects with PatroniApiError `http` on a refusal (e.g. 412: the candidate is not the sync standby).
   */
  async switchover(leader: string, candidate: string | undefined, scheduledAt: Date | undefined, leaderApiUrl: string | undefined, timeoutMs: number): Promise<string> {
    const order = [...this.endpoints.keys()];
    const leaderIndex = leaderApiUrl === undefined ? -1 : this.endpoints.findIndex((e) => sameOrigin(e.base, leaderApiUrl));
    if (leaderIndex > 0) order.unshift(...order.splice(leaderIndex, 1));
    const body = JSON.stringify({ leader, ...(candidate === undefined ? {} : { candidate }), ...(scheduledAt === undefined ? {} : { scheduled_at: scheduledAt.toISOString() }) });
    const failures: string[] = [];
    for (const index of order) {
      const endpoint = this.endpoints[index]!;
      let response: { status: number; text: string };
      try {
        response = await request(endpoint, 'POST', '/switchover', body, timeoutMs);
      } catch (error) {
        failures.push(`${endpoint.label}: ${describe(error)}`);
        continue;
      }
      const text = response.text.trim().slice(0, 500);
      if (response.status >= 200 && response.status < 300) return text;
      // Patroni answered and refused (or the outcome is unknown): another member would say the same
      throw new PatroniApiError(`Patroni refused the switchover (HTTP ${response.status}): ${text}`, 'http', response.status);
    }
    throw new PatroniApiError(`no Patroni endpoint took POST /switchover (${failures.join('; ')})`, 'unreachable');
  }
}

/** Parses a `GET /cluster` document; throws PatroniApiError `invalid` when it is not one. */
export function parseClusterDocument(text: string, endpoint = ''): PatroniClusterView {
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch {
    throw new PatroniApiError('the answer is not JSON', 'invalid');
  }
  if (!isObject(document) || !Array.isArray(document['members'])) throw new PatroniApiError('the answer has no "members" list', 'invalid');
  const members: PatroniMember[] = [];
  for (const raw of document['members'] as unknown[]) {
    if (!isObject(raw) || typeof raw['name'] !== 'string' || raw['name'] === '') continue;
    const port = typeof raw['port'] === 'number' ? raw['port'] : typeof raw['port'] === 'string' ? Number(raw['port']) : undefined;
    members.push({
      name: raw['name'],
      role: typeof raw['role'] === 'string' ? raw['role'] : 'replica',
      state: typeof raw['state'] === 'string' ? raw['state'] : '',
      host: typeof raw['host'] === 'string' && raw['host'] !== '' ? raw['host'] : undefined,
      port: port !== undefined && Number.isInteger(port) && port > 0 && port < 65536 ? port : undefined,
      timeline: typeof raw['timeline'] === 'number' ? raw['timeline'] : undefined,
      lagBytes: typeof raw['lag'] === 'number' ? raw['lag'] : undefined,
      apiUrl: typeof raw['api_url'] === 'string' ? raw['api_url'] : undefined,
      tags: isObject(raw['tags']) ? raw['tags'] : {},
    });
  }
  const leaders = members.filter((m) => m.role === 'leader');
  const scheduled = document['scheduled_switchover'];
  const atMs = isObject(scheduled) && typeof scheduled['at'] === 'string' ? Date.parse(scheduled['at']) : NaN;
  return {
    members,
    // two leaders cannot come from one DCS read; should it happen, trust neither
    leader: leaders.length === 1 ? leaders[0]!.name : undefined,
    syncStandbys: members.filter((m) => m.role === 'sync_standby').map((m) => m.name),
    paused: document['pause'] === true,
    scheduledSwitchover:
      isObject(scheduled) && Number.isFinite(atMs)
        ? { atMs, from: typeof scheduled['from'] === 'string' ? scheduled['from'] : undefined, to: typeof scheduled['to'] === 'string' ? scheduled['to'] : undefined }
        : undefined,
    endpoint,
  };
}

/** The endpoint without its credentials, for a log line. */
export function endpointLabel(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.protocol}//${parsed.host}`;
  } catch {
    return '(invalid URL)';
  }
}

function parseEndpoint(url: string): Endpoint {
  const parsed = new URL(url);
  const authorization =
    parsed.username !== '' || parsed.password !== ''
      ? `Basic ${Buffer.from(`${decodeURIComponent(parsed.username)}:${decodeURIComponent(parsed.password)}`).toString('base64')}`
      : undefined;
  parsed.username = '';
  parsed.password = '';
  parsed.search = '';
  parsed.hash = '';
  return { base: parsed.toString().replace(/\/+$/, ''), label: `${parsed.protocol}//${parsed.host}`, authorization };
}

async function request(endpoint: Endpoint, method: 'GET' | 'POST', path: string, body: string | undefined, timeoutMs: number): Promise<{ status: number; text: string }> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (endpoint.authorization) headers['authorization'] = endpoint.authorization;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(endpoint.base + path, { method, headers, body, signal: AbortSignal.timeout(timeoutMs), redirect: 'error' });
  return { status: response.status, text: await response.text() };
}

function sameOrigin(base: string, other: string): boolean {
  try {
    const a = new URL(base);
    const b = new URL(other);
    return a.protocol === b.protocol && a.host === b.host;
  } catch {
    return false;
  }
}

/** An error in words without the URL (which fetch may put in messages) or anything secret. */
function describe(error: unknown): string {
  if (error instanceof PatroniApiError) return error.message;
  if (error instanceof Error) {
    if (error.name === 'TimeoutError' || error.name === 'AbortError') return 'timed out';
    // fetch's messages and causes name the host and port at most, never the credentials
    const cause = (error as Error & { cause?: { code?: unknown; message?: unknown } }).cause;
    if (cause && typeof cause.code === 'string') return cause.code;
    if (cause && typeof cause.message === 'string') return cause.message;
    return error.message;
  }
  return 'failed';
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
