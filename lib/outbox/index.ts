// `nestjs-nats-eventbus/outbox`: the transactional outbox on PostgreSQL. Loads `pg` (an optional
// peer) only when the module makes its own pool; the main entry never imports this file.
export { EventBusOutboxModule, EVENT_BUS_OUTBOX_OPTIONS } from './event-bus-outbox.module';
export { EventBusOutbox } from './event-bus-outbox';
export type { OutboxPublishOptions, OutboxRow } from './event-bus-outbox';
export { OutboxRelay, OutboxRelayError } from './outbox-relay';
export type { RelayedRow } from './outbox-relay';
export { OUTBOX_DEFAULTS } from './outbox.options';
export type { EventBusOutboxOptions, ResolvedOutboxOptions } from './outbox.options';
export { OUTBOX_SCHEMA_SQL, outboxSchemaSql } from './outbox-schema';
export type { OutboxTransaction, PgPoolLike, PgPoolClientLike } from './pg-types';
