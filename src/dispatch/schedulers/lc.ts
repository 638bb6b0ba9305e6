// Least connection: a new flow goes to the daemon with weight > 0 that holds
// the fewest active flows now. Weight magnitudes are ignored, as in IPVS lc;
// wlc weighs the counts.

import assert from 'node:assert/strict';
import type { Scheduler, SchedulerContext, SchedulerDaemon } from './scheduler.js';

export class LeastConnectionScheduler implements Scheduler {
  readonly name = 'lc' as const;
  private readonly ctx: SchedulerContext;
  private ids = new Int32Array(0);
  /** Where the next scan begins: one past the daemon picked last, so ties rotate. */
  private start = 0;

  constructor(ctx: SchedulerContext) {
    this.ctx = ctx;
  }

  setDaemons(daemons: readonly SchedulerDaemon[]): void {
    const live: number[] = [];
    for (const { id, weight } of daemons) {
      assert.ok(id >= 0 && id <= 0x7fffffff && Number.isInteger(id) && Number.isInteger(weight) && weight >= 0, `bad daemon ${id}`);
      if (weight > 0) live.push(id);
    }
    this.ids = Int32Array.from(live);
    this.start = 0;
  }

  /** O(daemons) calls to ctx.activeFlows; stops early at an idle daemon. */
  pick(_flowHash: number, _sourceHash: number): number {
    const { ids, ctx } = this;
    const n = ids.length;
    if (n === 0) return -1;
    let best = this.start;
    let bestActive = ctx.activeFlows(ids[best]);
    let i = best;
    for (let k = 1; k < n && bestActive > 0; k++) {
      if (++i === n) i = 0;
      const active = ctx.activeFlows(ids[i]);
      if (active < bestActive) {
        best = i;
        bestActive = active;
      }
    }
    this.start = best + 1 === n ? 0 : best + 1;
    return ids[best];
  }
}
