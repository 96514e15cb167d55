/**
 * A strict parser of the Prometheus text exposition format (version 0.0.4), for tests: anything
 * a Prometheus server would reject, or that breaks the format's rules, throws with the line number.
 * Checked: metric and label name syntax, label value escapes, values (floats, NaN, ±Inf), one HELP
 * and one TYPE per family and TYPE before its samples, samples of a family contiguous, no duplicate
 * series, counters not negative, histograms with `le` buckets that are cumulative and end at +Inf,
 * with `_count` equal to the +Inf bucket and a `_sum`.
 */
export type MetricType = 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';

export interface Sample {
  /** the sample's own name (e.g. `x_bucket` for histogram `x`) */
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface MetricFamily {
  name: string;
  type: MetricType;
  help: string | undefined;
  samples: Sample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set<MetricType>(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

export class PrometheusParseError extends Error {
  constructor(line: number, message: string) {
    super(`line ${line}: ${message}`);
  }
}

export function parsePrometheusText(text: string): Map<string, MetricFamily> {
  const families = new Map<string, MetricFamily>();
  const closed = new Set<string>();
  const seriesSeen = new Set<string>();
  let current: MetricFamily | undefined;
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  else if (text.length > 0) throw new PrometheusParseError(lines.length, 'the exposition must end with a line feed');

  const family = (name: string, lineNo: number): MetricFamily => {
    let f = families.get(name);
    if (!f) {
      f = { name, type: 'untyped', help: undefined, samples: [] };
      families.set(name, f);
    } else if (closed.has(name) && current !== f) {
      throw new PrometheusParseError(lineNo, `metric family ${name} appears again after other families (its lines must be contiguous)`);
    }
    if (current && current !== f) closed.add(current.name);
    current = f;
    return f;
  };

  lines.forEach((raw, index) => {
    const lineNo = index + 1;
    const line = raw;
    if (line.trim() === '') return;
    if (line.startsWith('#')) {
      const m = /^#\s+(HELP|TYPE)\s+(\S+)(?:\s(.*))?$/.exec(line);
      if (!m) return; // an ordinary comment
      const [, keyword, name, rest = ''] = m;
      if (!METRIC_NAME.test(name!)) throw new PrometheusParseError(lineNo, `invalid metric name "${name}"`);
      const f = family(name!, lineNo);
      if (keyword === 'HELP') {
        if (f.help !== undefined) throw new PrometheusParseError(lineNo, `second HELP for ${name}`);
        f.help = unescapeHelp(rest, lineNo);
      } else {
        if (f.samples.length > 0) throw new PrometheusParseError(lineNo, `TYPE for ${name} after its samples`);
        if ((f as MetricFamily & { typed?: boolean }).typed) throw new PrometheusParseError(lineNo, `second TYPE for ${name}`);
        if (!TYPES.has(rest.trim() as MetricType)) throw new PrometheusParseError(lineNo, `unknown type "${rest}" for ${name}`);
        f.type = rest.trim() as MetricType;
        (f as MetricFamily & { typed?: boolean }).typed = true;
      }
      return;
    }
    const sample = parseSample(line, lineNo);
    const owner = familyOf(sample.name, families, current);
    const f = family(owner, lineNo);
    const key = `${sample.name}{${Object.entries(sample.labels)
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
      .join(',')}}`;
    if (seriesSeen.has(key)) throw new PrometheusParseError(lineNo, `duplicate series ${key}`);
    seriesSeen.add(key);
    if (f.type === 'counter' && !(sample.value >= 0)) throw new PrometheusParseError(lineNo, `counter ${sample.name} has value ${sample.value}`);
    if (f.type !== 'histogram' && f.type !== 'summary' && sample.name !== f.name) {
      throw new PrometheusParseError(lineNo, `sample ${sample.name} inside family ${f.name} of type ${f.type}`);
    }
    f.samples.push(sample);
  });
  for (const f of families.values()) if (f.type === 'histogram') checkHistogram(f);
  return families;
}

/** Histogram and summary samples carry suffixes; everything else must be named as its family. */
function familyOf(name: string, families: Map<string, MetricFamily>, current: MetricFamily | undefined): string {
  if (current && (current.type === 'histogram' || current.type === 'summary')) {
    for (const suffix of ['_bucket', '_sum', '_count']) {
      if (name === current.name + suffix) return current.name;
    }
  }
  if (families.has(name)) return name;
  return name;
}

function parseSample(line: string, lineNo: number): Sample {
  const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(line);
  if (!m) throw new PrometheusParseError(lineNo, `cannot read a metric name in "${line}"`);
  const name = m[1]!;
  let i = name.length;
  const labels: Record<string, string> = {};
  if (line[i] === '{') {
    i++;
    for (;;) {
      while (line[i] === ' ') i++;
      if (line[i] === '}') {
        i++;
        break;
      }
      const ln = /^[a-zA-Z_][a-zA-Z0-9_]*/.exec(line.slice(i));
      if (!ln) throw new PrometheusParseError(lineNo, `bad label name at column ${i + 1}`);
      const labelName = ln[0];
      if (!LABEL_NAME.test(labelName) || labelName.startsWith('__')) throw new PrometheusParseError(lineNo, `reserved or invalid label name ${labelName}`);
      i += labelName.length;
      if (line[i] !== '=' || line[i + 1] !== '"') throw new PrometheusParseError(lineNo, `expected =" after label ${labelName}`);
      i += 2;
      let value = '';
      for (;;) {
        const c = line[i];
        if (c === undefined) throw new PrometheusParseError(lineNo, `unterminated value of label ${labelName}`);
        i++;
        if (c === '"') break;
        if (c === '\\') {
          const e = line[i++];
          if (e === '\\') value += '\\';
          else if (e === '"') value += '"';
          else if (e === 'n') value += '\n';
          else throw new PrometheusParseError(lineNo, `invalid escape \\${e ?? ''} in label ${labelName}`);
        } else value += c;
      }
      if (labelName in labels) throw new PrometheusParseError(lineNo, `label ${labelName} given twice`);
      labels[labelName] = value;
      if (line[i] === ',') i++;
      else if (line[i] !== '}') throw new PrometheusParseError(lineNo, `expected , or } after label ${labelName}`);
    }
  }
  if (line[i] !== ' ') throw new PrometheusParseError(lineNo, `expected a space before the value of ${name}`);
  const parts = line.slice(i + 1).trim().split(/\s+/);
  if (parts.length < 1 || parts.length > 2 || parts[0] === '') throw new PrometheusParseError(lineNo, `expected a value (and an optional timestamp) for ${name}`);
  const value = parseValue(parts[0]!, lineNo);
  if (parts[1] !== undefined && !/^-?\d+$/.test(parts[1])) throw new PrometheusParseError(lineNo, `bad timestamp "${parts[1]}"`);
  return { name, labels, value };
}

function parseValue(text: string, lineNo: number): number {
  // as Prometheus (Go's ParseFloat): NaN and Inf in any letter case
  if (/^nan$/i.test(text)) return NaN;
  if (/^\+?inf$/i.test(text)) return Infinity;
  if (/^-inf$/i.test(text)) return -Infinity;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) throw new PrometheusParseError(lineNo, `bad value "${text}"`);
  return Number(text);
}

function unescapeHelp(text: string, lineNo: number): string {
  return text.replace(/\\(.)/g, (_, c: string) => {
    if (c === '\\') return '\\';
    if (c === 'n') return '\n';
    throw new PrometheusParseError(lineNo, `invalid escape \\${c} in HELP`);
  });
}

function checkHistogram(f: MetricFamily): void {
  const series = new Map<string, { buckets: [number, number][]; sum?: number; count?: number }>();
  for (const s of f.samples) {
    const { le, ...rest } = s.labels;
    const key = JSON.stringify(Object.entries(rest).sort(([a], [b]) => (a < b ? -1 : 1)));
    let entry = series.get(key);
    if (!entry) series.set(key, (entry = { buckets: [] }));
    if (s.name === `${f.name}_bucket`) {
      if (le === undefined) throw new Error(`histogram ${f.name}: a bucket without le`);
      entry.buckets.push([parseValue(le, 0), s.value]);
    } else if (s.name === `${f.name}_sum`) entry.sum = s.value;
    else if (s.name === `${f.name}_count`) entry.count = s.value;
    else throw new Error(`histogram ${f.name}: unexpected sample ${s.name}`);
  }
  for (const [key, entry] of series) {
    const sorted = [...entry.buckets].sort((a, b) => a[0] - b[0]);
    if (sorted.length === 0 || sorted[sorted.length - 1]![0] !== Infinity) throw new Error(`histogram ${f.name}${key}: no +Inf bucket`);
    for (let i = 1; i < sorted.length; i++) {
      if (sorted[i]![1] < sorted[i - 1]![1]) throw new Error(`histogram ${f.name}${key}: buckets are not cumulative`);
    }
    if (entry.count === undefined || entry.sum === undefined) throw new Error(`histogram ${f.name}${key}: _count or _sum missing`);
    if (entry.count !== sorted[sorted.length - 1]![1]) throw new Error(`histogram ${f.name}${key}: _count ${entry.count} differs from the +Inf bucket`);
  }
}

/** The value of one series, or undefined when absent. */
export function valueOf(families: Map<string, MetricFamily>, sampleName: string, labels: Record<string, string> = {}): number | undefined {
  for (const f of families.values()) {
    for (const s of f.samples) {
      if (s.name !== sampleName) continue;
      if (Object.entries(labels).every(([k, v]) => s.labels[k] === v)) return s.value;
    }
  }
  return undefined;
}

/** The sum over every series of a sample name that matches `labels`. */
export function sumOf(families: Map<string, MetricFamily>, sampleName: string, labels: Record<string, string> = {}): number {
  let total = 0;
  for (const f of families.values()) {
    for (const s of f.samples) {
      if (s.name === sampleName && Object.entries(labels).every(([k, v]) => s.labels[k] === v)) total += s.value;
    }
  }
  return total;
}
