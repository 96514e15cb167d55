import type { AdminApp } from './admin-app.js';
import { reloadFromFile } from './config-reload.js';

export interface SignalOptions {
  /** where signals come from: `process` in main.ts */
  signals: NodeJS.EventEmitter;
  /** the config file SIGHUP re-reads */
  configPath: string;
  /** how long SIGTERM/SIGINT let running transactions finish */
  graceMs: number;
  /** a second SIGTERM/SIGINT while stopping: leave now (main.ts exits the process) */
  onForcedExit: () => void;
}

export interface SignalHandling {
  /** resolves once a SIGTERM/SIGINT has stopped the app */
  readonly stopped: Promise<void>;
  /** removes the listeners */
  dispose(): void;
}

/**
 * SIGHUP reloads the config file (an invalid file is logged and the running configuration kept);
 * SIGTERM or SIGINT stop gracefully: no new clients, running transactions get `graceMs` to
 * finish, then everything closes. A second SIGTERM/SIGINT does not wait any longer.
 */
export function handleSignals(app: AdminApp, options: SignalOptions): SignalHandling {
  const { signals, log } = { signals: options.signals, log: app.log };
  let stopping = false;
  let resolveStopped!: () => void;
  const stopped = new Promise<void>((resolve) => (resolveStopped = resolve));
  const onHangup = () => {
    log.info({ file: options.configPath }, 'SIGHUP: reloading the configuration');
    try {
      reloadFromFile(app, options.configPath);
    } catch (error) {
      // a bug must not take the process down with every client on it
      log.error({ err: error instanceof Error ? error.message : String(error) }, 'configuration reload failed');
    }
  };
  const onStop = (signal: string) => {
    if (stopping) {
      log.warn({ signal }, 'second stop signal: not waiting for running transactions');
      options.onForcedExit();
      return;
    }
    stopping = true;
    log.info({ signal, grace_ms: options.graceMs }, 'stopping: no new clients; waiting for running transactions');
    app.stop(options.graceMs).then(resolveStopped, (error: unknown) => {
      log.error({ err: error instanceof Error ? error.message : String(error) }, 'error while stopping');
      resolveStopped();
    });
  };
  signals.on('SIGHUP', onHangup);
  signals.on('SIGTERM', onStop);
  signals.on('SIGINT', onStop);
  return {
    stopped,
    dispose() {
      signals.off('SIGHUP', onHangup);
      signals.off('SIGTERM', onStop);
      signals.off('SIGINT', onStop);
    },
  };
}
