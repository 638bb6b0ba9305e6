// systemd's readiness protocol (sd_notify(3)), for `Type=notify` units such
// as the one `hostlb startup` writes: READY=1 once the host set-up is in place
// and every health check has answered once, STATUS= a one-line summary,
// RELOADING=1 around a reload, STOPPING=1 at a stop. A no-op unless systemd
// started hostlb (NOTIFY_SOCKET set); a message that cannot be sent is
// logged, never thrown: readiness reporting must not stop the balancer.

import type { BaseLogger as Logger } from 'pino';
import { loadTunAddon } from '../native/addon.js';

interface NotifyAddon {
  sdNotify(socketPath: string, message: string): boolean;
}

/** Sends `fields` ("READY": "1", "STATUS": "…") when NOTIFY_SOCKET is set; false when not sent. */
export function notifySystemd(fields: Record<string, string>, log: Logger, env: NodeJS.ProcessEnv = process.env): boolean {
  const socket = env.NOTIFY_SOCKET;
  if (socket === undefined || socket === '') return false;
  const message = Object.entries(fields).map(([k, v]) => `${k}=${v.replace(/\n/g, ' ')}`).join('\n');
  try {
    const addon = loadTunAddon() as unknown as Partial<NotifyAddon>;
    if (typeof addon.sdNotify !== 'function') throw new Error('the native addon predates sdNotify: rebuild it (npm install)');
    return addon.sdNotify(socket, message);
  } catch (e) {
    log.warn({ event: 'notify_failed', err: e, socket }, `could not tell systemd ${message.split('\n')[0]}`);
    return false;
  }
}
