import * as fs from 'node:fs';
import * as path from 'node:path';
import * as ts from 'typescript';
import * as lib from '../../lib';

// lib/index.ts and lib/microservices/index.ts export exactly the names the README's "Public API" lists.
const ROOT = path.resolve(__dirname, '..', '..');

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

function readmeNames(section: string): string[] {
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const match = readme.match(new RegExp(`<!-- api:${section} -->([\\s\\S]*?)<!-- /api:${section} -->`));
  if (!match) throw new Error(`README has no <!-- api:${section} --> section`);
  return [...match[1].matchAll(/`([A-Za-z_][A-Za-z0-9_]*)`/g)].map((m) => m[1]).sort();
}

describe('public API', () => {
  it('lib/index.ts exports exactly what the README lists', () => {
    expect(exportedNames('lib/index.ts')).toEqual(readmeNames('main'));
  });

  it('lib/microservices/index.ts exports exactly what the README lists', () => {
    expect(exportedNames('lib/microservices/index.ts')).toEqual(readmeNames('microservices'));
  });

  it('the compiled main entry has no runtime export the README does not list', () => {
    const runtime = Object.keys(lib).filter((k) => k !== '__esModule');
    const listed = new Set(readmeNames('main'));
    expect(runtime.filter((k) => !listed.has(k))).toEqual([]);
  });
});
