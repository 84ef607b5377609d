import { Injectable } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import { SUBSCRIBE_METADATA, SubscribeMetadata } from './subscribe.decorator';

/** Reads `@Subscribe` metadata off a method. */
@Injectable()
export class SubscribeMetadataAccessor {
  constructor(private readonly reflector: Reflector) {}

  getSubscriptions(target: (...args: any[]) => unknown): SubscribeMetadata[] | undefined {
    if (!target || (typeof target !== 'function' && typeof target !== 'object')) return undefined;
    return this.reflector.get<SubscribeMetadata[]>(SUBSCRIBE_METADATA, target);
  }
}
