/**
 * `pgrelay classify` (DESIGN.md, "Contracts"): one JSON string (an SQL text) per input line, one
 * JSON object per output line: {"route","pin","reason"}. A line that is not a JSON string
 * (blank lines included, so that output line N always answers input line N) gets {"error": "…"}
 * and processing continues.
 */
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { Classifier } from './classifier.js';
import type { ClassifierOptions } from './types.js';

export interface ClassifyCliOptions extends ClassifierOptions {
  /** a classifier to use instead of a new one */
  classifier?: Classifier;
  /** also print effects, statements, hint, maxLagMs and userFunctions */
  verbose?: boolean;
}

export async function runClassifyCli(input: NodeJS.ReadableStream, output: NodeJS.WritableStream, options: ClassifyCliOptions = {}): Promise<void> {
  const classifier = options.classifier ?? (await Classifier.create(options));
  const lines = createInterface({ input, crlfDelay: Infinity });
  for await (const line of lines) {
    const answer = classifyLine(classifier, line, options.verbose ?? false);
    if (!output.write(JSON.stringify(answer) + '\n')) await once(output, 'drain');
  }
}

function classifyLine(classifier: Classifier, line: string, verbose: boolean): object {
  let sql: unknown;
  try {
    sql = JSON.parse(line);
  } catch (e) {
    return { error: `not JSON: ${e instanceof Error ? e.message : String(e)}` };
  }
  if (typeof sql !== 'string') return { error: 'expected a JSON string (an SQL text)' };
  const c = classifier.classify(sql);
  if (verbose) return c;
  return { route: c.route, pin: c.pin, reason: c.reason };
}
