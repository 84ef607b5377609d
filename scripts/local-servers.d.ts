export declare const INSTALL_HINT: Record<'nats-server' | 'redis-server' | 'redis-cli' | 'openssl', string>;
/** Absolute path of a binary; `dirs` replaces the search path (for tests). Throws with the install command. */
export declare function requireBinary(name: string, dirs?: string[]): string;
export declare function freePort(): Promise<number>;

declare abstract class ServerProcess {
  readonly name: string;
  readonly port: number;
  readonly running: boolean;
  readonly url: string;
  output: string;
  start(): Promise<this>;
  stop(signal?: NodeJS.Signals): Promise<void>;
  restart(): Promise<this>;
  dispose(): Promise<void>;
}

export declare class NatsServer extends ServerProcess {
  static start(opts?: NatsServerOptions): Promise<NatsServer>;
  constructor(port: number, opts?: NatsServerOptions);
  /** Monitoring port (`-m`), set for the nodes of a `NatsCluster`. */
  monitorPort?: number;
  /** `--server_name`, set for the nodes of a `NatsCluster` (`n0`, `n1`… with JetStream, `node-0`… without). */
  serverName?: string;
}

export interface NatsServerOptions {
  port?: number;
  jetstream?: boolean;
  args?: string[];
  /** Text of a nats-server configuration file, given with `-c`. */
  config?: string;
}

export declare class RedisServer extends ServerProcess {
  static start(opts?: RedisServerOptions): Promise<RedisServer>;
  constructor(port: number, opts?: RedisServerOptions);
  cli(...args: string[]): string;
}

export interface RedisServerOptions {
  port?: number;
  args?: string[];
  /** Text of a redis.conf, given first on the command line. */
  config?: string;
  /** `requirepass` for the default user; the probe and `cli()` authenticate with it. */
  password?: string;
  /** PEM paths: the server then speaks TLS only on `port`, and `url` is `rediss://`. */
  tls?: { cert: string; key: string; ca: string };
  /** Run as Redis Sentinel (`--sentinel`); needs `config`. */
  sentinel?: boolean;
}

export interface NatsClusterOptions {
  size?: number;
  name?: string;
  args?: string[];
  /** Each node runs JetStream with its own store (`--server_name nX -js -sd <dir>`); `start` waits for a meta leader. */
  jetstream?: boolean;
}

export declare class NatsCluster {
  static start(opts?: NatsClusterOptions): Promise<NatsCluster>;
  readonly nodes: NatsServer[];
  readonly jetstream: boolean;
  readonly urls: string[];
  byPort(port: number | string): NatsServer | undefined;
  /** The node whose `--server_name` is `name`. */
  byName(name: string): NatsServer | undefined;
  /** SIGKILL the node named `name`; resolves to it (its store is kept, `start()` brings it back). */
  kill(name: string): Promise<NatsServer>;
  waitForRoutes(timeoutMs?: number): Promise<void>;
  /** The JetStream meta leader's server name, when every running node agrees on one. */
  metaLeader(): Promise<string | undefined>;
  waitForJetStream(timeoutMs?: number): Promise<void>;
  /** Server name of the node leading `stream` (bucket `b` is stream `OBJ_b`), from `/jsz`; undefined if none. */
  streamLeader(stream: string, account?: string): Promise<string | undefined>;
  dispose(): Promise<void>;
}

export declare class RedisCluster {
  static start(opts?: { size?: number; args?: string[] }): Promise<RedisCluster>;
  readonly nodes: RedisServer[];
  readonly startupNodes: Array<{ host: string; port: number }>;
  dispose(): Promise<void>;
}

export interface TestCertificates {
  dir: string;
  ca: string;
  cert: string;
  key: string;
  dispose(): void;
}
export declare function makeTestCertificates(): TestCertificates;
