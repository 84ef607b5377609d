#!/usr/bin/env node
'use strict';
// The sample services' AsyncAPI documents, sample/<service>/asyncapi.json, made by the library's
// own CLI (`nestjs-nats-eventbus asyncapi`) from the compiled app modules, as a user would make
// theirs. Connects to nothing.
//   node sample/asyncapi.js          build, then write the three documents
//   node sample/asyncapi.js --check  build, then exit 1 (naming them) when a document is not current
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..');
const SERVICES = ['velocloud-bridge', 'notifier', 'sites-monitor'];
// The documents show the defaults, whatever the environment of the one who regenerates them.
const CONFIG_VARS = [
  'NATS_URL',
  'REDIS_URL',
  'EVENTBUS_STORAGE',
  'EVENTBUS_KEY_PREFIX',
  'EVENTBUS_TTL_SECONDS',
  'NOTIFICATIONS_MAX_AGE_SECONDS',
  'NOTIFICATIONS_DUPLICATE_WINDOW_SECONDS',
  'DATABASE_URL',
];

function run(args, env) {
  const res = spawnSync(process.execPath, args, { cwd: ROOT, env, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (res.status !== 0) {
    process.stderr.write(res.stderr || '');
    throw new Error(`node ${args.join(' ')} exited with ${res.status}`);
  }
  return res.stdout;
}

/** The document the CLI prints for `service` now. */
function generate(service) {
  const env = { ...process.env };
  for (const name of CONFIG_VARS) delete env[name];
  return run(
    [path.join('dist', 'cli', 'main.js'), 'asyncapi', '--module', path.join('.tmp', 'sample', service, `${service}.module.js`)],
    env,
  );
}

function main() {
  const check = process.argv.includes('--check');
  // The library (dist/) and the sample (.tmp/sample), as `npm run sample` builds them.
  run([path.join('sample', 'run.js')], { ...process.env, SAMPLE_BUILD_ONLY: '1' });
  const stale = [];
  for (const service of SERVICES) {
    const file = path.join(__dirname, service, 'asyncapi.json');
    const text = generate(service);
    if (check) {
      if (!fs.existsSync(file) || fs.readFileSync(file, 'utf8') !== text) stale.push(path.relative(ROOT, file));
    } else fs.writeFileSync(file, text);
  }
  if (stale.length) {
    process.stderr.write(`not current: ${stale.join(', ')}; run \`node sample/asyncapi.js\`\n`);
    process.exit(1);
  }
}

main();
