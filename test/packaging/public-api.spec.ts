import * as fs from 'node:fs';
import * as path from 'node:path';
import * as ts from 'typescript';
import * as lib from '../../lib';

// lib/index.ts and lib/microservices/index.ts export exactly the names the docs' "Public API" lists
// (docs/api.md, linked from the README).
const ROOT = path.resolve(__dirname, '..', '..');

/** The README and every docs/*.md, as one text: a list may live in either. */
function docsText(): string {
  const docs = path.join(ROOT, 'docs');
  const files = fs.existsSync(docs)
    ? fs
        .readdirSync(docs)
        .filter((f) => f.endsWith('.md'))
        .sort()
    : [];
  return [path.join(ROOT, 'README.md'), ...files.map((f) => path.join(docs, f))].map((f) => fs.readFileSync(f, 'utf8')).join('\n');
}

function exportedNames(entry: string): string[] {
  const file = path.join(ROOT, entry);
  const program = ts.createProgram([file], {
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    skipLibCheck: true,
    noEmit: true,
  });
  const checker = program.getTypeChecker();
  const source = program.getSourceFile(file)!;
  const symbol = checker.getSymbolAtLocation(source)!;
  return checker
    .getExportsOfModule(symbol)
    .map((s) => s.getName())
    .sort();
}

function listedNames(section: string): string[] {
  const matches = [...docsText().matchAll(new RegExp(`<!-- api:${section} -->([\\s\\S]*?)<!-- /api:${section} -->`, 'g'))];
  if (matches.length !== 1) throw new Error(`README.md and docs/*.md have ${matches.length} <!-- api:${section} --> sections, not 1`);
  return [...matches[0][1].matchAll(/`([A-Za-z_][A-Za-z0-9_]*)`/g)].map((m) => m[1]).sort();
}

describe('public API', () => {
  it('lib/index.ts exports exactly what the docs list', () => {
    expect(exportedNames('lib/index.ts')).toEqual(listedNames('main'));
  });

  it('lib/microservices/index.ts exports exactly what the docs list', () => {
    expect(exportedNames('lib/microservices/index.ts')).toEqual(listedNames('microservices'));
  });

  it('the compiled main entry has no runtime export the docs do not list', () => {
    const runtime = Object.keys(lib).filter((k) => k !== '__esModule');
    const listed = new Set(listedNames('main'));
    expect(runtime.filter((k) => !listed.has(k))).toEqual([]);
  });
});
