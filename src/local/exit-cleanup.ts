/**
 * Safety net: local clusters still alive when this process ends are torn down synchronously, so a
 * crashed or interrupted test run leaves no postgres behind (pg_ctl detaches the postmaster into
 * its own session, so it would otherwise outlive us).
 *
 * On SIGINT/SIGTERM/SIGHUP the net acts only when nobody else listens for that signal: it then
 * cleans up and re-raises the signal so the process still dies of it. When the application has
 * its own handler, that handler owns shutdown and the 'exit' hook still runs at the end.
 */

export interface ExitCleanup {
  /** Stops every node and removes the cluster's files; synchronous, never throws. */
  stopSync(): void;
}

const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/**
 * One registry per process, not per module instance: test runners may load this module several
 * times in one process, and several sets of signal listeners would each defer to the others.
 */
const REGISTRY_KEY = Symbol.for('pgrelay.local.exit-cleanup');
interface Registry {
  live: Set<ExitCleanup>;
}
const globals = globalThis as typeof globalThis & { [REGISTRY_KEY]?: Registry };

export function registerForExitCleanup(cluster: ExitCleanup): void {
  registry().live.add(cluster);
}

export function unregisterForExitCleanup(cluster: ExitCleanup): void {
  globals[REGISTRY_KEY]?.live.delete(cluster);
}

function registry(): Registry {
  let current = globals[REGISTRY_KEY];
  if (current === undefined) {
    current = { live: new Set() };
    globals[REGISTRY_KEY] = current;
    install(current);
  }
  return current;
}

function stopAll(live: Set<ExitCleanup>): void {
  for (const cluster of [...live]) {
    live.delete(cluster);
    try {
      cluster.stopSync();
    } catch {
      // best effort: keep going with the other clusters
    }
  }
}

function install({ live }: Registry): void {
  process.on('exit', () => stopAll(live));
  for (const signal of SIGNALS) {
    const onSignal = (): void => {
      if (process.listenerCount(signal) > 1) return; // the application handles it
      stopAll(live);
      process.removeListener(signal, onSignal);
      process.kill(process.pid, signal);
    };
    process.on(signal, onSignal);
  }
}
