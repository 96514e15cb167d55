import type { Classification } from '../classify/types.js';

/**
 * Statement shapes classified as reads that a replica refused as writes (25006: a volatile
 * function behind a view, a user-defined operator, a user overload of a built-in read name): from
 * then on they go to the primary, so that a classification gap costs one retry. Keyed by the
 * classifier's Classification objects (one per shape, cached and shared by all sessions): a shape
 * the classifier's cache forgets is forgotten here too, so the set is as bounded as that cache.
 */
export class ReplicaRefusals {
  private readonly shapes = new WeakSet<Classification>();

  remember(classification: Classification): void {
    this.shapes.add(classification);
  }

  has(classification: Classification | undefined): boolean {
    return classification !== undefined && this.shapes.has(classification);
  }
}
