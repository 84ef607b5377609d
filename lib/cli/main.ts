#!/usr/bin/env node
// `npx nestjs-nats-eventbus <command>`: one binary, one module per subcommand (asyncapi.command.ts,
// ...), so more commands join the table below without touching the others.
import { asyncApiCommand } from './asyncapi.command';
import { CliCommand, CliUsageError } from './cli-command';
import { dlqCommand } from './dlq.command';

const COMMANDS: Record<string, CliCommand> = {
  asyncapi: asyncApiCommand,
  dlq: dlqCommand,
};

function usage(): string {
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(10)} ${c.summary}\n             ${c.usage}`);
  return `usage: nestjs-nats-eventbus <command> [options]\n\ncommands:\n${lines.join('\n')}\n`;
}

export async function main(
  argv: string[],
  out: NodeJS.WritableStream = process.stdout,
  err: NodeJS.WritableStream = process.stderr,
): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    out.write(usage());
    return name ? 0 : 2;
  }
  const command = COMMANDS[name];
  if (!command) {
    err.write(`unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  try {
    return await command.run(rest, out);
  } catch (e) {
    if (e instanceof CliUsageError) {
      err.write(`${e.message}\nusage: nestjs-nats-eventbus ${name} ${command.usage}\n`);
      return 2;
    }
    err.write(`nestjs-nats-eventbus ${name}: ${(e as Error)?.stack ?? String(e)}\n`);
    return 1;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      // The app's module may have left timers or sockets of its own: do not wait for them.
      process.exitCode = code;
      process.stdout.write('', () => process.exit(code));
    },
    (err) => {
      process.stderr.write(`${String(err)}\n`);
      process.exit(1);
    },
  );
}
