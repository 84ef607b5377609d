import type { TextMapGetter, TextMapSetter } from '@opentelemetry/api';
import type { MsgHdrs } from '../nats/bus-connection';

/** W3C trace context into NATS headers (`traceparent`, `tracestate`), as the API's propagator writes them. */
export const HEADER_SETTER: TextMapSetter<MsgHdrs> = {
  set(carrier, key, value) {
    carrier.set(key, value);
  },
};

/** And out of them; a header that is absent reads as undefined (nats.js gives ''). */
export const HEADER_GETTER: TextMapGetter<MsgHdrs | undefined> = {
  keys(carrier) {
    return carrier ? [...carrier.keys()] : [];
  },
  get(carrier, key) {
    if (!carrier) return undefined;
    const value = carrier.get(key);
    return value === '' ? undefined : value;
  },
};
