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
    addRatio('events bus/raw', ratiosOf(s.bus, s.raw, 'rate'), 0.95);
    addRatio('events bus/nestms', ratiosOf(s.bus, s.nestms, 'rate'), 3.0);
    // The claim-check transport for @nestjs/microservices users, against the stock one.
    if (s['nestms-cc']) addRatio('events nestms-cc/nestms', ratiosOf(s['nestms-cc'], s.nestms, 'rate'));
    if (s['bus-icpt']) addRatio('events bus-icpt/raw', ratiosOf(s['bus-icpt'], s.raw, 'rate'));
    // Telemetry: the API installed without an SDK (`bus`), and with one, against telemetry off.
    if (s['bus-off']) addRatio('events bus/bus-off', ratiosOf(s.bus, s['bus-off'], 'rate'), 0.97);
    if (s['bus-off'] && s['bus-otel']) addRatio('events bus-otel/bus-off', ratiosOf(s['bus-otel'], s['bus-off'], 'rate'));
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
      addRatio(`rpc${inflight} bus/raw`, ratiosOf(s.bus, s.raw, 'rate'), inflight === '64' ? 0.95 : undefined);
      addRatio(`rpc${inflight} bus/nestms`, ratiosOf(s.bus, s.nestms, 'rate'));
      if (s['nestms-cc']) addRatio(`rpc${inflight} nestms-cc/nestms`, ratiosOf(s['nestms-cc'], s.nestms, 'rate'));
      if (inflight === '64' && s['bus-off']) {
        addRatio('rpc64 bus/bus-off', ratiosOf(s.bus, s['bus-off'], 'rate'), 0.97);
        if (s['bus-otel']) addRatio('rpc64 bus-otel/bus-off', ratiosOf(s['bus-otel'], s['bus-off'], 'rate'));
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
          fmt(median(xs.map((x) => x.latencyMs)), 1) + extra,
        ]);
      }
      const f = L.nestms.attempts
        .map((a) => `${a.kind}: ${a.ok ? 'ok' : `${a.name}${a.code ? ` ${a.code}` : ''} "${a.message}"`} after ${fmt(a.ms, 1)} ms`)
        .join('; ');
      medRows.push([`large ${label}`, 'nestms', 'fails', '', `${f}; handler got ${L.nestms.received}`]);
      addRatio(`large${label.replace('MiB', 'm')} bus/floor`, ratiosOf(L.perSide.bus, L.perSide.floor, 'latencyMs', true), 0.9);
      // The object store against Redis storage, same bus, same run (latency: higher ratio is faster).
      if (L.perSide['bus-os']) {
        addRatio(`objstore${label.replace('MiB', 'm')} bus-os/bus`, ratiosOf(L.perSide['bus-os'], L.perSide.bus, 'latencyMs', true), 0.7);
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
    const names = { bus: 'bus (@Subscribe durable)', rawjs: 'rawjs (@nats-io/jetstream)', peer: 'peer (nestjs-nats-jetstream-transport)' };
    for (const side of ['bus', 'rawjs', 'peer'].filter((x) => s[x])) {
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
    addRatio('durable bus/rawjs', ratiosOf(s.bus, s.rawjs, 'rate'), 0.8);
    // CPU per message, both ends added: above 1 the bus spends more than raw JetStream.
    addRatio(
      'durable cpu bus/rawjs',
      s.bus.map((x, i) => (x.sendCpuUs + x.recvCpuUs) / (s.rawjs[i].sendCpuUs + s.rawjs[i].recvCpuUs)),
    );
    if (s.peer) addRatio('durable bus/peer', ratiosOf(s.bus, s.peer, 'rate'));
  }
  // One number each for events and rpc64 together: the lower of the two (the one to watch).
  const lower = (a, b) => (Number.isFinite(ratio[a]) && Number.isFinite(ratio[b]) ? Math.min(ratio[a], ratio[b]) : (ratio[a] ?? ratio[b]));
  ratio['otel noop/off'] = lower('events bus/bus-off', 'rpc64 bus/bus-off');
  ratio['otel sdk/off'] = lower('events bus-otel/bus-off', 'rpc64 bus-otel/bus-off');
  out.push(table(['scenario', 'side', 'metric', 'per round', 'median'], medRows));
  out.push('');
  out.push(table(['ratio (A / B)', 'per round', 'median', 'target', ''], ratioRows));
  return { text: out.join('\n'), ratio };
}

/** The last line of a bench run; `nan` for a scenario that did not run. */
function ratiosLine(ratio) {
  const r = (k) => (Number.isFinite(ratio[k]) ? ratio[k].toFixed(2) : 'nan');
  return `RATIOS events_vs_raw=${r('events bus/raw')} events_vs_nestms=${r('events bus/nestms')} rpc64_vs_raw=${r('rpc64 bus/raw')} large2m_vs_floor=${r('large2m bus/floor')} large8m_vs_floor=${r('large8m bus/floor')} durable_vs_rawjs=${r('durable bus/rawjs')} durable_vs_peer=${r('durable bus/peer')} objstore2m_vs_redis=${r('objstore2m bus-os/bus')} objstore8m_vs_redis=${r('objstore8m bus-os/bus')} otel_noop_vs_off=${r('otel noop/off')} otel_sdk_vs_off=${r('otel sdk/off')}`;
}

module.exports = { median, report, ratiosLine, table, fmt };
