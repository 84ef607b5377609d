// 'nestjs-nats-eventbus/microservices': claim-check for @nestjs/microservices users.
export { EventBusTransport } from './event-bus.transport';
export { EventBusClientProxy } from './event-bus.client-proxy';
export { EventBusTransportOptions, NestNatsOptions } from './event-bus-transport.options';
