// The server side of the CLI: `start` and `demo` run an instance in the
// foreground with its admin API. Loaded only by those commands, so client
// commands start fast.

import { readFileSync } from 'node:fs';
import { HostlbError } from '../../errors.js';
import { AdminServer } from '../api/server.js';
import type { HostlbConfig } from '../config-schema.js';
import { Instance } from '../instance.js';
import { createLogger } from '../logger.js';

const log = createLogger();

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
export async function runForeground(version: string, config: HostlbConfig, configFile: string | undefined, onStop: () => void = () => {}): Promise<Instance> {
  let instance: Instance | null = null;
  let admin: AdminServer | null = null;
  let stopping = false;
  const stop = (why: string, code = 0): void => {
    if (stopping) return;
    stopping = true;
    log.info({ event: 'stopping', why }, 'stopping');
    const finish = (): void => {
      try {
        instance?.stop();
      } finally {
        onStop();
        process.exit(code);
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
  const running = Instance.start(config, { configFile, logger: log });
  instance = running;
  process.once('uncaughtException', (e) => {
    log.fatal({ err: e }, 'fatal error');
    stop('fatal error', 1);
  });
  try {
    admin = await AdminServer.start(running, { ...adminOptions(config), version, logger: log, onStopRequested: () => stop('hostlb stop') });
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

