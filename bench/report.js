'use strict';
// The bench report: a table of medians with per-round values, the ratio table, and the last
// line `RATIOS ...`. Pure functions of the results object, so they can be tested without servers.

const median = (xs) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!s.length) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

const fmt = (x, d = 0) => (Number.isFinite(x) ? x.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d }) : 'n/a');
const ratiosOf = (a, b, key, invert = false) => a.map((x, i) => (invert ? b[i][key] / x[key] : x[key] / b[i][key]));
/** CPU µs per message of one round, both ends added (sender + receiver, or requester + responder). */
const cpuOf = (x) => {
  if (!x) return NaN;
  if (Number.isFinite(x.sendCpuUs)) return x.sendCpuUs + x.recvCpuUs;
  if (Number.isFinite(x.reqCpuUs)) return x.reqCpuUs + x.respCpuUs;
  return NaN;
};
// B's CPU over A's, per round: above 1, A (the bus) spends less CPU per message than B.
const cpuRatiosOf = (a, b) => a.map((x, i) => cpuOf(b[i]) / cpuOf(x));

function table(headers, rows) {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (cells) => `| ${cells.map((c, i) => String(c).padEnd(widths[i])).join(' | ')} |`;
  return [line(headers), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)].join('\n');
}

function report(results) {
  const out = [];
  const medRows = [];
  const ratioRows = [];
  const ratio = {};
  const addRatio = (name, perRound, target) => {
    const m = median(perRound);
    ratio[name] = m;
    ratioRows.push([
      name,
      perRound.map((x) => fmt(x, 2)).join(' / '),
      fmt(m, 2),
      target ? `>= ${target}` : '',
      target ? (m >= target ? 'ok' : 'MISS') : '',
    ]);
  };
  const R = (xs) => xs.map((x) => fmt(x)).join(' / ');
  // A rate (or latency, `invert`) ratio and, where both sides measured it, its CPU-per-message twin.
  const addPair = (scenario, a, b, aSides, key, target, invert = false) => {
    addRatio(`${scenario} ${aSides}`, ratiosOf(a, b, key, invert), target);
    const cpu = cpuRatiosOf(a, b);
    if (cpu.some((x) => Number.isFinite(x))) addRatio(`${scenario} cpu ${aSides}`, cpu);
  };

  if (results.events) {
    const s = results.events.perSide;
    for (const side of ['bus', 'raw', 'nestms', 'nestms-cc', 'bus-icpt', 'bus-off', 'bus-otel'].filter((x) => s[x])) {
      const lost = s[side].some((x) => x.received !== results.events.n);
      const med = (k) => median(s[side].map((x) => x[k]));
      medRows.push([
        `events ${results.events.n} x 128 B`,
        side,
        'msg/s at handler; CPU µs/msg (sender / receiver)',
        R(s[side].map((x) => x.rate)),
        `${fmt(med('rate'))}${lost ? ' (LOSS)' : ''}; ${fmt(med('sendCpuUs'), 1)} / ${fmt(med('recvCpuUs'), 1)}`,
      ]);
    }
    addPair('events', s.bus, s.raw, 'bus/raw', 'rate', 0.95);
    addPair('events', s.bus, s.nestms, 'bus/nestms', 'rate', 3.0);
    // The claim-check transport for @nestjs/microservices users, against the stock one.
    if (s['nestms-cc']) addPair('events', s['nestms-cc'], s.nestms, 'nestms-cc/nestms', 'rate');
    if (s['bus-icpt']) addPair('events', s['bus-icpt'], s.raw, 'bus-icpt/raw', 'rate');
    // A bound interceptor against what Nest's own @EventPattern pays for its enhancer pipeline.
    if (s['bus-icpt'] && s.nestms) addRatio('events cpu bus-icpt/nestms', cpuRatiosOf(s['bus-icpt'], s.nestms));
    // Telemetry: the API installed without an SDK (`bus`), and with one, against telemetry off.
    if (s['bus-off']) addPair('events', s.bus, s['bus-off'], 'bus/bus-off', 'rate', 0.97);
    if (s['bus-off'] && s['bus-otel']) addPair('events', s['bus-otel'], s['bus-off'], 'bus-otel/bus-off', 'rate');
  }
  if (results.rpc) {
    for (const inflight of ['1', '64']) {
      const s = results.rpc.perInflight[inflight];
      for (const side of ['bus', 'raw', 'nestms', 'nestms-cc', 'bus-icpt', 'bus-off', 'bus-otel'].filter((x) => s[x])) {
        const med = (k) => median(s[side].map((x) => x[k]));
        medRows.push([
          `rpc ${fmt(typeof results.rpc.n === 'object' ? results.rpc.n[inflight] : results.rpc.n)} x 64 B, ${inflight} in flight`,
          side,
          'req/s; p50 / p99 ms; CPU µs/req (requester / responder)',
          R(s[side].map((x) => x.rate)),
          `${fmt(med('rate'))}; ${fmt(med('p50'), 2)} / ${fmt(med('p99'), 2)}; ${fmt(med('reqCpuUs'))} / ${fmt(med('respCpuUs'))}`,
        ]);
      }
      addPair(`rpc${inflight}`, s.bus, s.raw, 'bus/raw', 'rate', inflight === '64' ? 0.95 : undefined);
      addPair(`rpc${inflight}`, s.bus, s.nestms, 'bus/nestms', 'rate');
      if (s['nestms-cc']) addPair(`rpc${inflight}`, s['nestms-cc'], s.nestms, 'nestms-cc/nestms', 'rate');
      if (inflight === '64' && s['bus-off']) {
        addPair('rpc64', s.bus, s['bus-off'], 'bus/bus-off', 'rate', 0.97);
        if (s['bus-otel']) addPair('rpc64', s['bus-otel'], s['bus-off'], 'bus-otel/bus-off', 'rate');
      }
    }
  }
  if (results.large) {
    for (const [label, L] of Object.entries(results.large)) {
      for (const side of ['bus', 'bus-os', 'floor'].filter((x) => L.perSide[x])) {
        const xs = L.perSide[side];
        const extra =
          side !== 'floor'
            ? `; publish ${fmt(median(xs.map((x) => x.publishMs)), 1)} ms; encodes/payload ${Math.max(...xs.map((x) => x.encodesPerPayload))}`
            : `; publish ${fmt(median(xs.map((x) => x.publishMs)), 1)} ms`;
        medRows.push([
          `large ${label} (${fmt(xs[0].bytes)} B) x ${L.count}`,
          side,
          'ms publish→handler',
          xs.map((x) => fmt(x.latencyMs, 1)).join(' / '),
          fmt(median(xs.map((x) => x.latencyMs)), 1) +
            extra +
            (xs.some((x) => Number.isFinite(x.sendCpuUs))
              ? `; CPU µs/msg ${fmt(median(xs.map((x) => x.sendCpuUs)))} / ${fmt(median(xs.map((x) => x.recvCpuUs)))}`
              : ''),
        ]);
      }
      const f = L.nestms.attempts
        .map((a) => `${a.kind}: ${a.ok ? 'ok' : `${a.name}${a.code ? ` ${a.code}` : ''} "${a.message}"`} after ${fmt(a.ms, 1)} ms`)
        .join('; ');
      medRows.push([`large ${label}`, 'nestms', 'fails', '', `${f}; handler got ${L.nestms.received}`]);
      addPair(`large${label.replace('MiB', 'm')}`, L.perSide.bus, L.perSide.floor, 'bus/floor', 'latencyMs', 0.9, true);
      // The object store against Redis storage, same bus, same run (latency: higher ratio is faster).
      if (L.perSide['bus-os']) {
        addPair(`objstore${label.replace('MiB', 'm')}`, L.perSide['bus-os'], L.perSide.bus, 'bus-os/bus', 'latencyMs', 0.9, true);
      }
    }
  }
  if (results.mem) {
    const s = results.mem.perSide;
    const names = { bus: 'bus (64 concurrent, default)', 'bus-c1': 'bus maxConcurrent 1', floor: 'floor (one at a time)' };
    for (const side of Object.keys(s)) {
      medRows.push([
        `memory ${results.mem.n} x 8 MiB, ${results.mem.handlerMs} ms handler`,
        names[side],
        'peak RSS MiB (base)',
        R(s[side].map((x) => x.peakRssMiB)),
        `${fmt(median(s[side].map((x) => x.peakRssMiB)))} (${fmt(median(s[side].map((x) => x.baseRssMiB)))})` +
          (s[side].some((x) => x.received !== results.mem.n) ? ' (LOSS)' : ''),
      ]);
    }
  }
  if (results.durable) {
    const d = results.durable;
    const s = d.perSide;
    const names = {
      bus: 'bus (@Subscribe durable)',
      rawjs: 'rawjs (@nats-io/jetstream)',
      peer: 'peer (nestjs-nats-jetstream-transport)',
      'bus-idem': 'bus-idem (durable, idempotent)',
    };
    for (const side of ['bus', 'rawjs', 'peer', 'bus-idem'].filter((x) => s[x])) {
      const lost = s[side].some((x) => x.received !== d.n);
      const med = (k) => median(s[side].map((x) => x[k]));
      medRows.push([
        `durable ${d.n} x 128 B, ${d.window} acks awaited at a time`,
        names[side],
        'msg/s at handler; acked publishes/s; CPU µs/msg (sender / receiver)',
        R(s[side].map((x) => x.rate)),
        `${fmt(med('rate'))}${lost ? ' (LOSS)' : ''}; ${fmt(med('sendRate'))}; ${fmt(med('sendCpuUs'), 1)} / ${fmt(med('recvCpuUs'), 1)}`,
      ]);
    }
    addPair('durable', s.bus, s.rawjs, 'bus/rawjs', 'rate', 0.85);
    if (s.peer) addPair('durable', s.bus, s.peer, 'bus/peer', 'rate');
    // The inbox's cost: an idempotent durable against the plain one (issue 30's goal: 0.7 or more).
    if (s['bus-idem']) addPair('durable', s['bus-idem'], s.bus, 'bus-idem/bus', 'rate', 0.7);
  }
  if (results.latency) {
    const names = { events: ['events', 'raw', 'msg/s'], rpc: ['rpc', 'raw', 'req/s'], large2m: ['large2m', 'floor', 'msg/s'] };
    for (const [key, L] of Object.entries(results.latency)) {
      const [name, other, unit] = names[key];
      for (const side of ['bus', other].filter((x) => L.perSide[x])) {
        const xs = L.perSide[side];
        const med = (k) => median(xs.map((x) => x[k]));
        const lost = xs.some((x) => Number.isFinite(x.received) && x.received !== L.n);
        medRows.push([
          `open loop: ${name} at ${fmt(L.rate)} ${unit} x ${fmt(L.bytes)} B (${fmt(L.n)} a round)`,
          side,
          'p99 ms; median p50 / p99 / p99.9 (max) ms',
          xs.map((x) => fmt(x.p99, 2)).join(' / '),
          `${fmt(med('p50'), 2)} / ${fmt(med('p99'), 2)} / ${fmt(med('p999'), 2)} (${fmt(med('max'), 1)})${lost ? ' (LOSS)' : ''}`,
        ]);
      }
      // The other side's p99 over ours: above 1 the bus waits less.
      addRatio(`open ${name} p99 bus/${other}`, ratiosOf(L.perSide.bus, L.perSide[other], 'p99', true), 0.8);
      addRatio(`open ${name} cpu bus/${other}`, cpuRatiosOf(L.perSide.bus, L.perSide[other]));
    }
  }
  if (results.scale) {
    const { queue, subs, durables } = results.scale;
    if (queue) {
      for (const side of Object.keys(queue.perSide)) {
        const xs = queue.perSide[side];
        const last = xs[xs.length - 1];
        medRows.push([
          `queue group, ${fmt(queue.n)} x 128 B, handler awaits ${queue.handlerMs} ms, one at a time per member`,
          `${side} member${side === '1' ? '' : 's'}`,
          'msg/s at the handlers (last round: messages per member)',
          R(xs.map((x) => x.rate)),
          `${fmt(median(xs.map((x) => x.rate)))}${xs.some((x) => x.received !== queue.n) ? ' (LOSS)' : ''} (${last.shares.join(' / ')})`,
        ]);
      }
      if (queue.perSide['2']) addRatio('queue 2/1', ratiosOf(queue.perSide['2'], queue.perSide['1'], 'rate'), 1.8);
      if (queue.perSide['4']) addRatio('queue 4/1', ratiosOf(queue.perSide['4'], queue.perSide['1'], 'rate'), 3.5);
    }
    const F = results.scale.fanout;
    if (F) {
      for (const [side, xs] of Object.entries(F.perSide)) {
        const med = (k) => median(xs.map((x) => x[k]));
        medRows.push([
          `fan-out: one ${fmt(F.bytes / 1048576)} MiB message to ${F.subscribers} subscriber processes`,
          `${side} subscribers`,
          'ms publish→last handler; first; Redis reads and MiB sent per subscriber',
          R(xs.map((x) => x.lastMs)),
          `${fmt(med('lastMs'))}; ${fmt(med('firstMs'))}; ${fmt(med('readsPerSubscriber'), 1)} reads, ${fmt(med('mibPerSubscriber'), 1)} MiB` +
            (xs.some((x) => x.recovered !== F.subscribers) ? ' (LOSS)' : ''),
        ]);
      }
    }
    // Bootstrap of one app with N subscriptions; RSS per subscription from the smallest to the largest app.
    for (const [what, B] of [
      ['@Subscribe topics', subs],
      ['durables', durables],
    ].filter(([, x]) => x)) {
      const med = (side, k) => median(B.perSide[side].map((x) => x[k]));
      for (const side of Object.keys(B.perSide)) {
        medRows.push([
          `bootstrap, app with N ${what}`,
          `N = ${fmt(Number(side))}`,
          'ms to bootstrap; RSS (heap) MiB after',
          R(B.perSide[side].map((x) => x.bootMs)),
          `${fmt(med(side, 'bootMs'))}; ${fmt(med(side, 'rssMiB'), 1)} (${fmt(med(side, 'heapMiB'), 1)})`,
        ]);
      }
      const sides = Object.keys(B.perSide).map(Number);
      const [lo, hi] = [Math.min(...sides), Math.max(...sides)];
      if (hi > lo) {
        const perSub = (k) => ((med(String(hi), k) - med(String(lo), k)) * 1024) / (hi - lo);
        medRows.push([
          `bootstrap, app with N ${what}`,
          `each of ${fmt(lo)} → ${fmt(hi)}`,
          'ms; RSS (heap) KiB per subscription',
          '',
          `${fmt((med(String(hi), 'bootMs') - med(String(lo), 'bootMs')) / (hi - lo), 2)}; ${fmt(perSub('rssMiB'), 1)} (${fmt(perSub('heapMiB'), 1)})`,
        ]);
      }
    }
  }
  // One number each for events and rpc64 together: the lower of the two (the one to watch).
  const lower = (a, b) => (Number.isFinite(ratio[a]) && Number.isFinite(ratio[b]) ? Math.min(ratio[a], ratio[b]) : (ratio[a] ?? ratio[b]));
  ratio['otel noop/off'] = lower('events bus/bus-off', 'rpc64 bus/bus-off');
  ratio['otel sdk/off'] = lower('events bus-otel/bus-off', 'rpc64 bus-otel/bus-off');
  ratio['otel cpu noop/off'] = lower('events cpu bus/bus-off', 'rpc64 cpu bus/bus-off');
  ratio['otel cpu sdk/off'] = lower('events cpu bus-otel/bus-off', 'rpc64 cpu bus-otel/bus-off');
  out.push(table(['scenario', 'side', 'metric', 'per round', 'median'], medRows));
  out.push('');
  out.push(table(['ratio (A / B)', 'per round', 'median', 'target', ''], ratioRows));
  return { text: out.join('\n'), ratio };
}

/**
 * The keys of the `RATIOS` line and the ratio each one prints. Every throughput or latency ratio has
 * a `*_cpu_vs_*` twin (CPU µs per message, both processes added; above 1 the bus spends less).
 * `aa_*` is the run's noise gauge: bus against bus-off, which do the same work when no SDK is registered.
 */
const RATIO_KEYS = [
  ['events_vs_raw', 'events bus/raw'],
  ['events_vs_nestms', 'events bus/nestms'],
  ['rpc64_vs_raw', 'rpc64 bus/raw'],
  ['large2m_vs_floor', 'large2m bus/floor'],
  ['large8m_vs_floor', 'large8m bus/floor'],
  ['durable_vs_rawjs', 'durable bus/rawjs'],
  ['durable_vs_peer', 'durable bus/peer'],
  ['objstore2m_vs_redis', 'objstore2m bus-os/bus'],
  ['objstore8m_vs_redis', 'objstore8m bus-os/bus'],
  ['otel_noop_vs_off', 'otel noop/off'],
  ['otel_sdk_vs_off', 'otel sdk/off'],
  ['events_cpu_vs_raw', 'events cpu bus/raw'],
  ['events_cpu_vs_nestms', 'events cpu bus/nestms'],
  ['events_icpt_cpu_vs_nestms', 'events cpu bus-icpt/nestms'],
  ['rpc64_cpu_vs_raw', 'rpc64 cpu bus/raw'],
  ['large2m_cpu_vs_floor', 'large2m cpu bus/floor'],
  ['large8m_cpu_vs_floor', 'large8m cpu bus/floor'],
  ['durable_cpu_vs_rawjs', 'durable cpu bus/rawjs'],
  ['durable_cpu_vs_peer', 'durable cpu bus/peer'],
  ['objstore2m_cpu_vs_redis', 'objstore2m cpu bus-os/bus'],
  ['objstore8m_cpu_vs_redis', 'objstore8m cpu bus-os/bus'],
  ['otel_noop_cpu_vs_off', 'otel cpu noop/off'],
  ['otel_sdk_cpu_vs_off', 'otel cpu sdk/off'],
  ['events_p99_vs_raw', 'open events p99 bus/raw'],
  ['rpc_p99_vs_raw', 'open rpc p99 bus/raw'],
  ['large2m_p99_vs_floor', 'open large2m p99 bus/floor'],
  ['queue4_vs_queue1', 'queue 4/1'],
  ['aa_events', 'events bus/bus-off'],
  ['aa_rpc64', 'rpc64 bus/bus-off'],
  ['aa_events_cpu', 'events cpu bus/bus-off'],
  ['aa_rpc64_cpu', 'rpc64 cpu bus/bus-off'],
  ['idem_vs_durable', 'durable bus-idem/bus'],
  ['idem_cpu_vs_durable', 'durable cpu bus-idem/bus'],
];

/** The last line of a bench run; `nan` for a scenario that did not run. */
function ratiosLine(ratio) {
  const r = (k) => (Number.isFinite(ratio[k]) ? ratio[k].toFixed(2) : 'nan');
  return `RATIOS ${RATIO_KEYS.map(([key, name]) => `${key}=${r(name)}`).join(' ')}`;
}

module.exports = { median, report, ratiosLine, table, fmt, RATIO_KEYS };
