import { Module } from '@nestjs/common';
import { bootstrap } from '../common/bootstrap';
import { envInt, envString, serviceConfig } from '../common/config';
import { eventBusModule } from '../common/event-bus.config';
import { MONITOR_OPTIONS, MonitorOptions, MonitorService } from './monitor.service';

const config = serviceConfig('sites-monitor', 5000);

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

@Module({
  imports: [eventBusModule(config, { durable: true })],
  providers: [MonitorService, { provide: MONITOR_OPTIONS, useValue: monitorOptions }],
})
class SitesMonitorModule {}

void bootstrap(SitesMonitorModule, config);
