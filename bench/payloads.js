'use strict';
// Payloads shared by every side of a scenario, so each side moves the same bytes.

/** An object whose JSON is exactly `bytes` long (ASCII, so bytes = characters). */
function fixedJson(bytes, seq = 0) {
  const base = { id: seq, kind: 'edge.status', site: 'site-0042', pad: '' };
  const overhead = Buffer.byteLength(JSON.stringify(base));
  if (overhead > bytes) throw new Error(`cannot build a ${bytes}-byte payload`);
  base.pad = 'x'.repeat(bytes - overhead);
  return base;
}

/**
 * A realistic large body: a list of edge records (nested objects, numbers, strings), about
 * `bytes` long once JSON-encoded. Not one big string, so encoding and parsing do real work.
 */
function largeJson(bytes) {
  const edges = [];
  const body = { request_id: 'bench-large', edges };
  let size = 40;
  for (let i = 0; size < bytes; i++) {
    const edge = {
      edgeId: i,
      name: `edge-${i.toString(36).padStart(6, '0')}`,
      enterprise: { id: 1000 + (i % 97), name: `enterprise-${i % 97}` },
      state: i % 7 === 0 ? 'OFFLINE' : 'CONNECTED',
      serial: `VC${(i * 2654435761) % 1e10}`.padEnd(14, '0'),
      links: [
        { iface: 'GE1', state: 'STABLE', rx: i * 31, tx: i * 17, latencyMs: (i % 50) + 0.25 },
        { iface: 'GE2', state: i % 3 ? 'STABLE' : 'DISCONNECTED', rx: i * 7, tx: i * 3, latencyMs: (i % 20) + 0.5 },
      ],
      tags: ['bench', `region-${i % 12}`],
      updated: 1700000000000 + i,
    };
    edges.push(edge);
    size += Buffer.byteLength(JSON.stringify(edge)) + 1;
  }
  return body;
}

module.exports = { fixedJson, largeJson };
