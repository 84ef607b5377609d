import { ROUTE_ARGS_METADATA } from '@nestjs/common/constants';

/**
 * Parameter types, numbered as `@nestjs/microservices` numbers them (`RpcParamtype`), so that its
 * `@Payload()` and `@Ctx()` decorators work on `@Subscribe` methods as on `@MessagePattern` ones.
 */
export const SubscribeParamtype = { PAYLOAD: 3, CONTEXT: 6 } as const;

/** Where the decorated parameters of a `@Subscribe` method are read from (Nest's own key). */
export const SUBSCRIBE_ARGS_METADATA = ROUTE_ARGS_METADATA;

/** The parameters of a method without parameter decorators: `(payload, ctx)`; pipes apply to the payload only. */
export const DEFAULT_SUBSCRIBE_ARGS = {
  [`${SubscribeParamtype.PAYLOAD}:0`]: { index: 0, data: undefined, pipes: [] },
  [`${SubscribeParamtype.CONTEXT}:1`]: { index: 1, data: undefined, pipes: [] },
};

/** Gives each decorated parameter its value from the call's arguments `[payload, ctx]`. */
export class SubscribeParamsFactory {
  exchangeKeyForValue(type: number, data: unknown, args: unknown[]): unknown {
    if (type === SubscribeParamtype.CONTEXT) return args[1];
    if (type !== SubscribeParamtype.PAYLOAD) return undefined;
    const payload = args[0];
    // `@Payload('field')` reads one property, as with @MessagePattern.
    return typeof data === 'string' && payload && typeof payload === 'object' ? (payload as Record<string, unknown>)[data] : payload;
  }
}
