import type { AdminApp } from './admin/admin-app.js';
import { json, type AdminResponse, type AdminServer } from './admin/admin-server.js';
import { applyConfig } from './admin/config-reload.js';
import type { LocalCluster } from './local/cluster.js';
import { ClusterWorkflows, WorkflowRefused, type RelayControl, type WorkflowEvent, type WorkflowKind } from './local/rds-workflows.js';

/**
 * Demo only (next to demo.ts, so that the ops API in admin/ does not depend on local/).
 * The admin API of a pgrelay that fronts a local cluster it manages (`pgrelay demo`): the RDS
 * workflows (local/rds-workflows.ts), each answered as NDJSON, one WorkflowEvent per line as the
 * step happens, the last line `done` or `failed`:
 *   POST   /admin/cluster/replicas      add a read replica        body: {"name": "replica3"} (optional)
 *   POST   /admin/cluster/standby       add a synchronous standby (single-AZ → Multi-AZ)
 *   DELETE /admin/cluster/nodes/NAME    drain, detach, stop and delete a node
 *   GET    /admin/cluster               the local cluster's nodes and the workflow running, if any
 * A request refused before anything changed gets 400/404/409 and {"error": "…"}.
 * A pgrelay started from a config file has none of these routes (404).
 */
export function registerClusterRoutes(admin: AdminServer, app: AdminApp, cluster: LocalCluster): ClusterWorkflows {
  const workflows = new ClusterWorkflows(cluster, relayControl(app));
  const run = (kind: WorkflowKind, name: string | undefined): AdminResponse => {
    if (app.stopping) return json(409, { error: 'pgrelay is shutting down' });
    const lines = new LineQueue();
    try {
      workflows.start(kind, { name }, (event) => {
        log(app, kind, event);
        lines.push(JSON.stringify(event) + '\n');
        if (event.step === 'done' || event.step === 'failed') lines.end();
      });
    } catch (error) {
      if (error instanceof WorkflowRefused) return json(error.status, { error: error.message });
      throw error;
    }
    return { status: 200, body: lines, contentType: 'application/x-ndjson; charset=utf-8' };
  };
  admin
    .route('GET', '/admin/cluster', () => {
      const running = workflows.running;
      return json(200, {
        base_dir: cluster.baseDir,
        primary: cluster.primary().name,
        nodes: cluster.nodes.map((n) => ({ name: n.name, role: n.role, host: n.host, port: n.port })),
        running: running ? { kind: running.kind, node: running.node } : null,
      });
    })
    .route('POST', '/admin/cluster/replicas', (_request, body) => {
      const name = requestedName(body);
      return typeof name === 'object' ? name : run('add-replica', name);
    })
    .route('POST', '/admin/cluster/standby', (_request, body) => {
      const name = requestedName(body);
      return typeof name === 'object' ? name : run('add-standby', name);
    })
    .route('DELETE', '/admin/cluster/nodes/*', (request) => {
      const path = (request.url ?? '').split('?')[0]!;
      let name: string;
      try {
        name = decodeURIComponent(path.slice('/admin/cluster/nodes/'.length));
      } catch {
        return json(400, { error: 'the node name in the path is not valid percent-encoding' });
      }
      return run('remove', name);
    });
  return workflows;
}

/** The running pgrelay as the workflows see it. */
export function relayControl(app: AdminApp): RelayControl {
  return {
    config: () => app.currentConfig,
    apply: (next) => {
      const outcome = applyConfig(app, next);
      if (outcome.result === 'rejected') throw new Error(`pgrelay rejected the new configuration: ${(outcome.errors ?? []).join('; ')}`);
      return outcome.changes ?? 'no change';
    },
    primaryName: () => app.topology.primaryName,
    node: (name) => {
      const node = app.topology.node(name);
      if (!node) return undefined;
      return {
        up: node.up,
        role: node.role,
        replicating: node.replicating,
        fresh: node.fresh,
        lagSeconds: node.lagSeconds,
        lagBytes: node.lagBytes,
        staleReason: node.staleReason,
      };
    },
    connections: (name) => {
      let active = 0;
      let total = 0;
      for (const pool of app.pools.ofNode(name)) {
        const stats = pool.stats();
        active += stats.active;
        total += stats.active + stats.idle + stats.connecting;
      }
      return { active, total };
    },
    closeNode: (name) => app.pools.closeNode(name),
    changingPrimary: () => app.failover.inProgress !== undefined,
  };
}

/** The optional {"name": "…"} of an add request; an AdminResponse when the body is not acceptable. */
function requestedName(body: string): string | undefined | AdminResponse {
  if (body.trim() === '') return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    return json(400, { error: 'the request body must be JSON, e.g. {"name": "replica3"}, or empty' });
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) return json(400, { error: 'the request body must be a JSON object' });
  const name = (parsed as Record<string, unknown>).name;
  if (name === undefined) return undefined;
  if (typeof name !== 'string') return json(400, { error: '"name" must be a string' });
  return name;
}

function log(app: AdminApp, kind: WorkflowKind, event: WorkflowEvent): void {
  const fields = { workflow: kind, node: event.node, step: event.step, elapsedMs: event.elapsedMs };
  if (event.step === 'failed') app.log.error({ ...fields, err: event.error }, `cluster ${kind}: ${event.message}`);
  else if (event.step === 'done' || event.step === 'check' || event.step === 'pgrelay' || event.step === 'rollback') app.log.info(fields, `cluster ${kind}: ${event.message}`);
  else app.log.debug(fields, `cluster ${kind}: ${event.message}`);
}

/** Lines handed to the HTTP response as they come (the admin server streams an async iterable). */
class LineQueue implements AsyncIterable<string> {
  private lines: string[] = [];
  private ended = false;
  private wake: (() => void) | undefined;

  push(line: string): void {
    if (this.ended) return;
    this.lines.push(line);
    this.wake?.();
  }

  end(): void {
    this.ended = true;
    this.wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<string> {
    for (;;) {
      if (this.lines.length > 0) {
        const batch = this.lines.join('');
        this.lines = [];
        yield batch;
        continue;
      }
      if (this.ended) return;
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = undefined;
    }
  }
}
