#!/usr/bin/env node
// The `hostlb` command. `start` and `demo` run an instance in the foreground
// with its admin API; every other command talks to a running instance through
// that API (see commands.ts).

import { readFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import { HostlbError } from '../../errors.js';
import { EXIT } from './client.js';
import { addClientCommands } from './commands.js';
import { addRunCommand } from './run.js';
import { addDashboardCommand } from './dashboard.js';
import { addTopCommand } from './top.js';
import { addCleanupCommand } from './cleanup.js';

const VERSION = (JSON.parse(readFileSync(new URL('../../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

function fail(e: unknown): never {
  if (e instanceof HostlbError) {
    process.stderr.write(`hostlb: ${e.message}\n`);
    process.exit(e.code.startsWith('CONFIG') ? EXIT.usage : EXIT.rejected);
  }
  throw e;
}

const program = new Command()
  .name('hostlb')
  .version(VERSION)
  .description('Load-balance many daemons on one host behind one cluster address, below TCP.')
  .option('--socket <path>', 'admin socket of the running hostlb (default /run/hostlb/admin.sock, or $HOSTLB_SOCKET)')
  .option('--url <url>', 'talk to a TCP admin listener instead, e.g. http://127.0.0.1:9180 (needs --token)')
  // Read from the environment at parse time, never given as a default: commander prints defaults in --help.
  .addOption(new Option('--token <token>', 'bearer token for --url').env('HOSTLB_TOKEN'))
  .option('--json', 'print the API\'s JSON answer instead of a table')
  .showHelpAfterError()
  .addHelpText('after', '\nExit codes: 0 done, 1 rejected (the message says what to change), 2 usage or config error,\n3 hostlb not running, 4 permission denied, 5 hostlb failed.');
program.exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : EXIT.usage));

program.command('start')
  .description('run hostlb in the foreground until SIGINT, SIGTERM or `hostlb stop` (needs root / CAP_NET_ADMIN); SIGHUP reloads the file')
  .requiredOption('-c, --config <file>', 'YAML configuration file (see docs/configuration.md)')
  .option('--takeover', 'take over from a hostlb running with this configuration: its table, device and host set-up, without cutting a flow (upgrades)')
  .action(async (opts: { config: string; takeover?: boolean }) => {
    try {
      const { loadConfig } = await import('../config-file.js');
      const { runForeground, requestTakeover } = await import('./serve.js');
      const config = loadConfig(opts.config);
      if (opts.takeover) await requestTakeover(config);
      await runForeground(VERSION, config, opts.config);
    } catch (e) {
      fail(e);
    }
  });

program.command('check')
  .description('validate a configuration file and print it with defaults filled in (admin.token and supervise.env values redacted), or every problem of it; changes nothing')
  .requiredOption('-c, --config <file>', 'YAML configuration file')
  .action(async (opts: { config: string }) => {
    try {
      const { checkConfigFile, formatProblem } = await import('../config-file.js');
      // Every problem at once, in line order, so one run fixes a file; warnings too, which do not fail it.
      const { config, problems } = checkConfigFile(opts.config);
      for (const p of problems) process.stderr.write(`${formatProblem(opts.config, p)}\n`);
      if (config === null) {
        const errors = problems.filter((p) => !p.warning).length;
        process.stderr.write(`hostlb check: ${errors} problem${errors === 1 ? '' : 's'}; nothing was started\n`);
        // 2, as for `start` with the same file: a configuration error (see the exit codes in --help).
        process.exitCode = EXIT.usage;
        return;
      }
      // What `start` would run, but not its secrets: this output ends up in terminals, CI logs and tickets.
      const { redactSecrets } = await import('../api/secrets.js');
      process.stdout.write(`${JSON.stringify(redactSecrets(config), null, 2)}\n`);
      const { choosePlane, planeSupport } = await import('../../dataplane/data-plane.js');
      const support = planeSupport();
      const kind = choosePlane(config.dataplane);
      const verdict = support[kind];
      const named = config.dataplane === 'auto' ? `auto: ${kind}, the fastest this host runs,` : kind;
      process.stderr.write(`hostlb check: data plane ${named} ${verdict === null ? 'runs on this host' : `cannot run on this host: ${verdict}`}; ${Object.entries(support).map(([plane, why]) => `${plane} ${why === null ? 'yes' : 'no'}`).join(', ')}\n`);
    } catch (e) {
      fail(e);
    }
  });

program.command('demo')
  .description('the built-in default (npm start): three HTTP daemons on 127.10.1.1-3:8080 behind 127.10.0.1:80')
  .action(async () => {
    try {
      const { demoConfig, demoInstructions, startDemoDaemons } = await import('../demo.js');
      const { runForeground } = await import('./serve.js');
      const { choosePlane, planeSupport } = await import('../../dataplane/data-plane.js');
      // The fastest plane this host runs, and why not the faster ones, in one line.
      const kind = choosePlane('auto');
      const support = planeSupport();
      const skipped = Object.entries(support).filter(([plane, why]) => why !== null && plane !== kind).map(([plane, why]) => `${plane}: ${why}`);
      process.stderr.write(`hostlb demo: data plane ${kind}, the fastest this host runs${skipped.length > 0 ? ` (not ${skipped.join('; ')})` : ''}\n`);
      const config = demoConfig(kind);
      const servers = await startDemoDaemons();
      await runForeground(VERSION, config, undefined, () => servers.forEach((s) => s.close()));
      process.stdout.write(demoInstructions(config));
      setInterval(() => {}, 1 << 30); // the daemons and the TUN poll keep the loop alive; this keeps it obvious
    } catch (e) {
      fail(e);
    }
  });

program.command('startup')
  .description('write a systemd unit that starts hostlb at boot with this configuration (Type=notify), and say how to enable it')
  .requiredOption('-c, --config <file>', 'YAML configuration file the service runs (checked now)')
  .option('--name <name>', 'the unit\'s name', 'hostlb')
  .option('--unit <path>', 'where to write the unit (default /etc/systemd/system/NAME.service)')
  .option('--print', 'print the unit instead of writing it')
  .action(async (opts: { config: string; name: string; unit?: string; print?: boolean }) => {
    try {
      const { loadConfig } = await import('../config-file.js');
      const { systemdUnit } = await import('../systemd-unit.js');
      const { realpathSync, writeFileSync } = await import('node:fs');
      const { fileURLToPath } = await import('node:url');
      loadConfig(opts.config);
      if (!/^[A-Za-z0-9_.@-]+$/.test(opts.name)) throw new HostlbError('CONFIG_INVALID', `--name: "${opts.name}" is not a unit name (letters, digits, _ . @ -)`);
      const unit = systemdUnit({ config: opts.config, node: process.execPath, main: realpathSync(fileURLToPath(import.meta.url)), name: opts.name });
      if (opts.print) {
        process.stdout.write(unit);
        return;
      }
      const path = opts.unit ?? `/etc/systemd/system/${opts.name}.service`;
      writeFileSync(path, unit, { mode: 0o644 });
      process.stdout.write(`hostlb startup: wrote ${path}\nenable and start it with:\n  systemctl daemon-reload && systemctl enable --now ${opts.name}\nthen: systemctl status ${opts.name}   (STATUS shows the data plane and how many daemons are up)\n`);
    } catch (e) {
      fail(e);
    }
  });

addRunCommand(program, VERSION, fail);
addDashboardCommand(program, fail);
addTopCommand(program);
addCleanupCommand(program, fail);
addClientCommands(program);

program.parseAsync(process.argv).catch(fail);
