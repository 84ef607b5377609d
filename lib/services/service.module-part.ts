import type { DynamicModule } from '@nestjs/common';
import { NatsServiceResponder, EVENT_BUS_SERVICE } from './nats-service';
import { ServiceEndpoints } from './service-endpoints';
import { EventBusServiceOptions, validateServiceOptions } from './service.options';

/** `forRoot({ service })`: the endpoint registry and the `$SRV` responder join the module. */
export function withService(definition: DynamicModule, service: EventBusServiceOptions | undefined): DynamicModule {
  if (service === undefined) return definition;
  validateServiceOptions(service);
  const frozen = Object.freeze({ ...service, ...(service.metadata ? { metadata: Object.freeze({ ...service.metadata }) } : {}) });
  return {
    ...definition,
    providers: [...(definition.providers ?? []), { provide: EVENT_BUS_SERVICE, useValue: frozen }, ServiceEndpoints, NatsServiceResponder],
  };
}
