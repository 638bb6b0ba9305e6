// The server side of the CLI: `start` and `demo` run an instance in the
// foreground with its admin API. Loaded only by those commands, so client
// commands start fast.

import { readFileSync } from 'node:fs';
import { HostlbError } from '../../errors.js';
import { AdminServer } from '../api/server.js';
import type { HostlbConfig } from '../config-schema.js';
import { Instance } from '../instance.js';
import { createLogger } from '../logger.js';
import { notifySystemd } from '../sd-notify.js';

const log = createLogger();

/** Exit status when the host set-up could not be completely undone (the CLI's "hostlb failed"). */
export const EXIT_STOP_FAILED = 5;

function adminOptions(config: HostlbConfig): { socket: string; tcp?: { host: string; port: number; token: string; dashboard: boolean } } {
  const socket = config.admin.socket ?? `${config.stateDir}/admin.sock`;
  if (!config.admin.listen) return { socket };
  const m = /^\[?(.*?)\]?:(\d+)$/.exec(config.admin.listen)!;
  const token = config.admin.token ?? readFileSync(config.admin.tokenFile!, 'utf8').trim();
  return { socket, tcp: { host: m[1], port: Number(m[2]), token, dashboard: config.admin.dashboard === true } };
}

/** How often a hostlb run by npm looks whether npm is still there (ms). */
const PARENT_POLL_MS = 1000;

/**
 * npm runs a package's bin (`npx hostlb`, `npm exec`, `npm start`) under
 * `sh -c`, and on SIGTERM it ends that shell, not hostlb: hostlb would keep
 * the host set up without anyone to stop it, and the next start would refuse
 * ("process N still owns ... journal"). Node has no PR_SET_PDEATHSIG, so a
 * hostlb that npm started (npm sets npm_command / npm_lifecycle_event) polls
 * its parent PID and stops cleanly once it changes. Run any other way (the
 * installed binary, systemd) it is left alone: `nohup hostlb start &` must
 * outlive its shell.
 */
export function watchParent(onGone: () => void, env: NodeJS.ProcessEnv = process.env): NodeJS.Timeout | null {
  if (env.npm_command === undefined && env.npm_lifecycle_event === undefined) return null;
  const parent = process.ppid;
  const timer = setInterval(() => {
    if (process.ppid === parent) return;
    clearInterval(timer);
    onGone();
  }, PARENT_POLL_MS);
  timer.unref();
  return timer;
}

/**
 * `start --takeover`: asks the hostlb answering on this configuration's admin
 * socket to hand over, and waits for it to exit. Returns without asking when
 * nothing answers (then start adopts whatever a crashed run left).
 */
export async function requestTakeover(config: HostlbConfig): Promise<void> {
  const socket = adminOptions(config).socket;
  const { call } = await import('./client.js');
  let pid: number;
  try {
    pid = ((await call({ socket }, 'POST', '/v1/takeover')) as { pid: number }).pid;
  } catch (e) {
    if ((e as { code?: string }).code === 'NOT_RUNNING') return;
    throw e;
  }
  log.info({ event: 'taking_over', fromPid: pid }, 'taking over from the running hostlb');
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    if (Date.now() > deadline) throw new HostlbError('TAKEOVER_FAILED', `hostlb ${pid} did not hand over within 15 s; stop it (hostlb stop) and start again`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Starts an instance and its admin API, then runs until SIGINT, SIGTERM,
 * `hostlb stop` or (when npm started it) the end of its npm parent; SIGHUP
 * re-reads the config file. Every change to the host is undone on the way
 * out, also after an uncaught error.
 */
export async function runForeground(version: string, config: HostlbConfig, configFile: string | undefined, onStop: () => void = () => {}): Promise<Instance> {
  let instance: Instance | null = null;
  let admin: AdminServer | null = null;
  let stopping = false;
  const stop = (why: string, code = 0): void => {
    if (stopping) return;
    stopping = true;
    notifySystemd({ STOPPING: '1', STATUS: `stopping (${why})` }, log);
    log.info({ event: 'stopping', why }, 'stopping');
    const finish = (): void => {
      let exitCode = code;
      try {
        instance?.stop();
      } catch (e) {
        // Instance.stop logged an undo that failed; anything else is logged here. Either way the
        // host is not as it was, and whoever runs hostlb (systemd, a script) must hear of it.
        if (!(e instanceof HostlbError && e.code === 'NET_UNDO_FAILED')) log.error({ event: 'stop_failed', err: e }, 'stopping failed');
        exitCode = EXIT_STOP_FAILED;
      } finally {
        onStop();
        process.exit(exitCode);
      }
    };
    admin?.close();
    // Supervised daemons get their stop signal and grace first; a fatal error does not wait.
    if (instance && code === 0) instance.stopDaemons().then(finish, finish);
    else finish();
  };
  // Handlers before the host is touched: without one, a SIGTERM right after
  // "started" kills with the default action and leaves every change behind.
  // One that arrives during the synchronous start runs after it, and undoes it.
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  watchParent(() => stop('the npm process that ran hostlb exited'));
  const running = Instance.start(config, { configFile, logger: log });
  instance = running;
  try {
    await running.startAgents();
  } catch (e) {
    running.stop();
    throw e;
  }
  process.once('uncaughtException', (e) => {
    log.fatal({ err: e }, 'fatal error');
    stop('fatal error', 1);
  });
  try {
    admin = await AdminServer.start(running, {
      ...adminOptions(config), version, logger: log, onStopRequested: () => stop('hostlb stop'),
      onTakeoverRequested: () => {
        if (stopping) return;
        stopping = true;
        log.info({ event: 'takeover' }, 'a new hostlb takes over');
        admin?.close();
        running.handOver();
        process.exit(0);
      },
    });
  } catch (e) {
    running.stop();
    throw e;
  }
  process.on('SIGHUP', () => {
    notifySystemd({ RELOADING: '1', MONOTONIC_USEC: String(process.hrtime.bigint() / 1000n) }, log);
    try {
      running.reload();
    } catch (e) {
      log.error({ event: 'reload_rejected', err: e instanceof HostlbError ? e.message : e }, 'reload rejected; the running configuration is unchanged');
    }
    notifySystemd({ READY: '1', STATUS: statusLine(running) }, log);
  });
  log.info({ event: 'admin_listening', socket: adminOptions(config).socket }, 'admin API listening');
  void whenChecked(running).then(() => {
    if (stopping) return;
    notifySystemd({ READY: '1', STATUS: statusLine(running) }, log);
    // The summary follows the daemons' health while hostlb runs.
    setInterval(() => notifySystemd({ STATUS: statusLine(running) }, log), STATUS_MS).unref();
  });
  return running;
}

/** How often systemd's STATUS= line is refreshed (ms). */
const STATUS_MS = 10_000;
/** The longest hostlb waits for every health check's first answer before it says ready anyway (ms). */
const FIRST_ROUND_MS = 30_000;

/** Resolves once every daemon's advisor has answered once (or has none), or after FIRST_ROUND_MS. */
function whenChecked(instance: Instance): Promise<void> {
  const started = Date.now();
  return new Promise((resolve) => {
    const poll = (): void => {
      const view = instance.health.monitor.view();
      if (view.every((d) => d.advisor !== 'unknown') || Date.now() - started >= FIRST_ROUND_MS) return resolve();
      setTimeout(poll, 100).unref();
    };
    poll();
  });
}

/** One line for `systemctl status`: the plane, and how many daemons are up. */
function statusLine(instance: Instance): string {
  const view = instance.health.monitor.view();
  const up = view.filter((d) => d.state === 'up').length;
  const ports = instance.balancer.tree.clusters.reduce((n, c) => n + c.ports.length, 0);
  return `data plane ${instance.plane.kind}; ${ports} cluster port${ports === 1 ? '' : 's'}; ${up} of ${view.length} daemons up`;
}

