import { Inject, Injectable, Logger } from '@nestjs/common';
import { EventBus, MessageContext, Subscribe } from 'nestjs-nats-eventbus';
import { EdgeListReply, EdgeStatusReply } from '../common/contracts';
import { GetEdgeStatus, ListEdges } from './edge.requests';
import { claimCheckThreshold, jsonBytes } from '../common/event-bus.config';
import { Fleet } from './fleet';

export const FLEET = Symbol('FLEET');

/** Answers the monitor's requests from the in-memory fleet. One queue group: replicas share the load. */
@Injectable()
export class EdgeHandlers {
  private readonly logger = new Logger('EdgeHandlers');

  constructor(
    private readonly bus: EventBus,
    @Inject(FLEET) private readonly fleet: Fleet,
  ) {}

  @Subscribe('edge.list.request', { queue: 'velocloud-bridge' })
  listEdges(req: ListEdges, ctx: MessageContext): EdgeListReply {
    this.logger.log({ hop: 'received', topic: ctx.subject, request_id: req.request_id, recovered: ctx.recovered, token: ctx.token });
    const reply = { request_id: req.request_id, edges: this.fleet.list() };
    this.logger.log({ hop: 'reply', topic: ctx.subject, request_id: req.request_id, edges: reply.edges.length });
    return reply;
  }

  @Subscribe('edge.status.request', { queue: 'velocloud-bridge' })
  edgeStatus(req: GetEdgeStatus, ctx: MessageContext): EdgeStatusReply {
    this.logger.log({
      hop: 'received',
      topic: ctx.subject,
      request_id: req.request_id,
      edge_id: req.edge_id,
      recovered: ctx.recovered,
      token: ctx.token,
    });
    const reply = this.fleet.status(req.request_id, req.edge_id);
    // A throw answers the request with the NATS service-error headers: RemoteHandlerError at the monitor.
    if (!reply) throw new Error(`unknown edge "${req.edge_id}"`);
    // The bus offloads the reply by itself; measuring it here is only so the log can say so.
    const bytes = jsonBytes(reply);
    const offloaded = bytes > claimCheckThreshold(this.bus);
    this.logger.log({
      hop: 'reply',
      topic: ctx.subject,
      request_id: req.request_id,
      edge_id: req.edge_id,
      state: reply.state,
      bytes,
      offloaded,
      msg: offloaded ? `status of ${req.edge_id} is ${bytes} bytes: sent through claim-check` : undefined,
    });
    return reply;
  }
}
