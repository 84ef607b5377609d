'use strict';
// `npm run soak`: the reliability suite (test/reliability) with the long-run sizes (SOAK=1), then a
// one-line summary of the figures each scenario recorded. Exit code is jest's.
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const figuresFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'eventbus-soak-')), 'figures.jsonl');
const started = Date.now();
const jest = require.resolve('jest/bin/jest');
const res = spawnSync(process.execPath, [jest, '--runInBand', 'test/reliability', ...process.argv.slice(2)], {
  cwd: path.resolve(__dirname, '../..'),
  stdio: 'inherit',
  env: { ...process.env, SOAK: '1', RELIABILITY_FIGURES: figuresFile },
});

const figures = {};
if (fs.existsSync(figuresFile)) {
  for (const line of fs.readFileSync(figuresFile, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    const f = JSON.parse(line);
    figures[f.scenario] = f;
  }
}
const f = (name) => figures[name] || {};
const parts = [];
const small = f('load.small');
if (small.published)
  parts.push(`small ${small.received}/${small.published} lost ${small.lost} dup ${small.duplicated} (${small.msgPerSec} msg/s)`);
const large = f('load.large');
if (large.published)
  parts.push(
    `large ${large.received}/${large.published} (${large.MiB} MiB) lost ${large.lost} corrupt ${large.corrupt} peakRSS ${large.peakRssMiB} MiB`,
  );
const slow = f('load.slowConsumer');
if (slow.published)
  parts.push(
    `slow consumer inFlight<=${slow.maxInFlight}/${slow.maxConcurrentHandlers} pending<=${slow.maxPendingSeen}/${slow.maxPendingMessages} dropped ${slow.droppedByDesign} peakRSS ${slow.peakRssMiB} MiB`,
  );
const nk = f('fault.natsKill');
if (nk.published)
  parts.push(
    `NATS kill: outage ${nk.publishedDuringOutage - nk.lostDuringOutage}/${nk.publishedDuringOutage} delivered, in flight at kill lost ${nk.lostBeforeKill}, after lost ${nk.lostAfter}, rpc ${nk.rpcDuringOutage}`,
  );
const rk = f('fault.redisKill');
if (rk.received !== undefined)
  parts.push(`Redis kill: ${rk.rejectedWithMessageStorageError} MessageStorageError, ${rk.intact}/${rk.publishedOk} intact`);
const rs = f('fault.redisSlow');
if (rs.operationTimeoutMs)
  parts.push(
    `Redis slow: store ${rs.storeRejectedAfterMs} ms, recover ${rs.recoveryFailureLoggedAfterMs} ms (timeout ${rs.operationTimeoutMs}), other max ${rs.smallLatencyMaxMs} ms`,
  );
const fl = f('fault.flakyHandlers');
if (fl.events) parts.push(`flaky: ${fl.eventsWrong + fl.wrongOutcomes} wrong, RemoteHandlerError max ${fl.maxErrorMs} ms`);
const bi = f('badInput.bodies');
const be = f('badInput.envelopes');
if (bi.runs || be.runs)
  parts.push(
    `bad input: ${(bi.runs || 0) + (be.runs || 0)} runs, ${(bi.keysOutsidePrefixOrShape || 0) + (be.keysOutsidePrefixOrShape || 0)} keys outside prefix`,
  );
const fd = f('badInput.flood');
if (fd.floodEnvelopes) parts.push(`flood ${fd.floodEnvelopes}: other p99 ${fd.otherLatencyP99Ms} ms`);
const dk = f('durable.natsKill');
if (dk.published)
  parts.push(
    `durable NATS kill: lost ${dk.lost}/${dk.published}, stored ${dk.storedInStream}, dup ${dk.duplicated}, retried ${dk.retriedIds}`,
  );
const dc = f('durable.consumerKill');
if (dc.survivorGot) parts.push(`durable consumer kill: redelivered deliveryCount ${(dc.survivorGot[0] || {}).deliveryCount}`);
const dl = f('durable.clusterLeaderKill');
if (dl.published)
  parts.push(`durable R3 leader kill: lost ${dl.lost}/${dl.published}, dup ${dl.duplicated}, pause ${dl.consumerLongestPauseMs} ms`);
const dp = f('durable.poisonFlood');
if (dp.good) parts.push(`durable poison: lost ${dp.lost}/${dp.good}, dead ${JSON.stringify(dp.deadLetters)}`);

const status = res.status === 0 ? 'PASS' : `FAIL (jest exit ${res.status ?? res.signal})`;
console.log(`SOAK ${status} in ${Math.round((Date.now() - started) / 1000)} s: ${parts.join('; ') || 'no figures recorded'}`);
process.exit(res.status ?? 1);
