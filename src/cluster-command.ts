/**
 * `pgrelay cluster …`: the RDS workflows on the local cluster behind a running `pgrelay demo`,
 * through its admin API (demo-cluster-routes.ts). Prints each step as the server reports it and
 * exits 0 when the workflow is done, 1 when it failed or could not be asked for, 2 on bad usage.
 *
 *   pgrelay cluster add-replica [--name NAME] [--admin URL]   create a read replica from a snapshot
 *   pgrelay cluster add-standby [--name NAME] [--admin URL]   convert single-AZ to Multi-AZ
 *   pgrelay cluster remove NODE [--admin URL]                 drain, detach, stop and delete a node
 */
import type { TextSink } from './config/check.js';
import type { WorkflowEvent } from './local/rds-workflows.js';

export const CLUSTER_USAGE = `  pgrelay cluster add-replica [--name NAME] [--admin http://127.0.0.1:9930]
  pgrelay cluster add-standby [--name NAME] [--admin http://127.0.0.1:9930]
  pgrelay cluster remove NODE [--admin http://127.0.0.1:9930]
`;

export interface ClusterCommandOptions {
  admin: string;
  name?: string;
  /** the admin token (main.ts reads PGRELAY_ADMIN_TOKEN) */
  token?: string;
}

type Request = { method: 'POST' | 'DELETE'; path: string; body?: string };

/** Runs `pgrelay cluster SUBCOMMAND [NODE]`; returns the exit code. */
export async function runClusterCommand(subcommand: string | undefined, node: string | undefined, options: ClusterCommandOptions, out: TextSink, err: TextSink): Promise<number> {
  let request: Request;
  switch (subcommand) {
    case 'add-replica':
    case 'add-standby':
      request = {
        method: 'POST',
        path: subcommand === 'add-replica' ? '/admin/cluster/replicas' : '/admin/cluster/standby',
        body: options.name === undefined ? undefined : JSON.stringify({ name: options.name }),
      };
      break;
    case 'remove':
      if (node === undefined || node === '') {
        err.write(`pgrelay cluster remove: name the node to remove\nusage:\n${CLUSTER_USAGE}`);
        return 2;
      }
      request = { method: 'DELETE', path: `/admin/cluster/nodes/${encodeURIComponent(node)}` };
      break;
    default:
      err.write(`${subcommand === undefined ? '' : `pgrelay cluster: unknown subcommand "${subcommand}"\n`}usage:\n${CLUSTER_USAGE}`);
      return 2;
  }
  const what = `pgrelay cluster ${subcommand}${subcommand === 'remove' ? ` ${node}` : ''}`;
  const base = options.admin.replace(/\/+$/, '');
  let response: Response;
  try {
    response = await fetch(new URL(request.path, `${base}/`), {
      method: request.method,
      headers: { 'content-type': 'application/json', ...(options.token ? { authorization: `Bearer ${options.token}` } : {}) },
      body: request.body,
    });
  } catch (error) {
    err.write(`${what}: cannot reach pgrelay's admin API at ${base}: ${causeText(error)} (is \`pgrelay demo\` running? --admin URL)\n`);
    return 1;
  }
  if (response.status === 404 && !(response.headers.get('content-type') ?? '').includes('json')) {
    err.write(`${what}: the pgrelay at ${base} does not manage a local cluster: these commands work with \`pgrelay demo\`\n`);
    return 1;
  }
  if (!response.ok) {
    const text = await response.text().catch(() => '');
    let message = text.trim();
    try {
      message = (JSON.parse(text) as { error?: string }).error ?? message;
    } catch {
      // not JSON: print it as it is
    }
    const hint = response.status === 401 && !options.token ? ' (set PGRELAY_ADMIN_TOKEN to the admin token; `pgrelay demo` prints it)' : '';
    err.write(`${what}: refused (HTTP ${response.status}): ${message}${hint}\n`);
    return 1;
  }
  out.write(`${what} (${base})\n`);
  let last: WorkflowEvent | undefined;
  try {
    for await (const event of ndjson(response)) {
      last = event;
      if (event.step === 'done' || event.step === 'failed') break;
      out.write(formatEvent(event));
    }
  } catch (error) {
    err.write(`${what}: the connection to pgrelay broke mid-way (${causeText(error)}); \`pgrelay status\` shows where the cluster stands\n`);
    return 1;
  }
  if (last?.step === 'done') {
    out.write(`done in ${seconds(last.elapsedMs)}: ${last.message}\n`);
    return 0;
  }
  if (last?.step === 'failed') {
    err.write(`${what}: FAILED after ${seconds(last.elapsedMs)}: ${last.error ?? last.message}\n`);
    return 1;
  }
  err.write(`${what}: pgrelay ended the answer before the workflow said done or failed; \`pgrelay status\` shows where the cluster stands\n`);
  return 1;
}

/** `  [  2.3 s] snapshot   copied 12.0 MB of 30.1 MB (40%), 11.9 MB/s` */
export function formatEvent(event: WorkflowEvent): string {
  return `  [${seconds(event.elapsedMs).padStart(7)}] ${event.step.padEnd(12)}${event.message}\n`;
}

async function* ndjson(response: Response): AsyncGenerator<WorkflowEvent> {
  if (!response.body) return;
  const decoder = new TextDecoder();
  let pending = '';
  for await (const chunk of response.body) {
    pending += decoder.decode(chunk as Uint8Array, { stream: true });
    let newline: number;
    while ((newline = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, newline).trim();
      pending = pending.slice(newline + 1);
      if (line !== '') yield JSON.parse(line) as WorkflowEvent;
    }
  }
  if (pending.trim() !== '') yield JSON.parse(pending) as WorkflowEvent;
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

function causeText(error: unknown): string {
  const cause = error instanceof Error && error.cause instanceof Error ? error.cause : error;
  return cause instanceof Error ? cause.message : String(cause);
}
