// Weighted least connection: a new flow goes to the daemon with the smallest
// (active flows + 1) / weight, so idle daemons fill heaviest first and busy
// ones keep counts in proportion to weight. Weight 0 daemons get nothing.

import assert from 'node:assert/strict';
import type { Scheduler, SchedulerContext, SchedulerDaemon } from './scheduler.js';

export class WeightedLeastConnectionScheduler implements Scheduler {
  readonly name = 'wlc' as const;
  private readonly ctx: SchedulerContext;
  private ids = new Int32Array(0);
  private weights = new Int32Array(0);
  /** Where the next scan begins: one past the daemon picked last, so ties rotate. */
  private start = 0;

  constructor(ctx: SchedulerContext) {
    this.ctx = ctx;
  }

  setDaemons(daemons: readonly SchedulerDaemon[]): void {
    const ids: number[] = [];
    const weights: number[] = [];
    for (const { id, weight } of daemons) {
      assert.ok(id >= 0 && id <= 0x7fffffff && Number.isInteger(id) && Number.isInteger(weight) && weight >= 0, `bad daemon ${id}`);
      if (weight === 0) continue;
      ids.push(id);
      weights.push(weight);
    }
    this.ids = Int32Array.from(ids);
    this.weights = Int32Array.from(weights);
    this.start = 0;
  }

  /** O(daemons) calls to ctx.activeFlows. */
  pick(_flowHash: number, _sourceHash: number): number {
    const { ids, weights, ctx } = this;
    const n = ids.length;
    if (n === 0) return -1;
    let best = this.start;
    // The +1 (IPVS sed's overhead) makes an idle heavy daemon beat an idle light one.
    let bestLoad = ctx.activeFlows(ids[best]) + 1;
    let bestWeight = weights[best];
    let i = best;
    for (let k = 1; k < n; k++) {
      if (++i === n) i = 0;
      const load = ctx.activeFlows(ids[i]) + 1;
      const weight = weights[i];
      // load/weight < bestLoad/bestWeight, without division (IPVS wlc); exact below 2^53.
      if (load * bestWeight < bestLoad * weight) {
        best = i;
        bestLoad = load;
        bestWeight = weight;
      }
    }
    this.start = best + 1 === n ? 0 : best + 1;
    return ids[best];
  }
}
