#!/usr/bin/env node
// The `hostlb` command. `start` and `demo` run an instance in the foreground
// with its admin API; every other command talks to a running instance through
// that API (see commands.ts).

import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { HostlbError } from '../../errors.js';
import { AdminServer } from '../api/server.js';
import type { HostlbConfig } from '../config-schema.js';
import { loadConfig } from '../config-file.js';
import { demoConfig, demoInstructions, startDemoDaemons } from '../demo.js';
import { Instance } from '../instance.js';
import { createLogger } from '../logger.js';
import { EXIT } from './client.js';
import { addClientCommands } from './commands.js';

const VERSION = (JSON.parse(readFileSync(new URL('../../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
const log = createLogger();

function fail(e: unknown): never {
  if (e instanceof HostlbError) {
    process.stderr.write(`hostlb: ${e.message}\n`);
    process.exit(e.code.startsWith('CONFIG') ? EXIT.usage : EXIT.rejected);
  }
  throw e;
}

function adminOptions(config: HostlbConfig): { socket: string; tcp?: { host: string; port: number; token: string } } {
  const socket = config.admin.socket ?? `${config.stateDir}/admin.sock`;
  if (!config.admin.listen) return { socket };
  const m = /^\[?(.*?)\]?:(\d+)$/.exec(config.admin.listen)!;
  const token = config.admin.token ?? readFileSync(config.admin.tokenFile!, 'utf8').trim();
  return { socket, tcp: { host: m[1], port: Number(m[2]), token } };
}

/**
 * Starts an instance and its admin API, then runs until SIGINT, SIGTERM or
 * `hostlb stop`; SIGHUP re-reads the config file. Every change to the host is
 * undone on the way out, also after an uncaught error.
 */
async function runForeground(config: HostlbConfig, configFile: string | undefined, onStop: () => void = () => {}): Promise<Instance> {
  let instance: Instance | null = null;
  let admin: AdminServer | null = null;
  const stop = (why: string, code = 0): void => {
    log.info({ event: 'stopping', why }, 'stopping');
    try {
      admin?.close();
      instance?.stop();
    } finally {
      onStop();
      process.exit(code);
    }
  };
  // Handlers before the host is touched: without one, a SIGTERM right after
  // "started" kills with the default action and leaves every change behind.
  // One that arrives during the synchronous start runs after it, and undoes it.
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
  const running = Instance.start(config, { configFile, logger: log });
  instance = running;
  process.once('uncaughtException', (e) => {
    log.fatal({ err: e }, 'fatal error');
    stop('fatal error', 1);
  });
  try {
    admin = await AdminServer.start(running, { ...adminOptions(config), version: VERSION, logger: log, onStopRequested: () => stop('hostlb stop') });
  } catch (e) {
    running.stop();
    throw e;
  }
  process.on('SIGHUP', () => {
    try {
      running.reload();
    } catch (e) {
      log.error({ event: 'reload_rejected', err: e instanceof HostlbError ? e.message : e }, 'reload rejected; the running configuration is unchanged');
    }
  });
  log.info({ event: 'admin_listening', socket: adminOptions(config).socket }, 'admin API listening');
  return running;
}

const program = new Command()
  .name('hostlb')
  .version(VERSION)
  .description('Load-balance many daemons on one host behind one cluster address, below TCP.')
  .option('--socket <path>', 'admin socket of the running hostlb (default /run/hostlb/admin.sock, or $HOSTLB_SOCKET)')
  .option('--url <url>', 'talk to a TCP admin listener instead, e.g. http://127.0.0.1:9180 (needs --token)')
  .option('--token <token>', 'bearer token for --url (or $HOSTLB_TOKEN)', process.env.HOSTLB_TOKEN)
  .option('--json', 'print the API\'s JSON answer instead of a table')
  .showHelpAfterError()
  .addHelpText('after', '\nExit codes: 0 done, 1 rejected (the message says what to change), 2 usage or config error,\n3 hostlb not running, 4 permission denied, 5 hostlb failed.');
program.exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : EXIT.usage));

program.command('start')
  .description('run hostlb in the foreground until SIGINT, SIGTERM or `hostlb stop` (needs root / CAP_NET_ADMIN); SIGHUP reloads the file')
  .requiredOption('-c, --config <file>', 'YAML configuration file (see docs/configuration.md)')
  .action(async (opts: { config: string }) => {
    try {
      await runForeground(loadConfig(opts.config), opts.config);
    } catch (e) {
      fail(e);
    }
  });

program.command('check')
  .description('validate a configuration file and print it with defaults filled in; changes nothing')
  .requiredOption('-c, --config <file>', 'YAML configuration file')
  .action((opts: { config: string }) => {
    try {
      process.stdout.write(`${JSON.stringify(loadConfig(opts.config), null, 2)}\n`);
    } catch (e) {
      fail(e);
    }
  });

program.command('demo')
  .description('the built-in default (npm start): three HTTP daemons on 127.10.1.1-3:8080 behind 127.10.0.1:80')
  .action(async () => {
    try {
      const config = demoConfig();
      const servers = await startDemoDaemons();
      await runForeground(config, undefined, () => servers.forEach((s) => s.close()));
      process.stdout.write(demoInstructions(config.device));
      setInterval(() => {}, 1 << 30); // the daemons and the TUN poll keep the loop alive; this keeps it obvious
    } catch (e) {
      fail(e);
    }
  });

addClientCommands(program);

program.parseAsync(process.argv).catch(fail);
