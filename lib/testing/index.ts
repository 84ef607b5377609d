// `nestjs-nats-eventbus/testing`: the bus on an in-process broker, for tests with no NATS server.
export { EventBusTestingModule } from './event-bus-testing.module';
export type { EventBusTestingOptions } from './event-bus-testing.module';
export { TestEventBus, IN_PROCESS_BROKER } from './test-event-bus';
export type { PublishedMessage, HandledMessage } from './test-event-bus';
export { InProcessBroker } from './in-process-broker';
export type { InProcessBrokerOptions } from './in-process-broker';
export { describeStorageConformance, StorageConformanceError } from './storage-conformance';
export type { ConformanceRunner, StorageConformanceOptions } from './storage-conformance';
