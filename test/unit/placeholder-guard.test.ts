import { describe, expect, it } from 'vitest';
import { Classifier } from '../../src/classify/classifier.js';
import { PlaceholderGuard, placeholdersDefined, placeholdersRead, type PlaceholderServer } from '../../src/frontend/placeholder-guard.js';

// The custom (dotted) parameters a text defines and reads, and when a unit would read on a
// pooled backend a placeholder another client defined there (issue 16).
describe('placeholdersDefined / placeholdersRead', () => {
  it('finds SET, SET LOCAL, SET SESSION, RESET and set_config of dotted names, normalized; not other SETs', () => {
    expect(placeholdersDefined("SET myapp.x = 1; set local App.Tenant TO '3'; SET SESSION a . b = 2; RESET c.d")).toEqual(['myapp.x', 'app.tenant', 'a.b', 'c.d']);
    expect(placeholdersDefined(`SET custom."Bad-guc" = 42; SELECT set_config('app.tenant', $1, true), set_config('work_mem', '1MB', false)`)).toEqual(['custom.bad-guc', 'app.tenant']);
    expect(placeholdersDefined("SET work_mem = '1MB'; SET SESSION AUTHORIZATION x; SELECT set_config($1, $2, true)")).toEqual([]);
  });

  it('finds SHOW, current_setting and every-setting reads', () => {
    expect(placeholdersRead("SHOW myapp.x; SELECT current_setting('App.Tenant', true), current_setting('work_mem')")).toEqual(['myapp.x', 'app.tenant']);
    expect(placeholdersRead('SHOW ALL')).toEqual(['*']);
    expect(placeholdersRead('SELECT name FROM pg_settings')).toEqual(['*']);
    expect(placeholdersRead("SHOW work_mem; SELECT set_config('a.b', '1', true)")).toEqual([]);
  });
});

describe('PlaceholderGuard', () => {
  const classifier = Classifier.create();
  const conn = (...names: string[]): PlaceholderServer => ({ placeholders: names.length > 0 ? new Set(names) : undefined });

  it('a read of a name another client defined on the connection, not by this client nor in the text', async () => {
    const k = await classifier;
    const guard = new PlaceholderGuard([], () => []);
    const read = "SELECT current_setting('app.tenant', true)";
    expect(guard.wouldSeeForeign(conn('app.tenant'), k.classify(read), read)).toBe(true);
    expect(guard.wouldSeeForeign(conn('other.x'), k.classify(read), read)).toBe(false);
    expect(guard.wouldSeeForeign(conn(), k.classify(read), read)).toBe(false);
    expect(guard.wouldSeeForeign(conn('app.tenant'), k.classify('SHOW ALL'), 'SHOW ALL')).toBe(true);
    // reads of other settings are not concerned, whatever the connection holds
    expect(guard.wouldSeeForeign(conn('app.tenant'), k.classify('SHOW work_mem'), 'SHOW work_mem')).toBe(false);
    const both = "SELECT set_config('app.tenant', '1', true), current_setting('app.tenant')";
    expect(guard.wouldSeeForeign(conn('app.tenant'), k.classify(both), both)).toBe(false);
  });

  it('what the client defined (its statements, its startup parameters) is its own; ran() marks the connection', async () => {
    const k = await classifier;
    const replayed: string[] = ['options.startup'];
    const guard = new PlaceholderGuard(['options.startup', 'work_mem'], () => replayed);
    const server = conn('options.startup', 'app.tenant');
    const read = "SELECT current_setting('options.startup'), current_setting('app.tenant', true)";
    expect(guard.wouldSeeForeign(server, k.classify(read), read)).toBe(true);
    const define = "SELECT set_config('app.tenant', '1', true)";
    const fresh = conn();
    guard.ran(fresh, k.classify(define), define);
    expect(fresh.placeholders).toEqual(new Set(['app.tenant']));
    expect(guard.wouldSeeForeign(server, k.classify(read), read)).toBe(false);
    // the client's session settings are replayed on every connection it is attached to
    replayed.push('myapp.x');
    const other = conn();
    guard.attached(other);
    expect(other.placeholders).toEqual(new Set(['options.startup', 'myapp.x']));
  });

  it('a read of a name the client defined, on a connection that lacks it, is preceded by RESET of that name (once)', async () => {
    const k = await classifier;
    const guard = new PlaceholderGuard([], () => []);
    const define = 'SET custom.my_guc = 42';
    guard.ran(undefined, k.classify(define), define);
    const read = 'SHOW custom.my_guc';
    const server = conn('other.x');
    const query = guard.definitionsFor(server, k.classify(read), read);
    expect(query?.toString('utf8', 5, query.length - 1)).toBe('RESET "custom.my_guc"');
    expect(server.placeholders).toEqual(new Set(['other.x', 'custom.my_guc']));
    expect(guard.definitionsFor(server, k.classify(read), read)).toBeUndefined();
    expect(guard.definitionsFor(conn(), k.classify('SHOW work_mem'), 'SHOW work_mem')).toBeUndefined();
    const all = guard.definitionsFor(conn(), k.classify('SHOW ALL'), 'SHOW ALL');
    expect(all?.toString('utf8', 5, all.length - 1)).toBe('RESET "custom.my_guc"');
  });
});
