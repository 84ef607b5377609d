// Issue 28: a store written against the public API alone type-checks with skipLibCheck false in
// an app that has no ioredis (an optional peer). The typings are emitted as `npm run build` emits
// them, into a scratch node_modules that has every dependency of the package except ioredis.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const REPO = path.resolve(__dirname, '..', '..');
const TSC = path.join(REPO, 'node_modules', 'typescript', 'bin', 'tsc');
const run = (args: string[], cwd: string) => spawnSync(process.execPath, args, { cwd, encoding: 'utf8' });

describe('a custom store on the public API, without ioredis', () => {
  let app: string;
  let lib: string;

  beforeAll(() => {
    app = fs.mkdtempSync(path.join(os.tmpdir(), 'eventbus-custom-store-'));
    lib = path.join(app, 'node_modules', 'nestjs-nats-eventbus');
    fs.mkdirSync(lib, { recursive: true });
    fs.copyFileSync(path.join(REPO, 'package.json'), path.join(lib, 'package.json'));
    const emit = run([TSC, '-p', 'tsconfig.build.json', '--outDir', path.join(lib, 'dist'), '--emitDeclarationOnly'], REPO);
    expect(emit.stdout + emit.stderr).toBe('');
    // Everything the package may need, from this repository's node_modules, except ioredis.
    const pkg = JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8'));
    const names = [...Object.keys(pkg.dependencies ?? {}), ...Object.keys(pkg.peerDependencies ?? {}), '@types/node'];
    for (const name of names.filter((n) => n !== 'ioredis')) {
      const from = path.join(REPO, 'node_modules', name);
      if (!fs.existsSync(from)) continue;
      fs.mkdirSync(path.dirname(path.join(app, 'node_modules', name)), { recursive: true });
      fs.symlinkSync(from, path.join(app, 'node_modules', name), 'dir');
    }
    fs.copyFileSync(path.join(REPO, 'test/packaging/fixtures/custom-store/my-store.mts'), path.join(app, 'my-store.mts'));
    const compilerOptions = { strict: true, skipLibCheck: false, module: 'nodenext', target: 'es2022', noEmit: true, types: ['node'] };
    fs.writeFileSync(path.join(app, 'tsconfig.json'), JSON.stringify({ compilerOptions, files: ['my-store.mts'] }));
  }, 120_000);

  afterAll(() => {
    if (app) fs.rmSync(app, { recursive: true, force: true });
  });

  it('the app has no ioredis to resolve', () => {
    expect(spawnSync(process.execPath, ['-e', "require.resolve('ioredis')"], { cwd: app }).status).not.toBe(0);
  });

  it('without the build step the typings fail on the ioredis import (what the step is for)', () => {
    const out = run([TSC, '-p', '.'], app);
    expect(out.stdout).toMatch(/storage\/ioredis-types\.d\.ts.*TS2307: Cannot find module 'ioredis'/);
  }, 60_000);

  it('with the typings as npm run build emits them, the store and its conformance suite compile', () => {
    const marked = run([path.join(REPO, 'scripts/typings-without-ioredis.js'), path.join(lib, 'dist')], REPO);
    expect(marked.status).toBe(0);
    const out = run([TSC, '-p', '.'], app);
    expect(out.stdout + out.stderr).toBe('');
    expect(out.status).toBe(0);
  }, 60_000);
});
