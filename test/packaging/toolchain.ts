/**
 * What the packaging specs share: the Node they run user apps under, child processes with a clean
 * npm environment, the library's build and pack, the README's install line and its file blocks.
 *
 * PACKAGING_NODE=26 (or 22, 24, 22.12, …) runs every `node`/`npm` child process under that Node,
 * fetched once from the npm package `node` into npm's cache (`npm exec -p node@26`): its directory
 * goes first on PATH, and `npm` (whose shebang is `/usr/bin/env node`) runs under it too. Unset,
 * the children use the Node that runs Jest.
 */
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as os from 'node:os';

export const REPO = path.resolve(__dirname, '../..');
export const STEP_TIMEOUT = 240_000;
export const KEEP = process.env.PACKAGING_KEEP === '1';

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
  timedOut: boolean;
}

export const readJson = (file: string) => JSON.parse(fs.readFileSync(file, 'utf8'));

/**
 * The environment without the npm_* variables `npx jest`/`npm test` set (above all
 * npm_config_local_prefix, which would make `npm install` install into the repo) and NODE_ENV
 * (=production would skip devDependencies).
 */
function withoutNpmVars(): NodeJS.ProcessEnv {
  const keep = new Set([
    'npm_config_cache',
    'npm_config_userconfig',
    'npm_config_globalconfig',
    'npm_config_registry',
    'npm_config_cafile',
  ]);
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^npm_/i.test(k) && !keep.has(k.toLowerCase())) continue;
    if (k === 'NODE_ENV') continue;
    env[k] = v;
  }
  return env;
}

export interface NodeUnderTest {
  /** What PACKAGING_NODE asked for, or 'jest' when unset. */
  requested: string;
  version: string;
  bin: string;
  /** How long fetching (or finding in npm's cache) that Node took. */
  resolveMs: number;
}

let resolved: NodeUnderTest | undefined;

/** The Node that runs the user apps and their tools (see PACKAGING_NODE above). */
export function nodeUnderTest(): NodeUnderTest {
  if (resolved) return resolved;
  const requested = process.env.PACKAGING_NODE?.trim();
  if (!requested) return (resolved = { requested: 'jest', version: process.version, bin: process.execPath, resolveMs: 0 });
  const started = Date.now();
  // Run from the temp dir so that the repo's own package.json plays no part in what npm exec fetches.
  const out = execFileSync(
    'npm',
    ['exec', '--yes', '--package', `node@${requested}`, '--', 'node', '-p', 'process.execPath + " " + process.version'],
    {
      cwd: os.tmpdir(),
      env: withoutNpmVars(),
      encoding: 'utf8',
      timeout: 180_000,
    },
  ).trim();
  const [bin, version] = out.split('\n').pop()!.split(' ');
  if (!version?.startsWith(`v${requested}`))
    throw new Error(`PACKAGING_NODE=${requested} gave ${JSON.stringify(out)} from npm exec -p node@${requested}`);
  return (resolved = { requested, version, bin: fs.realpathSync(bin), resolveMs: Date.now() - started });
}

/** The child environment: no npm_* variables, the Node under test first on PATH. */
export function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = withoutNpmVars();
  env.PATH = [path.dirname(nodeUnderTest().bin), env.PATH].filter(Boolean).join(path.delimiter);
  return { ...env, ...extra };
}

/** Runs a command to completion (async, so the harness servers keep being served); `node` means the Node under test. */
export function run(cmd: string, args: string[], opts: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<RunResult> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const env = opts.env ?? cleanEnv();
    // spawn looks the command up in env.PATH, where the Node under test comes first.
    const child = spawn(cmd === 'node' ? nodeUnderTest().bin : cmd, args, { cwd: opts.cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(
      () => {
        timedOut = true;
        child.kill('SIGKILL');
      },
      opts.timeoutMs ?? STEP_TIMEOUT - 10_000,
    );
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started, timedOut });
    });
  });
}

export function describeRun(what: string, r: RunResult): string {
  const tail = (s: string) => (s.length > 6000 ? '…' + s.slice(-6000) : s);
  return `${what}: exit ${r.code}${r.signal ? ` (${r.signal})` : ''}${r.timedOut ? ' TIMED OUT' : ''} after ${r.ms} ms\n--- stdout\n${tail(r.stdout)}\n--- stderr\n${tail(r.stderr)}`;
}

export function expectSuccess(what: string, r: RunResult): void {
  if (r.code !== 0) throw new Error(describeRun(what, r));
}

/** A package's "bin" entry as an absolute path, and how to start it (under the Node under test). */
export function binOf(appDir: string, pkg: string, name: string): { cmd: string; args: string[]; file: string } {
  const pkgDir = path.join(appDir, 'node_modules', pkg);
  const { bin } = readJson(path.join(pkgDir, 'package.json'));
  const rel = typeof bin === 'string' ? bin : bin?.[name];
  if (!rel) throw new Error(`${pkg} has no "${name}" bin (bin = ${JSON.stringify(bin)})`);
  const file = path.join(pkgDir, rel);
  const head = fs.readFileSync(file, 'utf8').slice(0, 200);
  return /^#!.*\bnode\b/.test(head) || /\.(c|m)?js$/.test(file)
    ? { cmd: nodeUnderTest().bin, args: [file], file }
    : { cmd: file, args: [], file };
}

/** Every installed copy of `pkg` in the tree under `nodeModules`. */
export function copiesOf(nodeModules: string, pkg: string, found: string[] = []): string[] {
  if (!fs.existsSync(nodeModules)) return found;
  if (fs.existsSync(path.join(nodeModules, pkg, 'package.json'))) found.push(path.join(nodeModules, pkg));
  for (const entry of fs.readdirSync(nodeModules)) {
    if (entry.startsWith('.')) continue;
    const dirs = entry.startsWith('@')
      ? fs.readdirSync(path.join(nodeModules, entry)).map((e) => path.join(nodeModules, entry, e))
      : [path.join(nodeModules, entry)];
    for (const d of dirs) copiesOf(path.join(d, 'node_modules'), pkg, found);
  }
  return found;
}

/** The markdown files whose code blocks the users copy: README.md, then docs/*.md. */
function docFiles(): string[] {
  const docs = path.join(REPO, 'docs');
  const deep = fs.existsSync(docs)
    ? fs
        .readdirSync(docs)
        .filter((f) => f.endsWith('.md'))
        .sort()
    : [];
  return [path.join(REPO, 'README.md'), ...deep.map((f) => path.join(docs, f))];
}

/** The blocks that stand for files: `<!-- file: src/main.ts -->` right above a ```ts block, in README.md and docs/*.md. */
export function readmeFiles(): Array<{ file: string; code: string; from: string }> {
  return docFiles().flatMap((md) =>
    [...fs.readFileSync(md, 'utf8').matchAll(/<!-- file: (\S+) -->\r?\n```ts\r?\n([\s\S]*?)\r?\n```/g)].map((m) => ({
      file: m[1],
      code: m[2] + '\n',
      from: path.relative(REPO, md),
    })),
  );
}

/** Writes the file blocks under `dir`; a block path leaving `dir` is refused. */
export function writeFileBlocks(dir: string, files: Array<{ file: string; code: string }>): void {
  for (const { file, code } of files) {
    const target = path.resolve(dir, file);
    if (!target.startsWith(dir + path.sep)) throw new Error(`file block ${file} points outside the app`);
    fs.mkdirSync(path.dirname(target), { recursive: true });
    fs.writeFileSync(target, code);
  }
}

/**
 * The README's Install line, as arguments after `npm`: the first `npm install nestjs-nats-eventbus …`
 * in the Install section's shell block, with `source` (a tarball path, a git URL) put where the
 * package name stands.
 */
export function readmeInstallArgs(source: string): { line: string; args: string[] } {
  const readme = fs.readFileSync(path.join(REPO, 'README.md'), 'utf8');
  const section = readme.split(/^## /m).find((s) => s.startsWith('Install\n'));
  if (!section) throw new Error('README.md has no "## Install" section');
  const line = section
    .split('\n')
    .map((l) => l.trim())
    .find((l) => /^npm (install|i) nestjs-nats-eventbus(\s|$)/.test(l));
  if (!line) throw new Error('the README\'s Install section has no "npm install nestjs-nats-eventbus …" line');
  const words = line.replace(/\s+#.*$/, '').split(/\s+/);
  return { line, args: words.slice(1).map((w) => (w === 'nestjs-nats-eventbus' ? source : w)) };
}

export interface PackedLibrary {
  tarball: string;
  files: string[];
  size: number;
  /** Includes the build, which the prepare script runs. */
  packMs: number;
}

/** `npm pack` of the repo's work tree into `packDir`; its `prepare` script runs `npm run build` first. */
export async function buildAndPack(packDir: string): Promise<PackedLibrary> {
  const pack = await run('npm', ['pack', '--pack-destination', packDir, '--json'], { cwd: REPO });
  expectSuccess('npm pack', pack);
  // The prepare script's own output comes first; the JSON report is the last thing printed.
  const json = pack.stdout.slice(pack.stdout.search(/^\[/m));
  const [info] = JSON.parse(json);
  const tarball = path.join(packDir, info.filename);
  if (!fs.existsSync(tarball)) throw new Error(`npm pack reported ${info.filename}, which is not in ${packDir}`);
  if (!/> npm run build/.test(pack.stdout + pack.stderr)) throw new Error(describeRun('npm pack did not run the prepare build', pack));
  return { tarball, files: (info.files as Array<{ path: string }>).map((f) => f.path), size: info.size, packMs: pack.ms };
}

/** npm's warnings of a run, in short: the packages whose `engines` exclude this Node, then the other lines. */
export function npmWarnings(r: RunResult): string[] {
  const lines = r.stderr.split('\n').filter((l) => /npm warn/i.test(l));
  const engines = [
    ...r.stderr.matchAll(
      /EBADENGINE\s+package: '([^']+)',\s+npm warn EBADENGINE\s+required: \{\s*(?:npm warn EBADENGINE\s+)?node: '([^']+)'/g,
    ),
  ].map((m) => `${m[1]} (node ${m[2]})`);
  const other = lines.filter((l) => !/EBADENGINE/.test(l) && !/install-scripts\s*$/.test(l));
  return [...(engines.length ? [`EBADENGINE: ${engines.join(', ')}`] : []), ...other];
}
