/**
 * Packaging test: installing from git, before (or instead of) the registry, gives a working package.
 * `dist/` is not committed, so this works only because the `prepare` script builds it: npm clones
 * the repo, installs its devDependencies there, runs `prepare` and packs the result.
 *
 * The repo's HEAD (committed work only, as a user's `npm install <git url>#<tag>` gets it) is
 * cloned to a temp dir and installed into a fresh app with the README's Install line, the git URL
 * standing for the package name. The installed package holds what `files` ships, and both
 * `require()` and `import` load it. PACKAGING_NODE picks the Node of every child process.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { expectSuccess, KEEP, nodeUnderTest, npmWarnings, readJson, readmeInstallArgs, REPO, run, STEP_TIMEOUT } from './toolchain';

const LIB = 'nestjs-nats-eventbus';

describe('npm install from a git URL (prepare builds dist/)', () => {
  const notes: string[] = [];
  let workDir: string;

  beforeAll(() => {
    workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'eventbus-git-install-'));
    const node = nodeUnderTest();
    notes.push(
      `node: ${node.version}${node.requested === 'jest' ? '' : ` (PACKAGING_NODE=${node.requested}, found in ${node.resolveMs} ms)`}`,
    );
  }, 240_000);

  afterAll(() => {
    if (workDir && !KEEP) fs.rmSync(workDir, { recursive: true, force: true });
    console.log(`[packaging: git install]\n${notes.join('\n')}${KEEP ? `\nkept ${workDir}` : ''}`);
  });

  it(
    "installs git+file://<clone of HEAD>#<commit> with the README's Install line, and the package loads from CommonJS and ES modules",
    async () => {
      const head = await run('git', ['rev-parse', 'HEAD'], { cwd: REPO });
      expectSuccess('git rev-parse HEAD', head);
      const sha = head.stdout.trim();
      const clone = path.join(workDir, 'clone');
      const cloned = await run('git', ['clone', '--quiet', '--depth', '1', `file://${REPO}`, clone], { cwd: workDir });
      expectSuccess('git clone', cloned);
      // No build output is committed: what the app gets, the prepare script made.
      expect(fs.existsSync(path.join(clone, 'dist'))).toBe(false);

      const appDir = path.join(workDir, 'app');
      fs.mkdirSync(appDir);
      fs.writeFileSync(
        path.join(appDir, 'package.json'),
        JSON.stringify({ name: 'git-install-app', version: '0.0.0', private: true }, null, 2),
      );
      const { line, args } = readmeInstallArgs(`git+file://${clone}#${sha}`);
      const install = await run('npm', args, { cwd: appDir });
      const warnings = npmWarnings(install);
      notes.push(
        `install from git (${sha.slice(0, 8)}): ${install.ms} ms with \`${line}\`; ${warnings.length} warnings${warnings.map((w) => `\n  ${w}`).join('')}`,
      );
      expectSuccess(`npm ${args.join(' ')}`, install);

      const installed = path.join(appDir, 'node_modules', LIB);
      expect(readJson(path.join(installed, 'package.json')).version).toBe(readJson(path.join(REPO, 'package.json')).version);
      for (const f of ['dist/index.js', 'dist/index.d.ts', 'dist/microservices/index.js', 'dist/microservices/index.d.ts', 'LICENSE']) {
        expect({ file: f, present: fs.existsSync(path.join(installed, f)) }).toEqual({ file: f, present: true });
      }
      // What "files" leaves out stays out: sources, tests, the repo's own node_modules.
      expect(fs.readdirSync(installed).filter((e) => ['lib', 'test', 'node_modules', 'src'].includes(e))).toEqual([]);

      const shape = `[typeof m.EventBusModule.forRoot, typeof m.EventBus, typeof m.Subscribe, typeof m.MessageContext].join(' ')`;
      const cjs = await run('node', ['-e', `const m = require('${LIB}'); console.log(${shape})`], { cwd: appDir });
      expectSuccess('require() of the git-installed package', cjs);
      const esm = await run('node', ['--input-type=module', '-e', `import * as m from '${LIB}'; console.log(${shape})`], { cwd: appDir });
      expectSuccess('import of the git-installed package', esm);
      expect({ cjs: cjs.stdout.trim(), esm: esm.stdout.trim() }).toEqual({
        cjs: 'function function function function',
        esm: 'function function function function',
      });
    },
    STEP_TIMEOUT,
  );
});
