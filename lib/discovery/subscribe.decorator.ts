import { SetMetadata } from '@nestjs/common';
import { SubscribeOptions } from '../event-bus/event-bus.options';

export const SUBSCRIBE_METADATA = 'nestjs-nats-eventbus:subscribe';

export interface SubscribeMetadata {
  topic: string;
  options: SubscribeOptions;
}

/**
 * Subscribe the decorated method to `topic` at bootstrap. It is called as
 * `(payload, ctx: MessageContext)`; for a request, its return value is the reply.
 * May be stacked to listen on several topics.
 */
export function Subscribe(topic: string, options: SubscribeOptions = {}): MethodDecorator {
  return (target, key, descriptor) => {
    const previous: SubscribeMetadata[] = Reflect.getMetadata(SUBSCRIBE_METADATA, descriptor.value as object) ?? [];
    SetMetadata(SUBSCRIBE_METADATA, [...previous, { topic, options }])(target, key, descriptor);
    return descriptor;
  };
}
