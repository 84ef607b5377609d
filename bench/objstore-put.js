'use strict';
// Object store put (issue 29): CPU and wall time of one ObjectStoreBucket.put of a 2 MiB and an
// 8 MiB object, and of a burst of BURST 2 MiB puts at once, for one or more builds of lib/ side by
// side, interleaved put by put (the model is bench/objstore-read.js).
//   node bench/objstore-put.js                          (the build in dist/: npm run build)
//   node bench/objstore-put.js before=DIR after=DIR     (DIRs built with tsc -p tsconfig.build.json --outDir DIR)
// Options (env): RUNS (default 60 rounds), BURST (default 16 puts at once; 0 for none).
// A fresh nats-server with JetStream file storage is started on loopback. Each build writes through
// its own NATS connection into its own bucket, each time under the same name (the object it replaces
// is purged, so the stream stays small). CPU is process.cpuUsage (user + system, the whole process)
// around one put or burst; on a shared machine it is the figure to compare, wall time is noisier.
const path = require('node:path');
const { randomBytes } = require('node:crypto');
const { performance } = require('node:perf_hooks');
const { connect } = require('@nats-io/transport-node');
const { NatsServer } = require('../scripts/local-servers');

const MiB = 1024 * 1024;
const RUNS = Number(process.env.RUNS ?? 60);
const BURST = Number(process.env.BURST ?? 16);
const builds = process.argv.slice(2).map((a) => {
  const [label, dir] = a.includes('=') ? a.split('=') : [path.basename(a), a];
  return { label, dir: path.resolve(dir) };
});
if (builds.length === 0) builds.push({ label: 'dist', dir: path.join(__dirname, '..', 'dist') });

const cpuUs = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};
const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;

async function main() {
  const server = await NatsServer.start();
  const connections = [];
  try {
    for (const [i, b] of builds.entries()) {
      const { ObjectStoreBucket } = require(path.join(b.dir, 'nats', 'object-store-bucket'));
      const nc = await connect({ servers: server.url });
      connections.push(nc);
      const config = {
        bucket: `bench-put-${i}`,
        ttlSeconds: 3600,
        replicas: 1,
        storage: 'file',
        maxBytes: -1,
        operationTimeoutMs: 20000,
        chunkBytes: MiB,
      };
      b.bucket = await ObjectStoreBucket.open({ connection: nc, maxPayload: nc.info.max_payload, state: 'connected' }, config);
    }
    const cases = [2 * MiB, 8 * MiB].map((size) => ({
      label: `${size / MiB} MiB`,
      data: randomBytes(size),
      run: (bucket, data) => bucket.put(`p-${size}`, data, Date.now()),
    }));
    if (BURST > 0) {
      cases.push({
        label: `${BURST} x 2 MiB at once`,
        data: randomBytes(2 * MiB),
        run: (bucket, data) => Promise.all(Array.from({ length: BURST }, (_, k) => bucket.put(`burst-${k}`, data, Date.now()))),
      });
    }
    // Warm up, and check that every build reads back what it wrote.
    for (const b of builds) {
      for (const c of cases) {
        for (let i = 0; i < 3; i++) await c.run(b.bucket, c.data);
      }
      const got = await b.bucket.get(`p-${8 * MiB}`);
      if (!got || Buffer.compare(Buffer.from(got.buffer, got.byteOffset, got.byteLength), cases[1].data) !== 0) {
        throw new Error(`${b.label} wrote p-8 MiB wrong`);
      }
    }
    const samples = new Map();
    for (let run = 0; run < RUNS; run++) {
      for (const c of cases) {
        // Rotate which build goes first, so neither always follows the other.
        for (let k = 0; k < builds.length; k++) {
          const b = builds[(run + k) % builds.length];
          const key = `${c.label}\t${b.label}`;
          if (!samples.has(key)) samples.set(key, { cpu: [], wall: [] });
          const c0 = cpuUs();
          const t0 = performance.now();
          await c.run(b.bucket, c.data);
          const wall = performance.now() - t0;
          samples.get(key).cpu.push((cpuUs() - c0) / 1000);
          samples.get(key).wall.push(wall);
        }
      }
    }
    console.log(`ObjectStoreBucket.put, ${RUNS} rounds per case and build, interleaved (ms per put or burst)`);
    // Paired: this build over the first build in the same round, median over rounds.
    console.log('case\tbuild\tcpu median\tcpu mean\twall median\twall mean\tcpu paired\twall paired');
    for (const [key, s] of samples) {
      const base = samples.get(`${key.split('\t')[0]}\t${builds[0].label}`);
      const paired = (xs, ys) => median(xs.map((x, i) => x / ys[i]));
      const f = (x) => x.toFixed(2);
      console.log(
        `${key}\t${f(median(s.cpu))}\t${f(mean(s.cpu))}\t${f(median(s.wall))}\t${f(mean(s.wall))}\t${f(paired(s.cpu, base.cpu))}\t${f(paired(s.wall, base.wall))}`,
      );
    }
  } finally {
    await Promise.all(connections.map((nc) => nc.close().catch(() => undefined)));
    await server.dispose();
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
