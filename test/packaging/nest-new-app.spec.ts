/**
 * Packaging test: the README's code runs unchanged in the app `nest new` generates today.
 *
 * 1. The pinned @nestjs/cli (devDependencies, exact) runs `nest new … --skip-install --skip-git`
 *    twice: `readme-app` and `observe-app`. Their generated config is kept as generated, and the
 *    facts the README is written for are asserted (ES modules, nodenext + isolatedModules +
 *    emitDecoratorMetadata, `npm test` = `vitest run`, @nestjs/observe as `instrument`).
 * 2. `npm pack` of the library (its prepare script builds it).
 * 3. readme-app installs the tarball with the README's own Install line.
 * 4. Every `<!-- file: … -->` block of README.md and docs/*.md is written; `tsc --noEmit` with the
 *    generated tsconfig.json passes (and a canary file proves that it reports TS1272 and missing
 *    `.js` extensions, the errors issue 25 found).
 * 5. The generated `npm run build` (nest build); `node dist/main.js` against real nats-server and
 *    redis-server: the Quick start's publish arrives byte for byte, GET /_health is 200, SIGTERM
 *    stops it cleanly.
 * 6. The generated `npm test` (Vitest) passes with the README's test file in it; with no NATS
 *    server, that test fails inside Vitest's 5 s naming the address it tried.
 * 7. observe-app keeps the generated @nestjs/observe module and instrument (not linked; the
 *    collector is unreachable here) and gets `Bus` and `EdgeHandlers`: it boots and answers a request.
 *
 * PACKAGING_NODE picks the Node of every child process (see toolchain.ts); PACKAGING_KEEP=1 keeps
 * the temp dirs.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
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
  expectSuccess,
  KEEP,
  nodeUnderTest,
  npmWarnings,
  readJson,
  readmeFiles,
  readmeInstallArgs,
  REPO,
  run,
  STEP_TIMEOUT,
  writeFileBlocks,
} from './toolchain';

const LIB = 'nestjs-nats-eventbus';
const QUICK_START_FILES = [
  'src/edge.handlers.ts',
  'src/app.module.ts',
  'src/main.ts',
  'test/edge.handlers.spec.ts',
  'test/bus-behaviours.spec.ts',
];

const notes: string[] = [];
const note = (line: string) => notes.push(line);

function httpGet(port: number, route: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: route, timeout: 5_000 }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject)
      .on('timeout', function (this: http.ClientRequest) {
        this.destroy(new Error(`GET ${route} timed out`));
      });
  });
}

/** A long-running app process whose output is kept and whose exit can be awaited. */
function startApp(cwd: string, env: NodeJS.ProcessEnv) {
  const child: ChildProcess = spawn(nodeUnderTest().bin, ['dist/main.js'], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const app = {
    child,
    output: '',
    started: Date.now(),
    exited: new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.on('exit', (code, signal) => resolve({ code, signal })),
    ),
  };
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (app.output += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (app.output += d));
  return app;
}

describe('the README in an app from `nest new` (ESM, Vitest)', () => {
  const specStarted = Date.now();
  let nats: NatsServer;
  let redis: RedisServer;
  let workDir: string;
  let appDir: string;
  let observeDir: string;
  let tarball: string | undefined;
  let generated = false;
  let installed = false;
  let built = false;

  beforeAll(async () => {
    workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'eventbus-nest-new-'));
    appDir = path.join(workDir, 'readme-app');
    observeDir = path.join(workDir, 'observe-app');
    [nats, redis] = await Promise.all([NatsServer.start(), RedisServer.start()]);
    const node = nodeUnderTest();
    note(
      `node: ${node.version} (${node.requested === 'jest' ? 'the one running jest' : `PACKAGING_NODE=${node.requested}, ${node.bin}, found in ${node.resolveMs} ms`})`,
    );
  }, 240_000);

  afterAll(async () => {
    await Promise.allSettled([nats?.dispose(), redis?.dispose()]);
    if (workDir && !KEEP) fs.rmSync(workDir, { recursive: true, force: true });
    note(`total: ${((Date.now() - specStarted) / 1000).toFixed(1)} s${KEEP ? `, kept ${workDir}` : ''}`);
    console.log(`[packaging: nest new]\n${notes.join('\n')}`);
  }, 60_000);

  it(
    'generates two apps with the pinned @nestjs/cli, as ES modules with nodenext, isolatedModules, Vitest and @nestjs/observe',
    async () => {
      const pinned = readJson(path.join(REPO, 'package.json')).devDependencies['@nestjs/cli'];
      const cliVersion = readJson(path.join(REPO, 'node_modules/@nestjs/cli/package.json')).version;
      // An exact pin, and node_modules holding it: the generated app changes only when we bump it.
      expect({ pinned, installed: cliVersion }).toEqual({ pinned: expect.stringMatching(/^\d+\.\d+\.\d+$/), installed: pinned });
      const nest = binOf(REPO, '@nestjs/cli', 'nest');
      for (const name of ['readme-app', 'observe-app']) {
        const gen = await run(nest.cmd, [...nest.args, 'new', name, '--skip-install', '--skip-git', '--package-manager', 'npm'], {
          cwd: workDir,
          env: cleanEnv({ NO_COLOR: '1' }),
        });
        expectSuccess(`nest new ${name}`, gen);
        note(`nest new ${name}: @nestjs/cli ${cliVersion}, ${gen.ms} ms`);
      }

      // What the README is written for; if a CLI bump changes it, the README needs a look too.
      const pkg = readJson(path.join(appDir, 'package.json'));
      const tsconfig = readJson(path.join(appDir, 'tsconfig.json')).compilerOptions;
      expect({
        type: pkg.type,
        build: pkg.scripts.build,
        test: pkg.scripts.test,
        module: tsconfig.module,
        moduleResolution: tsconfig.moduleResolution,
        isolatedModules: tsconfig.isolatedModules,
        emitDecoratorMetadata: tsconfig.emitDecoratorMetadata,
        types: tsconfig.types,
      }).toEqual({
        type: 'module',
        build: 'nest build',
        test: 'vitest run',
        module: 'nodenext',
        moduleResolution: 'nodenext',
        isolatedModules: true,
        emitDecoratorMetadata: true,
        types: expect.arrayContaining(['vitest/globals']),
      });
      expect(fs.readFileSync(path.join(appDir, 'vitest.config.ts'), 'utf8')).toMatch(/include: \['\*\*\/\*\.spec\.ts'\]/);
      expect(fs.readFileSync(path.join(observeDir, 'src/main.ts'), 'utf8')).toMatch(/instrument: ObserveInstrument/);
      expect(fs.readFileSync(path.join(observeDir, 'src/app.module.ts'), 'utf8')).toMatch(/ObserveModule\.forRoot\(/);
      note(
        `generated deps: ${Object.entries({ ...pkg.dependencies, ...pkg.devDependencies })
          .map(([n, v]) => `${n}@${v}`)
          .join(', ')}`,
      );
      generated = true;
    },
    STEP_TIMEOUT,
  );

  it(
    "packs the library and installs it with the README's Install line",
    async () => {
      if (!generated) throw new Error('skipped: nest new failed');
      const packDir = path.join(workDir, 'pack');
      fs.mkdirSync(packDir);
      const packed = await buildAndPack(packDir);
      tarball = packed.tarball;
      note(`pack (prepare builds): ${path.basename(tarball)}, ${packed.files.length} files, ${packed.size} bytes, ${packed.packMs} ms`);

      const { line, args } = readmeInstallArgs(tarball);
      const install = await run('npm', args, { cwd: appDir });
      const warnings = npmWarnings(install);
      note(
        `install: \`${line}\` with the tarball, ${install.ms} ms, ${warnings.length} npm warnings${warnings.map((w) => `\n  ${w}`).join('')}`,
      );
      expectSuccess(`npm ${args.join(' ')}`, install);
      expect(install.stderr).not.toMatch(/ERESOLVE (could not|unable to) resolve/);

      const versions = ['@nestjs/common', '@nestjs/core', '@nestjs/observe', 'typescript', 'vitest', 'vite', LIB]
        .filter((n) => fs.existsSync(path.join(appDir, 'node_modules', n, 'package.json')))
        .map((n) => `${n}@${readJson(path.join(appDir, 'node_modules', n, 'package.json')).version}`);
      note(`installed: ${versions.join(', ')}`);
      expect(readJson(path.join(appDir, 'node_modules', LIB, 'package.json')).version).toBe(
        readJson(path.join(REPO, 'package.json')).version,
      );
      // One copy of Nest's state for the app and the library, or @Subscribe methods are never found.
      for (const shared of ['@nestjs/common', '@nestjs/core', 'reflect-metadata']) {
        expect({ pkg: shared, copies: copiesOf(path.join(appDir, 'node_modules'), shared).map((p) => path.relative(appDir, p)) }).toEqual({
          pkg: shared,
          copies: [path.join('node_modules', shared)],
        });
      }
      // observe-app uses the same installed tree (its own package.json stays as generated).
      fs.symlinkSync(path.join(appDir, 'node_modules'), path.join(observeDir, 'node_modules'), 'dir');
      installed = true;
    },
    STEP_TIMEOUT,
  );

  it(
    'writes every file block of the README and docs, and type-checks with the generated tsconfig (tsc --noEmit)',
    async () => {
      if (!installed) throw new Error('skipped: the install step failed');
      const files = readmeFiles();
      note(`file blocks: ${files.map((f) => `${f.file} (${f.from})`).join(', ')}`);
      expect(files.map((f) => f.file)).toEqual(expect.arrayContaining(QUICK_START_FILES));
      expect(new Set(files.map((f) => f.file)).size).toBe(files.length);
      writeFileBlocks(appDir, files);

      const tsc = binOf(appDir, 'typescript', 'tsc');
      const check = await run(tsc.cmd, [...tsc.args, '--noEmit', '-p', 'tsconfig.json'], { cwd: appDir });
      note(`tsc --noEmit: exit ${check.code} in ${check.ms} ms`);
      expectSuccess('tsc --noEmit -p tsconfig.json', check);

      // The check above must be able to fail: with the generated config it reports what issue 25 hit,
      // a type in a decorated signature imported as a value (TS1272) and a relative import without .js (TS2307).
      const canary = path.join(appDir, 'src/canary.ts');
      fs.writeFileSync(
        canary,
        [
          "import { Injectable } from '@nestjs/common';",
          `import { MessageContextInit, Subscribe } from '${LIB}';`,
          "import { EdgeHandlers } from './edge.handlers';",
          '@Injectable()',
          'export class Canary {',
          "  @Subscribe('canary')",
          '  on(_req: unknown, ctx: MessageContextInit, h: EdgeHandlers) {',
          '    return [ctx, h];',
          '  }',
          '}',
          '',
        ].join('\n'),
      );
      try {
        const bad = await run(tsc.cmd, [...tsc.args, '--noEmit', '-p', 'tsconfig.json'], { cwd: appDir });
        expect(bad.code).not.toBe(0);
        expect(bad.stdout).toMatch(/src\/canary\.ts\(\d+,\d+\): error TS1272/);
        expect(bad.stdout).toMatch(/src\/canary\.ts\(\d+,\d+\): error TS(2307|2835)/);
      } finally {
        fs.rmSync(canary);
      }
    },
    STEP_TIMEOUT,
  );

  it(
    'builds with the generated `npm run build`; dist/main.js publishes the Quick start reply, serves /_health, stops on SIGTERM',
    async () => {
      if (!installed) throw new Error('skipped: the install step failed');
      const build = await run('npm', ['run', 'build'], { cwd: appDir });
      expectSuccess('npm run build (nest build)', build);
      expect(fs.existsSync(path.join(appDir, 'dist/main.js'))).toBe(true);
      built = true;

      redis.cli('FLUSHALL');
      const port = await freePort();
      const nc = await connect({ servers: nats.url });
      const published: Uint8Array[] = [];
      const sub = nc.subscribe('notification.slack.request', { callback: (_e, m) => void published.push(m.data) });
      await nc.flush();
      const app = startApp(appDir, cleanEnv({ NATS_URL: nats.url, REDIS_URL: redis.url, PORT: String(port), NO_COLOR: '1' }));
      try {
        await waitUntil(() => published.length > 0 || app.child.exitCode !== null, 'the Quick start publish', 60_000);
        const bootMs = Date.now() - app.started;
        expect({
          published: published.map((b) => Buffer.from(b).toString('utf8')),
          exited: app.child.exitCode,
          output: app.child.exitCode === null ? '' : app.output,
        }).toEqual({
          published: ['{"request_id":"1","message":"0 edges"}'],
          exited: null,
          output: '',
        });
        const health = await httpGet(port, '/_health');
        expect({ status: health.status, body: JSON.parse(health.body).status }).toEqual({ status: 200, body: 'ok' });

        app.child.kill('SIGTERM');
        const { code, signal } = await app.exited;
        note(
          `readme-app: nest build ${build.ms} ms; publish ${bootMs} ms after start; SIGTERM -> exit ${code} signal ${signal} in ${Date.now() - app.started - bootMs} ms`,
        );
        // Nest's shutdown hook closes the app, then re-raises the signal: both endings are a clean stop.
        expect({
          clean: code === 0 || (code === null && signal === 'SIGTERM'),
          errors: app.output.split('\n').filter((l) => /\bERROR\b|Error:/.test(l)),
        }).toEqual({
          clean: true,
          errors: [],
        });
        expect(app.output).toMatch(/EdgeHandlers\.listEdges subscribed to "edge\.list\.request"/);
      } finally {
        if (app.child.exitCode === null && app.child.signalCode === null) app.child.kill('SIGKILL');
        sub.unsubscribe();
        await nc.close();
      }
    },
    STEP_TIMEOUT,
  );

  it(
    "the generated `npm test` (Vitest) passes with the README's and docs/testing.md's test files in it, with no NATS or Redis to reach",
    async () => {
      if (!installed) throw new Error('skipped: the install step failed');
      // The test files use the testing module (issue 27): nothing may need a server, so both URLs point at nothing.
      const env = cleanEnv({
        NATS_URL: `nats://127.0.0.1:${await freePort()}`,
        REDIS_URL: `redis://127.0.0.1:${await freePort()}`,
        NO_COLOR: '1',
      });
      const test = await run('npm', ['test'], { cwd: appDir, env, timeoutMs: 120_000 });
      const summary = test.stdout.split('\n').filter((l) => /(Test Files|Tests) /.test(l) || /\.spec\.ts/.test(l));
      note(`npm test: exit ${test.code} in ${test.ms} ms${summary.map((l) => `\n  ${l.trim()}`).join('')}`);
      expectSuccess('npm test (vitest run)', test);
      expect(test.stdout).toMatch(/✓ test\/edge\.handlers\.spec\.ts \(1 test\)/);
      expect(test.stdout).toMatch(/✓ test\/bus-behaviours\.spec\.ts \(1 test\)/);
      expect(test.stdout).toMatch(/Test Files {2}\d+ passed \(\d+\)/);
      expect(test.stdout).not.toMatch(/failed/);
    },
    STEP_TIMEOUT,
  );

  it(
    'a handler bus works in an app that keeps the generated @nestjs/observe module and instrument (not linked)',
    async () => {
      if (!installed || !built) throw new Error('skipped: the install or build step failed');
      const blocks = Object.fromEntries(readmeFiles().map((f) => [f.file, f.code]));
      writeFileBlocks(observeDir, [{ file: 'src/edge.handlers.ts', code: blocks['src/edge.handlers.ts'] }]);
      // The README's Bus, added to the generated module next to ObserveModule; main.ts stays as generated.
      const bus = /^export const Bus = [\s\S]*?\n\}\);\n/m.exec(blocks['src/app.module.ts'])?.[0];
      if (!bus) throw new Error("the README's src/app.module.ts has no `export const Bus = …});` block");
      const moduleFile = path.join(observeDir, 'src/app.module.ts');
      const generatedModule = fs.readFileSync(moduleFile, 'utf8');
      const lastImport = [...generatedModule.matchAll(/^import .*;\n/gm)].pop()!;
      const at = lastImport.index! + lastImport[0].length;
      const edited =
        generatedModule.slice(0, at) +
        `import { EventBusModule } from '${LIB}';\nimport { EdgeHandlers } from './edge.handlers.js';\n\n${bus}` +
        generatedModule
          .slice(at)
          .replace('imports: [', 'imports: [\n    Bus,')
          .replace(/providers: \[([^\]]*)\]/, 'providers: [$1, EdgeHandlers]');
      expect(edited).toMatch(/imports: \[\n {4}Bus,\n[\s\S]*ObserveModule\.forRoot\(/);
      expect(edited).toMatch(/providers: \[AppService, EdgeHandlers\]/);
      fs.writeFileSync(moduleFile, edited);

      const tsc = binOf(observeDir, 'typescript', 'tsc');
      expectSuccess('observe-app tsc --noEmit', await run(tsc.cmd, [...tsc.args, '--noEmit', '-p', 'tsconfig.json'], { cwd: observeDir }));
      expectSuccess('observe-app npm run build', await run('npm', ['run', 'build'], { cwd: observeDir }));

      const port = await freePort();
      const app = startApp(observeDir, cleanEnv({ NATS_URL: nats.url, REDIS_URL: redis.url, PORT: String(port), NO_COLOR: '1' }));
      const nc = await connect({ servers: nats.url });
      try {
        await waitUntil(
          () => /Nest application successfully started/.test(app.output) || app.child.exitCode !== null,
          'observe-app to start',
          60_000,
        );
        if (app.child.exitCode !== null) throw new Error(`observe-app exited ${app.child.exitCode}:\n${app.output}`);
        const bootMs = Date.now() - app.started;
        const reply = await nc.request('edge.list.request', JSON.stringify({ request_id: 'o1' }), { timeout: 10_000 });
        expect(reply.string()).toBe('{"request_id":"o1","edges":[]}');
        expect((await httpGet(port, '/_health')).status).toBe(200);
        expect(await httpGet(port, '/')).toEqual({ status: 200, body: 'Hello World!' });
        app.child.kill('SIGTERM');
        const { code, signal } = await app.exited;
        // The generated main.ts has no enableShutdownHooks(): SIGTERM ends it by the signal itself.
        expect({ code, signal }).toEqual({ code: null, signal: 'SIGTERM' });
        const observeLines = app.output.split('\n').filter((l) => /Observe/.test(l));
        note(
          `observe-app: started in ${bootMs} ms, rpc answered; @nestjs/observe ${readJson(path.join(appDir, 'node_modules/@nestjs/observe/package.json')).version} said:${observeLines.map((l) => `\n  ${l.replace(/^.*?(LOG|WARN|ERROR|DEBUG)/, '$1')}`).join('')}`,
        );
        expect(app.output).toMatch(/EdgeHandlers\.listEdges subscribed to "edge\.list\.request"/);
      } finally {
        if (app.child.exitCode === null && app.child.signalCode === null) app.child.kill('SIGKILL');
        await nc.close();
      }
    },
    STEP_TIMEOUT,
  );
});
