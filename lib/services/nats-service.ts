import { Inject, Injectable, Logger, OnApplicationBootstrap, OnModuleDestroy } from '@nestjs/common';
import { nuid } from '@nats-io/transport-node';
import { EventBus } from '../event-bus/event-bus';
import { BusConnection, Msg, Subscription } from '../nats/bus-connection';
import { EventBusServiceOptions } from './service.options';
import { ServiceEndpoints } from './service-endpoints';

/** Injection token of the module's `service` option. */
export const EVENT_BUS_SERVICE = Symbol('EVENT_BUS_SERVICE');

/** The response types of the NATS services framework (ADR-32). */
export const SERVICE_RESPONSE_TYPES = {
  PING: 'io.nats.micro.v1.ping_response',
  INFO: 'io.nats.micro.v1.info_response',
  STATS: 'io.nats.micro.v1.stats_response',
} as const;

type Verb = keyof typeof SERVICE_RESPONSE_TYPES;

/**
 * Answers the services framework's discovery requests, `$SRV.PING|INFO|STATS` (all services), `.<name>`
 * and `.<name>.<id>`, for this instance, on the bus's producer connection.
 *
 * Not `@nats-io/services`: it subscribes its endpoints itself and calls their handlers with its own
 * message type, while here the bus's subscriptions are the endpoints (queue groups, consumers,
 * durables, claim-check and the enhancers stay theirs), so only the small discovery protocol is spoken.
 */
@Injectable()
export class NatsServiceResponder implements OnApplicationBootstrap, OnModuleDestroy {
  /** This instance's id: a NUID, as the framework's own services take. */
  readonly id = nuid.next();
  private readonly logger = new Logger('EventBus:service');
  private readonly subscriptions: Subscription[] = [];
  private started = new Date().toISOString();

  constructor(
    @Inject(EVENT_BUS_SERVICE) private readonly service: EventBusServiceOptions,
    private readonly bus: EventBus,
    private readonly endpoints: ServiceEndpoints,
  ) {}

  /** After every `onModuleInit`: the bus is connected. */
  onApplicationBootstrap(): void {
    const producer = this.bus.connections().get('producer');
    if (!(producer instanceof BusConnection)) throw new Error('EventBus has no producer connection to answer $SRV requests on');
    this.started = new Date().toISOString();
    const { name } = this.service;
    for (const verb of Object.keys(SERVICE_RESPONSE_TYPES) as Verb[]) {
      for (const subject of [`$SRV.${verb}`, `$SRV.${verb}.${name}`, `$SRV.${verb}.${name}.${this.id}`]) {
        this.subscriptions.push(producer.subscribe(subject, (msg) => this.answer(producer, verb, msg)));
      }
    }
    this.logger.log(`NATS service "${name}" ${this.service.version} (id ${this.id}), ${this.endpoints.info().length} endpoints`);
  }

  /** First thing at shutdown, before handlers finish: a stopping instance no longer answers PING. */
  onModuleDestroy(): void {
    for (const sub of this.subscriptions.splice(0)) {
      try {
        sub.unsubscribe();
      } catch {
        // The connection closed first: its subscriptions are gone with it.
      }
    }
  }

  /** The body of a reply to `verb`, as the framework's own services write it. */
  response(verb: Verb): Record<string, unknown> {
    const { name, version, description = '', metadata = {} } = this.service;
    const identity = { type: SERVICE_RESPONSE_TYPES[verb], name, id: this.id, version, metadata };
    if (verb === 'PING') return identity;
    if (verb === 'INFO') return { ...identity, description, endpoints: this.endpoints.info() };
    return { ...identity, started: this.started, endpoints: this.endpoints.stats() };
  }

  private answer(producer: BusConnection, verb: Verb, msg: Msg): void {
    if (!msg.reply) return;
    try {
      producer.publish(msg.reply, Buffer.from(JSON.stringify(this.response(verb)), 'utf8'));
    } catch (err) {
      this.logger.warn(`could not answer $SRV.${verb}: ${(err as Error).message}`);
    }
  }
}
