import type { Classification, Classifier } from '../classify/classifier.js';

/** Texts longer than this are not remembered (a bulk INSERT is not kept alive by an idle session). */
const MAX_REMEMBERED_TEXT = 4096;

/**
 * The classifier's answer, or the one it gave this session last for the same text: a driver
 * that sends the same text again and again (an unnamed Parse per execution) skips the lexer and
 * the cache lookup. A reloaded classifier (or a new generation of it: volatility learned) is
 * asked again.
 */
export class RecentClassification {
  private text: string | undefined;
  private classification: Classification | undefined;
  private classifier: Classifier | undefined;
  private generation = 0;

  classify(classifier: Classifier, text: string): Classification {
    if (text === this.text && classifier === this.classifier && this.generation === classifier.generation) {
      classifier.stats.hits++;
      return this.classification!;
    }
    const classification = classifier.classify(text);
    if (text.length > MAX_REMEMBERED_TEXT) return classification;
    this.text = text;
    this.classifier = classifier;
    this.classification = classification;
    this.generation = classifier.generation;
    return classification;
  }
}
