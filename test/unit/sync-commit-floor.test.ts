import { loadModule } from 'libpg-query';
import { beforeAll, describe, expect, it } from 'vitest';
import { startupSyncCommitRefusal, syncCommitFloorFrame, syncCommitLevel, syncCommitRefusal } from '../../src/routing/sync-commit-floor.js';

// routing.min_synchronous_commit: what a client may not do to synchronous_commit.
beforeAll(async () => {
  await loadModule();
});

const refused = (sql: string, floor: Parameters<typeof syncCommitRefusal>[1] = 'on') => syncCommitRefusal(sql, floor)?.message;

describe('syncCommitRefusal', () => {
  it('refuses SET below the floor in every spelling PostgreSQL accepts', () => {
    for (const sql of [
      'SET synchronous_commit = off',
      'SET synchronous_commit TO local',
      "set SYNCHRONOUS_COMMIT = 'OFF'",
      'SET SESSION synchronous_commit = remote_write',
      'SET LOCAL synchronous_commit = off',
      'SET synchronous_commit = 0',
      'SET synchronous_commit = false',
      'SET "synchronous_commit" = no',
      'SET U&"synchronous\\005fcommit" = off',
      'SELECT 1; SET synchronous_commit = off',
      'ALTER ROLE app SET synchronous_commit = off',
      'ALTER DATABASE app SET synchronous_commit TO local',
      'ALTER SYSTEM SET synchronous_commit = off',
      'CREATE FUNCTION f() RETURNS int LANGUAGE sql SET synchronous_commit = off AS $$SELECT 1$$',
    ]) {
      expect(refused(sql), sql).toMatch(/^SET synchronous_commit = (off|local|remote_write) is not allowed: pgrelay keeps synchronous_commit at on or above \(routing\.min_synchronous_commit\)/);
    }
    expect(syncCommitRefusal('SET synchronous_commit = off', 'on')!.sqlstate).toBe('42501');
  });

  it('allows the floor and above, DEFAULT, RESET, other settings and text that merely mentions it', () => {
    for (const sql of [
      'SET synchronous_commit = on',
      'SET synchronous_commit = remote_apply',
      'SET synchronous_commit = 1',
      'SET synchronous_commit = yes',
      'SET synchronous_commit TO DEFAULT',
      'RESET synchronous_commit',
      'SHOW synchronous_commit',
      "SELECT current_setting('synchronous_commit')",
      "SELECT 'SET synchronous_commit = off'",
      'SET statement_timeout = 0',
      "SELECT set_config('application_name', 'x', false)",
      'SET synchronous_commit = bogus', // PostgreSQL refuses it itself
      'SET synchronous_commit = = off', // a syntax error: PostgreSQL says so
    ]) {
      expect(refused(sql), sql).toBeUndefined();
    }
  });

  it('refuses set_config below the floor, with a value it cannot check, or with a computed name and a value that could lower it (pg_dump\'s computed name with a constant value passes)', () => {
    expect(refused("SELECT set_config('synchronous_commit', 'off', false)")).toMatch(/^set_config\('synchronous_commit', 'off'\) is not allowed/);
    expect(refused("SELECT pg_catalog.set_config('Synchronous_Commit', 'local'::text, true)")).toMatch(/not allowed/);
    expect(refused("SELECT set_config('synchronous_commit', $1, false)")).toMatch(/value that is not a constant cannot be checked/);
    expect(refused("SELECT set_config('synchronous' || '_commit', 'off', false)")).toMatch(/setting name that is not a constant cannot be checked/);
    expect(refused("SELECT set_config('synchronous_commit', 'remote_apply', false)")).toBeUndefined();
    // a computed name with a value of both unknown: refused; with a constant value that is no level below the floor: allowed
    expect(refused('SELECT set_config(name, $1, false) FROM pg_settings')).toMatch(/setting name that is not a constant cannot be checked/);
    expect(refused("SELECT set_config(name, 'No', false) FROM pg_settings")).toMatch(/setting name that is not a constant cannot be checked/);
    expect(refused("SELECT set_config(name, 'view, foreign-table', false) FROM pg_settings WHERE name = 'restrict_nonsystem_relation_kind'")).toBeUndefined();
    expect(refused("SELECT set_config(name, 'on', false) FROM pg_settings")).toBeUndefined();
    // someone else's set_config is not PostgreSQL's
    expect(refused("SELECT myschema.set_config('synchronous_commit', 'off', false)")).toBeUndefined();
  });

  it('follows the configured floor; off checks nothing', () => {
    expect(refused('SET synchronous_commit = local', 'local')).toBeUndefined();
    expect(refused('SET synchronous_commit = off', 'local')).toMatch(/at local or above/);
    expect(refused('SET synchronous_commit = on', 'remote_apply')).toMatch(/SET synchronous_commit = on is not allowed/);
    expect(refused('SET synchronous_commit = off', 'off')).toBeUndefined();
  });
});

describe('levels and startup parameters', () => {
  it('names levels as PostgreSQL does', () => {
    expect(['off', 'local', 'remote_write', 'on', 'remote_apply', 'TRUE', 'no', '1'].map(syncCommitLevel)).toEqual(['off', 'local', 'remote_write', 'on', 'remote_apply', 'on', 'off', 'on']);
    expect(syncCommitLevel('of')).toBeUndefined();
  });

  it('refuses a startup parameter below the floor', () => {
    expect(startupSyncCommitRefusal(new Map([['synchronous_commit', 'off']]), 'on')?.message).toMatch(/^startup parameter synchronous_commit=off is not allowed/);
    expect(startupSyncCommitRefusal(new Map([['Synchronous_Commit', 'local']]), 'on')?.sqlstate).toBe('42501');
    expect(startupSyncCommitRefusal(new Map([['synchronous_commit', 'on'], ['application_name', 'off']]), 'on')).toBeUndefined();
  });
});

describe('syncCommitFloorFrame', () => {
  it('replaces a refused Query with a DO that raises 42501 with the message', () => {
    const frame = syncCommitFloorFrame('SET synchronous_commit = off', 'on')!;
    expect(String.fromCharCode(frame[0]!)).toBe('Q');
    expect(frame.readInt32BE(1)).toBe(frame.length - 1);
    const text = frame.toString('utf8', 5, frame.length - 1);
    expect(text).toMatch(/^DO 'BEGIN RAISE EXCEPTION USING ERRCODE = ''42501'', MESSAGE = ''SET synchronous_commit = off is not allowed: /);
    expect(syncCommitFloorFrame('SET synchronous_commit = on', 'on')).toBeUndefined();
  });

  it('keeps a Parse\u2019s name and number of parameters (unspecified types become text)', () => {
    const types = Buffer.alloc(2 + 8);
    types.writeInt16BE(2, 0);
    types.writeInt32BE(0, 2);
    types.writeInt32BE(23, 6);
    const frame = syncCommitFloorFrame("SELECT set_config('synchronous_commit', $1, $2::boolean)", 'on', { name: 's1', types })!;
    expect(String.fromCharCode(frame[0]!)).toBe('P');
    const body = frame.subarray(5);
    const nameEnd = body.indexOf(0);
    expect(body.toString('utf8', 0, nameEnd)).toBe('s1');
    const textEnd = body.indexOf(0, nameEnd + 1);
    expect(body.toString('utf8', nameEnd + 1, textEnd)).toMatch(/^DO 'BEGIN RAISE EXCEPTION/);
    expect(body.readInt16BE(textEnd + 1)).toBe(2);
    expect([body.readInt32BE(textEnd + 3), body.readInt32BE(textEnd + 7)]).toEqual([25, 23]);
    // a client that declares no types (node-postgres): as many as the text uses, as text
    const undeclared = syncCommitFloorFrame("SELECT set_config('synchronous_commit', $1, false)", 'on', { name: '', types: Buffer.from([0, 0]) })!;
    expect(undeclared.readInt16BE(undeclared.length - 6)).toBe(1);
    expect(undeclared.readInt32BE(undeclared.length - 4)).toBe(25);
  });
});
