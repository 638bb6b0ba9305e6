// The host half of an instance: the checks before anything changes, the
// device lock, the journal of the host set-up and the baseline every plan is
// made against, adoption of a crashed (or handing-over) run's set-up, repairs
// and the undo. The data plane plans the steps; this file applies them.
// `NO_HOST` stands in when an instance runs over a link it was given (tests,
// simulations): the host is never touched.

import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { DataPlane } from '../dataplane/data-plane.js';
import { HostlbError } from '../errors.js';
import { cleanupLeftovers, journalPathFor, readJournal, stillAlive, undoJournal } from '../net/apply.js';
import { DeviceLock } from '../net/device-lock.js';
import type { HostFacts } from '../net/host-facts.js';
import type { NetStep } from '../net/net-step.js';
import { checkNetAdmin } from '../net/privileges.js';
import { probeHost } from '../net/probe.js';
import { addMissing, removeUnwanted } from '../net/reconcile.js';
import { repairMissing, type RepairReport } from '../net/repair.js';
import type { CheckSchedule } from '../net/repair-schedule.js';
import { ensureStateDir, readBaseline, writeFileAtomic } from '../net/state-files.js';
import type { HostlbConfig } from './config-schema.js';
import type { Logger } from './logger.js';

/** The steps the plane wants, planned against the host as it was before hostlb changed it. */
export type Planner = (baseline: HostFacts) => NetStep[];

export interface HostSetup {
  /** A run that ended without undoing left its set-up here (a crash, or `--takeover`): its flows are adopted. */
  readonly adopting: boolean;
  /** The journal of the set-up (null: no host set-up). */
  readonly journal: string | null;
  /** Brings the host to what `plan` wants: adds what is missing and, when adopting, removes what it no longer wants. */
  setUp(plan: Planner): void;
  /** Adds the steps of `plan` not applied yet; returns how many. Throws NetError and rolls back what it added. */
  add(plan: Planner): number;
  /** Undoes applied steps `plan` no longer wants; returns how many. */
  remove(plan: Planner): number;
  /**
   * Puts back host objects that vanished; null when there is nothing to check.
   * The checks that spawn a child process run when `schedule` has them due
   * (without one: every call).
   */
  repair(signal: AbortSignal, schedule?: CheckSchedule): Promise<RepairReport | null>;
  /** Undoes the whole set-up. Throws NetError NET_UNDO_FAILED; the journal then keeps what is left. */
  undo(): number;
  /** After a deliberate stop and a complete undo: nothing is left to adopt. */
  forget(): void;
  /** Lets go of the device lock. */
  release(): void;
}

/** Stands in for the host when an instance runs over a link it was given: nothing is checked, applied or undone. */
export const NO_HOST: HostSetup = {
  adopting: false,
  journal: null,
  setUp: () => {},
  add: () => 0,
  remove: () => 0,
  repair: () => Promise.resolve(null),
  undo: () => 0,
  forget: () => {},
  release: () => {},
};

/** The baseline file an instance keeps beside its journal, named after its device. */
export function baselinePath(config: Pick<HostlbConfig, 'stateDir' | 'device'>): string {
  return join(config.stateDir, `${config.device}.baseline.json`);
}

export class SystemHost implements HostSetup {
  private baseline: HostFacts | null = null;

  private constructor(readonly adopting: boolean, private readonly device: string, readonly journal: string, private readonly baselineFile: string, private readonly lock: DeviceLock, private readonly log: Logger, private readonly previous: { pid: number; steps: number } | null) {}

  /**
   * Checks what can be checked without touching the host (CAP_NET_ADMIN, the
   * plane's tools), takes the device lock, and decides whether a previous
   * run's set-up is adopted; if not, cleans up after it. Throws HostlbError
   * (NEEDS_NET_ADMIN, NETFILTER_TOOLS_MISSING, DEVICE_IN_USE, NET_*) having
   * changed nothing, and holding no lock.
   */
  static open(config: HostlbConfig, plane: Pick<DataPlane, 'checkTools'>, log: Logger): SystemHost {
    const missing = checkNetAdmin();
    if (missing !== null) throw new HostlbError('NEEDS_NET_ADMIN', missing);
    plane.checkTools();
    // Before anything on the host changes: a second hostlb for this device
    // (another stateDir, say) is refused here, and never rolls back the
    // objects of the one running.
    const lock = DeviceLock.acquire(config.device);
    try {
      // Root commands are replayed from files in stateDir: it must be root's alone.
      ensureStateDir(config.stateDir);
      const journal = journalPathFor(config.device, config.stateDir);
      const baselineFile = baselinePath(config);
      // A run that ended without undoing (a crash, or a --takeover) left its
      // journal, the host as it was before (baseline), and its flows: adopt
      // them, so they live on. Otherwise start clean.
      const previous = readJournal(journal);
      const adopting = previous !== null && previous.pid !== process.pid && !stillAlive(previous.pid) && existsSync(baselineFile);
      if (!adopting) {
        const leftovers = cleanupLeftovers(config.device, { journalPath: journal });
        if (leftovers.undone > 0 || leftovers.deviceRemoved) log.info({ ...leftovers }, 'cleaned up after an earlier run');
      }
      return new SystemHost(adopting, config.device, journal, baselineFile, lock, log, adopting ? { pid: previous.pid, steps: previous.steps.length } : null);
    } catch (e) {
      lock.release();
      throw e;
    }
  }

  setUp(plan: Planner): void {
    if (this.adopting) {
      this.baseline = readBaseline(this.baselineFile);
      const desired = plan(this.baseline);
      const added = addMissing(desired, this.journal);
      const removed = removeUnwanted(desired, this.journal);
      this.log.info({ event: 'adopted', steps: this.previous?.steps, added, removed, previousPid: this.previous?.pid }, 'adopted the host set-up of an earlier run');
    } else {
      this.baseline = probeHost(this.device);
      writeFileAtomic(this.baselineFile, JSON.stringify(this.baseline));
      addMissing(plan(this.baseline), this.journal);
    }
  }

  add(plan: Planner): number {
    return addMissing(plan(this.facts()), this.journal);
  }

  remove(plan: Planner): number {
    return removeUnwanted(plan(this.facts()), this.journal);
  }

  async repair(signal: AbortSignal, schedule?: CheckSchedule): Promise<RepairReport | null> {
    const journal = readJournal(this.journal);
    if (journal === null) return null;
    return repairMissing(journal.steps, signal, schedule);
  }

  undo(): number {
    return undoJournal(this.journal);
  }

  forget(): void {
    rmSync(this.baselineFile, { force: true });
  }

  release(): void {
    this.lock.release();
  }

  private facts(): HostFacts {
    if (this.baseline === null) throw new Error('the host set-up has not run yet');
    return this.baseline;
  }
}
