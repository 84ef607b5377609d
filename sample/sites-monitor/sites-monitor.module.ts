// The sites-monitor app module, apart from main.ts so that `nestjs-nats-eventbus asyncapi --module` can load it
// without starting the service.
import { DynamicModule, Logger, Module, Provider } from '@nestjs/common';
import { EventBusOutbox, EventBusOutboxModule } from 'nestjs-nats-eventbus/outbox';
import { Pool } from 'pg';
import { envInt, envString, serviceConfig } from '../common/config';
import { eventBusModule } from '../common/event-bus.config';
import { AlertDecisions } from './alert-decisions';
import { ALERT_DECISIONS, MONITOR_OPTIONS, MonitorOptions, MonitorService } from './monitor.service';

export const config = serviceConfig('sites-monitor', 5000);

const monitorOptions: MonitorOptions = {
  intervalMs: envInt('MONITOR_INTERVAL_MS', 5000, 1),
  rpcTimeoutMs: envInt('RPC_TIMEOUT_MS', 10_000, 1),
  concurrency: envInt('MONITOR_CONCURRENCY', 4, 1),
  slackChannel: envString('SLACK_CHANNEL', '#edge-alerts'),
  emailTo: envString('ALERT_EMAIL_TO', 'noc@example.com')
    .split(',')
    .map((s) => s.trim()),
  reportEveryCycles: envInt('REPORT_EVERY_CYCLES', 12, 1),
};

/** What the monitor sends; no decorator records a publish, so its AsyncAPI document is told. */
const sends = [
  { topic: 'edge.list.request', request: true, description: 'Each cycle: the edges to check (velocloud-bridge answers)' },
  { topic: 'edge.status.request', request: true, description: "Each edge's status; a big edge's reply comes through claim-check" },
  { topic: 'notification.slack.request', description: 'An OFFLINE edge, every cycle (persisted)' },
  {
    topic: 'notification.email.request',
    description: "An OFFLINE edge's report with its event history attached (persisted, claim-checked)",
  },
];

/**
 * Alert decisions go through the transactional outbox when there is a PostgreSQL (DATABASE_URL,
 * which `npm run sample` sets when it starts one); without it the monitor publishes directly.
 */
function outboxParts(): { imports: DynamicModule[]; providers: Provider[] } {
  const url = envString('DATABASE_URL', '');
  if (!url) return { imports: [], providers: [{ provide: ALERT_DECISIONS, useValue: undefined }] };
  // One pool for the monitor's transactions and the relay; it connects on first use, so
  // `nestjs-nats-eventbus asyncapi --module` can load this file without a server.
  const pool = new Pool({ connectionString: url, max: 4 });
  // An idle client losing its server is a log line, not an unhandled 'error' event that ends the process.
  pool.on('error', (err) => new Logger('AlertDecisions').warn(`PostgreSQL connection lost: ${err.message}`));
  return {
    // ensureSchema: a sample has no migrations; an app creates the table in its own (README "Outbox").
    imports: [EventBusOutboxModule.forRoot({ pool, ensureSchema: true, pollIntervalMs: 1000 })],
    providers: [
      { provide: ALERT_DECISIONS, inject: [EventBusOutbox], useFactory: (outbox: EventBusOutbox) => new AlertDecisions(pool, outbox) },
    ],
  };
}
const outbox = outboxParts();

@Module({
  imports: [
    eventBusModule(config, { durable: true, description: 'Checks every edge each cycle and alerts on OFFLINE ones', sends }),
    ...outbox.imports,
  ],
  providers: [MonitorService, { provide: MONITOR_OPTIONS, useValue: monitorOptions }, ...outbox.providers],
})
export class SitesMonitorModule {}
