import { Injectable } from '@nestjs/common';
import { DELIVERY_OBSERVER, DeliveryFailure, DeliveryObserver } from '../delivery/handler-delivery';
import { MessageHandler } from '../delivery/message-context';
import { describeThrown } from '../errors/thrown';
import type { SubscribeOptions } from '../event-bus/event-bus.options';

/** One endpoint as `$SRV.INFO` lists it (`io.nats.micro.v1.info_response`). */
export interface ServiceEndpointInfo {
  name: string;
  subject: string;
  queue_group?: string;
  metadata: Record<string, string>;
}

/** One endpoint's counters as `$SRV.STATS` gives them (`io.nats.micro.v1.stats_response`); times in nanoseconds. */
export interface ServiceEndpointStats {
  name: string;
  subject: string;
  queue_group?: string;
  num_requests: number;
  num_errors: number;
  last_error: string;
  processing_time: number;
  average_processing_time: number;
}

/** Counts one endpoint's deliveries from the receive core (`HandlerDelivery`), recovery of a claim-checked body included. */
class EndpointCounters implements DeliveryObserver {
  requests = 0;
  errors = 0;
  lastError = '';
  processingNs = 0;

  constructor(readonly info: ServiceEndpointInfo) {}

  started(): bigint {
    return process.hrtime.bigint();
  }

  settled(started: bigint, failure: DeliveryFailure | undefined): void {
    this.requests++;
    this.processingNs += Number(process.hrtime.bigint() - started);
    if (failure) {
      this.errors++;
      this.lastError = describeThrown(failure.error) || failure.reason;
    }
  }

  stats(): ServiceEndpointStats {
    const { name, subject, queue_group } = this.info;
    return {
      name,
      subject,
      ...(queue_group ? { queue_group } : {}),
      num_requests: this.requests,
      num_errors: this.errors,
      last_error: this.lastError,
      processing_time: this.processingNs,
      average_processing_time: this.requests ? Math.round(this.processingNs / this.requests) : 0,
    };
  }
}

/**
 * The service's endpoints: one per `@Subscribe` (every one, events and durables included), made as
 * `SubscribersLoader` subscribes it. Each wraps its handler so the receive core reports to it.
 */
@Injectable()
export class ServiceEndpoints {
  private readonly endpoints: EndpointCounters[] = [];
  private readonly names = new Set<string>();

  /** The handler to subscribe instead of `handler`: the same, observed. */
  observe(topic: string, options: SubscribeOptions | undefined, owner: string, method: string, handler: MessageHandler): MessageHandler {
    const counters = new EndpointCounters({
      name: this.uniqueName(`${owner}-${method}`),
      subject: topic,
      ...(options?.queue ? { queue_group: options.queue } : {}),
      metadata: endpointMetadata(options),
    });
    this.endpoints.push(counters);
    // A wrapper, not a property on `handler`: one method stacked on several topics has one callable.
    const observed: MessageHandler = (payload, ctx) => handler(payload, ctx);
    (observed as { [DELIVERY_OBSERVER]?: DeliveryObserver })[DELIVERY_OBSERVER] = counters;
    return observed;
  }

  info(): ServiceEndpointInfo[] {
    return this.endpoints.map((e) => e.info);
  }

  stats(): ServiceEndpointStats[] {
    return this.endpoints.map((e) => e.stats());
  }

  /** Endpoint names are subject-token safe and unique, as the framework requires. */
  private uniqueName(wanted: string): string {
    const base = wanted.replace(/[^-\w]/g, '_') || 'endpoint';
    let name = base;
    for (let n = 2; this.names.has(name); n++) name = `${base}-${n}`;
    this.names.add(name);
    return name;
  }
}

/** What the framework's fields cannot say about a `@Subscribe`: its durable consumer and connection. */
function endpointMetadata(options: SubscribeOptions | undefined): Record<string, string> {
  const m: Record<string, string> = {};
  if (options?.durable) m['eventbus.durable'] = String(options.durable);
  if (options?.consumer) m['eventbus.consumer'] = options.consumer;
  return m;
}
