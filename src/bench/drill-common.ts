/** What the failover drills (`npm run drill`, `npm run drill:patroni`) share. */
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';

export { sleep };

/** The admin token of a drill's pgrelay (admin.token): POST /admin/switchover needs it. */
export const DRILL_ADMIN_TOKEN = randomBytes(24).toString('base64url');

/** Headers of an authorized state-changing admin request. */
export function adminHeaders(token: string): Record<string, string> {
  return { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
}

/** Milliseconds for a report: rounded, or n/a when not measured. */
export function ms(value: number): string {
  return Number.isFinite(value) ? `${Math.round(value)} ms` : 'n/a';
}

/** Polls `done` every `intervalMs` until it holds; throws naming `what` after `timeoutMs`. */
export async function until(timeoutMs: number, what: string, done: () => boolean | Promise<boolean>, intervalMs = 5): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await done())) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}
