/**
 * Packaging test: user apps can consume the *packed* library, as real processes against real
 * nats-server and redis-server processes.
 *
 * 1. `npm run build` + `npm pack` in the repo root.
 * 2. A fresh temp app installs the tarball with the Nest major installed in this repo (11 or 12),
 *    every non-optional peer of the library (at the range the library declares) plus
 *    @nestjs/microservices, TypeScript 6 and TypeScript 7 (alias `typescript7`). Plain
 *    `npm install` (no --legacy-peer-deps) must resolve. The optional peer `@opentelemetry/api` is
 *    not installed, and the packed library must not resolve it: the apps below run without it.
 * 3. Two entry files, `src/esm-app.mts` (ES module) and `src/cjs-app.cts` (CommonJS), from
 *    test/packaging/fixtures. Each boots an AppModule with EventBusModule.forRoot, has a
 *    `@Subscribe('fixture.echo')` provider, calls `EventBus.rpcRequest` with a small and a ~2 MiB
 *    payload (claim-check through Redis) and imports 'nestjs-nats-eventbus/microservices'.
 *    A reply at all proves the library and the app share one copy of Nest's state (no dual-package
 *    hazard): otherwise the @Subscribe method is never discovered and the request times out.
 * 4. Both compilers type-check the app, then again with `--skipLibCheck false`, where an error in
 *    the library's own .d.ts fails (errors in other packages' .d.ts are only reported; see
 *    fixtures/tsconfig.json). TS 6 compiles the app; dist/esm-app.mjs and dist/cjs-app.cjs are run.
 *
 * 5. The README's file blocks (README.md and docs/*.md) as a CommonJS Nest 11 app, the second case
 *    beside the ES-module app of nest-new-app.spec.ts: its own install (Nest 11, Jest), compiled to
 *    CommonJS, main.js run against the servers, and the README's test file run with Jest.
 *
 * Nothing is cached between runs except npm's own cache. PACKAGING_KEEP=1 keeps the temp dirs;
 * PACKAGING_NEST_MAJOR overrides the Nest major read from the repo's node_modules; PACKAGING_NODE
 * picks the Node of every child process (see toolchain.ts).
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { connect } from '@nats-io/transport-node';
import { freePort, NatsServer, RedisServer } from '../harness/local-servers';
import { waitUntil } from '../harness/wait';
import {
  binOf,
  buildAndPack,
  cleanEnv,
  copiesOf,
  describeRun,
  expectSuccess,
  KEEP,
  nodeUnderTest,
  npmWarnings,
  readJson,
  readmeFiles,
  REPO,
  run,
  STEP_TIMEOUT,
  writeFileBlocks,
} from './toolchain';

const FIXTURES = path.join(__dirname, 'fixtures');

const notes: string[] = [];
const note = (line: string) => notes.push(line);

describe('packed library in consumer apps (ESM + CJS, TS 6 + TS 7)', () => {
  const specStarted = Date.now();
  let nats: NatsServer;
  let redis: RedisServer;
  let workDir: string;
  let packDir: string;
  let appDir: string;
  let tarball: string | undefined;
  let nestMajor: number;
  let installed = false;
  let compiled = false;

  beforeAll(async () => {
    workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'eventbus-packaging-'));
    const node = nodeUnderTest();
    note(
      `node: ${node.version} (${node.requested === 'jest' ? 'the one running jest' : `PACKAGING_NODE=${node.requested}, ${node.bin}, found in ${node.resolveMs} ms`})`,
    );
    packDir = path.join(workDir, 'pack');
    appDir = path.join(workDir, 'app');
    fs.mkdirSync(packDir);
    fs.mkdirSync(appDir);
    [nats, redis] = await Promise.all([NatsServer.start(), RedisServer.start()]);
  }, 240_000);

  afterAll(async () => {
    await Promise.allSettled([nats?.dispose(), redis?.dispose()]);
    if (workDir && !KEEP) fs.rmSync(workDir, { recursive: true, force: true });
    note(`total: ${((Date.now() - specStarted) / 1000).toFixed(1)} s${KEEP ? `, kept ${workDir}` : ''}`);
    console.log(`[packaging]\n${notes.join('\n')}`);
  }, 60_000);

  it(
    'builds and packs the library',
    async () => {
      const packed = await buildAndPack(packDir);
      const files = packed.files;
      for (const f of [
        'package.json',
        'dist/index.js',
        'dist/index.d.ts',
        'dist/microservices/index.js',
        'dist/microservices/index.d.ts',
      ]) {
        expect(files).toContain(f);
      }
      // MIT says the licence text ships with the code; no source maps, which would point at lib/*.ts, not shipped.
      expect(files).toContain('LICENSE');
      expect(files.filter((f) => f.endsWith('.map'))).toEqual([]);
      tarball = packed.tarball;
      note(`pack (prepare builds): ${path.basename(tarball)}, ${files.length} files, ${packed.size} bytes, ${packed.packMs} ms`);
    },
    STEP_TIMEOUT,
  );

  it(
    'installs into a fresh app with the matching Nest major, without --legacy-peer-deps',
    async () => {
      if (!tarball) throw new Error('skipped: the pack step failed');
      // PACKAGING_NEST_MAJOR=12 tries a Nest 12 app against a library built with the repo's Nest.
      nestMajor = Number(
        process.env.PACKAGING_NEST_MAJOR ?? readJson(path.join(REPO, 'node_modules/@nestjs/common/package.json')).version.split('.')[0],
      );
      expect([11, 12]).toContain(nestMajor);

      const lib = readJson(path.join(REPO, 'package.json'));
      const peers: Record<string, string> = lib.peerDependencies ?? {};
      const peerMeta: Record<string, { optional?: boolean }> = lib.peerDependenciesMeta ?? {};
      const deps: Record<string, string> = { [lib.name]: `file:${tarball}` };
      for (const nest of [
        '@nestjs/common',
        '@nestjs/core',
        '@nestjs/terminus',
        '@nestjs/microservices',
        '@nestjs/platform-express',
        '@nestjs/testing',
      ]) {
        deps[nest] = `^${nestMajor}.0.0`;
      }
      // Every non-optional peer (this is where the NATS client comes from), at the declared range.
      for (const [name, range] of Object.entries(peers)) {
        if (!(name in deps) && !peerMeta[name]?.optional) deps[name] = range;
      }
      // What the app itself imports; if the library stops peering on one, any version will do.
      for (const name of ['reflect-metadata', 'rxjs', 'ioredis']) {
        if (!(name in deps)) deps[name] = lib.dependencies?.[name] ?? '*';
      }
      const pkg = {
        name: 'eventbus-consumer-fixture',
        version: '0.0.0',
        private: true,
        dependencies: deps,
        devDependencies: { typescript: '~6.0.0', typescript7: 'npm:typescript@^7.0.2', '@types/node': '^20.0.0' },
      };
      fs.writeFileSync(path.join(appDir, 'package.json'), JSON.stringify(pkg, null, 2) + '\n');
      fs.cpSync(path.join(FIXTURES, 'src'), path.join(appDir, 'src'), { recursive: true });
      fs.copyFileSync(path.join(FIXTURES, 'tsconfig.json'), path.join(appDir, 'tsconfig.json'));

      const install = await run('npm', ['install', '--no-audit', '--no-fund'], { cwd: appDir });
      const warnings = npmWarnings(install);
      note(`install: Nest ${nestMajor}, ${install.ms} ms, deps ${JSON.stringify(deps).replace(tarball, '<tarball>')}`);
      note(`install warnings (${warnings.length}):${warnings.map((w) => `\n  ${w}`).join('')}`);
      expectSuccess('npm install', install);
      expect(install.stderr).not.toMatch(/ERESOLVE (could not|unable to) resolve/);

      const versions = [
        '@nestjs/common',
        '@nestjs/core',
        '@nestjs/microservices',
        'typescript',
        'typescript7',
        ...Object.keys(peers),
        ...Object.keys(lib.dependencies ?? {}),
      ]
        .filter((n, i, a) => a.indexOf(n) === i && fs.existsSync(path.join(appDir, 'node_modules', n, 'package.json')))
        .map((n) => `${n}@${readJson(path.join(appDir, 'node_modules', n, 'package.json')).version}`);
      note(`installed: ${versions.join(', ')}`);

      // One copy of each package whose state the library and the app share.
      for (const shared of ['@nestjs/common', '@nestjs/core', 'reflect-metadata', ...Object.keys(peers)]) {
        if (peerMeta[shared]?.optional && !fs.existsSync(path.join(appDir, 'node_modules', shared))) continue;
        expect({ pkg: shared, copies: copiesOf(path.join(appDir, 'node_modules'), shared).map((p) => path.relative(appDir, p)) }).toEqual({
          pkg: shared,
          copies: [path.join('node_modules', shared)],
        });
      }
      // @opentelemetry/api is an optional peer: the app did not install it, and the packed library
      // must not find another copy (this temp dir is outside the repo), so the apps below run without it.
      const libDist = path.join(appDir, 'node_modules', lib.name, 'dist');
      const otel = await run('node', ['-e', `require.resolve('@opentelemetry/api', { paths: [${JSON.stringify(libDist)}] })`], {
        cwd: appDir,
        env: cleanEnv(),
      });
      expect({ exit: otel.code, stderr: otel.stderr }).toMatchObject({ exit: 1, stderr: expect.stringContaining('Cannot find module') });
      installed = true;
    },
    STEP_TIMEOUT,
  );

  it.each([
    ['TypeScript 6', 'typescript'],
    ['TypeScript 7', 'typescript7'],
  ])(
    'type-checks both entry files with %s (and the library .d.ts with skipLibCheck false)',
    async (label, pkgName) => {
      if (!installed) throw new Error('skipped: the install step failed');
      const tsc = binOf(appDir, pkgName, 'tsc');
      const version = await run(tsc.cmd, [...tsc.args, '--version'], { cwd: appDir });
      expectSuccess(`${label} tsc --version`, version);
      const check = await run(tsc.cmd, [...tsc.args, '--noEmit', '-p', 'tsconfig.json'], { cwd: appDir });
      note(`${label}: ${version.stdout.trim()} (${path.relative(appDir, tsc.file)}), --noEmit exit ${check.code} in ${check.ms} ms`);
      expectSuccess(`${label} tsc --noEmit -p tsconfig.json`, check);

      // Full declaration check: errors in other packages' .d.ts are noted, not ours to fix;
      // an error in the library's .d.ts or in the app sources fails.
      const full = await run(tsc.cmd, [...tsc.args, '--noEmit', '-p', 'tsconfig.json', '--skipLibCheck', 'false'], { cwd: appDir });
      const errors = full.stdout.split('\n').filter((l) => /^\S.*\(\d+,\d+\): error TS/.test(l));
      const thirdParty = errors.filter((l) => l.startsWith('node_modules/') && !l.startsWith('node_modules/nestjs-nats-eventbus/'));
      note(
        `${label} --skipLibCheck false: exit ${full.code}, ${errors.length} errors, ${thirdParty.length} in third-party .d.ts${thirdParty.map((l) => `\n  ${l}`).join('')}`,
      );
      if (full.code !== 0 && errors.length === 0) throw new Error(describeRun(`${label} tsc --skipLibCheck false`, full));
      expect(errors.filter((l) => !thirdParty.includes(l))).toEqual([]);
    },
    STEP_TIMEOUT,
  );

  it(
    'compiles with TypeScript 6 to dist/esm-app.mjs and dist/cjs-app.cjs',
    async () => {
      if (!installed) throw new Error('skipped: the install step failed');
      const dotBin = path.join(appDir, 'node_modules/.bin/tsc');
      if (fs.existsSync(dotBin)) note(`node_modules/.bin/tsc -> ${fs.realpathSync(dotBin).replace(appDir + path.sep, '')}`);
      const tsc = binOf(appDir, 'typescript', 'tsc');
      const build = await run(tsc.cmd, [...tsc.args, '-p', 'tsconfig.json'], { cwd: appDir });
      expectSuccess('tsc -p tsconfig.json (TS 6)', build);
      expect(fs.existsSync(path.join(appDir, 'dist/esm-app.mjs'))).toBe(true);
      expect(fs.existsSync(path.join(appDir, 'dist/cjs-app.cjs'))).toBe(true);
      compiled = true;
    },
    STEP_TIMEOUT,
  );

  it.each([
    ['esm', 'dist/esm-app.mjs'],
    ['cjs', 'dist/cjs-app.cjs'],
  ])(
    'the %s app boots, gets rpc replies (small and 2 MiB claim-check) and exits 0',
    async (kind, entry) => {
      if (!compiled) throw new Error('skipped: the compile step failed');
      redis.cli('FLUSHALL');
      const app = await run('node', [entry], {
        cwd: appDir,
        env: cleanEnv({ NATS_URL: nats.url, REDIS_URL: redis.url }),
        timeoutMs: 120_000,
      });
      const line = app.stdout
        .split('\n')
        .filter((l) => l.startsWith('{"fixture"'))
        .pop();
      if (!line) throw new Error(describeRun(`node ${entry} printed no result line`, app));
      const result = JSON.parse(line);
      note(`${kind} app: exit ${app.code} in ${app.ms} ms: ${line.length > 600 ? line.slice(0, 600) + '…' : line}`);
      if (app.stderr.trim()) note(`${kind} app stderr:\n${app.stderr.trim()}`);
      expect(result.error).toBeUndefined();
      expect(result).toMatchObject({
        fixture: kind,
        ok: true,
        small: { echoed: { n: 1 }, kind },
        microservices: { EventBusTransport: 'function', EventBusClientProxy: 'function' },
      });
      expect(result.big.kind).toBe(kind);
      expect(result.big.gotLength).toBe(2 * 1024 * 1024);
      expect(result.big.gotLength).toBe(result.big.sentLength);
      expect(result.big.gotSha).toBe(result.big.sentSha);
      // The 2 MiB request went through Redis (a stored request stays until its TTL).
      const keys = redis.cli('--scan', '--pattern', 'eventbus:*').split('\n').filter(Boolean);
      expect(keys.length).toBeGreaterThanOrEqual(1);
      // Exited by itself after app.close() (nothing left open), with code 0.
      expect(app.timedOut).toBe(false);
      expectSuccess(`node ${entry}`, app);
    },
    STEP_TIMEOUT,
  );

  it(
    "the README's file blocks as a CommonJS Nest 11 app: compile, main.js runs against the packed library, the test file passes under Jest",
    async () => {
      if (!tarball) throw new Error('skipped: the pack step failed');
      const dir = path.join(workDir, 'readme-cjs');
      const files = readmeFiles();
      expect(files.map((f) => f.file)).toEqual(
        expect.arrayContaining([
          'src/edge.handlers.ts',
          'src/app.module.ts',
          'src/main.ts',
          'test/edge.handlers.spec.ts',
          'test/bus-behaviours.spec.ts',
        ]),
      );
      writeFileBlocks(dir, files);
      // The README's advice for Jest: map a relative import's .js to its .ts source.
      const mapper = /moduleNameMapper: \{ '([^']+)': '([^']+)' \}/.exec(fs.readFileSync(path.join(REPO, 'README.md'), 'utf8'));
      if (!mapper) throw new Error("README.md no longer gives Jest's moduleNameMapper for .js imports");
      const unescape = (js: string) => js.replace(/\\\\/g, '\\');
      // The CommonJS app a Nest 11 user has, tested with Jest and ts-jest, whatever Nest major this repo has
      // installed: Jest cannot require() Nest 12's ES modules in a CommonJS app before Node 24.9.
      const pkg = {
        name: 'readme-cjs-app',
        version: '0.0.0',
        private: true,
        type: 'commonjs',
        dependencies: {
          'nestjs-nats-eventbus': `file:${tarball}`,
          '@nestjs/common': '^11.0.0',
          '@nestjs/core': '^11.0.0',
          '@nestjs/terminus': '^11.0.0',
          '@nestjs/platform-express': '^11.0.0',
          ioredis: '^5.0.0',
          'reflect-metadata': '^0.2.0',
          rxjs: '^7.8.0',
        },
        devDependencies: {
          '@nestjs/testing': '^11.0.0',
          typescript: '~6.0.0',
          '@types/node': '^20.0.0',
          jest: '^30.0.0',
          '@types/jest': '^30.0.0',
          'ts-jest': '^29.4.0',
        },
        // Nest 11's generated Jest config (rootDir '.' so that test/ is included), plus the README's mapping.
        jest: {
          moduleFileExtensions: ['js', 'json', 'ts'],
          rootDir: '.',
          testRegex: '.*\\.spec\\.ts$',
          transform: { '^.+\\.(t|j)s$': 'ts-jest' },
          testEnvironment: 'node',
          moduleNameMapper: { [unescape(mapper[1])]: unescape(mapper[2]) },
        },
      };
      fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify(pkg, null, 2) + '\n');
      const install = await run('npm', ['install', '--no-audit', '--no-fund'], { cwd: dir });
      expectSuccess('npm install (readme-cjs)', install);
      const nest = readJson(path.join(dir, 'node_modules/@nestjs/core/package.json')).version;
      expect(nest).toMatch(/^11\./);

      const tsconfig = {
        compilerOptions: {
          module: 'nodenext',
          moduleResolution: 'nodenext',
          target: 'ES2022',
          types: ['node', 'jest'],
          strict: true,
          isolatedModules: true,
          experimentalDecorators: true,
          emitDecoratorMetadata: true,
          skipLibCheck: true,
          esModuleInterop: true,
          outDir: 'dist',
          rootDir: '.',
        },
        include: ['src/**/*.ts', 'test/**/*.ts'],
      };
      fs.writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify(tsconfig, null, 2));
      const tsc = binOf(dir, 'typescript', 'tsc');
      const build = await run(tsc.cmd, [...tsc.args, '-p', 'tsconfig.json'], { cwd: dir });
      expectSuccess('tsc -p readme-cjs/tsconfig.json', build);
      // CommonJS output, as the app's package.json says: no ES module syntax in the compiled main.
      expect(fs.readFileSync(path.join(dir, 'dist/src/main.js'), 'utf8')).toMatch(/require\("@nestjs\/core"\)/);

      // main.ts: boots, answers its own request, publishes the result, and stops cleanly on SIGTERM.
      const nc = await connect({ servers: nats.url });
      const published: string[] = [];
      const sub = nc.subscribe('notification.slack.request', { callback: (_e, m) => void published.push(m.string()) });
      await nc.flush();
      const child = spawn(nodeUnderTest().bin, ['dist/src/main.js'], {
        cwd: dir,
        env: cleanEnv({ NATS_URL: nats.url, REDIS_URL: redis.url, PORT: '0' }),
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let output = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (output += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (output += d));
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
        child.on('exit', (code, signal) => resolve({ code, signal })),
      );
      try {
        await waitUntil(() => published.length > 0 || child.exitCode !== null, 'the Quick start publish', 60_000);
        expect({ published, output: child.exitCode === null ? '' : output }).toEqual({
          published: [JSON.stringify({ request_id: '1', message: '0 edges' })],
          output: '',
        });
        child.kill('SIGTERM');
        // Nest's shutdown hook closes the app, then re-raises the signal: that is a clean stop.
        const { code, signal } = await exited;
        expect({ code, signal, output: code === 0 || signal === 'SIGTERM' ? '' : output }).toEqual(
          code === 0 ? { code: 0, signal: null, output: '' } : { code: null, signal: 'SIGTERM', output: '' },
        );
      } finally {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        sub.unsubscribe();
        await nc.close();
      }

      // The test files, unchanged, under Jest (its globals describe/it/expect) with ts-jest on the .ts source.
      // They use the testing module (issue 27): no NATS or Redis needed, so both URLs point at nothing.
      const jest = binOf(dir, 'jest', 'jest');
      const test = await run(jest.cmd, [...jest.args, '--ci'], {
        cwd: dir,
        env: cleanEnv({ NATS_URL: `nats://127.0.0.1:${await freePort()}`, REDIS_URL: `redis://127.0.0.1:${await freePort()}` }),
        timeoutMs: 120_000,
      });
      note(
        `readme-cjs: Nest ${nest}, install ${install.ms} ms, compiled ${files.length} files in ${build.ms} ms; jest (ts-jest, moduleNameMapper ${JSON.stringify(pkg.jest.moduleNameMapper)}) exit ${test.code} in ${test.ms} ms`,
      );
      expectSuccess('jest on test/edge.handlers.spec.ts', test);
      expect(test.stderr).toMatch(/PASS test\/edge\.handlers\.spec\.ts/);
      expect(test.stderr).toMatch(/PASS test\/bus-behaviours\.spec\.ts/);
      expect(test.stderr).toMatch(/Tests: {7}2 passed, 2 total/);
    },
    STEP_TIMEOUT,
  );
});
