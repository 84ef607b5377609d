import { ConfigurableModuleBuilder } from '@nestjs/common';
import { EventBusModuleExtras, EventBusModuleOptions } from './event-bus-module.options';

export const {
  ConfigurableModuleClass: EventBusConfigurableModule,
  MODULE_OPTIONS_TOKEN: EVENT_BUS_MODULE_OPTIONS,
  OPTIONS_TYPE: EVENT_BUS_OPTIONS_TYPE,
  ASYNC_OPTIONS_TYPE: EVENT_BUS_ASYNC_OPTIONS_TYPE,
} = new ConfigurableModuleBuilder<EventBusModuleOptions>({ moduleName: 'EventBus' })
  .setClassMethodName('forRoot')
  // Every extra is listed, so it is kept out of the options the EventBus is built from.
  .setExtras<EventBusModuleExtras>({ health: {}, service: undefined, asyncapi: undefined }, (definition) => ({
    ...definition,
    global: true,
  }))
  .build();
