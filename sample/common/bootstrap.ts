import 'reflect-metadata';
import { Logger, Type } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { ServiceConfig } from './config';
import { JsonLogger } from './json-logger';
import { startTelemetry } from './telemetry';

/**
 * Start one sample service: JSON log lines, `/_health` (from EventBusModule) on HOST:PORT,
 * and a clean shutdown on SIGTERM/SIGINT (the bus stops taking messages, lets handlers finish,
 * flushes and closes).
 */
export async function bootstrap(module: Type<unknown>, config: ServiceConfig): Promise<void> {
  const logger = new JsonLogger(config.service);
  try {
    // OTEL=1: the SDK must be registered before the app is created.
    const metricsPort = startTelemetry(config.service);
    const app = await NestFactory.create(module, { logger });
    app.enableShutdownHooks();
    await app.listen(config.port, config.host);
    const address = app.getHttpServer().address();
    const port = typeof address === 'object' && address ? address.port : config.port;
    new Logger('Bootstrap').log({
      msg: `${config.service} listening on http://${config.host}:${port}/_health`,
      hop: 'listening',
      port,
      pid: process.pid,
      ...(metricsPort !== undefined ? { metrics: `http://${config.host}:${metricsPort}/metrics` } : {}),
    });
  } catch (err) {
    logger.error(err instanceof Error ? err : new Error(String(err)), 'Bootstrap');
    process.exit(1);
  }
}
