// The sites-monitor app module, apart from main.ts so that `nestjs-nats-eventbus asyncapi --module` can load it
// without starting the service.
import { Module } from '@nestjs/common';
import { envInt, envString, serviceConfig } from '../common/config';
import { eventBusModule } from '../common/event-bus.config';
import { MONITOR_OPTIONS, MonitorOptions, MonitorService } from './monitor.service';

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

@Module({
  imports: [eventBusModule(config, { durable: true, description: 'Checks every edge each cycle and alerts on OFFLINE ones', sends })],
  providers: [MonitorService, { provide: MONITOR_OPTIONS, useValue: monitorOptions }],
})
export class SitesMonitorModule {}
