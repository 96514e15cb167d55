import type { LocalCluster } from '../local/cluster.js';
import { registerForExitCleanup, unregisterForExitCleanup } from '../local/exit-cleanup.js';
import type { Service } from './service.js';

/**
 * What a benchmark-side command (`npm run bench`, `npm run regress`) starts — its services and
 * its local cluster — stopped at its end by `stop()`, on SIGINT or SIGTERM (then the process exits
 * with 130), and at process exit (services killed).
 */
export class RunResources {
  readonly services: Service[] = [];
  cluster: LocalCluster | undefined;
  private interrupted = false;
  private readonly exitCleanup = { stopSync: () => this.services.forEach((s) => s.kill()) };
  private readonly onSignal = (signal: NodeJS.Signals) => {
    if (this.interrupted) return;
    this.interrupted = true;
    this.say(`${signal}: stopping everything`);
    for (const s of this.services) s.kill();
    void (this.cluster?.stop() ?? Promise.resolve()).finally(() => {
      this.afterInterrupt();
      process.exit(130);
    });
  };

  /** `afterInterrupt`: what else goes when a signal stops the run (the work directory) */
  constructor(
    private readonly say: (line: string) => void,
    private readonly afterInterrupt: () => void,
  ) {
    registerForExitCleanup(this.exitCleanup);
    process.on('SIGINT', this.onSignal);
    process.on('SIGTERM', this.onSignal);
  }

  /** Stops the services, then the cluster. */
  async stop(): Promise<void> {
    process.off('SIGINT', this.onSignal);
    process.off('SIGTERM', this.onSignal);
    for (const service of this.services.splice(0)) await service.stop().catch(() => service.kill());
    unregisterForExitCleanup(this.exitCleanup);
    if (this.cluster) {
      this.say('stopping the cluster');
      await this.cluster.stop();
    }
  }
}
