import { parseLsn } from './lsn.js';

/**
 * The lag monitor's limited view: a monitor role without pg_monitor does not see
 * pg_stat_wal_receiver (PostgreSQL shows it the pid and nulls), so whether a replica streams, from
 * which node and on which timeline is not known. A replica still following another primary then
 * shows only in its positions, which every role may read: one that falls behind is excluded by
 * its lag, and one that has replayed WAL the primary does not have (it went past the point where
 * a new primary's timeline forked) is found here — a sample of it taken before a primary sample
 * must not be ahead of that primary position. Until such a pair exists (start, a new primary) it
 * is unfit, and its lag is judged on that earlier, vouched-for sample. A replica found ahead stays
 * unfit for this primary (it cannot un-replay WAL, and the primary passing its position later does
 * not make it follow) until its replay position goes back (rewound or rebuilt).
 * What this cannot see: a replica that follows another primary without ever being ahead of the
 * current one (that primary died) is excluded only once its lag passes max_lag_ms.
 */

export interface LimitedSample {
  /** when the answer arrived */
  atMs: number;
  row: { replay_lsn: string | null };
}

/** What the limited view keeps per replica. */
export interface LimitedTrack {
  last: LimitedSample | undefined;
  previous: LimitedSample | undefined;
  /** found holding WAL this primary did not have, at this replay position */
  diverged: { primary: string; lsn: bigint; reason: string } | undefined;
}

/** Why the replica cannot be judged by its lag against `primary` (a sample sent at atMs), or undefined. */
export function divergenceReason(track: LimitedTrack, primary: { node: string; atMs: number; currentLsn: bigint }): string | undefined {
  const current = track.last?.row.replay_lsn;
  if (track.diverged?.primary === primary.node && current) {
    if (parseLsn(current) >= track.diverged.lsn) return track.diverged.reason;
    track.diverged = undefined;
  }
  const earlier = track.previous;
  if (!earlier || earlier.atMs > primary.atMs || earlier.row.replay_lsn === null) return `not yet compared with a later position of the primary ${primary.node}`;
  const replayed = parseLsn(earlier.row.replay_lsn);
  if (replayed <= primary.currentLsn) return undefined;
  const reason = `has replayed WAL (${earlier.row.replay_lsn}) that the primary ${primary.node} did not have later: it follows another primary`;
  track.diverged = { primary: primary.node, lsn: replayed, reason };
  return reason;
}

/** /status `not_known` of a replica seen through the limited view. */
export function notKnownText(monitorUser: string): string {
  return `whether it streams, from which node and on which timeline (the monitor role ${monitorUser} cannot see pg_stat_wal_receiver: GRANT pg_monitor TO it); freshness is judged from its replay position alone`;
}
