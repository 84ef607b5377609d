'use strict';
// Object store read (issue 29): CPU and wall time of one ObjectStoreBucket.get of a 2 MiB and an
// 8 MiB object, for one or more builds of lib/ side by side, interleaved get by get.
//   node bench/objstore-read.js                          (the build in dist/: npm run build)
//   node bench/objstore-read.js before=DIR after=DIR     (DIRs built with tsc -p tsconfig.build.json --outDir DIR)
// Options (env): RUNS (default 60 gets per size and build), INTERLEAVED=1 also reads objects whose
// chunks were written by two puts at once (chunks not back to back in the stream).
// A fresh nats-server with JetStream file storage is started on loopback. Each build reads through
// its own NATS connection. CPU is process.cpuUsage (user + system, the whole process) around one
// get; on a shared machine it is the figure to compare, wall time is noisier. The server's CPU per
// get (from /proc, Linux) is the mean over all gets of that object and build.
const path = require('node:path');
const { randomBytes } = require('node:crypto');
const { performance } = require('node:perf_hooks');
const { connect } = require('@nats-io/transport-node');
const { NatsServer } = require('../scripts/local-servers');

const MiB = 1024 * 1024;
const RUNS = Number(process.env.RUNS ?? 60);
const builds = process.argv.slice(2).map((a) => {
  const [label, dir] = a.includes('=') ? a.split('=') : [path.basename(a), a];
  return { label, dir: path.resolve(dir) };
});
if (builds.length === 0) builds.push({ label: 'dist', dir: path.join(__dirname, '..', 'dist') });

const cpuUs = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};
const TICK_MS = 1000 / 100; // USER_HZ, the unit of /proc/<pid>/stat's utime and stime
/** CPU ms the nats-server process has used so far (10 ms steps; summed over many gets it averages out). */
const serverCpuMs = (pid) => {
  const fields = require('node:fs').readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) * TICK_MS;
};
const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;

async function main() {
  const server = await NatsServer.start();
  const connections = [];
  try {
    const config = {
      bucket: 'bench-read',
      ttlSeconds: 3600,
      replicas: 1,
      storage: 'file',
      maxBytes: -1,
      operationTimeoutMs: 20000,
      chunkBytes: MiB,
    };
    for (const b of builds) {
      const { ObjectStoreBucket } = require(path.join(b.dir, 'nats', 'object-store-bucket'));
      const nc = await connect({ servers: server.url });
      connections.push(nc);
      b.bucket = await ObjectStoreBucket.open({ connection: nc, maxPayload: nc.info.max_payload, state: 'connected' }, config);
    }
    const writer = builds[0].bucket;
    const objects = [];
    for (const size of [2 * MiB, 8 * MiB]) {
      const data = randomBytes(size);
      await writer.put(`c-${size}`, data, Date.now());
      objects.push({ name: `c-${size}`, label: `${size / MiB} MiB`, data });
      if (process.env.INTERLEAVED === '1') {
        const other = randomBytes(size);
        await Promise.all([writer.put(`i-${size}`, data, Date.now()), writer.put(`j-${size}`, other, Date.now())]);
        objects.push({ name: `i-${size}`, label: `${size / MiB} MiB interleaved`, data });
      }
    }
    // Every build reads every object whole and right before timing starts (and warms up).
    for (const b of builds) {
      for (const o of objects) {
        for (let i = 0; i < 5; i++) {
          const got = await b.bucket.get(o.name);
          if (!got || Buffer.compare(Buffer.from(got.buffer, got.byteOffset, got.byteLength), o.data) !== 0) {
            throw new Error(`${b.label} read ${o.name} wrong`);
          }
        }
      }
    }
    const samples = new Map();
    for (let run = 0; run < RUNS; run++) {
      for (const o of objects) {
        // Rotate which build goes first, so neither always follows the other.
        for (let k = 0; k < builds.length; k++) {
          const b = builds[(run + k) % builds.length];
          const key = `${o.label}\t${b.label}`;
          if (!samples.has(key)) samples.set(key, { cpu: [], wall: [], server: 0 });
          const s0 = serverCpuMs(server.child.pid);
          const c0 = cpuUs();
          const t0 = performance.now();
          await b.bucket.get(o.name);
          const wall = performance.now() - t0;
          const cpu = (cpuUs() - c0) / 1000;
          samples.get(key).cpu.push(cpu);
          samples.get(key).wall.push(wall);
          samples.get(key).server += serverCpuMs(server.child.pid) - s0;
        }
      }
    }
    console.log(`ObjectStoreBucket.get, ${RUNS} gets per object and build, interleaved (ms per get)`);
    // Paired: the same object's get by this build over the first build's get in the same round,
    // median over rounds (less moved by the machine's load drifting than the medians alone).
    console.log('object\tbuild\tcpu median\tcpu mean\twall median\twall mean\tcpu paired\twall paired\tserver cpu mean');
    for (const [key, s] of samples) {
      const base = samples.get(`${key.split('\t')[0]}\t${builds[0].label}`);
      const paired = (xs, ys) => median(xs.map((x, i) => x / ys[i]));
      const f = (x) => x.toFixed(2);
      const p = `${f(paired(s.cpu, base.cpu))}\t${f(paired(s.wall, base.wall))}\t${f(s.server / s.cpu.length)}`;
      console.log(`${key}\t${f(median(s.cpu))}\t${f(mean(s.cpu))}\t${f(median(s.wall))}\t${f(mean(s.wall))}\t${p}`);
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
