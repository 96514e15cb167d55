/**
 * Reading libpg-query parse-tree nodes: a node's tag and body, constants as booleans or strings,
 * DefElem lists, temporary relations and a readable name for a statement node.
 */
import type { DefElem, Node, RangeVar } from 'libpg-query';

const STATEMENT_NAMES: Readonly<Record<string, string>> = {
  CreateStmt: 'CREATE TABLE',
  IndexStmt: 'CREATE INDEX',
  ViewStmt: 'CREATE VIEW',
  CreateSeqStmt: 'CREATE SEQUENCE',
  RuleStmt: 'CREATE RULE',
  CreateTrigStmt: 'CREATE TRIGGER',
  DefineStmt: 'CREATE',
  RefreshMatViewStmt: 'REFRESH MATERIALIZED VIEW',
  CheckPointStmt: 'CHECKPOINT',
  SecLabelStmt: 'SECURITY LABEL',
  TruncateStmt: 'TRUNCATE',
  CopyStmt: 'COPY',
  DoStmt: 'DO',
  CallStmt: 'CALL',
};

/** A readable name for a statement node, e.g. AlterTableStmt → "ALTER TABLE". */
export function statementName(tag: string, body: Record<string, unknown>): string {
  if (tag === 'VacuumStmt') return body['is_vacuumcmd'] ? 'VACUUM' : 'ANALYZE';
  if (tag === 'GrantStmt') return body['is_grant'] ? 'GRANT' : 'REVOKE';
  if (tag === 'CreateTableAsStmt') return body['objtype'] === 'OBJECT_MATVIEW' ? 'CREATE MATERIALIZED VIEW' : 'CREATE TABLE AS';
  return (
    STATEMENT_NAMES[tag] ??
    tag
      .replace(/Stmt$/, '')
      .replace(/([a-z])([A-Z])/g, '$1 $2')
      .toUpperCase()
  );
}

/** The single key of a parse-tree node, e.g. `{ SelectStmt: {…} }` → ['SelectStmt', {…}]. */
export function unwrap(node: Node | undefined): [string, Record<string, unknown>] | undefined {
  if (node === undefined) return undefined;
  for (const tag in node) return [tag, (node as unknown as Record<string, Record<string, unknown>>)[tag]!];
  return undefined;
}

/** PostgreSQL's parse_bool: true/false, yes/no, on/off, 1/0 and unique prefixes. */
function parseBool(text: string): boolean | undefined {
  const v = text.trim().toLowerCase();
  if (v.length === 0) return undefined;
  if ('true'.startsWith(v) || 'yes'.startsWith(v) || v === 'on' || v === '1') return true;
  if ('false'.startsWith(v) || 'no'.startsWith(v) || (v.length >= 2 && 'off'.startsWith(v)) || v === '0') return false;
  return undefined;
}

/** The boolean value of a constant node (A_Const, String, Integer, Boolean), if it has one. */
export function constantBool(node: Node | undefined): boolean | undefined {
  const u = unwrap(node);
  if (!u) return undefined;
  const [tag, body] = u;
  const value = tag === 'A_Const' ? body : { [tag]: body };
  const s = value['sval'] ?? value['String'];
  if (s && typeof s === 'object') return parseBool(String((s as { sval?: string }).sval ?? ''));
  const i = value['ival'] ?? value['Integer'];
  if (i && typeof i === 'object') {
    const n = (i as { ival?: number }).ival ?? 0;
    return n === 1 ? true : n === 0 ? false : undefined;
  }
  const b = value['boolval'] ?? value['Boolean'];
  if (b && typeof b === 'object') return (b as { boolval?: boolean }).boolval ?? false;
  return undefined;
}

/** A string or number constant: the lexer masks it, so texts that differ in it share a shape. */
export function isMaskedConstant(node: Node | undefined): boolean {
  const u = unwrap(node);
  return u !== undefined && u[0] === 'A_Const' && (u[1]['sval'] !== undefined || u[1]['ival'] !== undefined || u[1]['fval'] !== undefined);
}

export function constantString(node: Node | undefined): string | undefined {
  const u = unwrap(node);
  if (!u) return undefined;
  const [tag, body] = u;
  const s = tag === 'A_Const' ? body['sval'] : tag === 'String' ? body : undefined;
  return s && typeof s === 'object' ? (s as { sval?: string }).sval : undefined;
}

export function defElems(options: Node[] | undefined): DefElem[] {
  const out: DefElem[] = [];
  for (const o of options ?? []) if ('DefElem' in o) out.push(o.DefElem);
  return out;
}

export function isTempRelation(rv: RangeVar | undefined): boolean {
  return rv !== undefined && (rv.relpersistence === 't' || (rv.schemaname ?? '').startsWith('pg_temp'));
}
