#!/usr/bin/env node
// The `hostlb` command: start an instance from a config file, run the built-in
// demo, or check a config file without touching the host.

import { Command } from 'commander';
import { HostlbError } from '../../errors.js';
import { loadConfig } from '../config-file.js';
import { demoConfig, demoInstructions, startDemoDaemons } from '../demo.js';
import { countersLine, startInstance, type Log, type Running } from '../run.js';

const log: Log = (event, fields = {}) => {
  process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), event, ...fields })}\n`);
};

function fail(e: unknown): never {
  if (e instanceof HostlbError) {
    process.stderr.write(`hostlb: ${e.message}\n`);
    process.exit(e.code.startsWith('CONFIG') ? 2 : 1);
  }
  throw e;
}

/** Runs until SIGINT or SIGTERM, then undoes everything and exits 0. */
function runForeground(running: Running, onStop: () => void = () => {}): void {
  const stop = (signal: string): void => {
    log('signal', { signal });
    try {
      running.stop();
    } finally {
      onStop();
      process.exit(0);
    }
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('uncaughtException', (e) => {
    log('fatal', { error: String(e?.stack ?? e) });
    try { running.stop(); } finally { process.exit(1); }
  });
  setInterval(() => log('counters', { summary: countersLine(running) }), 10_000).unref();
  // Keep the process alive: the TUN poll handle may be unref'd.
  setInterval(() => {}, 1 << 30);
}

const program = new Command()
  .name('hostlb')
  .description('Load-balance many daemons on one host behind one cluster address, below TCP.')
  .showHelpAfterError();

program.command('start')
  .description('run hostlb in the foreground until SIGINT or SIGTERM (needs root / CAP_NET_ADMIN)')
  .requiredOption('-c, --config <file>', 'YAML configuration file (see docs/configuration.md)')
  .action((opts: { config: string }) => {
    try {
      const config = loadConfig(opts.config);
      runForeground(startInstance(config, log));
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
      const running = startInstance(config, log);
      process.stdout.write(demoInstructions(config.device));
      runForeground(running, () => servers.forEach((s) => s.close()));
    } catch (e) {
      fail(e);
    }
  });

program.parseAsync(process.argv).catch(fail);
