import { BackendCode, FrontendCode } from '../protocol/codes.js';
import { readErrorFields } from '../protocol/messages.js';
import { SqlState } from '../errors.js';

/**
 * A unit queued behind one whose cancel is on its way may receive that cancel itself (PostgreSQL's
 * CancelRequest hits whatever the backend runs when the signal lands). Such a unit's answer is held
 * back while it holds only what comes before a statement's outcome (see isHoldable): heads, and
 * rows, which a server sends before it learns of the cancel when the signal lands between two rows.
 * If the answer then ends in 57014 with no statement completed, its unit committed nothing (a
 * simple Query is its own implicit transaction, an extended run of one statement ends at its Sync,
 * both rolled back on error) and its client saw nothing of it: the pipeline writes it again (see
 * ServerPipeline) and the client never learns of it.
 */

/** How often one unit is written again after a cancel meant for another. */
export const MAX_RERUNS = 3;

/** Bytes of one held answer, past which it is handed on (and can no longer be written again). */
export const MAX_HELD_BYTES = 64 * 1024;

/** Messages a unit's answer may hold before a statement's outcome: held, not yet handed on. */
export function isHoldable(code: number): boolean {
  switch (code) {
    case BackendCode.ParseComplete:
    case BackendCode.BindComplete:
    case BackendCode.ParameterDescription:
    case BackendCode.RowDescription:
    case BackendCode.NoData:
    case BackendCode.DataRow:
    case BackendCode.NoticeResponse:
    case BackendCode.ParameterStatus:
    case BackendCode.ErrorResponse:
    case BackendCode.ReadyForQuery:
      return true;
    default:
      return false;
  }
}

/** What to write again for a unit a cancel meant for another hit (see rerunOf). */
export interface Rerun {
  /** the unit's bytes less the named Parses that completed (their statements exist now) */
  readonly unit: Buffer;
  /** ParseCompletes of those Parses, owed to the session before the answer of `unit` */
  readonly parsed: number;
}

/**
 * What to write again for `unit` (the bytes written for it) after its whole `answer` (to its
 * ReadyForQuery, holdable messages only) ended in 57014, or undefined when it may not run again.
 * It may when the answer's one error is a cancel and no statement completed before it, and the
 * unit is a simple Query, or an extended run whose Bind does not rely on an unnamed statement
 * parsed before it (others' units may have replaced it since). A named Parse that completed is
 * left out: its statement exists now; the session is owed its ParseComplete.
 */
export function rerunOf(unit: Buffer, answer: Buffer): Rerun | undefined {
  let cancelled = false;
  let parseCompletes = 0;
  for (let at = 0; at + 5 <= answer.length; ) {
    const code = answer[at]!;
    const end = at + 1 + answer.readInt32BE(at + 1);
    if (end > answer.length || !isHoldable(code)) return undefined;
    if (code === BackendCode.ErrorResponse) {
      if (cancelled || readErrorFields(answer, at + 5, end).get('C') !== SqlState.queryCanceled) return undefined;
      cancelled = true;
    }
    if (code === BackendCode.ParseComplete) parseCompletes++;
    at = end;
  }
  if (!cancelled || unit.length < 5) return undefined;
  if (unit[0] === FrontendCode.Query) return 1 + unit.readInt32BE(1) === unit.length ? { unit, parsed: 0 } : undefined;
  let unnamedParse = false;
  let parses = 0;
  let stripped = 0;
  let kept: Buffer[] | undefined;
  let keptFrom = 0;
  for (let at = 0; at + 5 <= unit.length; ) {
    const code = unit[at]!;
    const end = at + 1 + unit.readInt32BE(at + 1);
    if (end > unit.length) return undefined;
    switch (code) {
      case FrontendCode.Parse:
        if (unit[at + 5] === 0) unnamedParse = true;
        else if (parses < parseCompletes) {
          // completed: left out of the unit written again
          kept ??= [];
          if (at > keptFrom) kept.push(unit.subarray(keptFrom, at));
          keptFrom = end;
          stripped++;
        }
        parses++;
        break;
      case FrontendCode.Bind: {
        // portal name, then statement name
        const portalEnd = unit.indexOf(0, at + 5);
        if (portalEnd < 0 || portalEnd >= end) return undefined;
        if (unit[portalEnd + 1] === 0 && !unnamedParse) return undefined;
        break;
      }
      case FrontendCode.Sync: {
        if (end !== unit.length) return undefined;
        if (kept === undefined) return { unit, parsed: 0 };
        kept.push(unit.subarray(keptFrom));
        return { unit: Buffer.concat(kept), parsed: stripped };
      }
      case FrontendCode.Describe:
      case FrontendCode.Execute:
      case FrontendCode.Flush:
        break;
      default:
        return undefined;
    }
    at = end;
  }
  return undefined;
}
