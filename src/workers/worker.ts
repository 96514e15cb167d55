import { App } from '../app.js';
import type { Logger } from '../util/log.js';
import { LeaderLink } from './follower.js';
import { isPgrelayMessage, type LeaderMessage, type WorkerMessage } from './messages.js';
import { workerConfig } from './worker-config.js';

/** node:cluster gives a worker `process.send`; the leader's messages arrive on `process`. */
export interface WorkerProcess {
  send(message: WorkerMessage): void;
  on(event: 'message' | 'disconnect', listener: (message?: unknown) => void): void;
  off(event: 'message' | 'disconnect', listener: (message?: unknown) => void): void;
}

/**
 * One worker process (workers mode): waits for the leader's `init` (its slot, the config, the
 * topology), runs the data path (App with a LeaderLink), says where it listens, and stops when the
 * leader says so — or at once, with its clients, when the leader is gone (no orphan process).
 */
export async function runWorker(channel: WorkerProcess, makeLog: (slot: number, config: App['currentConfig']) => Logger): Promise<number> {
  const init = await new Promise<Extract<LeaderMessage, { pgrelay: 'init' }>>((resolve) => {
    const onMessage = (message?: unknown) => {
      if (!isPgrelayMessage<LeaderMessage>(message) || message.pgrelay !== 'init') return;
      channel.off('message', onMessage);
      resolve(message);
    };
    channel.on('message', onMessage);
    channel.send({ pgrelay: 'hello' });
  });
  const log = makeLog(init.slot, init.config);
  const link = new LeaderLink(init.slot, init.count, (message) => channel.send(message), init.topology);
  const onMessage = (message?: unknown) => link.handle(message);
  channel.on('message', onMessage);
  let leaderGone!: () => void;
  const disconnected = new Promise<number>((resolve) => (leaderGone = () => resolve(0)));
  channel.on('disconnect', () => leaderGone());

  const app = await App.start(workerConfig(init.config, init.count, init.slot), { log, follower: link });
  const address = app.listenAddress!;
  channel.send({ pgrelay: 'listening', host: address.address, port: address.port, family: address.family });
  const graceMs = await Promise.race([link.stopRequested, disconnected]);
  link.close();
  await app.stop(graceMs);
  channel.off('message', onMessage);
  return 0;
}
