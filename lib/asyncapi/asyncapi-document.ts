import { DEFAULTS } from '../options/defaults';
import type { EventBusServiceOptions } from '../services/service.options';
import type { AsyncApiSend } from './asyncapi.options';
import { classValidatorJsonSchema, DtoClass, JsonSchema, standardJsonSchema } from './payload-schema';
import type { DiscoveredSubscriber } from './subscriber-catalog';

/** What the document is built from. Every part is optional: the CLI may know only the subscribers. */
export interface AsyncApiSources {
  subscribers: DiscoveredSubscriber[];
  service?: EventBusServiceOptions;
  /** The module's options as `forRoot` got them (not known for `forRootAsync` in the CLI). */
  options?: AsyncApiBusOptions;
  sends?: AsyncApiSend[];
}

/**
 * What the document reads of the module's options (`EventBusModuleOptions` fits it). Declared here,
 * so that asyncapi/ does not import module/, which imports it.
 */
export interface AsyncApiBusOptions {
  nats?: { servers?: string | string[] };
  largeMessageThresholdBytes?: number;
  /** @deprecated Use `largeMessageThresholdBytes`. */
  largeMessageThreshold?: number;
  storage?: unknown;
}

/** AsyncAPI's NATS bindings version (bindings/nats, `queue` on an operation). */
const NATS_BINDING_VERSION = '0.1.0';

/** The envelope a body over the offload threshold crosses NATS as (docs/wire-format.md). */
export const CLAIM_CHECK_ENVELOPE_SCHEMA: JsonSchema = Object.freeze({
  type: 'object',
  title: 'ClaimCheckEnvelope',
  description:
    'Sent instead of a body over the offload threshold: the body is in the message storage under a key made from the token ' +
    '(see x-eventbus-claim-check). A receiver treats a message as stored only when it is exactly this object.',
  properties: {
    token: {
      type: 'string',
      description: 'A UUID (RFC 4122) or a Python shortuuid (22 characters); anything else is refused.',
      pattern:
        '^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz]{22})$',
    },
    is_stored: { type: 'boolean', const: true },
  },
  required: ['token', 'is_stored'],
  additionalProperties: false,
});

/**
 * The AsyncAPI 3.0 document of one app: a channel per subject it subscribes to (and per topic
 * named in `asyncapi.sends`), a `receive` operation per `@Subscribe` (with `reply` where the
 * handler may return a value), a `send` operation per `sends` entry. Queue groups are NATS
 * operation bindings; durables, consumers and claim-check are `x-eventbus-*` extensions.
 */
export function buildAsyncApiDocument(sources: AsyncApiSources): Record<string, unknown> {
  const { subscribers, service, options } = sources;
  const sends = sources.sends ?? [];
  const channels: Record<string, Record<string, unknown>> = {};
  const operations: Record<string, Record<string, unknown>> = {};
  const ids = new Set<string>();
  const channelIds = new Map<string, string>();

  const channelFor = (topic: string, payload: JsonSchema, summary: string): string => {
    let id = channelIds.get(topic);
    if (id) {
      // A topic both received and sent: the first known schema describes it.
      const known = channels[id].messages as Record<string, { payload: { anyOf: JsonSchema[] } }>;
      const first = known[`${id}_message`].payload.anyOf;
      if (!Object.keys(first[0]).length) first[0] = payload;
    } else {
      id = uniqueId(safeId(topic), ids);
      channelIds.set(topic, id);
      channels[id] = { address: topic, messages: { [`${id}_message`]: message(payload, summary) } };
    }
    return id;
  };
  const replyChannel = (id: string, payload: JsonSchema): string => {
    const replyId = uniqueId(`${id}_reply`, ids);
    // The requester's inbox: an address only known at run time.
    channels[replyId] = {
      address: null,
      description: `The requester's reply inbox. A handler that throws answers with the NATS service-error headers (Nats-Service-Error-Code, Nats-Service-Error) and the JSON body {"status": <code>, "error": "<message>"}.`,
      messages: { [`${replyId}_message`]: message(payload, 'Reply') },
    };
    return replyId;
  };

  for (const s of subscribers) {
    const payload = payloadSchema(s.schema, s.payloadType);
    const id = channelFor(s.topic, payload, `Payload of ${s.topic}`);
    const operation: Record<string, unknown> = {
      action: 'receive',
      channel: { $ref: `#/channels/${id}` },
      summary: `${s.owner}.${s.method}`,
      messages: [{ $ref: `#/channels/${id}/messages/${id}_message` }],
    };
    if (s.mayReply) {
      const replyId = replyChannel(id, {});
      operation.reply = {
        channel: { $ref: `#/channels/${replyId}` },
        messages: [{ $ref: `#/channels/${replyId}/messages/${replyId}_message` }],
      };
    }
    if (s.options.queue) operation.bindings = { nats: { queue: s.options.queue, bindingVersion: NATS_BINDING_VERSION } };
    if (s.options.durable)
      operation['x-eventbus-durable'] = { name: s.options.durable, delivery: 'at-least-once (JetStream pull consumer)' };
    const connection = s.options.connection ?? s.options.consumer;
    if (connection) operation['x-eventbus-consumer'] = connection;
    operations[uniqueId(`receive_${id}_${safeId(s.method)}`, ids)] = operation;
  }

  for (const send of sends) {
    const id = channelFor(send.topic, payloadSchema(send.schema), `Payload of ${send.topic}`);
    const operation: Record<string, unknown> = {
      action: 'send',
      channel: { $ref: `#/channels/${id}` },
      ...(send.description ? { description: send.description } : {}),
      messages: [{ $ref: `#/channels/${id}/messages/${id}_message` }],
    };
    if (send.request) {
      const replyId = replyChannel(id, {});
      operation.reply = {
        channel: { $ref: `#/channels/${replyId}` },
        messages: [{ $ref: `#/channels/${replyId}/messages/${replyId}_message` }],
      };
    }
    operations[uniqueId(`send_${id}`, ids)] = operation;
  }

  const servers = serversOf(options);
  return {
    asyncapi: '3.0.0',
    info: {
      title: service?.name ?? 'nestjs-nats-eventbus app',
      version: service?.version ?? '0.0.0',
      ...(service?.description ? { description: service.description } : {}),
    },
    ...(servers ? { servers } : {}),
    defaultContentType: 'application/json',
    channels,
    operations,
    components: { schemas: { ClaimCheckEnvelope: CLAIM_CHECK_ENVELOPE_SCHEMA } },
    'x-eventbus-claim-check': claimCheckOf(options),
  };
}

/** A message: its payload as sent, or the claim-check envelope in its place. */
function message(payload: JsonSchema, summary: string): Record<string, unknown> {
  return {
    contentType: 'application/json',
    summary,
    payload: { anyOf: [payload, { $ref: '#/components/schemas/ClaimCheckEnvelope' }] },
  };
}

/**
 * The payload's schema: the Standard Schema's JSON Schema, else the class-validator DTO's, else a
 * DTO class's name only (`{ title }`), else any JSON (`{}`): TypeScript types leave no trace at run time.
 */
export function payloadSchema(schema: unknown, dto?: DtoClass): JsonSchema {
  const fromStandard = schema === undefined ? undefined : standardJsonSchema(schema);
  if (fromStandard) return fromStandard;
  if (dto) return classValidatorJsonSchema(dto) ?? { title: dto.name };
  return {};
}

function serversOf(options: AsyncApiBusOptions | undefined): Record<string, unknown> | undefined {
  const urls = options?.nats?.servers;
  const list = typeof urls === 'string' ? [urls] : Array.isArray(urls) ? urls : [];
  if (!list.length) return undefined;
  const servers: Record<string, unknown> = {};
  list.forEach((url, i) => {
    const m = /^(?:(nats|tls|wss?):\/\/)?([^/]+)/.exec(String(url));
    const scheme = m?.[1] ?? 'nats';
    servers[`nats${i}`] = { host: (m?.[2] ?? String(url)).replace(/^[^@]*@/, ''), protocol: scheme === 'tls' ? 'nats' : scheme };
  });
  return servers;
}

/** How a non-Nest consumer recovers a claim-checked body: where the bytes are, under which key. */
function claimCheckOf(options: AsyncApiBusOptions | undefined): Record<string, unknown> {
  const base = {
    envelope: { $ref: '#/components/schemas/ClaimCheckEnvelope' },
    threshold: options?.largeMessageThresholdBytes ?? options?.largeMessageThreshold ?? "the server's max_payload minus 8 KiB for headers",
    rule: 'A body over the threshold is stored first, then its envelope is published in its place; the receiver reads the body by the token. Replies are offloaded the same way.',
  };
  const storage = options?.storage as Record<string, any> | undefined;
  if (storage?.encryption || (storage?.compression !== undefined && storage.compression !== false)) {
    // The body codec (storage.encryption / storage.compression): the stored bytes are not the JSON body itself.
    base.rule += ' The stored value is encoded by the body codec (compression and/or AES-256-GCM); its header says how.';
  }
  if (storage && 'redis' in storage) {
    const keyPrefix = storage.keyPrefix ?? DEFAULTS.storage.keyPrefix;
    return {
      ...base,
      storage: {
        kind: 'redis',
        key: `${keyPrefix}<token>`,
        keyPrefix,
        ttlSeconds: storage.ttlSeconds ?? DEFAULTS.storage.ttlSeconds,
        read: 'GET <key>',
      },
    };
  }
  if (storage && 'objectStore' in storage) {
    const bucket = storage.objectStore?.bucket ?? DEFAULTS.objectStore.bucket;
    return {
      ...base,
      storage: { kind: 'jetstream-object-store', bucket, object: '<token>', read: `object "<token>" of bucket "${bucket}"` },
    };
  }
  return {
    ...base,
    storage: storage ? { kind: 'custom' } : { kind: 'none', note: 'no storage configured: a body over the threshold is refused' },
  };
}

/** Component keys must match ^[A-Za-z0-9_\-]+$: NATS wildcards and dots are spelt out. */
function safeId(subject: string): string {
  return (
    subject
      .replace(/\*/g, 'any')
      .replace(/>/g, 'all')
      .replace(/[^A-Za-z0-9_-]/g, '_') || 'subject'
  );
}

function uniqueId(wanted: string, taken: Set<string>): string {
  let id = wanted;
  for (let n = 2; taken.has(id); n++) id = `${wanted}_${n}`;
  taken.add(id);
  return id;
}
