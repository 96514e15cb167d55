/**
 * A long-running program the bench starts (pgrelay, PgBouncer, Pgpool-II): its output goes to a
 * log file (the last lines are kept for error messages), readiness is awaited by a line or a
 * probe, and stop() ends it with the program's own shutdown signal, then SIGKILL on its tree.
 * Programs started through `runuser` are measured and signalled as the program itself (runuser's
 * child), not runuser.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { childrenOf, processTree } from './proc.js';

export interface ServiceOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** all output is appended here */
  logFile: string;
  /** run as this OS user through runuser (only when we are root) */
  runAs?: string;
  /** the signal that makes the program shut down (default SIGTERM) */
  stopSignal?: NodeJS.Signals;
}

const TAIL_CHARS = 8192;

export class Service {
  private tail = '';
  private readonly lineWaiters: { pattern: RegExp; resolve: (line: string) => void }[] = [];
  private exitCode: number | null | undefined;
  readonly exited: Promise<number | null>;
  private lineBuffer = '';

  private constructor(
    readonly name: string,
    private readonly child: ChildProcess,
    private readonly options: ServiceOptions,
  ) {
    const log = fs.createWriteStream(options.logFile, { flags: 'a' });
    const onOutput = (chunk: Buffer) => {
      log.write(chunk);
      const text = chunk.toString('utf8');
      this.tail = (this.tail + text).slice(-TAIL_CHARS);
      this.lineBuffer += text;
      let newline;
      while ((newline = this.lineBuffer.indexOf('\n')) >= 0) {
        const line = this.lineBuffer.slice(0, newline);
        this.lineBuffer = this.lineBuffer.slice(newline + 1);
        for (const waiter of [...this.lineWaiters]) {
          if (waiter.pattern.test(line)) {
            this.lineWaiters.splice(this.lineWaiters.indexOf(waiter), 1);
            waiter.resolve(line);
          }
        }
      }
    };
    child.stdout?.on('data', onOutput);
    child.stderr?.on('data', onOutput);
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exitCode = code ?? (signal ? -1 : null);
        log.end();
        resolve(this.exitCode);
      });
      child.once('error', (error) => {
        this.tail += `\n${error.message}`;
        this.exitCode = -1;
        log.end();
        resolve(-1);
      });
    });
  }

  static start(name: string, command: string, args: readonly string[], options: ServiceOptions): Service {
    const asOther = options.runAs !== undefined && process.getuid?.() === 0;
    const [file, argv] = asOther ? ['runuser', ['-u', options.runAs!, '--', command, ...args]] : [command, [...args]];
    const child = spawn(file, argv, { cwd: options.cwd, env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    return new Service(name, child, { ...options, runAs: asOther ? options.runAs : undefined });
  }

  /** The program's own pid (runuser's child when started through runuser). */
  get pid(): number {
    const pid = this.child.pid ?? 0;
    if (this.options.runAs === undefined) return pid;
    return childrenOf(pid)[0] ?? pid;
  }

  /** The pid whose tree holds the program and everything it forked. */
  get rootPid(): number {
    return this.child.pid ?? 0;
  }

  get running(): boolean {
    return this.exitCode === undefined;
  }

  output(): string {
    return this.tail;
  }

  /** Resolves with the first output line matching `pattern`; rejects on exit or timeout. */
  waitForLine(pattern: RegExp, timeoutMs: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => fail(new Error(`${this.name} did not print ${pattern} within ${timeoutMs} ms; its output:\n${this.tail.slice(-2000)}`)), timeoutMs);
      const waiter = {
        pattern,
        resolve: (line: string) => {
          clearTimeout(timer);
          resolve(line);
        },
      };
      const fail = (error: Error) => {
        clearTimeout(timer);
        const index = this.lineWaiters.indexOf(waiter);
        if (index >= 0) this.lineWaiters.splice(index, 1);
        reject(error);
      };
      this.lineWaiters.push(waiter);
      void this.exited.then((code) => fail(new Error(`${this.name} exited (code ${code}) before it was ready; its output:\n${this.tail.slice(-2000)}`)));
    });
  }

  /** Calls `probe` until it resolves true; fails when the program exits or time runs out. */
  async waitUntil(what: string, timeoutMs: number, probe: () => Promise<boolean>): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let lastError = '';
    while (Date.now() < deadline) {
      if (!this.running) throw new Error(`${this.name} exited (code ${this.exitCode}) before ${what}; its output:\n${this.tail.slice(-2000)}`);
      try {
        if (await probe()) return;
      } catch (error) {
        lastError = error instanceof Error ? error.message : String(error);
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    throw new Error(`${this.name}: timed out after ${timeoutMs} ms waiting for ${what} (${lastError}); its output:\n${this.tail.slice(-2000)}`);
  }

  /** Asks the program to stop; after `graceMs` its whole tree is killed. Idempotent. */
  async stop(graceMs = 15_000, signal: NodeJS.Signals = this.options.stopSignal ?? 'SIGTERM'): Promise<void> {
    if (!this.running) return;
    const tree = processTree(this.rootPid);
    try {
      process.kill(this.pid, signal);
    } catch {
      // already gone
    }
    const timer = new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), graceMs).unref());
    if ((await Promise.race([this.exited, timer])) === 'timeout') this.kill(tree);
    await this.exited;
    // forked children that outlived their parent (should not happen, but never leave them behind)
    this.kill(tree.filter((pid) => processTree(pid).length > 0));
  }

  /** SIGKILL to the program's tree (the synchronous last resort on exit). */
  kill(pids: number[] = processTree(this.rootPid)): void {
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
}
