import * as fs from 'node:fs';
import * as path from 'node:path';
import * as ts from 'typescript';
import * as testing from '../../lib/testing';

// lib/testing/index.ts exports exactly what docs/testing.md lists, and package.json maps the
// `./testing` entry to the files the build emits for it.
const ROOT = path.resolve(__dirname, '..', '..');

function exportedNames(entry: string): string[] {
  const file = path.join(ROOT, entry);
  const program = ts.createProgram([file], {
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    noEmit: true,
  });
  const checker = program.getTypeChecker();
  return checker
    .getExportsOfModule(checker.getSymbolAtLocation(program.getSourceFile(file)!)!)
    .map((s) => s.getName())
    .sort();
}

function listedNames(): string[] {
  const doc = fs.readFileSync(path.join(ROOT, 'docs', 'testing.md'), 'utf8');
  const section = /<!-- api:testing -->([\s\S]*?)<!-- \/api:testing -->/.exec(doc)![1];
  return [...section.matchAll(/`([A-Za-z_][A-Za-z0-9_]*)`/g)].map((m) => m[1]).sort();
}

describe('nestjs-nats-eventbus/testing', () => {
  it('exports exactly what docs/testing.md lists', () => {
    expect(exportedNames('lib/testing/index.ts')).toEqual(listedNames());
    const runtime = Object.keys(testing).filter((k) => k !== '__esModule');
    expect(runtime.filter((k) => !listedNames().includes(k))).toEqual([]);
  });

  it('package.json exports ./testing from what tsconfig.build.json emits for lib/testing/index.ts', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
    expect(pkg.exports['./testing']).toEqual({ types: './dist/testing/index.d.ts', default: './dist/testing/index.js' });
    const build = JSON.parse(fs.readFileSync(path.join(ROOT, 'tsconfig.build.json'), 'utf8'));
    expect(build.compilerOptions).toMatchObject({ rootDir: './lib', outDir: './dist' });
    expect(build.include).toContain('lib/**/*.ts');
  });
});
