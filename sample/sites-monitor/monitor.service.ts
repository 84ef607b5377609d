import { randomUUID } from 'node:crypto';
import { Inject, Injectable, Logger, OnApplicationBootstrap, OnApplicationShutdown, OnModuleDestroy } from '@nestjs/common';
import { trace } from '@opentelemetry/api';
import { EventBus, EventBusError } from 'nestjs-nats-eventbus';
import { EdgeListReply, EdgeStatusReply, EdgeSummary, EmailNotification, SlackNotification } from '../common/contracts';
import { claimCheckThreshold, jsonBytes } from '../common/event-bus.config';
import type { AlertDecisions } from './alert-decisions';

export interface MonitorOptions {
  intervalMs: number;
  rpcTimeoutMs: number;
  /** Status requests in flight at once. */
  concurrency: number;
  slackChannel: string;
  emailTo: string[];
  /** While an edge stays down, its e-mail report is sent again every this many cycles. */
  reportEveryCycles: number;
}
export const MONITOR_OPTIONS = Symbol('MONITOR_OPTIONS');
/** `AlertDecisions` when the sample has a PostgreSQL, else undefined (notifications are published directly). */
export const ALERT_DECISIONS = Symbol('ALERT_DECISIONS');

/**
 * Every `intervalMs`: asks velocloud-bridge for the edges, then for each edge's status; an OFFLINE
 * edge gets a Slack alert every cycle and an e-mail report (its event history as a CSV attachment,
 * large enough to go through claim-check) when first seen down and then every `reportEveryCycles`.
 * With a PostgreSQL, each alert is a decision row and its notifications in one transaction, sent
 * by the outbox's relay once committed (`alert-decisions.ts`).
 */
@Injectable()
export class MonitorService implements OnApplicationBootstrap, OnModuleDestroy, OnApplicationShutdown {
  private readonly logger = new Logger('Monitor');
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private stopped = false;
  private cycle = 0;
  /** edge_id -> cycle of the last e-mail report, while the edge is down. */
  private readonly reported = new Map<string, number>();

  constructor(
    private readonly bus: EventBus,
    @Inject(MONITOR_OPTIONS) private readonly options: MonitorOptions,
    @Inject(ALERT_DECISIONS) private readonly decisions: AlertDecisions | undefined,
  ) {}

  async onApplicationBootstrap(): Promise<void> {
    if (this.decisions) await this.decisions.ensureTable();
    else
      this.logger.warn({ hop: 'outbox.off', msg: 'no PostgreSQL (DATABASE_URL unset): alerts are published directly, without the outbox' });
    this.logger.log({ hop: 'monitor.start', interval_ms: this.options.intervalMs, outbox: !!this.decisions });
    this.schedule(0);
  }

  /** After the outbox's relay stopped (its onModuleDestroy): the pool it shared is ours to end. */
  async onApplicationShutdown(): Promise<void> {
    await this.decisions?.close();
  }

  /** Stop scheduling and let the running cycle finish before the bus closes. */
  async onModuleDestroy(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
    this.logger.log({ hop: 'monitor.stop', cycles: this.cycle });
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      const started = Date.now();
      // With OTEL=1, one trace a cycle: every request and notification of the cycle is a child of this span.
      const cycle = trace
        .getTracer('sites-monitor')
        .startActiveSpan('monitoring cycle', (span) => this.runCycle().finally(() => span.end()));
      this.running = cycle.finally(() => {
        this.running = undefined;
        this.schedule(Math.max(0, this.options.intervalMs - (Date.now() - started)));
      });
    }, delayMs);
  }

  async runCycle(): Promise<void> {
    const cycle = ++this.cycle;
    const started = Date.now();
    const request_id = randomUUID();
    let list: EdgeListReply;
    try {
      this.logger.log({ hop: 'request', topic: 'edge.list.request', cycle, request_id });
      list = await this.bus.rpcRequest<EdgeListReply>('edge.list.request', { request_id }, { timeout: this.options.rpcTimeoutMs });
      this.logger.log({ hop: 'reply', topic: 'edge.list.request', cycle, request_id, edges: list.edges.length });
    } catch (err) {
      this.failed(cycle, 'edge.list.request', request_id, err);
      this.logger.warn({ hop: 'cycle.failed', cycle, ms: Date.now() - started });
      return;
    }

    let down = 0;
    let failed = 0;
    const queue = [...list.edges];
    const worker = async () => {
      for (let edge = queue.shift(); edge && !this.stopped; edge = queue.shift()) {
        const status = await this.checkEdge(cycle, edge);
        if (!status) failed++;
        else if (status.state === 'OFFLINE') {
          down++;
          await this.alert(cycle, status);
        } else this.reported.delete(edge.edge_id);
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, this.options.concurrency) }, worker));
    this.logger.log({ hop: 'cycle.done', cycle, edges: list.edges.length, down, failed, ms: Date.now() - started });
  }

  private async checkEdge(cycle: number, edge: EdgeSummary): Promise<EdgeStatusReply | undefined> {
    const request_id = randomUUID();
    const topic = 'edge.status.request';
    try {
      this.logger.log({ hop: 'request', topic, cycle, request_id, edge_id: edge.edge_id });
      const status = await this.bus.rpcRequest<EdgeStatusReply>(
        topic,
        { request_id, edge_id: edge.edge_id },
        { timeout: this.options.rpcTimeoutMs },
      );
      // A large reply was recovered from storage by the bus before rpcRequest resolved.
      this.logger.log({
        hop: 'reply',
        topic,
        cycle,
        request_id,
        edge_id: edge.edge_id,
        state: status.state,
        links: status.links.length,
        events: status.events.length,
      });
      return status;
    } catch (err) {
      this.failed(cycle, topic, request_id, err, edge.edge_id);
      return undefined;
    }
  }

  private async alert(cycle: number, status: EdgeStatusReply): Promise<void> {
    const slack: SlackNotification = {
      request_id: randomUUID(),
      channel: this.options.slackChannel,
      message: `:rotating_light: Edge ${status.name} (${status.edge_id}, ${status.site}) is OFFLINE; last contact ${status.last_contact}`,
    };
    const notifications: Array<{ topic: string; payload: { request_id: string } }> = [
      { topic: 'notification.slack.request', payload: slack },
    ];
    const last = this.reported.get(status.edge_id);
    if (last === undefined || cycle - last >= this.options.reportEveryCycles) {
      this.reported.set(status.edge_id, cycle);
      notifications.push({ topic: 'notification.email.request', payload: this.report(status) });
    }
    if (!this.decisions) {
      for (const n of notifications) await this.send(cycle, n.topic, n.payload, status.edge_id);
    } else {
      await this.decide(cycle, status.edge_id, notifications);
    }
  }

  private report(status: EdgeStatusReply): EmailNotification {
    const csv = ['time,event,severity,link_id,message']
      .concat(status.events.map((e) => [e.time, e.event, e.severity, e.link_id, JSON.stringify(e.message)].join(',')))
      .join('\n');
    return {
      request_id: randomUUID(),
      to: this.options.emailTo,
      subject: `[sites-monitor] ${status.name} is OFFLINE`,
      body: `Edge ${status.edge_id} at ${status.site} is OFFLINE. Links: ${status.links.map((l) => `${l.interface}/${l.isp}=${l.state}`).join(', ')}. Event history attached.`,
      attachments: [
        { filename: `${status.edge_id}-events.csv`, content_type: 'text/csv', content_base64: Buffer.from(csv).toString('base64') },
        {
          filename: `${status.edge_id}-status.json`,
          content_type: 'application/json',
          content_base64: Buffer.from(JSON.stringify(status)).toString('base64'),
        },
      ],
    };
  }

  /** The decision row and its notifications in one transaction; the relay publishes them after the commit. */
  private async decide(cycle: number, edge_id: string, notifications: Array<{ topic: string; payload: { request_id: string } }>) {
    try {
      const rows = await this.decisions!.record({ edge_id, cycle, notifications });
      notifications.forEach((n, i) => {
        const bytes = jsonBytes(n.payload);
        this.logger.log({
          hop: 'publish',
          via: 'outbox',
          topic: n.topic,
          cycle,
          request_id: n.payload.request_id,
          edge_id,
          bytes,
          offloaded: bytes > claimCheckThreshold(this.bus),
          outbox_id: rows[i],
        });
      });
    } catch (err) {
      this.failed(cycle, notifications[0].topic, notifications[0].payload.request_id, err, edge_id);
    }
  }

  private async send(cycle: number, topic: string, payload: { request_id: string }, edge_id: string): Promise<void> {
    // Measured only for the log line; the bus decides on its own to offload.
    const bytes = jsonBytes(payload);
    try {
      // Durable: resolves once the NOTIFICATIONS stream stored it, so the notifier gets it even if it
      // is down now. The notification's id is the msgId: a retried publish is stored once.
      const stored = await this.bus.publish(topic, payload, { persist: true, msgId: payload.request_id });
      this.logger.log({
        hop: 'publish',
        topic,
        cycle,
        request_id: payload.request_id,
        edge_id,
        bytes,
        offloaded: bytes > claimCheckThreshold(this.bus),
        stream: stored.stream,
        seq: stored.seq,
        duplicate: stored.duplicate,
      });
    } catch (err) {
      this.failed(cycle, topic, payload.request_id, err, edge_id);
    }
  }

  private failed(cycle: number, topic: string, request_id: string, err: unknown, edge_id?: string): void {
    const e = err as Error;
    this.logger.error({
      hop: 'error',
      topic,
      cycle,
      request_id,
      edge_id,
      code: err instanceof EventBusError ? err.code : undefined,
      msg: e?.message ?? String(err),
    });
  }
}
