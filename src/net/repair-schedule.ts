// Decides which of repair.ts's checks that spawn a child process run on a
// given tick. Idle, they spawn nothing: a check runs when its subsystem
// changed (host-watch.ts), when nothing can tell (no watch, iptables-legacy),
// after it failed, and as a sweep every SWEEP_MS. The checks that spawn
// nothing (sysctls, bpffs mounts) are not this file's: they run every tick.

import { realpathSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { ChangeSource, WatchedSubsystem } from './host-watch.js';

/**
 * The checks that spawn: `ip` runs the ip steps again in `ip -batch`; `nft`
 * lists the nft table; `iptables` lists the mangle table (iptables and
 * ip6tables).
 */
export type SpawnCheck = 'ip' | 'nft' | 'iptables';

export const SPAWN_CHECKS: readonly SpawnCheck[] = ['ip', 'nft', 'iptables'];

/**
 * How often each check runs however quiet the host (ms): a notification can
 * be lost (a socket that failed between two reads), and a tool nothing
 * watches can change things.
 */
export const SWEEP_MS = 30_000;

const SUBSYSTEM: Record<SpawnCheck, WatchedSubsystem> = { ip: 'route', nft: 'nftables', iptables: 'nftables' };

export interface CheckState {
  /** Something reports when this check's objects change. */
  watched: boolean;
  /** They may have changed since the check last ran (or it failed, or it never ran). */
  changed: boolean;
  /** Since the check last ran (ms; Infinity: never). */
  sinceMs: number;
}

/** The checks due, in SPAWN_CHECKS order: unwatched, changed, or not run for `sweepMs`. Pure. */
export function checksDue(states: Partial<Record<SpawnCheck, CheckState>>, sweepMs = SWEEP_MS): SpawnCheck[] {
  return SPAWN_CHECKS.filter((check) => {
    const s = states[check];
    return s !== undefined && (!s.watched || s.changed || s.sinceMs >= sweepMs);
  });
}

/** What repair.ts asks of a schedule (absent: every check, every tick). */
export interface CheckSchedule {
  /** Of `present` (the checks the journal has steps for), those to run now. Never throws. */
  due(present: ReadonlySet<SpawnCheck>): ReadonlySet<SpawnCheck>;
  /** The checks of the last due() that failed or did not finish: due again on the next tick. */
  settled(unsettled: readonly SpawnCheck[]): void;
}

export interface ScheduleOptions {
  /** Monotonic ms (default performance.now(): a wall clock set back must not hold the sweep off). */
  now?: () => number;
  /** Whether iptables' changes reach nftables notifications (default: iptablesNotifies()); asked once, when needed. */
  iptablesNotifies?: () => boolean;
  sweepMs?: number;
}

/**
 * The schedule of one repair loop over a ChangeSource, which it closes with
 * close(). A subsystem is watched from the first tick whose journal needs it,
 * so a host with no nft steps never joins nftables' group (which would load
 * nf_tables).
 */
export class RepairSchedule implements CheckSchedule {
  private readonly lastRun = new Map<SpawnCheck, number>();
  private readonly pending = new Set<SpawnCheck>();
  private iptablesWatchable: boolean | undefined;
  private readonly now: () => number;
  private readonly sweepMs: number;

  constructor(private readonly source: ChangeSource, private readonly options: ScheduleOptions = {}) {
    this.now = options.now ?? (() => performance.now());
    this.sweepMs = options.sweepMs ?? SWEEP_MS;
  }

  due(present: ReadonlySet<SpawnCheck>): ReadonlySet<SpawnCheck> {
    const now = this.now();
    const changed = new Map<WatchedSubsystem, boolean>();
    const states: Partial<Record<SpawnCheck, CheckState>> = {};
    for (const check of SPAWN_CHECKS) {
      if (!present.has(check)) continue;
      const subsystem = SUBSYSTEM[check];
      let watched = this.source.watch(subsystem);
      // Taken once per tick: nft and iptables share one flag.
      if (!changed.has(subsystem)) changed.set(subsystem, this.source.take(subsystem));
      if (check === 'iptables' && watched) watched = this.iptablesWatched();
      const last = this.lastRun.get(check);
      states[check] = { watched, changed: changed.get(subsystem)! || this.pending.has(check), sinceMs: last === undefined ? Infinity : now - last };
    }
    const due = new Set(checksDue(states, this.sweepMs));
    for (const check of due) {
      this.lastRun.set(check, now);
      this.pending.delete(check);
    }
    return due;
  }

  settled(unsettled: readonly SpawnCheck[]): void {
    for (const check of unsettled) this.pending.add(check);
  }

  close(): void {
    this.source.close();
  }

  private iptablesWatched(): boolean {
    this.iptablesWatchable ??= (this.options.iptablesNotifies ?? iptablesNotifies)();
    return this.iptablesWatchable;
  }
}

/**
 * Whether the iptables and ip6tables found on PATH (those installed) are the
 * nf_tables variants (xtables-nft-multi), whose changes come as nftables
 * notifications; iptables-legacy's come as none. Judged by the name of the
 * binary the command resolves to (Debian, Fedora and Arch link
 * iptables → iptables-nft → xtables-nft-multi), so no child process runs.
 * False when neither is found, or either is something else.
 */
export function iptablesNotifies(path = process.env.PATH ?? ''): boolean {
  let found = 0;
  for (const tool of ['iptables', 'ip6tables']) {
    for (const dir of path.split(':')) {
      let real: string;
      try {
        real = realpathSync(join(dir === '' ? '.' : dir, tool));
      } catch {
        continue;
      }
      if (!basename(real).includes('nft')) return false;
      found++;
      break;
    }
  }
  return found > 0;
}
