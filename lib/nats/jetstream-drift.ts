// What differs between a stream or durable consumer as it exists and as the bus asks for it, and
// which differences can lose messages (refused unless jetstream.allowDestructiveUpdates).
import type { ConsumerConfig, StreamConfig } from '@nats-io/jetstream';
import type { DurableConsumerSpec, StreamSpec } from './jetstream-admin';

/** One setting that differs between what a stream or consumer has and what is asked for. */
export interface Drift {
  /** The option that asks for it. */
  option: string;
  /** `name old → new`, for the log. */
  change: string;
  /** What exists and what was asked, for a refusal. */
  why: string;
  /** Whether applying it can lose messages, or redeliver ones still being handled. */
  destructive: boolean;
}

export const NS_PER_SECOND = 1_000_000_000;
const seconds = (ns: number | undefined) => (ns ? `${Math.round(ns / NS_PER_SECOND)} s` : 'no limit');

/** How `wanted` differs from the stream's `current` config; growing a limit is not destructive, shrinking one is. */
export function streamDrift(spec: StreamSpec, current: StreamConfig, wanted: Partial<StreamConfig>): Drift[] {
  const drift: Drift[] = [];
  const had = [...current.subjects].sort();
  const want = [...spec.subjects].sort();
  if (had.join(' ') !== want.join(' ')) {
    const removed = had.filter((s) => !want.includes(s));
    drift.push({
      option: 'subjects',
      change: `subjects [${had.join(', ')}] → [${want.join(', ')}]`,
      why: `subjects [${had.join(', ')}], and this one lists [${want.join(', ')}] (removing ${removed.join(', ')}: their publishes would no longer be stored)`,
      destructive: removed.length > 0,
    });
  }
  const [oldAge, newAge] = [current.max_age ?? 0, wanted.max_age ?? 0];
  if (oldAge !== newAge) {
    drift.push({
      option: 'maxAgeSeconds',
      change: `max_age ${seconds(oldAge)} → ${seconds(newAge)}`,
      why: `max age ${seconds(oldAge)}, and this one asks for ${seconds(newAge)} (messages older than that would be deleted at once)`,
      destructive: newAge !== 0 && (oldAge === 0 || newAge < oldAge),
    });
  }
  if (current.num_replicas !== wanted.num_replicas) {
    drift.push({
      option: 'replicas',
      change: `replicas ${current.num_replicas} → ${wanted.num_replicas}`,
      why: `${current.num_replicas} replicas, and this one asks for ${wanted.num_replicas} (fewer copies survive fewer lost servers)`,
      destructive: (wanted.num_replicas ?? current.num_replicas) < current.num_replicas,
    });
  }
  if (current.storage !== wanted.storage) {
    // The server refuses it in place; not ours to judge, its answer is passed on.
    drift.push({ option: 'storage', change: `storage ${current.storage} → ${wanted.storage}`, why: '', destructive: false });
  }
  if (wanted.duplicate_window !== undefined && current.duplicate_window !== wanted.duplicate_window) {
    drift.push({
      option: 'duplicateWindowSeconds',
      change: `duplicate_window ${seconds(current.duplicate_window)} → ${seconds(wanted.duplicate_window)}`,
      why: `a duplicate window of ${seconds(current.duplicate_window)}, and this one asks for ${seconds(wanted.duplicate_window)} (a repeated msgId would be stored twice)`,
      destructive: wanted.duplicate_window < current.duplicate_window,
    });
  }
  return drift;
}

export const RETRY_DESCRIPTION = /^nestjs-nats-eventbus maxDeliver=(\d+) backoffMs=([\d,]+)$/;

/** The bus's retry settings as the consumer's description (nats-server 2.9 has no consumer metadata). */
export function retryDescription(spec: DurableConsumerSpec): string | undefined {
  if (spec.maxDeliver === undefined || spec.backoffMs === undefined) return undefined;
  return `nestjs-nats-eventbus maxDeliver=${spec.maxDeliver} backoffMs=${spec.backoffMs.join(',')}`;
}

/** How the consumer's `current` config differs from `spec`; any change to a consumer in use is destructive. */
export function consumerDrift(
  spec: DurableConsumerSpec,
  current: ConsumerConfig,
  ackWait: number,
  description: string | undefined,
): Drift[] {
  const drift: Drift[] = [];
  const filter = current.filter_subject ?? '>';
  if (filter !== spec.filterSubject) {
    drift.push({
      option: 'filter',
      change: `filter ${filter} → ${spec.filterSubject}`,
      why: `filter "${filter}", not "${spec.filterSubject}"`,
      destructive: true,
    });
  }
  if (current.ack_wait !== ackWait) {
    const ms = (ns: number | undefined) => Math.round((ns ?? 0) / 1_000_000);
    drift.push({
      option: 'ackWaitMs',
      change: `ackWaitMs ${ms(current.ack_wait)} → ${spec.ackWaitMs}`,
      why: `ackWaitMs ${ms(current.ack_wait)}, and this subscription asks for ${spec.ackWaitMs}`,
      destructive: true,
    });
  }
  if (description === undefined || current.description === description) return drift;
  const recorded = RETRY_DESCRIPTION.exec(current.description ?? '');
  if (!recorded) {
    // Created before the settings were recorded (or described by an operator): record ours only where nothing is written.
    if (!current.description) drift.push({ option: 'description', change: `recorded ${description}`, why: '', destructive: false });
    return drift;
  }
  const [, maxDeliver, backoffMs] = recorded;
  if (Number(maxDeliver) !== spec.maxDeliver) {
    drift.push({
      option: 'maxDeliver',
      change: `maxDeliver ${maxDeliver} → ${spec.maxDeliver}`,
      why: `maxDeliver ${maxDeliver}, and this subscription asks for ${spec.maxDeliver}`,
      destructive: true,
    });
  }
  if (backoffMs !== spec.backoffMs!.join(',')) {
    drift.push({
      option: 'backoffMs',
      change: `backoffMs [${backoffMs}] → [${spec.backoffMs!.join(',')}]`,
      why: `backoffMs [${backoffMs}], and this subscription asks for [${spec.backoffMs!.join(',')}]`,
      destructive: true,
    });
  }
  return drift;
}
