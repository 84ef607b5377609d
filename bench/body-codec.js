'use strict';
// Body codec (issue 32): what each codec does to a stored body, alone and through Redis.
//   node bench/body-codec.js            (needs dist/: npm run build; EVENTBUS_DIST=dir to point elsewhere)
// Part 1, no servers: stored bytes, ratio and CPU per body each way for the sample's site report
// JSON (2 MiB and 8 MiB, bench/payloads.js largeJson) and for random bytes (incompressible).
// Part 2, a real redis-server: store + recover of a 2 MiB report through ClaimCheckCodec, plain
// vs each codec, as round trips per second; prints `RATIOS codec_aes_vs_plain=… codec_zstd_vs_plain=…`
// (other / plain throughput, above 1 = faster than plain; zstd falls back to gzip on a Node without it).
const path = require('node:path');
const { randomBytes } = require('node:crypto');
const { performance } = require('node:perf_hooks');
const { largeJson } = require('./payloads');

const dist = process.env.EVENTBUS_DIST ?? path.join(__dirname, '..', 'dist');
const { withBodyCodec, ZSTD_AVAILABLE, RedisStorageManager } = require(dist);
const { BodyCodec } = require(path.join(dist, 'claim-check', 'body-codec'));
const { ClaimCheckCodec } = require(path.join(dist, 'claim-check', 'claim-check.codec'));

const MiB = 1024 * 1024;
const KEY = randomBytes(32);
const TOKEN = '0f8fad5b-d9cb-469f-a165-70867728950e';
const encryption = { keys: { k1: KEY }, currentKeyId: 'k1' };
const CODECS = [
  ['none', {}],
  ['gzip', { compression: 'gzip' }],
  ['brotli', { compression: 'brotli' }],
  ...(ZSTD_AVAILABLE ? [['zstd', { compression: 'zstd' }]] : []),
  ['aes-gcm', { encryption }],
  ['gzip+aes', { compression: 'gzip', encryption }],
  ...(ZSTD_AVAILABLE ? [['zstd+aes', { compression: 'zstd', encryption }]] : []),
];

const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const cpuUs = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};

/** Median CPU µs (all threads: zlib runs on the thread pool) and wall µs of `fn` over `runs`. */
async function measure(fn, runs) {
  const cpu = [];
  const wall = [];
  await fn(); // warm-up
  for (let i = 0; i < runs; i++) {
    const c = cpuUs();
    const t = performance.now();
    await fn();
    wall.push((performance.now() - t) * 1000);
    cpu.push(cpuUs() - c);
  }
  return { cpu: median(cpu), wall: median(wall) };
}

async function part1() {
  const bodies = [
    ['report 2 MiB', Buffer.from(JSON.stringify(largeJson(2 * MiB)))],
    ['report 8 MiB', Buffer.from(JSON.stringify(largeJson(8 * MiB)))],
    ['random 2 MiB', randomBytes(2 * MiB)],
  ];
  console.log(`Node ${process.versions.node}; CPU = user+system of the process (zlib's thread pool included), median`);
  console.log('| body | codec | stored bytes | stored / original | encode CPU µs | decode CPU µs | encode MiB/s CPU | decode MiB/s CPU |');
  console.log('|---|---|---:|---:|---:|---:|---:|---:|');
  for (const [label, body] of bodies) {
    const runs = body.byteLength > 4 * MiB ? 7 : 15;
    for (const [name, options] of CODECS) {
      const codec = new BodyCodec(options, true);
      const stored = await codec.encode(body, TOKEN);
      const enc = await measure(() => codec.encode(body, TOKEN), runs);
      const dec = await measure(() => codec.decode(stored, TOKEN), runs);
      const mib = body.byteLength / MiB;
      const rate = (us) => (name === 'none' || us < 10 ? '-' : (mib / (us / 1e6)).toFixed(0));
      console.log(
        `| ${label} | ${name} | ${stored.byteLength.toLocaleString('en')} | ${(stored.byteLength / body.byteLength).toFixed(3)} | ` +
          `${Math.round(enc.cpu).toLocaleString('en')} | ${Math.round(dec.cpu).toLocaleString('en')} | ${rate(enc.cpu)} | ${rate(dec.cpu)} |`,
      );
    }
  }
}

async function part2() {
  let RedisServer;
  try {
    ({ RedisServer } = require('../scripts/local-servers'));
  } catch {
    return console.log('part 2 skipped: scripts/local-servers not found');
  }
  const Redis = require('ioredis');
  const server = await RedisServer.start();
  const clients = [];
  const json = JSON.stringify(largeJson(2 * MiB));
  const rounds = 60;
  const results = {};
  const names = [
    ['plain', {}],
    ['aes', { encryption }],
    ['gzip', { compression: 'gzip' }],
  ];
  if (ZSTD_AVAILABLE) names.push(['zstd', { compression: 'zstd' }]);
  try {
    const { bodyCodecOf } = require(path.join(dist, 'claim-check', 'body-codec'));
    const runs = [];
    for (const [name, options] of names) {
      const client = new Redis(server.url);
      clients.push(client);
      const store = await withBodyCodec(new RedisStorageManager(client, { keyPrefix: 'bench:' }), options);
      const cc = new ClaimCheckCodec(store, 64 * 1024, bodyCodecOf(store));
      const once = async () => {
        const envelope = JSON.parse(Buffer.from(await cc.toWire('bench', json, 8 * MiB)).toString());
        await cc.recoverBytes('bench', envelope);
      };
      await once();
      results[name] = { seconds: 0, cpuUs: 0 };
      runs.push([name, once]);
    }
    // Interleaved, one round trip of each in turn, so that the shared machine's drift hits all alike.
    for (let i = 0; i < rounds; i++) {
      for (const [name, once] of runs) {
        const c = cpuUs();
        const t = performance.now();
        await once();
        results[name].seconds += (performance.now() - t) / 1000;
        results[name].cpuUs += cpuUs() - c;
      }
    }
    for (const [name] of runs) {
      const r = results[name];
      r.perSecond = rounds / r.seconds;
      console.log(
        `redis store+recover 2 MiB report, ${name}: ${r.perSecond.toFixed(1)}/s, ` +
          `${Math.round(r.cpuUs / rounds).toLocaleString('en')} µs CPU each (this process; redis-server apart)`,
      );
    }
  } finally {
    clients.forEach((c) => c.disconnect());
    await server.dispose();
  }
  const vs = (name) => (results[name].perSecond / results.plain.perSecond).toFixed(2);
  console.log(
    `RATIOS codec_aes_vs_plain=${vs('aes')} codec_zstd_vs_plain=${vs(ZSTD_AVAILABLE ? 'zstd' : 'gzip')}${ZSTD_AVAILABLE ? '' : ' (gzip: no zstd in this Node)'}`,
  );
}

(async () => {
  await part1();
  await part2();
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
