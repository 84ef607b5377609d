/** One subcommand of `nestjs-nats-eventbus`. */
export interface CliCommand {
  /** One line for the command list. */
  summary: string;
  /** Its options, for the usage text. */
  usage: string;
  /** Runs with the arguments after the command's name; resolves to the exit code. */
  run(args: string[], out: NodeJS.WritableStream): Promise<number>;
}

/** Bad arguments: printed with the command's usage, exit code 2. */
export class CliUsageError extends Error {}
