'use strict';
// Outbox (issue 30): outbox publish plus relay against a direct persisted publish.
//   node bench/outbox.js [--n=3000] [--rounds=3]   (needs dist/: npm run build; EVENTBUS_DIST=dir to point elsewhere)
// A fresh nats-server (JetStream) and a throwaway PostgreSQL (test/harness/postgres-server.js).
// Per round, interleaved:
//   persist  bus.publish(topic, 128 B, { persist: true }), 64 awaiting their acks at a time
//   outbox   16 writers, each event its own transaction (BEGIN; outbox.publish; COMMIT), the relay
//            running (NOTIFY, batch 100); timed until the stream holds all N
//   relay    N rows committed first, then a relay started: its drain rate alone
// Prints msg/s per side and `RATIOS outbox_vs_persist=… outbox_relay_vs_persist=…` (above 1 = faster than persist).
const path = require('node:path');
const { Pool } = require('pg');
const { NatsServer } = require('../scripts/local-servers');
const { PostgresServer } = require('../test/harness/postgres-server');

const dist = process.env.EVENTBUS_DIST ?? path.join(__dirname, '..', 'dist');
const { EventBus } = require(dist);
const { EventBusOutbox, OutboxRelay, OUTBOX_DEFAULTS, outboxSchemaSql } = require(path.join(dist, 'outbox'));

const arg = (name, dflt) => {
  const a = process.argv.find((x) => x.startsWith(`--${name}=`));
  return a ? Number(a.split('=')[1]) : dflt;
};
const N = arg('n', 3000);
const ROUNDS = Math.max(3, arg('rounds', 3));
const WINDOW = 64;
const WRITERS = 16;
const payload = { id: 'x', text: 'a'.repeat(100) }; // about 128 B of JSON
const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const [nats, pg] = await Promise.all([NatsServer.start(), PostgresServer.start()]);
  const pool = new Pool({ connectionString: pg.url, max: WRITERS + 4 });
  pool.on('error', () => undefined);
  const bus = new EventBus({
    nats: { servers: nats.url },
    telemetry: false,
    jetstream: { streams: [{ name: 'BENCH_OB', subjects: ['bench.ob.>'], maxAgeSeconds: 600 }] },
  });
  await bus.connect();
  const { jetstreamManager } = require('@nats-io/jetstream');
  const { connect } = require('@nats-io/transport-node');
  const nc = await connect({ servers: nats.url });
  const jsm = await jetstreamManager(nc);
  const count = async (subject) => (await jsm.streams.info('BENCH_OB', { subjects_filter: subject })).state.subjects?.[subject] ?? 0;
  const settings = (table) => ({ ...OUTBOX_DEFAULTS, table, retryBackoffMs: [50, 200] });

  const sides = {
    async persist(round) {
      const topic = `bench.ob.persist.${round}`;
      const t0 = process.hrtime.bigint();
      let next = 0;
      const lane = async () => {
        while (next < N) {
          next++;
          await bus.publish(topic, payload, { persist: true });
        }
      };
      await Promise.all(Array.from({ length: WINDOW }, lane));
      return N / (Number(process.hrtime.bigint() - t0) / 1e9);
    },
    async outbox(round) {
      const table = `bench_ob_${round}`;
      await pool.query(outboxSchemaSql(table));
      const topic = `bench.ob.outbox.${round}`;
      const outbox = new EventBusOutbox(bus, table);
      const relay = new OutboxRelay(pool, bus, settings(table));
      relay.start();
      await relay.ready();
      const t0 = process.hrtime.bigint();
      let next = 0;
      const writer = async () => {
        const client = await pool.connect();
        try {
          while (next < N) {
            next++;
            await client.query('BEGIN');
            await outbox.publish(client, topic, payload);
            await client.query('COMMIT');
          }
        } finally {
          client.release();
        }
      };
      await Promise.all(Array.from({ length: WRITERS }, writer));
      while ((await count(topic)) < N) await sleep(5);
      const rate = N / (Number(process.hrtime.bigint() - t0) / 1e9);
      await relay.stop();
      return rate;
    },
    async relay(round) {
      const table = `bench_obr_${round}`;
      await pool.query(outboxSchemaSql(table));
      const topic = `bench.ob.relay.${round}`;
      const outbox = new EventBusOutbox(bus, table);
      const client = await pool.connect();
      await client.query('BEGIN');
      for (let i = 0; i < N; i++) await outbox.publish(client, topic, payload);
      await client.query('COMMIT');
      client.release();
      const relay = new OutboxRelay(pool, bus, settings(table));
      const t0 = process.hrtime.bigint();
      relay.start();
      while ((await count(topic)) < N) await sleep(5);
      const rate = N / (Number(process.hrtime.bigint() - t0) / 1e9);
      await relay.stop();
      return rate;
    },
  };

  const results = { persist: [], outbox: [], relay: [] };
  try {
    await sides.persist('warmup');
    for (let r = 0; r < ROUNDS; r++) {
      for (const side of Object.keys(sides)) {
        const rate = await sides[side](r);
        results[side].push(rate);
        console.error(`round ${r + 1} ${side}: ${Math.round(rate)} msg/s`);
      }
    }
  } finally {
    await bus.close();
    await nc.close();
    await pool.end();
    await Promise.all([nats.dispose(), pg.dispose()]);
  }
  const ratios = (side) => results[side].map((x, i) => x / results.persist[i]);
  for (const side of Object.keys(results)) {
    console.log(
      `${side.padEnd(8)} ${results[side].map((x) => Math.round(x)).join(' / ')} msg/s, median ${Math.round(median(results[side]))}`,
    );
  }
  console.log(
    `outbox/persist per round ${ratios('outbox')
      .map((x) => x.toFixed(2))
      .join(' / ')}; relay/persist ${ratios('relay')
      .map((x) => x.toFixed(2))
      .join(' / ')}`,
  );
  console.log(
    `RATIOS outbox_vs_persist=${median(ratios('outbox')).toFixed(2)} outbox_relay_vs_persist=${median(ratios('relay')).toFixed(2)}`,
  );
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
