import { BackendCode, FrontendCode } from '../protocol/codes.js';
import { readErrorFields } from '../protocol/messages.js';
import { SqlState } from '../errors.js';

/**
 * A unit queued behind one whose cancel is on its way may receive that cancel itself (PostgreSQL's
 * CancelRequest hits whatever the backend runs when the signal lands). Such a unit's answer is held
 * back while it holds only what precedes a result (see isHeadCode); if it then ends in 57014 its
 * unit committed nothing (a simple Query is its own implicit transaction, an extended run of one
 * statement ends at its Sync, both rolled back on error) and its client saw nothing of it: the
 * pipeline writes it again (see ServerPipeline) and the client never learns of it.
 */

/** How often one unit is written again after a cancel meant for another. */
export const MAX_RERUNS = 3;

/** Messages a unit's answer may start with before its first row or outcome: held, not yet handed on. */
export function isHeadCode(code: number): boolean {
  switch (code) {
    case BackendCode.ParseComplete:
    case BackendCode.BindComplete:
    case BackendCode.ParameterDescription:
    case BackendCode.RowDescription:
    case BackendCode.NoData:
    case BackendCode.NoticeResponse:
    case BackendCode.ParameterStatus:
    case BackendCode.ErrorResponse:
    case BackendCode.ReadyForQuery:
      return true;
    default:
      return false;
  }
}

/**
 * Whether `unit` (the bytes written for it) may be written again after its whole `answer` (to its
 * ReadyForQuery, heads only) ended in 57014: the answer's one error is a cancel; the unit is a
 * simple Query, or an extended run whose Bind does not rely on an unnamed statement parsed
 * before it (others' units may have replaced it since) and whose named Parse, if any, did not
 * complete (the statement would exist already).
 */
export function mayRunAgain(unit: Buffer, answer: Buffer): boolean {
  let cancelled = false;
  let parsed = false;
  for (let at = 0; at + 5 <= answer.length; ) {
    const code = answer[at]!;
    const end = at + 1 + answer.readInt32BE(at + 1);
    if (end > answer.length || !isHeadCode(code)) return false;
    if (code === BackendCode.ErrorResponse) {
      if (cancelled || readErrorFields(answer, at + 5, end).get('C') !== SqlState.queryCanceled) return false;
      cancelled = true;
    }
    if (code === BackendCode.ParseComplete) parsed = true;
    at = end;
  }
  if (!cancelled || unit.length < 5) return false;
  if (unit[0] === FrontendCode.Query) return 1 + unit.readInt32BE(1) === unit.length;
  let unnamedParse = false;
  for (let at = 0; at + 5 <= unit.length; ) {
    const code = unit[at]!;
    const end = at + 1 + unit.readInt32BE(at + 1);
    if (end > unit.length) return false;
    switch (code) {
      case FrontendCode.Parse:
        if (unit[at + 5] === 0) unnamedParse = true;
        else if (parsed) return false;
        break;
      case FrontendCode.Bind: {
        // portal name, then statement name
        const portalEnd = unit.indexOf(0, at + 5);
        if (portalEnd < 0 || portalEnd >= end) return false;
        if (unit[portalEnd + 1] === 0 && !unnamedParse) return false;
        break;
      }
      case FrontendCode.Sync:
        return end === unit.length;
      case FrontendCode.Describe:
      case FrontendCode.Execute:
      case FrontendCode.Flush:
        break;
      default:
        return false;
    }
    at = end;
  }
  return false;
}
