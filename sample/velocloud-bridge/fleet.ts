import { EdgeEvent, EdgeLink, EdgeState, EdgeStatusReply, EdgeSummary } from '../common/contracts';

/** mulberry32: a small seeded PRNG, so the same seed always gives the same fleet. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Edge extends EdgeSummary {
  state: EdgeState;
  big: boolean;
  lastContact: string;
  links: EdgeLink[];
  events: EdgeEvent[];
}

const SITES = ['Madrid', 'Lisbon', 'Dublin', 'Austin', 'Denver', 'Osaka', 'Lyon', 'Porto', 'Reno', 'Turin', 'Leeds', 'Bergen'];
const ISPS = ['Movistar', 'Vodafone', 'Comcast', 'Orange', 'AT&T', 'NTT'];
const EVENTS: Array<[string, EdgeEvent['severity'], string]> = [
  ['LINK_DEAD', 'ERROR', 'Link went down: no heartbeats for 3 intervals'],
  ['LINK_ALIVE', 'NOTICE', 'Link is back: heartbeats resumed'],
  ['EDGE_HA_FAILOVER', 'WARNING', 'HA failover: standby became active'],
  ['MGD_CONF_APPLIED', 'INFO', 'Configuration applied from the orchestrator'],
  ['EDGE_INTERFACE_DOWN', 'ERROR', 'Interface lost carrier'],
  ['EDGE_INTERFACE_UP', 'INFO', 'Interface has carrier'],
];

export interface FleetOptions {
  seed: number;
  size: number;
  /** Events in the history of a big edge; about 200 bytes each. */
  bigEdgeEvents: number;
}

/**
 * An in-memory VeloCloud fleet, generated once from a seed. Every fourth edge is "big": a long
 * event history, so its status reply is over 1 MiB. The first edge (the hub) is always OFFLINE, so
 * every monitoring cycle shows an alert and a large reply.
 */
export class Fleet {
  private readonly edges = new Map<string, Edge>();

  constructor(readonly options: FleetOptions) {
    const rand = prng(options.seed);
    const epoch = Date.UTC(2024, 0, 1);
    for (let i = 0; i < options.size; i++) {
      const edge_id = `edge-${String(i + 1).padStart(3, '0')}`;
      const site = SITES[i % SITES.length];
      const big = i % 4 === 0;
      const r = rand();
      const state: EdgeState = i === 0 || r < 0.2 ? 'OFFLINE' : r < 0.35 ? 'DEGRADED' : 'CONNECTED';
      const links: EdgeLink[] = [];
      const linkCount = big ? 4 : 1 + Math.floor(rand() * 2);
      for (let l = 0; l < linkCount; l++) {
        links.push({
          link_id: `${edge_id}-link-${l + 1}`,
          interface: `GE${l + 3}`,
          isp: ISPS[Math.floor(rand() * ISPS.length)],
          state: state === 'OFFLINE' ? 'DISCONNECTED' : state === 'DEGRADED' && l === 0 ? 'UNSTABLE' : 'STABLE',
          latency_ms: Math.round(5 + rand() * 80),
          loss_pct: Math.round(rand() * (state === 'CONNECTED' ? 1 : 20) * 100) / 100,
        });
      }
      const eventCount = big ? options.bigEdgeEvents : 20 + Math.floor(rand() * 30);
      const events: EdgeEvent[] = [];
      let t = epoch;
      for (let e = 0; e < eventCount; e++) {
        t += Math.floor(rand() * 600_000);
        const [event, severity, message] = EVENTS[Math.floor(rand() * EVENTS.length)];
        const link = links[Math.floor(rand() * links.length)];
        events.push({
          time: new Date(t).toISOString(),
          event,
          severity,
          link_id: link.link_id,
          message: `${site} ${link.interface}: ${message}`,
        });
      }
      this.edges.set(edge_id, {
        edge_id,
        name: `${site.toLowerCase()}-${big ? 'hub' : 'branch'}-${i + 1}`,
        site,
        state,
        big,
        lastContact: new Date(t).toISOString(),
        links,
        events,
      });
    }
  }

  list(): EdgeSummary[] {
    return [...this.edges.values()].map(({ edge_id, name, site }) => ({ edge_id, name, site }));
  }

  status(request_id: string, edge_id: string): EdgeStatusReply | undefined {
    const e = this.edges.get(edge_id);
    if (!e) return undefined;
    return {
      request_id,
      edge_id,
      name: e.name,
      site: e.site,
      state: e.state,
      last_contact: e.lastContact,
      links: e.links,
      events: e.events,
    };
  }
}
