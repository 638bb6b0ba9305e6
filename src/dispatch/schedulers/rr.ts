// Round robin: each new flow goes to the next daemon with weight > 0, in the
// order the port lists them. Weight magnitudes are ignored, as in IPVS rr; wrr
// gives shares in proportion to weight.

import assert from 'node:assert/strict';
import type { Scheduler, SchedulerDaemon } from './scheduler.js';

export class RoundRobinScheduler implements Scheduler {
  readonly name = 'rr' as const;
  /** Ids of the daemons with weight > 0, in port order. */
  private ids = new Int32Array(0);
  /** Index in `ids` of the daemon picked last; -1 before the first pick. */
  private cursor = -1;

  setDaemons(daemons: readonly SchedulerDaemon[]): void {
    const last = this.cursor >= 0 ? this.ids[this.cursor] : -1;
    const live: number[] = [];
    for (const { id, weight } of daemons) {
      assert.ok(id >= 0 && id <= 0x7fffffff && Number.isInteger(id) && Number.isInteger(weight) && weight >= 0, `bad daemon ${id}`);
      if (weight > 0) live.push(id);
    }
    this.ids = Int32Array.from(live);
    // Carry on after the daemon picked last, so that a weight change elsewhere
    // does not hand the next flow back to the first daemon.
    this.cursor = last >= 0 ? this.ids.indexOf(last) : -1;
  }

  pick(_flowHash: number, _sourceHash: number): number {
    const ids = this.ids;
    if (ids.length === 0) return -1;
    let c = this.cursor + 1;
    if (c >= ids.length) c = 0;
    this.cursor = c;
    return ids[c];
  }
}

