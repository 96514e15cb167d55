import { randomInt } from 'node:crypto';

/**
 * BackendKeyData in workers mode: the process id a client is given carries its worker's slot in
 * its top bits, so that a CancelRequest — which arrives on a new TCP connection, handed to any
 * worker — can be sent on to the worker that owns the session. Slots count from 1 (≤ 128), so
 * every id is a positive int32 as PostgreSQL's are; the low 23 bits are random.
 */
const SLOT_SHIFT = 23;
const LOW_MASK = (1 << SLOT_SHIFT) - 1;

export function slotOfProcessId(processId: number): number {
  return processId >>> SLOT_SHIFT;
}

export function processIdFor(slot: number, taken: (processId: number) => boolean): number {
  let processId: number;
  do processId = (slot << SLOT_SHIFT) | randomInt(1, LOW_MASK + 1);
  while (taken(processId));
  return processId;
}
