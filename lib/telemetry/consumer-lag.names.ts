/** Gauges per durable (attributes: messaging.destination.name = topic, messaging.consumer.group.name = durable). */
export const METRIC_CONSUMER_PENDING = 'eventbus.consumer.pending';
export const METRIC_CONSUMER_ACK_PENDING = 'eventbus.consumer.ack_pending';
export const METRIC_CONSUMER_REDELIVERED = 'eventbus.consumer.redelivered';
