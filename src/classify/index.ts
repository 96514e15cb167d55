/** The classifier's public API (see classifier.ts and types.ts). */
export { Classifier } from './classifier.js';
export { maskLiterals, splitStatements, type MaskedText } from './lexer.js';
export { runClassifyCli, type ClassifyCliOptions } from './cli.js';
export type { Classification, ClassifierOptions, Route, SessionEffect, Volatility } from './types.js';
