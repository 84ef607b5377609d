export declare const INSTALL_HINT: Record<'nats-server' | 'redis-server', string>;
export declare function requireBinary(name: string): string;
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
  static start(opts?: { port?: number; jetstream?: boolean; args?: string[] }): Promise<NatsServer>;
}

export declare class RedisServer extends ServerProcess {
  static start(opts?: { port?: number; args?: string[] }): Promise<RedisServer>;
  cli(...args: string[]): string;
}
