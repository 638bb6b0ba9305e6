// `hostlb cleanup --device D`: what a crashed hostlb left, removed without
// starting one. A hostlb killed with SIGKILL leaves its host set-up on purpose
// (the next start adopts it and its flows); when no next start is wanted,
// this undoes the journal (routes, rules, nftables, iptables, sysctls, the
// bpffs and its pinned program), deletes a leftover TUN device, ends the
// supervised daemons it recorded and removes its state files. Refused while a
// hostlb runs with that device.

import { rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { HostlbError } from '../../errors.js';
import { cleanupLeftovers, journalPathFor, JOURNAL_DIR } from '../../net/apply.js';
import { DeviceLock } from '../../net/device-lock.js';
import { checkNetAdmin } from '../../net/privileges.js';
import { baselinePath } from '../host-setup.js';
import { daemonPidsPath, endLeftoverDaemons } from '../health-runtime.js';

export interface CleanupReport {
  undone: number;
  deviceRemoved: boolean;
  daemonsEnded: number;
}

/** Cleans up after the run of `device` whose state was in `stateDir`. Throws HostlbError NEEDS_NET_ADMIN, DEVICE_IN_USE, NET_INSTANCE_RUNNING, NET_UNDO_FAILED. */
export function cleanUp(device: string, stateDir: string): CleanupReport {
  const missing = checkNetAdmin();
  if (missing !== null) throw new HostlbError('NEEDS_NET_ADMIN', missing);
  // The lock a running hostlb holds: taking it proves none runs with this device.
  const lock = DeviceLock.acquire(device);
  try {
    const quiet = { info: (): void => undefined, warn: (): void => undefined };
    const daemonsEnded = endLeftoverDaemons(daemonPidsPath(stateDir, device), quiet);
    const { undone, deviceRemoved } = cleanupLeftovers(device, { journalPath: journalPathFor(device, stateDir) });
    for (const file of [baselinePath({ stateDir, device }), join(stateDir, `${device}.table`)]) rmSync(file, { force: true });
    return { undone, deviceRemoved, daemonsEnded };
  } finally {
    lock.release();
  }
}

export function addCleanupCommand(program: Command, fail: (e: unknown) => never): void {
  program.command('cleanup')
    .description('undo what a crashed hostlb left on the host (routes, rules, nftables, BPF pins, TUN device) and end its daemons, without starting one (needs root)')
    .requiredOption('--device <name>', 'the device of the run to clean up (hlb0 unless the configuration names another; hlr<PORT> for hostlb run)')
    .option('--state-dir <dir>', `its stateDir (default ${JOURNAL_DIR}; /run/hostlb/run-<PORT> for hostlb run)`)
    .action((o: { device: string; stateDir?: string }) => {
      try {
        const r = cleanUp(o.device, o.stateDir ?? JOURNAL_DIR);
        const parts = [`${r.undone} change${r.undone === 1 ? '' : 's'} undone`];
        if (r.deviceRemoved) parts.push(`TUN device ${o.device} deleted`);
        if (r.daemonsEnded > 0) parts.push(`${r.daemonsEnded} supervised daemon${r.daemonsEnded === 1 ? '' : 's'} ended`);
        process.stdout.write(r.undone === 0 && !r.deviceRemoved && r.daemonsEnded === 0
          ? `hostlb cleanup: nothing was left for device ${o.device}\n`
          : `hostlb cleanup: ${parts.join(', ')}; the host is as it was before that run\n`);
      } catch (e) {
        fail(e);
      }
    });
}
