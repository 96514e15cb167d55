import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

// The shape of src/, checked on every `npm test`: no file over MAX_LINES lines, and no import
// cycle (type-only imports count: a cycle of types is still two files that cannot be understood
// one without the other). Each file is its own test case, and a cycle is reported with the
// import that closes each step, so a failure names what to split or which import to turn around.

const MAX_LINES = 500;
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const SRC = join(ROOT, 'src');

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...sourceFiles(path));
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) out.push(path);
  }
  return out.sort();
}

/** Module specifiers of `import … from`, `import '…'`, `export … from` and `import('…')`. */
export function importSpecifiers(source: string): string[] {
  const out: string[] = [];
  // comments out, so that an example in a comment is not an import
  const code = source.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`\\])\/\/.*$/gm, '$1');
  const patterns = [/\b(?:import|export)\s+(?:type\s+)?[^'"`;]*?\bfrom\s*['"]([^'"]+)['"]/g, /\bimport\s*['"]([^'"]+)['"]/g, /\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)/g];
  for (const pattern of patterns) for (const match of code.matchAll(pattern)) out.push(match[1]!);
  return out;
}

/** The src/ file a relative specifier names (`./x.js` is `./x.ts`), or undefined for a package. */
function resolveImport(from: string, specifier: string, known: Set<string>): string | undefined {
  if (!specifier.startsWith('.')) return undefined;
  const base = resolve(dirname(from), specifier);
  for (const candidate of [base.replace(/\.js$/, '.ts'), `${base}.ts`, join(base, 'index.ts')]) if (known.has(candidate)) return candidate;
  return undefined;
}

/** Strongly connected components of more than one file (or a file importing itself), by Tarjan's algorithm. */
export function cyclesOf(graph: Map<string, string[]>): string[][] {
  let index = 0;
  const indices = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[][] = [];
  const visit = (node: string): void => {
    indices.set(node, index);
    low.set(node, index++);
    stack.push(node);
    onStack.add(node);
    for (const next of graph.get(node) ?? []) {
      if (!indices.has(next)) {
        visit(next);
        low.set(node, Math.min(low.get(node)!, low.get(next)!));
      } else if (onStack.has(next)) low.set(node, Math.min(low.get(node)!, indices.get(next)!));
    }
    if (low.get(node) !== indices.get(node)) return;
    const component: string[] = [];
    let member: string;
    do {
      member = stack.pop()!;
      onStack.delete(member);
      component.push(member);
    } while (member !== node);
    if (component.length > 1 || (graph.get(node) ?? []).includes(node)) out.push(component.sort());
  };
  for (const node of [...graph.keys()].sort()) if (!indices.has(node)) visit(node);
  return out;
}

const files = sourceFiles(SRC);
const known = new Set(files);
const graph = new Map<string, string[]>();
const lineCounts = new Map<string, number>();
for (const file of files) {
  const source = readFileSync(file, 'utf8');
  lineCounts.set(file, source.split('\n').length - (source.endsWith('\n') ? 1 : 0));
  const targets = new Set<string>();
  for (const specifier of importSpecifiers(source)) {
    const target = resolveImport(file, specifier, known);
    if (target !== undefined) targets.add(target);
  }
  graph.set(file, [...targets].sort());
}
const name = (file: string): string => relative(ROOT, file);

describe('architecture: file size', () => {
  it.each(files.map(name))(`%s has at most ${MAX_LINES} lines`, (file) => {
    const lines = lineCounts.get(join(ROOT, file))!;
    expect(lines, `${file} has ${lines} lines: split it (one job per file) below ${MAX_LINES + 1}`).toBeLessThanOrEqual(MAX_LINES);
  });
});

describe('architecture: imports', () => {
  it('finds the imports of src/ (the check below sees the real graph)', () => {
    expect(files.length).toBeGreaterThan(50);
    expect(graph.get(join(SRC, 'app.ts'))).toContain(join(SRC, 'frontend', 'frontend.ts'));
  });

  it('has no import cycle under src/', () => {
    const cycles = cyclesOf(graph).map((component) => {
      const members = new Set(component);
      const steps = component.flatMap((from) => (graph.get(from) ?? []).filter((to) => members.has(to)).map((to) => `    ${name(from)} -> ${name(to)}`));
      return `  cycle of ${component.length} files:\n${steps.join('\n')}`;
    });
    expect(cycles, `import cycles under src/ (turn one import of each around, e.g. by an interface in the lower file):\n${cycles.join('\n')}`).toEqual([]);
  });
});

describe('architecture: the checks themselves', () => {
  it('reads every form of import, and none in comments', () => {
    const source = [
      "import type { A } from './a.js';",
      "import { B,\n  C } from '../b.js';",
      "export { D } from './d.js';",
      "import './side-effect.js';",
      "const e = await import('./e.js');",
      "// import { X } from './commented.js';",
      "/* import { Y } from './block.js'; */",
      "import net from 'node:net';",
    ].join('\n');
    expect(importSpecifiers(source).sort()).toEqual(['../b.js', './a.js', './d.js', './e.js', './side-effect.js', 'node:net'].sort());
  });

  it('finds a cycle, a self-import, and no cycle in a chain', () => {
    expect(cyclesOf(new Map([['a', ['b']], ['b', ['c']], ['c', ['a']], ['d', ['a']]]))).toEqual([['a', 'b', 'c']]);
    expect(cyclesOf(new Map([['a', ['a']]]))).toEqual([['a']]);
    expect(cyclesOf(new Map([['a', ['b']], ['b', ['c']], ['c', []]]))).toEqual([]);
  });
});
