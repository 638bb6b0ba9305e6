// `hostlb run [options] -- CMD [ARGS…]`: N copies of a program behind one
// port, without a configuration file. Builds the configuration run-config.ts
// describes, runs it in the foreground like `start`, and prints one block:
// where to connect, each instance with its PID, how to watch and stop.

import { writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import type { Command } from 'commander';
import type { HostlbConfig } from '../config-schema.js';
import type { Instance } from '../instance.js';
import type { RunOptions } from '../run-config.js';

interface RunFlags {
  instances?: string;
  port: string;
  address?: string;
  protocol: 'tcp' | 'udp';
  scheduler: string;
  health: string;
  user?: string;
  env: string[];
  name?: string;
  listenFds?: boolean;
  dataplane: RunOptions['dataplane'];
  stopTimeout: string;
  stateDir?: string;
  save?: string;
  agent?: string;
}

/** How long `run` waits for every instance to pass its first health check before printing the block anyway. */
const UP_WAIT_MS = 30_000;

export function addRunCommand(program: Command, version: string, fail: (e: unknown) => never): void {
  program.command('run')
    .description('run N copies of a program behind one port, no configuration file (needs root): hostlb run -i 4 -p 3000 -- node app.js')
    .usage('[options] -- <command> [args...]')
    .argument('<command...>', 'the program and its arguments, after --')
    .option('-i, --instances <n>', 'how many copies (default: the number of CPUs)')
    .requiredOption('-p, --port <port>', 'the port clients connect to; each copy gets PORT, HOST and HOSTLB_INDEX in its environment')
    .option('--address <ip>', 'the address clients connect to (default with the socket data plane: every address of this host, localhost included)')
    .option('--protocol <protocol>', 'tcp or udp', 'tcp')
    .option('--scheduler <name>', 'rr, wrr, lc, wlc, sh, maglev, random, p2c', 'lc')
    .option('--health <check>', 'tcp, or http:/path (a 2xx or 3xx answer is up)', 'tcp')
    .option('--user <name>', 'run the copies as this user (default: the user who ran sudo; root only when named)')
    .option('--env <NAME=VALUE>', 'add to each copy\'s environment (repeatable)', (v: string, all: string[]) => [...all, v], [])
    .option('--name <name>', 'what logs and status call the program (default: the command\'s file name)')
    .option('--listen-fds', 'open each copy\'s listening socket in hostlb and pass it as fd 3 (LISTEN_FDS=1, systemd style): connections wait through a crash or restart')
    .option('--dataplane <plane>', 'auto, socket, netfilter or tun', 'auto')
    .option('--stop-timeout <duration>', 'grace between SIGTERM and SIGKILL when stopping a copy', '10s')
    .option('--state-dir <dir>', 'where the journal and admin socket live (default /run/hostlb/run-PORT)')
    .option('--agent <port>', 'answer a front tier\'s HAProxy agent-check on this TCP port (docs/scale-out.md)')
    .option('--save <file>', 'also write the equivalent configuration file (hostlb start -c FILE runs the same)')
    .action(async (words: string[], flags: RunFlags) => {
      try {
        // Loaded here, not at the top: every other command starts without them.
        const { stringify } = await import('yaml');
        const { choosePlane, PLANE_KINDS } = await import('../../dataplane/data-plane.js');
        const { validateConfig } = await import('../config-file.js');
        const { runConfig } = await import('../run-config.js');
        const { runForeground } = await import('./serve.js');
        const [command, ...args] = words;
        const port = Number(flags.port);
        const planes: readonly string[] = ['auto', ...PLANE_KINDS];
        if (!planes.includes(flags.dataplane)) {
          const { ConfigError } = await import('../../errors.js');
          throw new ConfigError('--dataplane', `"${flags.dataplane}" is not ${planes.slice(0, -1).join(', ')} or ${planes.at(-1)}`);
        }
        const plane = choosePlane(flags.dataplane);
        const stateDir = flags.stateDir ?? `/run/hostlb/run-${flags.port}`;
        const raw = runConfig(command, args, {
          instances: flags.instances === undefined ? Math.min(availableParallelism(), 253) : Number(flags.instances),
          port,
          protocol: flags.protocol,
          scheduler: flags.scheduler,
          health: flags.health,
          user: flags.user ?? null,
          env: flags.env,
          name: flags.name ?? null,
          address: flags.address ?? null,
          dataplane: flags.dataplane,
          listenFds: flags.listenFds === true,
          stopTimeout: flags.stopTimeout,
          agent: flags.agent === undefined ? null : Number(flags.agent),
        }, { plane, sudoUser: process.env.SUDO_USER, stateDir });
        const config = validateConfig({ device: `hlr${port}`, ...raw });
        if (flags.save !== undefined) {
          writeFileSync(flags.save, `# hostlb run ${process.argv.slice(3).join(' ')}\n# hostlb start -c ${flags.save} runs the same.\n${stringify({ device: `hlr${port}`, ...raw })}`);
        }
        const instance = await runForeground(version, config, flags.save);
        process.stdout.write(await summary(instance, config, command, args, flags.name ?? null));
      } catch (e) {
        fail(e);
      }
    });
}

/** Each instance's health state by "address:port" (as health names daemons; IPv6 in brackets). */
function states(instance: Instance): Map<string, string> {
  return new Map(instance.health.monitor.view().map((v) => [v.daemon, v.state]));
}

/**
 * The block `run` prints once every instance passed its first health check
 * (so a client that connects after reading it is served), or after
 * UP_WAIT_MS with each instance's state as it is.
 */
async function summary(instance: Instance, config: HostlbConfig, command: string, args: string[], name: string | null): Promise<string> {
  const deadline = Date.now() + UP_WAIT_MS;
  const key = (i: { address: string; port: number }): string => (i.address.includes(':') ? `[${i.address}]:${i.port}` : `${i.address}:${i.port}`);
  let list = instance.health.supervised();
  let health = states(instance);
  while ((list.some((i) => i.pid === null) || list.some((i) => health.get(key(i)) !== 'up')) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    list = instance.health.supervised();
    health = states(instance);
  }
  const cluster = config.clusters[0];
  const port = cluster.ports[0];
  const any = cluster.address === '0.0.0.0' || cluster.address === '::';
  const socket = config.admin.socket ?? `${config.stateDir}/admin.sock`;
  const what = name ?? [command, ...args].join(' ');
  const lines = [
    `hostlb run: ${list.length} × ${what} behind port ${port.port}/${port.protocol} (data plane ${instance.plane.kind}, scheduler ${port.scheduler})`,
    `  connect   ${any ? `localhost:${port.port}, or port ${port.port} on any address of this host` : `${cluster.address}:${port.port}`}`,
    ...list.map((i) => `  instance  ${i.index}  ${key(i)}  pid ${i.pid ?? '(not running)'}  ${health.get(key(i)) ?? 'starting'}`),
    `  watch     hostlb --socket ${socket} top   (also: status, health, events, logs, conns)`,
    `  logs      hostlb --socket ${socket} logs --follow   (each line with its instance)`,
    ...(port.agent ? [`  agent     a front tier's HAProxy agent-check answers on port ${port.agent.port} (hostlb agent-status shows the line)`] : []),
    `  stop      Ctrl-C or SIGTERM: no new connections, up to 5 s for open ones, then SIGTERM to each instance (SIGKILL after ${port.supervise?.stopTimeout ?? 10} s), then every change to the host undone`,
  ];
  return `${lines.join('\n')}\n`;
}
