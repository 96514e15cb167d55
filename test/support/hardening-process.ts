import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { rssBytes } from '../../src/bench/proc.js';
import { Service } from '../../src/bench/service.js';

/**
 * pgrelay as a child process (`node main.js start --config FILE`), for the tests that measure
 * its memory or read its log output. The child runs the current sources: they are compiled once
 * per test worker into a private directory under node_modules/.cache (so that the compiled files
 * still resolve the project's node_modules), not taken from a dist/ that may be stale.
 */
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

let compiled: Promise<string> | undefined;
let compiledDir: string | undefined;

/** Compiles src/ (tsc, as `npm run build` does) into a private directory; returns main.js. */
export function compiledMain(): Promise<string> {
  compiled ??= new Promise((resolve, reject) => {
    const dir = path.join(ROOT, 'node_modules', '.cache', `pgrelay-hardening-${process.pid}-${Date.now()}`);
    compiledDir = dir;
    execFile(process.execPath, [path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', path.join(ROOT, 'tsconfig.build.json'), '--outDir', dir, '--sourceMap', 'false'], { cwd: ROOT, timeout: 300_000 }, (error, stdout) => {
      const main = path.join(dir, 'main.js');
      // type errors elsewhere in a shared tree still emit JavaScript; a missing main.js is a failure
      if (fs.existsSync(main)) resolve(main);
      else reject(new Error(`compiling pgrelay failed: ${error?.message ?? ''}\n${stdout}`));
    });
  });
  return compiled;
}

/** Removes the compiled copy (call in afterAll of the last user in the file). */
export function removeCompiled(): void {
  if (compiledDir) fs.rmSync(compiledDir, { recursive: true, force: true });
  compiled = undefined;
  compiledDir = undefined;
}

export interface RelayChild {
  pid: number;
  port: number;
  adminUrl: string;
  /** everything the process printed so far (stdout and stderr); complete after stop() */
  output(): string;
  rssBytes(): number;
  /** SIGTERM (pgrelay's graceful stop), SIGKILL after `graceMs`; removes its directory */
  stop(graceMs?: number): Promise<void>;
}

/**
 * Starts pgrelay as a child with `document` as its YAML config (listen/admin ports are forced to
 * 0). Resolves once it printed its ready line. Register `stop` for cleanup right away.
 */
export async function startRelayChild(name: string, document: Record<string, unknown>): Promise<RelayChild> {
  const main = await compiledMain();
  const dir = fs.mkdtempSync(path.join(ROOT, 'node_modules', '.cache', `hardening-${name}-`));
  const configFile = path.join(dir, 'pgrelay.yaml');
  const logFile = path.join(dir, 'pgrelay.out');
  fs.writeFileSync(configFile, stringify({ ...document, listen: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 } }), { mode: 0o600 });
  const service = Service.start(name, process.execPath, [main, 'start', '--config', configFile], { logFile, stopSignal: 'SIGTERM' });
  let finalOutput: string | undefined;
  const stop = async (graceMs = 15_000) => {
    await service.stop(graceMs);
    // the log stream is flushed once the process is gone: keep what it printed, then clean up
    await new Promise((resolve) => setTimeout(resolve, 100));
    if (finalOutput === undefined && fs.existsSync(logFile)) finalOutput = fs.readFileSync(logFile, 'utf8');
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    // pgrelay logs its admin address at info level (its log stream may flush after the ready line)
    const listening = service.waitForLine(/"admin":"[^"]+"/, 60_000).catch(() => '');
    const ready = await service.waitForLine(/^pgrelay ready /, 60_000);
    const port = Number(/:(\d+)\/[^/]*$/.exec(ready)?.[1]);
    const level = ((document.log as { level?: string } | undefined)?.level ?? 'info').toLowerCase();
    let timer: NodeJS.Timeout | undefined;
    const line = level === 'debug' || level === 'info' ? await Promise.race([listening, new Promise<string>((resolve) => (timer = setTimeout(() => resolve(''), 10_000)))]) : '';
    clearTimeout(timer);
    const admin = /"admin":"([^"]+)"/.exec(line)?.[1];
    if (!Number.isInteger(port) || port <= 0) throw new Error(`cannot read the port from: ${ready}`);
    return {
      pid: service.pid,
      port,
      adminUrl: admin ? `http://${admin}` : '(set log.level to info or debug to learn the admin address)',
      output: () => finalOutput ?? (fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8') : service.output()),
      rssBytes: () => {
        const rss = rssBytes(service.pid);
        if (rss === undefined) throw new Error(`pgrelay (${name}) is gone; its output:\n${service.output().slice(-2000)}`);
        return rss;
      },
      stop,
    };
  } catch (error) {
    await stop(1000);
    throw error;
  }
}
