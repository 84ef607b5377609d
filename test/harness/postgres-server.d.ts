export interface PostgresHandle {
  readonly url: string;
  readonly running: boolean;
  start(): Promise<PostgresHandle>;
  stop(mode?: 'fast' | 'immediate' | 'smart'): Promise<void>;
  restart(mode?: 'fast' | 'immediate' | 'smart'): Promise<PostgresHandle>;
  log(): string;
  dispose(): Promise<void>;
}
export declare const PostgresServer: { start(opts?: { port?: number }): Promise<PostgresHandle> };
export declare function postgresBinDir(): string;
export declare const POSTGRES_INSTALL_HINT: string;
