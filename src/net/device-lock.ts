// One hostlb per device per network namespace: an flock(2) on a file in a
// fixed directory, taken before hostlb touches the host and held for the life
// of the process. A second start for the same device (another stateDir, say)
// is refused naming the pid that holds it, before it changes anything — it
// must never roll back objects the first one created.

import { closeSync, mkdirSync, openSync, readFileSync, statSync, writeSync, ftruncateSync, constants } from 'node:fs';
import { HostlbError } from '../errors.js';
import { loadTunAddon } from '../native/addon.js';

/** Where the locks live, whatever each instance's stateDir: tmpfs, root only. */
export const LOCK_DIR = '/run/hostlb/locks';

/**
 * The lock file of `device` in this process's network namespace: devices (and
 * the routes, rules and nft tables named after them) are per namespace, so two
 * namespaces may each run an `hlb0`.
 */
export function lockPathFor(device: string, dir = LOCK_DIR): string {
  let netns = 'init';
  try {
    netns = String(statSync('/proc/self/ns/net').ino);
  } catch {
    // No /proc: one namespace as far as hostlb can tell.
  }
  return `${dir}/${netns}-${device.replace(/[^A-Za-z0-9_.-]/g, '_')}.lock`;
}

export class DeviceLock {
  private constructor(readonly path: string, private fd: number | null) {}

  /**
   * Takes the lock of `device` or throws HostlbError DEVICE_IN_USE naming the
   * pid that holds it. Writes this pid into the file for the next one to read.
   */
  static acquire(device: string, dir = LOCK_DIR): DeviceLock {
    const path = lockPathFor(device, dir);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    // O_NOFOLLOW: a symlink planted here must not point the write elsewhere. (libuv opens with O_CLOEXEC:
    // supervised daemons do not inherit the lock.)
    const fd = openSync(path, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
    let locked: boolean;
    try {
      locked = loadTunAddon().tryLock(fd);
    } catch (e) {
      closeSync(fd);
      // The addon not built (TUN_ADDON_NOT_BUILT): a sentence for the user, not a stack trace.
      const code = (e as { code?: unknown }).code;
      throw new HostlbError(typeof code === 'string' && code.startsWith('TUN_') ? code : 'DEVICE_LOCK_FAILED', `cannot lock device ${device} (${path}): ${(e as Error).message}`, { cause: e });
    }
    if (!locked) {
      closeSync(fd);
      let holder = 'another process';
      try {
        const pid = Number.parseInt(readFileSync(path, 'utf8'), 10);
        if (Number.isInteger(pid) && pid > 0) holder = `hostlb pid ${pid}`;
      } catch {
        // Unreadable: name no pid.
      }
      throw new HostlbError('DEVICE_IN_USE', `device ${device} is in use by ${holder} (lock ${path}); stop it first (hostlb stop, or start --takeover to replace it), or give this instance another device`);
    }
    ftruncateSync(fd, 0);
    writeSync(fd, `${process.pid}\n`, 0);
    return new DeviceLock(path, fd);
  }

  /** Lets go of the lock (the file stays: removing it would race with the next acquirer). Safe to call twice. */
  release(): void {
    if (this.fd === null) return;
    closeSync(this.fd);
    this.fd = null;
  }
}
