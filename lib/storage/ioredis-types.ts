// ioredis is an optional peer: the build marks this import @ts-ignore in the emitted typings
// (scripts/typings-without-ioredis.js), so an app without ioredis still type-checks them (as any).
import type { Cluster, ClusterNode, ClusterOptions, Redis, RedisOptions } from 'ioredis';

export type { Cluster, ClusterNode, ClusterOptions, Redis, RedisOptions };
