/**
 * Which `DEALLOCATE` of a text must not reach a shared server connection. Server connections
 * hold pgrelay's prepared statements (named with a prefix of pgrelay's own), shared by every
 * client served there, and pgrelay remembers which connection has which. A client may remove
 * only what it made:
 * - `DEALLOCATE name` of one of the client's own protocol-level names is answered by pgrelay
 *   (only the client's name goes) when it is a statement of its own, as a simple Query or through
 *   Parse/Bind/Execute (frontend/extended-deallocate.ts); in a multi-statement text it reaches the
 *   server under the client's name, which the server does not know (26000), or removes the
 *   client's own SQL-level statement;
 * - `DEALLOCATE name` of a server-side name the client did not prepare (pgrelay's prefix) is
 *   refused with 26000, as the server would for a statement that does not exist — in every
 *   statement of a multi-statement text and through Parse too;
 * - `DEALLOCATE ALL` as a statement of its own (a simple Query, or through Parse/Bind/Execute
 *   outside a failed transaction) is the session's to answer (it forgets the client's names, as
 *   PgBouncer does), or a pinned client's to run on its own connection; in a multi-statement text,
 *   where pgrelay could not follow what the server dropped, it is refused with 0A000.
 */
import type { Classification } from './types.js';

export interface DeallocateContext {
  /** the client's own protocol-level statement names */
  isOwn(name: string): boolean;
  /** the prefix of pgrelay's server-side statement names */
  serverPrefix: string;
  /** the text came as a simple Query holding this one statement */
  alone: boolean;
}

export interface DeallocateRefusal {
  sqlstate: '26000' | '0A000';
  message: string;
}

/** The refusal for the first DEALLOCATE of the text that must not run, if one must not. */
export function refusedDeallocate(c: Classification, ctx: DeallocateContext): DeallocateRefusal | undefined {
  for (const effect of c.effects) {
    if (effect.type !== 'deallocate') continue;
    if (effect.name === null) {
      if (ctx.alone) continue;
      return { sqlstate: '0A000', message: 'DEALLOCATE ALL is supported by pgrelay only as a statement on its own (not in a multi-statement text)' };
    }
    if (effect.name.startsWith(ctx.serverPrefix) && !ctx.isOwn(effect.name)) {
      return { sqlstate: '26000', message: `prepared statement "${effect.name}" does not exist` };
    }
  }
  return undefined;
}

/** Whether the text is one DEALLOCATE the session answers itself (see refusedDeallocate). */
export function isLoneDeallocate(c: Classification): boolean {
  return c.statements === 1 && c.effects.length === 1 && c.effects[0]!.type === 'deallocate';
}
